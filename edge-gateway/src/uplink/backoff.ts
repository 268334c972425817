/**
 * Reconnect delays: exponential from `minMs` to `maxMs`, with "equal jitter" (a delay between half and all of the
 * exponential step), so a branch's gateways that lost the cloud together do not reconnect in lockstep, while no
 * delay collapses to zero.
 */
export interface Backoff {
  /** The delay before the next attempt; each call moves one step up. */
  next(): number;
  /** Back to the first step (after a successful connection). */
  reset(): void;
  /** Attempts since the last reset. */
  readonly attempts: number;
}

export function createBackoff(minMs: number, maxMs: number, random: () => number = Math.random): Backoff {
  let attempts = 0;
  return {
    next() {
      const step = Math.min(maxMs, minMs * 2 ** Math.min(attempts, 30));
      attempts += 1;
      return Math.round(step / 2 + random() * (step / 2));
    },
    reset() {
      attempts = 0;
    },
    get attempts() {
      return attempts;
    },
  };
}
