/**
 * The general limit on the REST API: per account when a guard authenticated the caller (ctx.state.user), else per
 * client address. mountRoutes (http/route.ts) runs it after each route's own guards, so it sees the user. Every
 * limited response carries RateLimit-Limit / -Remaining / -Reset (the IETF draft's fields, in seconds); a refusal is
 * a 429 problem with Retry-After as well.
 */
import type { Redis } from 'ioredis';
import type { Middleware } from 'koa';
import type { Logger } from '../../../tools/runtime/logger.ts';
import { TooManyRequests } from '../http/errors.ts';
import type { AppState } from '../http/state.ts';
import type { RateLimitConfig } from './config.ts';
import { consumePoint, createRedisRateLimiter } from './limiter.ts';

export interface ApiRateLimitOptions {
  redis: Redis;
  config: RateLimitConfig;
  log: Logger;
}

/** How often, at most, the fallback to in-memory counting is logged while Redis stays down. */
const FALLBACK_LOG_INTERVAL_MS = 60_000;

export function apiRateLimit({ redis, config, log }: ApiRateLimitOptions): Middleware<AppState> {
  let lastFallbackLog = 0;
  const onFallback = () => {
    const now = Date.now();
    if (now - lastFallbackLog < FALLBACK_LOG_INTERVAL_MS) return;
    lastFallbackLog = now;
    log.warn('rate limit: Redis unavailable, counting in this node’s memory');
  };
  const common = { redis, windowS: config.windowS, onFallback };
  const perUser =
    config.perUser > 0 ? createRedisRateLimiter({ ...common, name: 'api-user', points: config.perUser }) : undefined;
  const perIp =
    config.perIp > 0 ? createRedisRateLimiter({ ...common, name: 'api-ip', points: config.perIp }) : undefined;

  return async (ctx, next) => {
    const user = ctx.state.user;
    const limiter = user ? perUser : perIp;
    if (!limiter) {
      await next();
      return;
    }
    const decision = await consumePoint(limiter, user ? `user:${user.id}` : `ip:${ctx.ip}`);
    const resetS = Math.max(1, Math.ceil(decision.resetMs / 1000));
    const headers = {
      'RateLimit-Limit': String(decision.limit),
      'RateLimit-Remaining': String(decision.remaining),
      'RateLimit-Reset': String(resetS),
    };
    if (!decision.allowed) {
      throw new TooManyRequests(resetS, 'too many requests: slow down and retry after Retry-After seconds', headers);
    }
    ctx.set(headers);
    await next();
  };
}
