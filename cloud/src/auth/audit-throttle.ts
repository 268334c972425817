/**
 * Refusals are audited, but a flood of refused requests (bad tokens, logins to a locked account) must not become a
 * flood of MongoDB inserts. Per kind and client address, the first `perMinute` refusals of a minute are written; the
 * rest are counted, and the count rides on the next entry written for that address (`suppressedBefore`).
 * In-process: each API node bounds its own writes.
 */
export const REFUSALS_AUDITED_PER_MINUTE = 30;
const TRACKED_KEYS = 10_000;

export type AuditThrottle = (kind: string, ip: string) => { write: boolean; suppressedBefore: number };

export function createAuditThrottle(nowMs: () => number, perMinute = REFUSALS_AUDITED_PER_MINUTE): AuditThrottle {
  let windowStart = nowMs();
  const counts = new Map<string, { written: number; suppressed: number }>();
  return (kind, ip) => {
    if (counts.size > TRACKED_KEYS) counts.clear();
    if (nowMs() - windowStart >= 60_000) {
      windowStart = nowMs();
      // A new minute: budgets refill; what was suppressed is kept, to be reported on the next entry written.
      for (const [key, entry] of counts) {
        if (entry.suppressed === 0) counts.delete(key);
        else entry.written = 0;
      }
    }
    const key = `${kind} ${ip}`;
    const entry = counts.get(key) ?? { written: 0, suppressed: 0 };
    counts.set(key, entry);
    if (entry.written >= perMinute) {
      entry.suppressed += 1;
      return { write: false, suppressedBefore: 0 };
    }
    entry.written += 1;
    const suppressedBefore = entry.suppressed;
    entry.suppressed = 0;
    return { write: true, suppressedBefore };
  };
}
