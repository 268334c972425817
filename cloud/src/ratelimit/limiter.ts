/**
 * Rate limiters shared by all API and broker nodes: rate-limiter-flexible on the cloud's Redis (its ioredis client,
 * so keys carry REDIS_KEY_PREFIX). One factory for every limit of the cloud — the general API limit here, and the
 * broker's CONNECT throttle (createRedisRateLimiter({ name: 'mqtt-connect', … }) keyed by client address).
 *
 * Redis down (decided): the limiter keeps counting in this node's memory (rate-limiter-flexible's insurance
 * limiter) with the same points, so a flood is still bounded — per node instead of per cluster — and the API does
 * not go down because its limiter's store did. Failing open would let a flood through exactly when the system is
 * weakest; failing closed would turn a Redis blip into a full outage of routes that may not need Redis at all. The
 * routes that must fail closed (login: RELIABILITY C3) do so in their own domain. With the cloud's fail-fast client
 * (no offline queue, 500 ms command deadline) the fallback is immediate while Redis is unreachable.
 */
import type { Redis } from 'ioredis';
import { RateLimiterMemory, RateLimiterRedis, RateLimiterRes } from 'rate-limiter-flexible';

export interface RedisRateLimiterOptions {
  redis: Redis;
  /** Names the limit in Redis keys: `<REDIS_KEY_PREFIX>rl:<name>:<key>`. */
  name: string;
  /** Points (requests) allowed per window. */
  points: number;
  windowS: number;
  /** Called each time a decision is taken in memory because Redis did not answer. */
  onFallback?: () => void;
}

/** The insurance store: counts in memory, and tells its owner each time it is used. */
class FallbackMemoryLimiter extends RateLimiterMemory {
  readonly #onUse: (() => void) | undefined;
  constructor(options: { points: number; duration: number; keyPrefix: string }, onUse: (() => void) | undefined) {
    super(options);
    this.#onUse = onUse;
  }
  override consume(...args: Parameters<RateLimiterMemory['consume']>): Promise<RateLimiterRes> {
    this.#onUse?.();
    return super.consume(...args);
  }
}

export function createRedisRateLimiter({
  redis,
  name,
  points,
  windowS,
  onFallback,
}: RedisRateLimiterOptions): RateLimiterRedis {
  const keyPrefix = `rl:${name}`;
  return new RateLimiterRedis({
    storeClient: redis,
    keyPrefix,
    points,
    duration: windowS,
    // Not ready (reconnecting) → straight to the insurance limiter rather than a doomed command.
    rejectIfRedisNotReady: true,
    // A key over its limit is refused from memory until its window ends: a flood costs no Redis round trips.
    inMemoryBlockOnConsumed: points,
    insuranceLimiter: new FallbackMemoryLimiter({ points, duration: windowS, keyPrefix }, onFallback),
  });
}

export interface RateDecision {
  allowed: boolean;
  limit: number;
  remaining: number;
  /** Milliseconds until the window resets (and, when refused, until a request may succeed). */
  resetMs: number;
}

/** Consumes one point for `key`; a refusal is a decision, not an exception. */
export async function consumePoint(limiter: RateLimiterRedis, key: string): Promise<RateDecision> {
  try {
    const res = await limiter.consume(key, 1);
    return { allowed: true, limit: limiter.points, remaining: res.remainingPoints, resetMs: res.msBeforeNext };
  } catch (err) {
    if (!(err instanceof RateLimiterRes)) throw err;
    return { allowed: false, limit: limiter.points, remaining: 0, resetMs: err.msBeforeNext };
  }
}
