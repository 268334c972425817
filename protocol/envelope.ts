/**
 * The record envelope: six fields at the top level of every record (meta, status, telemetry, workout, event,
 * access scan, offline decision).
 *
 * The cloud orders and deduplicates by these, never by arrival time: MQTT redelivery after a reconnect, a gateway
 * draining a backlog and a live path running beside it all deliver out of arrival order.
 * - `msgId`: globally unique (16–64 characters, `newMsgId()`); every write is idempotent by it alone, so a
 *   redelivered record is a no-op — and a msgId reused by another source would be dropped as a duplicate.
 * - `source` + `bootId` + `seq`: `seq` counts up per source and boot; `bootId` changes when the source restarts,
 *   which is what allows `seq` to start again at 0.
 * - `ts`: event time at the source, integer ms since the epoch. Compare records of different boots by it.
 * - `v`: the protocol minor version the source speaks (version.ts).
 */
import * as v from 'valibot';
import { BootId, MsgId, SourceId, newBootId, newMsgId } from './ids.ts';
import { Timestamp, positiveZero } from './scalars.ts';
import { PROTOCOL_MINOR } from './version.ts';

/**
 * Per-source, per-boot sequence number: a non-negative safe integer. JSON `-0` passes every integer check, so it is
 * normalised to `0`: otherwise it would survive as `-0` into storage and `Object.is` comparisons.
 */
export const Seq = v.pipe(
  v.number(),
  v.safeInteger(),
  v.minValue(0),
  v.transform(positiveZero),
  v.description('Sequence number per source and boot, counting up from 0'),
);

/** A protocol minor version (version.ts). */
export const MinorVersion = v.pipe(
  v.number(),
  v.safeInteger(),
  v.minValue(0),
  v.maxValue(65_535),
  v.description('Protocol minor version of the sender (major is in the topic root)'),
);

/** The envelope's entries, to spread into each record schema so the fields sit at the record's top level. */
export const envelopeEntries = {
  msgId: MsgId,
  source: SourceId,
  bootId: BootId,
  seq: Seq,
  ts: Timestamp,
  v: MinorVersion,
} as const;

/** The envelope on its own: every record parses as an `Envelope` too (unknown keys are stripped). */
export const Envelope = v.pipe(
  v.object(envelopeEntries),
  v.title('Envelope'),
  v.description('Fields every record carries at its top level; the cloud orders and deduplicates by them.'),
);
export type Envelope = v.InferOutput<typeof Envelope>;

/** Names of the envelope fields. */
export const ENVELOPE_FIELDS = Object.keys(envelopeEntries) as readonly (keyof Envelope)[];

/**
 * Whether `candidate` is newer than `held`, for two records of the same source: by `seq` within one boot, by
 * event time across boots (boot ids are random, so they cannot be ordered themselves). Used to apply live state
 * only forward and to skip a stale sample after a backlog drain.
 */
export function isNewer(candidate: Envelope, held: Envelope): boolean {
  if (candidate.bootId === held.bootId) return candidate.seq > held.seq;
  return candidate.ts > held.ts;
}

export interface EnvelopeStamperOptions {
  source: SourceId;
  /** Defaults to a new random boot id: create one stamper per process start. */
  bootId?: BootId;
  /** Event time source; injected so tests and simulators control time. */
  now: () => number;
  /** Defaults to `newMsgId` (a random UUID); ids must be globally unique. */
  newId?: () => MsgId;
}

export interface EnvelopeStamper {
  readonly source: SourceId;
  readonly bootId: BootId;
  /** The seq the next `stamp()` will use. */
  readonly nextSeq: number;
  /** A fresh envelope: new msgId, next seq, `ts` = `now()` unless given. */
  stamp(ts?: number): Envelope;
}

/**
 * Stamps envelopes for one source and boot: the one place seq is counted, so two records of a boot can never
 * share a seq. Machines (real and simulated) and gateways (for their own access and decision records) use it.
 */
export function createEnvelopeStamper(options: EnvelopeStamperOptions): EnvelopeStamper {
  const { source, now } = options;
  const bootId = options.bootId ?? newBootId();
  const newId = options.newId ?? newMsgId;
  let seq = 0;
  return {
    source,
    bootId,
    get nextSeq() {
      return seq;
    },
    stamp(ts = now()) {
      return { msgId: newId(), source, bootId, seq: seq++, ts, v: PROTOCOL_MINOR };
    },
  };
}
