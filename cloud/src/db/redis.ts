/**
 * The Redis client (ioredis). Commands fail fast while Redis is down — a 500 ms deadline and no offline queue —
 * instead of ioredis' defaults, which kept a login's rate-limit check waiting through ~20 reconnect attempts
 * (RELIABILITY finding 8). Callers turn the failure into a 503.
 */
import { Redis } from 'ioredis';
import type { Logger } from '../../../tools/runtime/logger.ts';
import type { HealthCheck } from '../health/health.ts';

export interface RedisOptions {
  url: string;
  commandTimeoutMs: number;
  log: Logger;
  /** Client name shown by CLIENT LIST, for operators. */
  name: string;
  /** Prepended to every key (ioredis keyPrefix): several deployments or test runs can share one Redis. */
  keyPrefix?: string;
}

export async function connectRedis({ url, commandTimeoutMs, log, name, keyPrefix }: RedisOptions): Promise<Redis> {
  const redis = new Redis(url, {
    connectionName: name,
    ...(keyPrefix ? { keyPrefix } : {}),
    commandTimeout: commandTimeoutMs,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
    lazyConnect: true,
    // Reconnect forever with a capped, jittered backoff: Redis coming back must not need a restart of ours.
    retryStrategy: (attempt) => Math.min(2000, 50 * 2 ** Math.min(attempt, 6)) + Math.floor(Math.random() * 100),
  });
  let lastError = '';
  redis.on('error', (err: Error) => {
    // ioredis emits one error per failed reconnect: log each distinct message once.
    if (err.message !== lastError) log.warn({ err: { message: err.message } }, 'redis error');
    lastError = err.message;
  });
  redis.on('ready', () => {
    if (lastError) log.info('redis ready again');
    lastError = '';
  });
  try {
    await redis.connect();
  } catch (err) {
    // Without this the client would go on reconnecting in the background after the caller gave up.
    redis.disconnect();
    throw err;
  }
  log.info('redis connected');
  return redis;
}

export function redisHealthCheck(redis: Redis): HealthCheck {
  return {
    name: 'redis',
    async check() {
      if (redis.status !== 'ready') throw new Error(`not connected (${redis.status})`);
      await redis.ping();
    },
  };
}

/** QUIT, then wait until the socket is really closed (status 'end'), so shutdown ends with nothing open. */
export async function closeRedis(redis: Redis, timeoutMs = 2000): Promise<void> {
  if (redis.status === 'end') return;
  const ended = new Promise<void>((resolve) => {
    const timer = setTimeout(() => {
      redis.disconnect();
      resolve();
    }, timeoutMs);
    redis.once('end', () => {
      clearTimeout(timer);
      resolve();
    });
  });
  await redis.quit().catch(() => redis.disconnect());
  await ended;
}
