'use strict';
/*
 * Small helpers shared by the bootstrap scripts (scripts/bootstrap.cjs, scripts/bootstrap/*.cjs).
 *
 * Plain CommonJS with built-ins only: it runs on the machine's Node 20 (npm's pre-scripts on a fresh clone) as well
 * as on Node 24. tools/services/process.ts has a TypeScript twin of findExecutable for the services (same folders,
 * same order): keep the two alike.
 */
const { spawnSync } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');

/** Searched after PATH: Debian puts daemons there (mosquitto is /usr/sbin/mosquitto), often not on a user's PATH. */
const SBIN_DIRS = ['/usr/local/sbin', '/usr/sbin', '/sbin'];

/**
 * The path of an executable `name` on PATH or in the sbin folders, without running it; undefined when there is none.
 * A name with a slash is returned as it is.
 * @param {string} name
 * @returns {string | undefined}
 */
function findExecutable(name) {
  if (name.includes('/')) return name;
  const dirs = [...(process.env.PATH || '').split(path.delimiter), ...SBIN_DIRS];
  for (const dir of dirs) {
    if (!dir) continue;
    const candidate = path.join(dir, name);
    try {
      fs.accessSync(candidate, fs.constants.X_OK);
      return candidate;
    } catch {
      // not here; keep looking
    }
  }
  return undefined;
}

/**
 * Runs a command to completion and returns how long it took (ms); throws when it cannot start or exits non-zero.
 * @param {string} cmd
 * @param {readonly string[]} args
 * @param {{ cwd?: string, env?: NodeJS.ProcessEnv, capture?: boolean, label?: string }} [options]
 *   capture: keep the output instead of passing it through, and put its last 40 lines into the error;
 *   label: a prefix for error messages, e.g. 'mongo stand-in'.
 * @returns {number}
 */
function run(cmd, args, options = {}) {
  const { cwd, env, capture = false, label } = options;
  const prefix = label ? `${label}: ` : '';
  const started = Date.now();
  const result = spawnSync(cmd, args, {
    cwd,
    env: env || process.env,
    stdio: capture ? ['ignore', 'pipe', 'pipe'] : ['ignore', 'inherit', 'inherit'],
    encoding: 'utf8',
    maxBuffer: 16 << 20,
  });
  if (result.error) throw new Error(`${prefix}cannot run ${cmd}: ${result.error.message}`);
  if (result.status !== 0) {
    const how = result.signal ? `was killed by ${result.signal}` : `exited with ${result.status}`;
    // Maven -q reports its errors on stdout: keep the tail of both streams.
    const output = capture
      ? `${result.stdout || ''}${result.stderr || ''}`.trim().split('\n').slice(-40).join('\n')
      : '';
    throw new Error(`${prefix}${path.basename(cmd)} ${args.join(' ')} ${how}${output ? `:\n${output}` : ''}`);
  }
  return Date.now() - started;
}

/**
 * Hex SHA-256 of the parts, one after the other (the same as of their concatenation).
 * @param {...(string | Buffer)} parts
 * @returns {string}
 */
function sha256(...parts) {
  const hash = crypto.createHash('sha256');
  for (const part of parts) hash.update(part);
  return hash.digest('hex');
}

/**
 * A file's bytes, or an empty buffer when it does not exist.
 * @param {string} file
 * @returns {Buffer}
 */
function readIfExists(file) {
  try {
    return fs.readFileSync(file);
  } catch (err) {
    if (err && err.code === 'ENOENT') return Buffer.alloc(0);
    throw err;
  }
}

/**
 * Blocks the thread for `ms` (the bootstrap is synchronous from start to end).
 * @param {number} ms
 */
function sleep(ms) {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

module.exports = { SBIN_DIRS, findExecutable, run, sha256, readIfExists, sleep };
