/**
 * Mocha root-hook plugin (required by .mocharc.cjs): ONE in-memory MongoDB stand-in and ONE redis-server for the
 * whole run, started before the first test (~1 s) and stopped after the last. Suites reach them through
 * testServices() in ./services.ts.
 *
 * MONGO_URL / REDIS_URL, when set, point the run at existing servers instead (e.g. a real MongoDB 7); this file is
 * the one place in the test harness that reads them.
 */
import type { Context } from 'mocha';
import { startMongo, startRedis, type RunningService } from '../../tools/services/index.ts';
import { setTestServices } from './services.ts';

const started: RunningService[] = [];

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
  },
};
