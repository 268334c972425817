'use strict';
/*
 * A lock between bootstraps of one work tree: `npm start` beside `npm test` on a fresh clone must not run two
 * `npm ci` into the same node_modules at once (the second one wipes what the first is writing).
 *
 * The lock is a folder (<root>/.cache/bootstrap.lock) holding a file `owner` with the holder's pid and its start
 * time. It is filled under a temporary name and renamed into place, which is atomic and fails while another lock is
 * there, so the lock never exists without its owner. A lock whose holder is dead (killed by a signal, which skips
 * the exit handler) is taken over; the start time tells a reused pid from the holder. Plain CommonJS, built-ins
 * only (runs on Node 20 too).
 */
const fs = require('node:fs');
const path = require('node:path');
const { sleep } = require('./shell.cjs');

const OWNER = 'owner';
/** A takeover lasts milliseconds: a takeover folder older than this was left by a process that died in it. */
const STALE_TAKEOVER_MS = 30_000;

/** The start time of a process (clock ticks since boot, /proc/PID/stat field 22), or '' when unknown. */
function startTimeOf(pid) {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    // "PID (comm) STATE PPID …": comm may hold spaces and parentheses, so count fields after the last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return fields[0] === 'Z' ? '' : fields[19] || '';
  } catch {
    return '';
  }
}

/** True while `owner` (as read from the lock) is a live process that is the one that took the lock. */
function isAlive(owner) {
  try {
    process.kill(owner.pid, 0);
  } catch (err) {
    if (err.code !== 'EPERM') return false;
  }
  const now = startTimeOf(owner.pid);
  // '' with /proc/PID present: a zombie, i.e. dead. Without /proc at all, kill(0) is all we can go by.
  if (!now) return !fs.existsSync(`/proc/${owner.pid}`);
  // Another start time: the holder died and its pid was reused.
  return !owner.startTime || owner.startTime === now;
}

/** The lock's owner, or null while there is no lock (or it is being removed). */
function readOwner(lockDir) {
  let text;
  try {
    text = fs.readFileSync(path.join(lockDir, OWNER), 'utf8');
  } catch (err) {
    if (err.code === 'ENOENT' || err.code === 'ENOTDIR') return null;
    throw err;
  }
  const [pid, startTime] = text.trim().split(/\s+/);
  return { pid: Number(pid), startTime: startTime || '' };
}

function tryCreate(lockDir) {
  const tmp = `${lockDir}.${process.pid}.tmp`;
  fs.rmSync(tmp, { recursive: true, force: true });
  fs.mkdirSync(tmp);
  fs.writeFileSync(path.join(tmp, OWNER), `${process.pid} ${startTimeOf(process.pid)}\n`);
  try {
    fs.renameSync(tmp, lockDir);
    return true;
  } catch (err) {
    fs.rmSync(tmp, { recursive: true, force: true });
    if (err.code === 'EEXIST' || err.code === 'ENOTEMPTY') return false;
    throw err;
  }
}

/** Moves the lock folder out of the way (atomic), then deletes it. */
function remove(lockDir) {
  const tomb = `${lockDir}.${process.pid}.removed`;
  try {
    fs.renameSync(lockDir, tomb);
  } catch (err) {
    if (err.code === 'ENOENT') return;
    throw err;
  }
  fs.rmSync(tomb, { recursive: true, force: true });
}

/**
 * Removes the lock of a dead holder. Two waiters may see the same dead holder: the takeover folder lets only one
 * of them check and remove at a time, so neither removes a lock that a third process has taken meanwhile.
 * @returns {boolean} whether the stale lock is gone
 */
function takeOver(lockDir, dead) {
  const guard = `${lockDir}.takeover`;
  try {
    fs.mkdirSync(guard);
  } catch (err) {
    if (err.code !== 'EEXIST') throw err;
    try {
      if (Date.now() - fs.statSync(guard).mtimeMs > STALE_TAKEOVER_MS) fs.rmdirSync(guard);
    } catch {
      // gone already
    }
    return false;
  }
  try {
    const owner = readOwner(lockDir);
    if (owner === null) return true;
    if (owner.pid !== dead.pid || owner.startTime !== dead.startTime) return false;
    remove(lockDir);
    return true;
  } finally {
    fs.rmdirSync(guard);
  }
}

/**
 * Takes the lock, waiting while a live process holds it. Releases it on exit (and on error, through the exit
 * handler); returns the release function for an earlier release.
 * @param {string} lockDir
 * @param {{ log?: (message: string) => void, maxWaitMs?: number, pollMs?: number }} [options]
 * @returns {() => void}
 */
function acquireLock(lockDir, options = {}) {
  const log = options.log || (() => {});
  const maxWaitMs = options.maxWaitMs === undefined ? 10 * 60_000 : options.maxWaitMs;
  const pollMs = options.pollMs || 250;
  const deadline = Date.now() + maxWaitMs;
  fs.mkdirSync(path.dirname(lockDir), { recursive: true });
  let reported = 0;
  for (;;) {
    if (tryCreate(lockDir)) break;
    const owner = readOwner(lockDir);
    if (owner === null) continue; // released between our two looks: try again at once
    if (!isAlive(owner)) {
      if (takeOver(lockDir, owner)) log(`took over the lock of a bootstrap that died (pid ${owner.pid})`);
      else sleep(20);
      continue;
    }
    if (reported !== owner.pid) {
      reported = owner.pid;
      log(`waiting for another bootstrap (pid ${owner.pid})`);
    }
    if (Date.now() >= deadline) {
      throw new Error(
        `another bootstrap (pid ${owner.pid}) has held ${lockDir} for over ${Math.round(maxWaitMs / 1000)} s; ` +
          `if no bootstrap is running, remove that folder and try again`,
      );
    }
    sleep(pollMs);
  }

  let held = true;
  const release = () => {
    if (!held) return;
    held = false;
    process.removeListener('exit', release);
    const owner = readOwner(lockDir);
    // Never remove a lock that is not ours (it was taken over, wrongly, while we held it).
    if (owner && owner.pid === process.pid) remove(lockDir);
  };
  // Runs on process.exit() and a normal end; a fatal signal skips it, and the next bootstrap takes the lock over.
  process.on('exit', release);
  return release;
}

module.exports = { acquireLock };
