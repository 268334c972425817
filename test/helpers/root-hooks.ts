/**
 * Mocha root-hook plugin (required by .mocharc.cjs): ONE in-memory MongoDB stand-in and ONE redis-server for the
 * whole run, started before the first test (~1 s) and stopped after the last. Suites reach them through
 * testServices() in ./services.ts.
 *
 * MONGO_URL / REDIS_URL, when set, point the run at existing servers instead (e.g. a real MongoDB 7); this file is
 * the one place in the test harness that reads them.
 *
 * Mocha runs without --exit: the process ends when the last test closed what it opened. A handle left open would
 * keep it alive for as long as the handle lives (an hour in CI): so a run still alive LEAK_GRACE_MS after its last
 * hook prints what keeps it alive and exits with code 1 (or mocha's failure count), a failed run rather than a hung
 * one, or a silent `--exit` that hides the leak.
 */
import type { Context } from 'mocha';
import { startMongo, startRedis, type RunningService } from '../../tools/services/index.ts';
import { setTestServices } from './services.ts';

const started: RunningService[] = [];

/** How long the process may take to end by itself after the run: closing sockets, children exiting. */
const LEAK_GRACE_MS = 30_000;

/** One line per handle that keeps the process alive (sockets, servers, children; timers are only counted). */
function describeLiveHandles(): string {
  const lines = [`active resources: ${process.getActiveResourcesInfo().join(', ')}`];
  // Node's undocumented list of libuv handles: addresses and pids say whose they are.
  const handles = (process as unknown as { _getActiveHandles?: () => unknown[] })._getActiveHandles?.() ?? [];
  for (const handle of handles) {
    if (handle === process.stdout || handle === process.stderr || handle === process.stdin) continue;
    const h = handle as {
      constructor?: { name?: string };
      remoteAddress?: string;
      remotePort?: number;
      localPort?: number;
      pid?: number;
      spawnargs?: string[];
      address?: () => unknown;
    };
    const kind = h.constructor?.name ?? typeof handle;
    if (h.spawnargs) lines.push(`${kind} pid ${h.pid}: ${h.spawnargs.join(' ').slice(0, 200)}`);
    else if (h.remotePort !== undefined) lines.push(`${kind} :${h.localPort} → ${h.remoteAddress}:${h.remotePort}`);
    else if (typeof h.address === 'function') lines.push(`${kind} listening on ${JSON.stringify(h.address())}`);
    else lines.push(kind);
  }
  return lines.join('\n  ');
}

/** After the run: if something still keeps the process alive LEAK_GRACE_MS later, say what and end the run. */
function exitIfStillAlive(): void {
  // In a --parallel worker the pool keeps the process for the next file: not a leak.
  if (process.env.MOCHA_WORKER_ID !== undefined) return;
  setTimeout(() => {
    process.stderr.write(
      `\nThe test run ended ${LEAK_GRACE_MS / 1000} s ago, but something a test opened still keeps the process ` +
        `alive (a timer, socket, server or child process not closed):\n  ${describeLiveHandles()}\n`,
    );
    // After mocha's own 'exit' listener, which sets the exit code to the failure count.
    process.once('exit', () => {
      process.exitCode = Math.max(Number(process.exitCode ?? 0), 1);
    });
    process.exit(1);
  }, LEAK_GRACE_MS).unref();
}

async function startOrUse(url: string | undefined, start: () => Promise<RunningService>): Promise<string> {
  if (url) return url;
  const service = await start();
  started.push(service);
  return service.url;
}

export const mochaHooks = {
  async beforeAll(this: Context): Promise<void> {
    // The first run on a machine may fetch the stand-in's jars with Maven (5-25 s) before the JVM starts.
    this.timeout(180_000);
    // allSettled: when one fails, the other must have finished starting (and be in `started`) before afterAll
    // runs, or it would be left running and keep mocha alive.
    const [mongo, redis] = await Promise.allSettled([
      // Suites append `/${uniqueDbName(…)}`: a trailing slash in MONGO_URL would make that `//db`.
      startOrUse(process.env.MONGO_URL?.replace(/\/+$/, ''), () => startMongo({ storage: { kind: 'memory' } })),
      startOrUse(process.env.REDIS_URL, () => startRedis()),
    ]);
    if (mongo.status === 'rejected') throw mongo.reason;
    if (redis.status === 'rejected') throw redis.reason;
    setTestServices({ mongoUrl: mongo.value, redisUrl: redis.value });
  },

  async afterAll(this: Context): Promise<void> {
    this.timeout(30_000);
    setTestServices(undefined);
    await Promise.all(started.splice(0).map((service) => service.stop()));
    exitIfStillAlive();
  },
};
