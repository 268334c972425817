/**
 * Child processes for the real services we run ourselves (MongoDB stand-in, redis-server, mosquitto): used by
 * `npm start`, the test harness and the benchmarks alike.
 *
 * No orphans, even when we die by SIGKILL: every service runs under `setpriv --pdeathsig SIGKILL`, so the kernel
 * kills it when our thread that spawned it goes away. Two things to know about that signal:
 *   - it belongs to the *thread* that forked the child: spawn services from the main thread, not a worker thread
 *     (the service would die with the worker);
 *   - the kernel clears it when the service changes its user id (mosquitto started as root drops to its own user
 *     unless told `user root`, see mosquitto.ts).
 * A `process.on('exit')` SIGKILL of every live child is a second guard for ordinary exits.
 *
 * `detached: true` puts a service in a process group (and session) of its own. A terminal's Ctrl-C goes to its
 * foreground process group: a service in ours would get that SIGINT too and stop on its own, in no order, while
 * we are still using it. In its own group it only hears from us: the parent stops it when it is done with it
 * (stop()). The child is not unref()'d and keeps its parent-death signal, so detached never means orphaned.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { accessSync, constants, readFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { createInterface } from 'node:readline';

/** What a started service hands back. `stop()` resolves once the process has exited. */
export interface RunningService {
  readonly url: string;
  readonly port: number;
  readonly pid: number;
  /** Resolves when the process exits, for whatever reason (a caller that did not stop it learns it died). */
  readonly exited: Promise<ExitStatus>;
  stop(): Promise<void>;
}

export interface ExitStatus {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

export type OutputStream = 'stdout' | 'stderr';

export interface SpawnServiceOptions {
  /** Used in messages, e.g. 'redis-server'. */
  readonly name: string;
  /** An absolute path or a name looked up on PATH (and the sbin folders). */
  readonly command: string;
  readonly args: readonly string[];
  readonly cwd?: string;
  readonly env?: NodeJS.ProcessEnv;
  /** Keep a pipe on the child's stdin open for its whole life, for children that exit on EOF (parent-death watch). */
  readonly stdinPipe?: boolean;
  /**
   * The child writes to our stdout/stderr directly instead of through pipes to us: its output then survives our
   * death (a child draining after we were killed would otherwise write into a closed pipe). No onLine, no
   * recentOutput, no waitForLine then.
   */
  readonly inheritOutput?: boolean;
  /** Every output line, e.g. to pass the service's log through. The last lines are kept for errors regardless. */
  readonly onLine?: (line: string, stream: OutputStream) => void;
  /**
   * Default false. True: the service runs in a process group of its own, so a Ctrl-C (SIGINT to the terminal's
   * foreground group) reaches only the parent, which then stops its services in order. Still killed with the
   * parent (pdeathsig) and by stop().
   */
  readonly detached?: boolean;
  /**
   * What the child gets when we die. Default SIGKILL (a database loses nothing it acknowledged); SIGTERM for a
   * child of ours that should drain first, such as the cloud under npm start.
   */
  readonly parentDeathSignal?: 'SIGKILL' | 'SIGTERM';
}

export interface ServiceProcess {
  readonly name: string;
  readonly pid: number;
  /** Settles after the process has exited and its output has been read to the end. */
  readonly exited: Promise<ExitStatus>;
  exitStatus(): ExitStatus | null;
  /** The last lines of stdout and stderr, for error messages. */
  recentOutput(): string;
  /** Resolves with the first line (already seen or to come) matching `pattern`. */
  waitForLine(pattern: RegExp, timeoutMs: number): Promise<RegExpExecArray>;
  /** Calls `probe` until it resolves true; rejects when the process exits or the deadline passes. */
  waitUntil(probe: () => Promise<boolean>, timeoutMs: number, intervalMs?: number): Promise<void>;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves once the process has exited. */
  stop(graceMs?: number): Promise<ExitStatus>;
}

/** A service that exited or did not become ready; `output` holds its last lines. */
export class ServiceStartError extends Error {
  readonly service: string;
  readonly output: string;
  /** The service reported that its port was taken: worth another try on another port. */
  readonly addressInUse: boolean;

