/**
 * The real services the project runs itself in development, tests and benchmarks. This module never reads the
 * environment: callers pass MONGO_URL / REDIS_URL from their own parsed configuration.
 */
import { startMongo, type MongoService, type StartMongoOptions } from './mongo.ts';
import { startRedis, type RedisService, type StartRedisOptions } from './redis.ts';

export { startMongo, type MongoService, type MongoStorage, type StartMongoOptions } from './mongo.ts';
export { startRedis, type RedisService, type StartRedisOptions } from './redis.ts';
export { startMosquitto, type StartMosquittoOptions } from './mosquitto.ts';
export {
  findFreePort,
  isProcessAlive,
  waitForProcessesGone,
  ServiceStartError,
  spawnNode,
  spawnService,
  withPortRetry,
  type ExitStatus,
  type RunningService,
  type ServiceProcess,
  type SpawnServiceOptions,
} from './process.ts';

export interface StartServicesOptions {
  /** With a `url` (MONGO_URL) nothing is started and that server is used. */
  readonly mongo: StartMongoOptions & { readonly url?: string | undefined };
  /** With a `url` (REDIS_URL) nothing is started and that server is used. */
  readonly redis: StartRedisOptions & { readonly url?: string | undefined };
}

export interface Services {
  readonly mongoUrl: string;
  readonly redisUrl: string;
  /** What this call started (undefined where a URL was given). */
  readonly mongo: MongoService | undefined;
  readonly redis: RedisService | undefined;
  /** Stops what this call started; servers given by URL are left alone. */
  stop(): Promise<void>;
}

/** Starts MongoDB (the stand-in) and Redis side by side unless URLs are given; on a failure stops what started. */
export async function startServices(options: StartServicesOptions): Promise<Services> {
  const { url: mongoUrl, ...mongoOptions } = options.mongo;
  const { url: redisUrl, ...redisOptions } = options.redis;
  const [mongo, redis] = await Promise.allSettled([
    mongoUrl ? undefined : startMongo(mongoOptions),
    redisUrl ? undefined : startRedis(redisOptions),
  ]);
  if (mongo.status === 'rejected' || redis.status === 'rejected') {
    const stops = [mongo, redis].map((r) => (r.status === 'fulfilled' ? r.value?.stop() : undefined));
    await Promise.all(stops.filter((stop) => stop !== undefined));
    const failure = mongo.status === 'rejected' ? mongo : redis;
    throw (failure as PromiseRejectedResult).reason;
  }
  const started = { mongo: mongo.value, redis: redis.value };
  return {
    // One of the two is always set: a service is started exactly when its URL is missing.
    mongoUrl: started.mongo?.url ?? mongoUrl ?? '',
    redisUrl: started.redis?.url ?? redisUrl ?? '',
    ...started,
    stop: async () => {
      await Promise.all([started.mongo, started.redis].map((service) => service?.stop() ?? Promise.resolve()));
    },
  };
}
