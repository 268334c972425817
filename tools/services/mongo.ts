/**
 * The MongoDB-compatible server used when no MONGO_URL is given: mongo-java-server behind our launcher
 * (tools/mongo-stand-in), in memory for tests or on an H2 file for `npm start`. Measured start to ready: 0.3–1.1 s.
 */
import { createRequire } from 'node:module';
import path from 'node:path';
import { MongoClient } from 'mongodb';
import { remaining, spawnService, type OutputStream, type RunningService } from './process.ts';

export type MongoStorage = { readonly kind: 'memory' } | { readonly kind: 'h2'; readonly file: string };

export interface StartMongoOptions {
  readonly storage: MongoStorage;
  /** Default 0: the launcher binds a free port itself and reports it, so no port race and no retry. */
  readonly port?: number;
  /** Default 60 s: the JVM is ready in ~1 s, but a loaded CI machine is slower. */
  readonly readyTimeoutMs?: number;
  /** The repository root (where .cache/ and tools/mongo-stand-in live); defaults to this checkout's. */
  readonly rootDir?: string;
  /** Progress of the one-time build (Maven fetch, javac). */
  readonly log?: (message: string) => void;
  readonly onLine?: (line: string, stream: OutputStream) => void;
  /** Default false: run in a process group of its own, out of reach of a terminal's Ctrl-C (see spawnService). */
  readonly detached?: boolean;
}

export interface MongoService extends RunningService {
  readonly storage: MongoStorage;
}

interface MongoStandInBuild {
  ensureMongoStandIn(rootDir: string, log?: (message: string) => void): { classpath: string; mainClass: string };
}

const require = createRequire(import.meta.url);
const repoRoot = path.resolve(import.meta.dirname, '..', '..');
const READY_LINE = /^mongo-stand-in ready 127\.0\.0\.1:(\d+)$/;

export async function startMongo(options: StartMongoOptions): Promise<MongoService> {
  const rootDir = options.rootDir ?? repoRoot;
  const deadline = Date.now() + (options.readyTimeoutMs ?? 60_000);
  const build = require(path.join(rootDir, 'scripts', 'bootstrap', 'mongo-stand-in.cjs')) as MongoStandInBuild;
  // Synchronous: a no-op after the first build (two stamp reads); the first build happens in the bootstrap.
  const { classpath, mainClass } = build.ensureMongoStandIn(rootDir, options.log);

  const storageArgs = options.storage.kind === 'memory' ? ['--memory'] : ['--h2', path.resolve(options.storage.file)];
  const proc = await spawnService({
    name: 'mongo-stand-in',
    command: 'java',
    args: [
      // A heap limit keeps RSS bounded (without one, 1.5 GiB after 100k documents; 277 MiB with 256m). 256m was
      // too little both ways: in memory (every document on the heap) the test suite ran out at ~62k uplink records
      // in the fault tests, and on H2 npm start's hub ran out in a 2,000-machine rush-hour run of the simulator
      // (`Terminating due to java.lang.OutOfMemoryError`; the stand-in scans whole collections where MongoDB would
      // use a secondary index, and holds the results). Both get 1.5 GiB.
      '-Xmx1536m',
      '-XX:+UseSerialGC',
      '-XX:+ExitOnOutOfMemoryError',
      '-cp',
      classpath,
      mainClass,
      '--port',
      String(options.port ?? 0),
      ...storageArgs,
      // Second guard beside pdeathsig: the launcher exits when our end of its stdin closes.
      '--exit-on-stdin-eof',
    ],
    cwd: rootDir,
    stdinPipe: true,
    ...(options.onLine ? { onLine: options.onLine } : {}),
    detached: options.detached ?? false,
  });

  try {
    const match = await proc.waitForLine(READY_LINE, remaining(deadline));
    const port = Number(match[1]);
    const url = `mongodb://127.0.0.1:${port}`;
    await proc.waitUntil(() => ping(url, remaining(deadline)), remaining(deadline));
    return {
      url,
      port,
      pid: proc.pid,
      exited: proc.exited,
      storage: options.storage,
      // Exit code 143 (SIGTERM) is the launcher's clean stop: its shutdown hook closes clients and the H2 file.
      stop: async () => void (await proc.stop()),
    };
  } catch (err) {
    await proc.stop(0);
    throw err;
  }
}

/**
 * A real driver round trip. No `serverApi` option: with it the driver sends `hello`, which the stand-in does not
 * know; without it the handshake is the legacy isMaster, answered with our wire version 21.
 */
async function ping(url: string, timeoutMs: number): Promise<boolean> {
  const client = new MongoClient(url, {
    serverSelectionTimeoutMS: Math.min(timeoutMs, 5_000),
    connectTimeoutMS: Math.min(timeoutMs, 5_000),
    maxPoolSize: 1,
  });
  try {
    const reply = await client.db('admin').command({ ping: 1 });
    return reply.ok === 1;
  } finally {
    await client.close();
  }
}
