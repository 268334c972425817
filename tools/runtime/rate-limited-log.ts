/**
 * Logging bad input without letting a broken or hostile sender flood the log: at most one line per key per
 * interval; the next line says how many were suppressed meanwhile. Counting is the metrics' job, not the log's.
 */
import type { Clock } from './clock.ts';
import type { Logger } from './logger.ts';

export interface RateLimitedLog {
  /** Logs `{ reason, ...fields }` unless a line for `reason` went out less than an interval ago. */
  warn(reason: string, fields: Record<string, unknown>, message: string): void;
}

export function createRateLimitedLog({
  log,
  clock,
  intervalMs = 10_000,
  maxReasons = 1_000,
}: {
  log: Logger;
  clock: Pick<Clock, 'nowMs'>;
  intervalMs?: number;
  /** Bound on the reasons tracked, in case a caller ever builds reasons from input. */
  maxReasons?: number;
}): RateLimitedLog {
  const last = new Map<string, { atMs: number; suppressed: number }>();
  return {
    warn(reason, fields, message) {
      const now = clock.nowMs();
      const seen = last.get(reason);
      if (seen && now - seen.atMs < intervalMs) {
        seen.suppressed += 1;
        return;
      }
      if (!seen && last.size >= maxReasons) last.clear();
      last.set(reason, { atMs: now, suppressed: 0 });
      log.warn({ reason, ...fields, ...(seen && seen.suppressed > 0 ? { suppressed: seen.suppressed } : {}) }, message);
    },
  };
}
