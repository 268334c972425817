/**
 * Builds and starts the whole cloud process from its configuration: connections, health, metrics, the HTTP API.
 * main.ts calls it with the parsed environment; tests call it in-process with their own services.
 */
import { setTimeout as delay } from 'node:timers/promises';
import type { Connection } from 'mongoose';
import type { Redis } from 'ioredis';
import type { Clock } from '../../tools/runtime/clock.ts';
import type { Logger } from '../../tools/runtime/logger.ts';
import type { CloudConfig } from './config.ts';
import { connectMongo, mongoHealthCheck } from './db/mongo.ts';
import { closeRedis, connectRedis, redisHealthCheck } from './db/redis.ts';
import { createHealth, type Health } from './health/health.ts';
import { healthRoutes } from './health/routes.ts';
import { createApp } from './http/app.ts';
import { listen, type HttpServer } from './http/server.ts';
import { createMetrics, type CloudMetrics } from './metrics/metrics.ts';
import { metricsRoutes } from './metrics/routes.ts';
import { version } from './version.ts';

export interface RunningCloud {
  url: string;
  port: number;
  mongo: Connection;
  redis: Redis;
  health: Health;
  metrics: CloudMetrics;
  /** Graceful: /health turns 503, in-flight requests finish (within the grace period), then connections close. */
  stop(): Promise<void>;
}

export async function startCloud({
  config,
  log,
  clock,
}: {
  config: CloudConfig;
  log: Logger;
  clock: Clock;
}): Promise<RunningCloud> {
  // Whatever was opened is closed again if a later step fails, so a failed start leaves no reconnecting client
  // or timer behind (in a test process that would keep mocha alive).
  const opened: (() => Promise<unknown>)[] = [];
  try {
    const mongo = await connectMongo({ ...config.mongo, log: log.child({ module: 'mongo' }) });
    opened.push(() => mongo.close());
    const redis = await connectRedis({ ...config.redis, name: 'nxg-cloud', log: log.child({ module: 'redis' }) });
    opened.push(() => closeRedis(redis));

    const metrics = createMetrics();
    const health = createHealth({
      clock,
      timeoutMs: config.health.checkTimeoutMs,
      version,
      log: log.child({ module: 'health' }),
    });
    health.add(mongoHealthCheck(mongo));
    health.add(redisHealthCheck(redis));

    const app = createApp({
      config: config.http,
      log: log.child({ module: 'http' }),
      metrics,
      version,
      routes: [...healthRoutes(health), ...metricsRoutes(metrics, config.metrics)],
    });
    const http = await listen(app, config.http);
    log.info({ url: http.url }, 'cloud API listening');
    return running({ config, log, http, mongo, redis, health, metrics });
  } catch (err) {
    await Promise.allSettled(opened.reverse().map((close) => close()));
    throw err;
  }
}

function running({
  config,
  log,
  http,
  mongo,
  redis,
  health,
  metrics,
}: {
  config: CloudConfig;
  log: Logger;
  http: HttpServer;
  mongo: Connection;
  redis: Redis;
  health: Health;
  metrics: CloudMetrics;
}): RunningCloud {
  let stopping: Promise<void> | undefined;
  return {
    url: http.url,
    port: http.port,
    mongo,
    redis,
    health,
    metrics,
    stop() {
      stopping ??= (async () => {
        health.markShuttingDown();
        // Keep serving while load balancers notice the 503 on /health, then stop accepting.
        if (config.http.shutdownDrainDelayMs > 0) await delay(config.http.shutdownDrainDelayMs);
        await http.close(config.http.shutdownGraceMs);
        await Promise.allSettled([mongo.close(), closeRedis(redis)]);
        log.info('cloud stopped');
      })();
      return stopping;
    },
  };
}
