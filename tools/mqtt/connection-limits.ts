/**
 * Per-address limits in front of authentication (RELIABILITY A5, C7), for both brokers (the cloud's and the edge
 * gateway's):
 * - connections that have not sent their CONNECT yet, counted per address at accept: past the cap, a new one is
 *   closed at once (the rest are closed by Aedes' connectTimeout), so idle sockets cannot pile up;
 * - CONNECTs per address per window, checked in preConnect, before the secret is looked up.
 */
import { RateLimiterMemory } from 'rate-limiter-flexible';

export interface ConnectionLimits {
  /** Counts a new connection from `ip`; false when that address already has too many pending. */
  admit(ip: string): boolean;
  /** The connection sent its CONNECT or closed: it no longer counts as pending. */
  release(ip: string): void;
  /** Spends one CONNECT of `ip`'s allowance; false when it is used up for this window. */
  allowConnect(ip: string): Promise<boolean>;
  /** Pending connections now, all addresses together. */
  pending(): number;
}

export function createConnectionLimits({
  maxPendingPerIp,
  connectsPerWindow,
  windowS,
}: {
  maxPendingPerIp: number;
  /** 0: no CONNECT rate limit. */
  connectsPerWindow: number;
  windowS: number;
}): ConnectionLimits {
  const pendingByIp = new Map<string, number>();
  let total = 0;
  const limiter =
    connectsPerWindow > 0 ? new RateLimiterMemory({ points: connectsPerWindow, duration: windowS }) : undefined;
  return {
    admit(ip) {
      const n = pendingByIp.get(ip) ?? 0;
      if (n >= maxPendingPerIp) return false;
      pendingByIp.set(ip, n + 1);
      total += 1;
      return true;
    },
    release(ip) {
      const n = pendingByIp.get(ip);
      if (n === undefined) return;
      total -= 1;
      if (n <= 1) pendingByIp.delete(ip);
      else pendingByIp.set(ip, n - 1);
    },
    async allowConnect(ip) {
      if (!limiter) return true;
      try {
        await limiter.consume(ip);
        return true;
      } catch {
        return false;
      }
    },
    pending: () => total,
  };
}
