/**
 * Time, injected. Code that reads "now" takes a Clock so tests can move time without sinon's fake timers, which
 * stall the MongoDB driver and agenda (ARCHITECTURE.md, "Persistence").
 */
export interface Clock {
  /** Milliseconds since the epoch. */
  nowMs(): number;
  now(): Date;
}

export const systemClock: Clock = {
  nowMs: () => Date.now(),
  now: () => new Date(),
};

/** A clock that only moves when told to; for tests and simulations. */
export interface ManualClock extends Clock {
  set(ms: number | Date): void;
  advance(ms: number): void;
}

export function createManualClock(startMs: number | Date = Date.UTC(2026, 0, 1)): ManualClock {
  let current = typeof startMs === 'number' ? startMs : startMs.getTime();
  return {
    nowMs: () => current,
    now: () => new Date(current),
    set(ms) {
      current = typeof ms === 'number' ? ms : ms.getTime();
    },
    advance(ms) {
      if (!Number.isFinite(ms) || ms < 0) throw new RangeError(`a clock only moves forward (got ${ms})`);
      current += ms;
    },
  };
}
