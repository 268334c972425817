/**
 * Payloads the gateway acknowledged but will not forward, with why: a bad payload is counted, logged (rate-limited)
 * and kept here — never a reason to disconnect a machine (ARCHITECTURE.md, "Where acknowledged means durable").
 * Records the cloud rejected, or whose batch it could not read, land here too.
 *
 * Bounded: the newest `keep` entries stay (a ring); counts by reason cover everything since start. Entries keep at
 * most `MAX_KEPT_PAYLOAD_BYTES` of the payload for inspection; it is never logged (it may carry a QR token).
 */
import type { Logger } from '../../../tools/runtime/logger.ts';
import { createRateLimitedLog, type RateLimitedLog } from '../../../tools/runtime/rate-limited-log.ts';

/** Most payload bytes kept per entry. */
export const MAX_KEPT_PAYLOAD_BYTES = 4 * 1024;
/** At most one log line per reason in this window; the lines in between are counted in the next one. */
export const REJECT_LOG_INTERVAL_MS = 10_000;

const LOG_MESSAGES = {
  machine: 'machine payload refused (acknowledged, not forwarded)',
  cloud: 'record refused by the cloud',
  gateway: 'record set aside: it cannot be sent',
} as const;

export interface RejectedEntry {
  /** Gateway clock, ms. */
  readonly at: number;
  /** `machine`: refused at intake; `cloud`: refused by the cloud's ack; `gateway`: could not be sent at all. */
  readonly origin: 'machine' | 'cloud' | 'gateway';
  readonly reason: string;
  readonly source?: string;
  readonly topic?: string;
  readonly msgId?: string;
  /** Failing field, e.g. `speedMps`. */
  readonly path?: string;
  /** The failed check, e.g. `max_value`. */
  readonly issue?: string;
  readonly bytes: number;
  /** The first MAX_KEPT_PAYLOAD_BYTES of what was received. */
  readonly payload?: Buffer;
  readonly truncated?: boolean;
}

export type RejectedInput = Omit<RejectedEntry, 'at' | 'payload' | 'truncated' | 'bytes'> & {
  readonly payload?: Uint8Array | string;
  readonly bytes?: number;
};

export interface RejectedList {
  add(entry: RejectedInput): void;
  /** Newest last. */
  entries(): readonly RejectedEntry[];
  /** Count per reason since start (`origin:reason`, e.g. `machine:invalid`). */
  counts(): Readonly<Record<string, number>>;
  readonly total: number;
}

export interface RejectedListOptions {
  readonly keep: number;
  readonly log: Logger;
  readonly nowMs: () => number;
  /** Called for every entry (metrics). */
  readonly onRejected?: (entry: RejectedEntry) => void;
}

export function createRejectedList({ keep, log, nowMs, onRejected }: RejectedListOptions): RejectedList {
  const ring: RejectedEntry[] = [];
  const counts = new Map<string, number>();
  // One rate-limited log per origin, keyed by reason: at most one line per `origin:reason` per interval.
  const clock = { nowMs };
  const logs = {
    machine: createRateLimitedLog({ log, clock, intervalMs: REJECT_LOG_INTERVAL_MS }),
    cloud: createRateLimitedLog({ log, clock, intervalMs: REJECT_LOG_INTERVAL_MS }),
    gateway: createRateLimitedLog({ log, clock, intervalMs: REJECT_LOG_INTERVAL_MS }),
  } satisfies Record<RejectedEntry['origin'], RateLimitedLog>;
  let total = 0;

  return {
    add(input) {
      const raw = input.payload === undefined ? undefined : keptBytes(input.payload);
      const { payload: _payload, bytes: givenBytes, ...rest } = input;
      const entry: RejectedEntry = {
        ...rest,
        at: nowMs(),
        bytes: givenBytes ?? raw?.received ?? 0,
        ...(raw === undefined ? {} : { payload: raw.kept, truncated: raw.received > MAX_KEPT_PAYLOAD_BYTES }),
      };
      total += 1;
      const key = `${entry.origin}:${entry.reason}`;
      counts.set(key, (counts.get(key) ?? 0) + 1);
      if (keep > 0) {
        ring.push(entry);
        if (ring.length > keep) ring.shift();
      }
      onRejected?.(entry);
      logs[entry.origin].warn(
        entry.reason,
        {
          origin: entry.origin,
          source: entry.source,
          topic: entry.topic,
          msgId: entry.msgId,
          path: entry.path,
          issue: entry.issue,
          bytes: entry.bytes,
        },
        LOG_MESSAGES[entry.origin],
      );
    },
    entries: () => ring.slice(),
    counts: () => Object.fromEntries(counts),
    get total() {
      return total;
    },
  };
}

/**
 * The first MAX_KEPT_PAYLOAD_BYTES of a payload, in a buffer of their own: a slice of the received buffer would
 * keep all of it alive (a 64 KiB payload per entry, `keep` entries), and the received buffer may be a view into a
 * larger one.
 */
function keptBytes(payload: Uint8Array | string): { kept: Buffer; received: number } {
  const bytes = typeof payload === 'string' ? Buffer.from(payload, 'utf8') : payload;
  const kept = Buffer.alloc(Math.min(bytes.length, MAX_KEPT_PAYLOAD_BYTES));
  kept.set(bytes.subarray(0, kept.length));
  return { kept, received: bytes.length };
}
