/**
 * What bench:api measures against, each in a process of its own: the MongoDB-compatible server (in memory), Redis,
 * the cloud (`node cloud/src/main.ts`, as in production) and the bare node:http baseline. With `pin`, the cloud and
 * the baseline share core 0 and the generator (this process) takes core 1, so no server shares its core with its
 * load — but argon2's worker threads are then confined to one core too, which halves the login ceiling on a
 * 2-core machine; unpinned is the default.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { findFreePort, spawnService, startMongo, startRedis } from '../../services/index.ts';
import { pin } from '../system.ts';
import { startCloudOnPort } from '../cloud-process.ts';

const root = path.resolve(import.meta.dirname, '../../..');

export interface Stack {
  cloudUrl: string;
  /** The cloud's database (provisioning what no API may create, e.g. an observer identity). */
  mongoUrl: string;
  bareUrl: string;
  cloudPid: number;
  barePid: number;
  /** Whether the servers and the generator run on cores of their own. */
  pinned: boolean;
  /** Environment the cloud was started with beyond its defaults (for the report). */
  cloudEnv: Record<string, string>;
  stop(): Promise<void>;
}

/** The cloud's limits for the bench: the general and login-IP limits would otherwise be what is measured. */
export const BENCH_CLOUD_ENV: Record<string, string> = {
  API_RATE_LIMIT_PER_IP: '10000000',
  API_RATE_LIMIT_PER_USER: '10000000',
  LOG_LEVEL: 'warn',
};

export async function startStack(log: (message: string) => void, { pinCores = false } = {}): Promise<Stack> {
  const stops: (() => Promise<unknown>)[] = [];
  const stop = async () => {
    for (const s of stops.reverse()) await s().catch(() => undefined);
  };
  try {
    log('starting MongoDB-compatible server (memory) and Redis');
    const [mongo, redis] = await Promise.all([startMongo({ storage: { kind: 'memory' } }), startRedis({})]);
    stops.push(
      () => mongo.stop(),
      () => redis.stop(),
    );
    const tmp = await mkdtemp(path.join(os.tmpdir(), 'nxg-bench-api-'));
    stops.push(() => rm(tmp, { recursive: true, force: true }));

    const port = await findFreePort();
    const cloudEnv = { ...BENCH_CLOUD_ENV };
    log('starting the cloud');
    const { proc: cloud, url: cloudUrl } = await startCloudOnPort(
      {
        dir: tmp,
        mongoUrl: `${mongo.url}/nxg_bench_api`,
        redisUrl: redis.url,
        keyPrefix: 'bench-api:',
        httpPort: port,
        env: cloudEnv,
      },
      (proc) => stops.push(() => proc.stop(5000)),
    );

    const bare = await spawnService({
      name: 'bare node:http',
      command: process.execPath,
      args: [path.join(import.meta.dirname, 'bare-server.ts')],
      cwd: root,
      stdinPipe: true,
    });
    stops.push(() => bare.stop(2000));
    const [, barePort] = await bare.waitForLine(/^listening (\d+)$/, 10_000);

    const pinned =
      pinCores && os.availableParallelism() >= 2 && pin(cloud.pid, '0') && pin(bare.pid, '0') && pin(process.pid, '1');
    return {
      cloudUrl,
      mongoUrl: `${mongo.url}/nxg_bench_api`,
      bareUrl: `http://127.0.0.1:${barePort}`,
      cloudPid: cloud.pid,
      barePid: bare.pid,
      pinned,
      cloudEnv,
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}
