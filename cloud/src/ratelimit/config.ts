/**
 * The general API rate limit's environment variables; cloud/src/config.ts spreads them into the cloud's one parse.
 * Login and MQTT limits are their domains' own (they run before password hashing); this one bounds everything else.
 */
import type * as v from 'valibot';
import { envInt } from '../../../tools/runtime/env-config.ts';

export const rateLimitEnv = {
  /** Requests per window for an authenticated caller, counted per account across all API nodes; 0 turns it off. */
  API_RATE_LIMIT_PER_USER: envInt(600, 0, 10_000_000),
  /**
   * Requests per window for an unauthenticated caller, per client address (ctx.ip: behind TRUST_PROXY the
   * trusted X-Forwarded-For hop). Generous: a gym's members share one NAT address. 0 turns it off.
   */
  API_RATE_LIMIT_PER_IP: envInt(1200, 0, 10_000_000),
  /** Length of the fixed window both limits count in, in seconds. */
  API_RATE_LIMIT_WINDOW_S: envInt(60, 1, 86_400),
};

export type RateLimitEnv = v.InferOutput<v.ObjectSchema<typeof rateLimitEnv, undefined>>;

export interface RateLimitConfig {
  /** Points per window per user; 0: unlimited. */
  perUser: number;
  /** Points per window per client address (anonymous callers); 0: unlimited. */
  perIp: number;
  windowS: number;
}

export function rateLimitConfig(e: RateLimitEnv): RateLimitConfig {
  return { perUser: e.API_RATE_LIMIT_PER_USER, perIp: e.API_RATE_LIMIT_PER_IP, windowS: e.API_RATE_LIMIT_WINDOW_S };
}