  constructor(service: string, message: string, output: string, options?: ErrorOptions) {
    super(output ? `${message}\n--- last output of ${service} ---\n${output}` : message, options);
    this.name = 'ServiceStartError';
    this.service = service;
    this.output = output;
    this.addressInUse = /address already in use|EADDRINUSE/i.test(output);
  }
}

const OUTPUT_LINES = 50;
export const DEFAULT_STOP_GRACE_MS = 5_000;

const live = new Set<ChildProcess>();
let exitGuardInstalled = false;

function installExitGuard(): void {
  if (exitGuardInstalled) return;
  exitGuardInstalled = true;
  // Runs on process.exit() and a normal end; a fatal signal skips it, which is what pdeathsig is for.
  process.on('exit', () => {
    for (const child of live) child.kill('SIGKILL');
  });
}

const SBIN_DIRS = ['/usr/local/sbin', '/usr/sbin', '/sbin'];

/**
 * Finds an executable on PATH or in the sbin folders (mosquitto lives in /usr/sbin, often not on a user's PATH).
 * The bootstrap's findExecutable (scripts/bootstrap/shell.cjs, which must run on Node 20) searches the same folders
 * in the same order: keep the two alike.
 */
export function findExecutable(name: string): string | undefined {
  if (name.includes('/')) return name;
  const dirs = [...(process.env.PATH ?? '').split(path.delimiter), ...SBIN_DIRS];
  for (const dir of dirs) {
    if (!dir) continue;
    const candidate = path.join(dir, name);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  return undefined;
}

/** Like findExecutable, but fails with the Debian package that provides the command. */
export function requireExecutable(name: string, debianPackage: string): string {
  const found = findExecutable(name);
  if (!found) {
    throw new Error(`\`${name}\` was not found on PATH: install it with apt-get install -y ${debianPackage}`);
  }
  return found;
}

let setprivPath: string | undefined;

function setpriv(): string {
  if (setprivPath) return setprivPath;
  const found = requireExecutable('setpriv', 'util-linux');
  // --pdeathsig came with util-linux 2.33; an older setpriv would fail each start with an unclear usage error.
  const help = spawnSync(found, ['--help'], { encoding: 'utf8' });
  if (!`${help.stdout}`.includes('--pdeathsig')) {
    throw new Error(`${found} does not support --pdeathsig (util-linux >= 2.33 needed)`);
  }
  setprivPath = found;
  return found;
}

/**
 * Starts a service child under `setpriv --pdeathsig SIGKILL` (or the given parentDeathSignal). Resolves once the process is spawned (not ready:
 * see waitForLine / waitUntil); the pid is the service's own, since setpriv execs it.
 */
export async function spawnService(options: SpawnServiceOptions): Promise<ServiceProcess> {
  const command = findExecutable(options.command);
  if (!command) throw new Error(`${options.name}: \`${options.command}\` was not found on PATH`);
  const deathSignal = options.parentDeathSignal ?? 'SIGKILL';
  const child = spawn(setpriv(), ['--pdeathsig', deathSignal, '--', command, ...options.args], {
    cwd: options.cwd,
    env: options.env ?? process.env,
    stdio: [
      options.stdinPipe ? 'pipe' : 'ignore',
      ...(options.inheritOutput ? (['inherit', 'inherit'] as const) : (['pipe', 'pipe'] as const)),
    ],
    // setsid() in the child: a new session and process group, led by the service (setpriv execs it, same pid).
    // Never unref()'d: we wait for it, stop it, and kill it on exit like any other child.
    detached: options.detached ?? false,
  });
  await new Promise<void>((resolve, reject) => {
    child.once('spawn', resolve);
    child.once('error', (err) => reject(new Error(`${options.name}: cannot start ${command}: ${err.message}`)));
  });
  const pid = child.pid;
  if (pid === undefined) throw new Error(`${options.name}: spawned without a pid`);
  installExitGuard();
  live.add(child);
  // A late 'error' (e.g. a kill after exit) must not become an uncaught exception.
  child.on('error', () => {});
  // Writes to a dead child's stdin fail with EPIPE; nothing is ever written, but keep that quiet too.
  child.stdin?.on('error', () => {});

  const lines: { stream: OutputStream; line: string }[] = [];
  const lineListeners = new Set<(line: string) => void>();
  const onLine = (stream: OutputStream) => (line: string) => {
    lines.push({ stream, line });
    if (lines.length > OUTPUT_LINES) lines.shift();
    options.onLine?.(line, stream);
    for (const listener of lineListeners) listener(line);
  };
  if (child.stdout) createInterface({ input: child.stdout, crlfDelay: Infinity }).on('line', onLine('stdout'));
  if (child.stderr) createInterface({ input: child.stderr, crlfDelay: Infinity }).on('line', onLine('stderr'));

  let status: ExitStatus | null = null;
  // 'close' comes after 'exit' once stdout/stderr are drained: an early exit's last words ("Address already in
  // use") are then in `lines` when the waiters reject.
  const exited = new Promise<ExitStatus>((resolve) => {
    child.once('close', (code, signal) => {
      status = { code, signal };
      live.delete(child);
      resolve(status);
    });
  });
  const name = options.name;
  const recentOutput = () =>
    lines.map(({ stream, line }) => (stream === 'stderr' ? `[stderr] ${line}` : line)).join('\n');
  const describe = (s: ExitStatus) => (s.signal ? `was killed by ${s.signal}` : `exited with code ${s.code}`);
  const exitedEarly = (s: ExitStatus) =>
    new ServiceStartError(name, `${name} ${describe(s)} before it was ready`, recentOutput());

  function waitForLine(pattern: RegExp, timeoutMs: number): Promise<RegExpExecArray> {
    for (const { line } of lines) {
      const match = pattern.exec(line);
      if (match) return Promise.resolve(match);
    }
    return new Promise((resolve, reject) => {
      const done = () => {
        clearTimeout(timer);
        lineListeners.delete(listener);
      };
      const listener = (line: string) => {
        const match = pattern.exec(line);
        if (!match) return;
        done();
        resolve(match);
      };
      const timer = setTimeout(() => {
        done();
        reject(new ServiceStartError(name, `${name} printed no ${pattern} within ${timeoutMs} ms`, recentOutput()));
      }, timeoutMs);
      lineListeners.add(listener);
      void exited.then((s) => {
        if (!lineListeners.has(listener)) return;
        done();
        reject(exitedEarly(s));
      });
    });
  }

  async function waitUntil(probe: () => Promise<boolean>, timeoutMs: number, intervalMs = 25): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let lastError = '';
    const notReady = () => {
      const why = lastError ? ` (last probe: ${lastError})` : '';
      return new ServiceStartError(name, `${name} was not ready within ${timeoutMs} ms${why}`, recentOutput());
    };
    // A probe that hangs (a port that accepts and never answers) must not carry us past the deadline.
    let deadlineTimer: NodeJS.Timeout | undefined;
    const deadlinePassed = new Promise<{ late: true }>((resolve) => {
      deadlineTimer = setTimeout(() => resolve({ late: true }), timeoutMs);
    });
    const exitedFirst = exited.then((s) => ({ exit: s }));
    try {
      for (;;) {
        if (status) throw exitedEarly(status);
        const outcome = await Promise.race([
          probe().then(
            (ok) => ({ ok }),
            (err: unknown) => ({ ok: false, error: err instanceof Error ? err.message : String(err) }),
          ),
          exitedFirst,
          deadlinePassed,
        ]);
        if ('exit' in outcome) throw exitedEarly(outcome.exit);
        if ('late' in outcome) throw notReady();
        if (outcome.ok) return;
        if ('error' in outcome && outcome.error) lastError = outcome.error;
        if (Date.now() >= deadline) throw notReady();
        await new Promise((resolve) => setTimeout(resolve, intervalMs));
      }
    } finally {
      clearTimeout(deadlineTimer);
    }
  }

  async function stop(graceMs = DEFAULT_STOP_GRACE_MS): Promise<ExitStatus> {
    if (status) return status;
    let timer: NodeJS.Timeout | undefined;
    if (graceMs > 0) {
      child.kill('SIGTERM');
      timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
    } else {
      child.kill('SIGKILL');
    }
    try {
      return await exited;
    } finally {
      clearTimeout(timer);
    }
  }

  return { name, pid, exited, exitStatus: () => status, recentOutput, waitForLine, waitUntil, stop };
}

/** A port that was free a moment ago on 127.0.0.1; another process may still take it (see withPortRetry). */
export function findFreePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => {
        if (address && typeof address === 'object') resolve(address.port);
        else reject(new Error('could not read the port of a listening socket'));
      });
    });
  });
}

