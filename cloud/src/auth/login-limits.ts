/**
 * Failed-login limits in Redis (shared by every API node), checked BEFORE any password hashing: an argon2 verify
 * costs ≈ 28 ms of CPU, so a flood must be turned away before it reaches one (RELIABILITY finding 7, C9).
 *
 * Two budgets per window: per account (a digest of the normalised email, whether or not it exists — a lockout must
 * not tell which emails have accounts — and Redis never lists the addresses tried) and per client address (large by
 * default: a gym's members share one NAT address; an IPv6 client counts by its /64, see addressKey).
 * A point is reserved before the verify, so concurrent attempts cannot overshoot; a successful login gives its
 * point back and clears the account's count (successful logins do not count). Redis unavailable → the caller gets
 * an error and answers 503 (fail closed, RELIABILITY C3).
 */
import { isIPv6 } from 'node:net';
import type { Redis } from 'ioredis';
import { RateLimiterRedis, RateLimiterRes } from 'rate-limiter-flexible';

/**
 * The per-address budget's key for a client address. An IPv6 client usually holds a whole /64 (SLAAC, privacy
 * addresses), so a key per address would give it 2^64 budgets: IPv6 addresses count by their /64. An IPv4-mapped
 * address (`::ffff:203.0.113.9`, from a dual-stack socket) is the IPv4 address it maps.
 */
export function addressKey(ip: string): string {
  const mapped = /^::ffff:(\d{1,3}(?:\.\d{1,3}){3})$/i.exec(ip);
  if (mapped) return mapped[1]!;
  if (!isIPv6(ip)) return ip;
  const [head = '', tail] = ip.split('%')[0]!.toLowerCase().split('::');
  const groupsOf = (part: string | undefined) => (part ? part.split(':') : []);
  const left = groupsOf(head);
  const right = groupsOf(tail);
  // An embedded IPv4 tail ("64:ff9b::192.0.2.1") stands for two groups.
  const width = (groups: string[]) => groups.reduce((n, g) => n + (g.includes('.') ? 2 : 1), 0);
  const zeros = tail === undefined ? [] : Array<string>(8 - width(left) - width(right)).fill('0');
  const prefix = [...left, ...zeros, ...right].slice(0, 4).map((g) => Number.parseInt(g, 16).toString(16));
  return `${prefix.join(':')}::/64`;
}

export interface LoginLimits {
  /** Reserves one attempt for this account and address; `retryAfterS` when either budget is spent. */
  reserve(
    accountKey: string,
    ip: string,
  ): Promise<{ allowed: true } | { allowed: false; retryAfterS: number; scope: 'account' | 'ip' }>;
  /** The attempt succeeded: return the address's point and clear the account's failures. */
  succeeded(accountKey: string, ip: string): Promise<void>;
  /** Failures left for the account in the current window (after a failure). */
  remaining(accountKey: string): Promise<number>;
  /** Forgets an account's failures (password reset, account deletion). */
  clear(accountKey: string): Promise<void>;
}

export interface LoginLimitOptions {
  redis: Redis;
  accountFailures: number;
  ipFailures: number;
  windowS: number;
}

export function createLoginLimits({ redis, accountFailures, ipFailures, windowS }: LoginLimitOptions): LoginLimits {
  const common = {
    storeClient: redis,
    duration: windowS,
    // Fail fast instead of waiting for a command timeout when the client is not connected.
    rejectIfRedisNotReady: true,
  };
  // The keys sit under the client's keyPrefix (REDIS_KEY_PREFIX) like every other key of ours.
  const perAccount = new RateLimiterRedis({ ...common, keyPrefix: 'auth:login:acct', points: accountFailures });
  const perIp = new RateLimiterRedis({ ...common, keyPrefix: 'auth:login:ip', points: ipFailures });

  async function take(limiter: RateLimiterRedis, key: string): Promise<RateLimiterRes | undefined> {
    try {
      await limiter.consume(key, 1);
      return undefined;
    } catch (res) {
      if (res instanceof RateLimiterRes) return res;
      throw res; // Redis failed: not a limit, an outage
    }
  }

  return {
    async reserve(accountKey, address) {
      const ip = addressKey(address);
      const ipLimited = await take(perIp, ip);
      if (ipLimited) return { allowed: false, retryAfterS: Math.ceil(ipLimited.msBeforeNext / 1000), scope: 'ip' };
      const accountLimited = await take(perAccount, accountKey);
      if (accountLimited) {
        await perIp.reward(ip, 1); // refused before any verify: it was not a failed password
        return { allowed: false, retryAfterS: Math.ceil(accountLimited.msBeforeNext / 1000), scope: 'account' };
      }
      return { allowed: true };
    },
    async succeeded(accountKey, address) {
      await Promise.all([perIp.reward(addressKey(address), 1), perAccount.delete(accountKey)]);
    },
    async remaining(accountKey) {
      const res = await perAccount.get(accountKey);
      return res ? Math.max(0, accountFailures - res.consumedPoints) : accountFailures;
    },
    async clear(accountKey) {
      await perAccount.delete(accountKey);
    },
  };
}