/**
 * Starts a service on a free port, and on another one when it reports "address already in use": between
 * findFreePort closing its probe socket and the service binding, anything else on the machine may take the port.
 */
export async function withPortRetry<T>(start: (port: number) => Promise<T>, attempts = 3): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    const port = await findFreePort();
    try {
      return await start(port);
    } catch (err) {
      if (!(err instanceof ServiceStartError && err.addressInUse) || attempt >= attempts) throw err;
    }
  }
}

/** True while `pid` is a process that has not exited (a zombie waiting to be reaped counts as gone). */
export function isProcessAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
  try {
    // /proc/PID/stat: "PID (comm) STATE …"; comm may hold spaces and parentheses, so split at the last ')'.
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

/** Waits until none of `pids` is alive, or the time is up; resolves with those still alive (empty: all gone). */
export async function waitForProcessesGone(pids: readonly number[], timeoutMs: number): Promise<number[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const alive = pids.filter(isProcessAlive);
    if (alive.length === 0 || Date.now() >= deadline) return alive;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** Milliseconds left before `deadline` (an epoch-ms time), at least 1 so timers still fire. */
export function remaining(deadline: number): number {
  return Math.max(1, deadline - Date.now());
}

/** The repository root: where our Node entry points (cloud/src/main.ts, edge-gateway/src/main.ts …) are run from. */
const REPO_ROOT = path.resolve(import.meta.dirname, '..', '..');

/**
 * One of our Node processes (run from the repository root) with a clean environment — nothing of the caller's
 * MONGO_URL & co. leaks in; its output is kept (recentOutput) for failure messages, not printed. Under c8
 * (`npm run test:mocha`) it writes its coverage too, when it exits normally.
 */
export function spawnNode(
  name: string,
  args: string[],
  env: Record<string, string>,
  options: Pick<SpawnServiceOptions, 'onLine'> = {},
): Promise<ServiceProcess> {
  const coverage = process.env.NODE_V8_COVERAGE;
  return spawnService({
    ...options,
    name,
    command: process.execPath,
    args,
    cwd: REPO_ROOT,
    env: {
      PATH: process.env.PATH ?? '',
      HOME: process.env.HOME ?? '/tmp',
      ...(coverage ? { NODE_V8_COVERAGE: coverage } : {}),
      ...env,
    },
  });
}
