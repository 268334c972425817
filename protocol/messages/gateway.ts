/**
 * Gateway ↔ cloud: the gateway's birth and will, uplink batches of queued records and their acks, and online
 * requests with their responses.
 *
 * Records: everything the cloud stores from a branch travels as a record `{kind, payload}` where `payload` is the
 * message exactly as its source published it (envelope included) and `kind` says which schema it follows, so the
 * cloud routes by `kind` into one handler per kind, and the same handler serves a machine topic payload.
 *
 * Batches and acks: a batch `{batchId, records}` holds up to 500 records of one lane. The cloud checks each record
 * on its own (`parseUplinkBatch`), so one bad record is rejected by its position (`index`, and its msgId when that
 * could be read) while its neighbours are stored. After the MongoDB write it answers `{batchId, acked, rejected}`;
 * the gateway deletes exactly those records. A batchId names one exact set of records: the batch is resent
 * unchanged until an ack answers it, and records the ack names in neither list go into a new batch.
 */
import * as v from 'valibot';
import { MinorVersion, envelopeEntries } from '../envelope.ts';
import { BatchId, BootId, MachineId, MsgId, ReaderId, ReqId, SessionId, UserId } from '../ids.ts';
import { Code, DiagnosticTimestamp, ErrorInfo, Timestamp, Version, count, text } from '../scalars.ts';
import type { Lane } from '../topics.ts';
import { AccessScan, CREDENTIAL_KINDS, Credential } from './access.ts';
import { MAX_GATEWAY_MACHINES } from './command.ts';
import { MachineEvent } from './event.ts';
import { MachineMeta } from './meta.ts';
import { ConnectionNumber, MachineStatus } from './status.ts';
import { Telemetry } from './telemetry.ts';
import { Workout } from './workout.ts';

// ---------------------------------------------------------------------------------------------------------------
// Requests and responses (gw/{gateway}/req/{name}, …/res)

const requestEntries = {
  reqId: ReqId,
  ts: v.pipe(Timestamp, v.description('When the gateway asked')),
};

/** A credential presented at a door reader: the shape of both door requests, check-in and check-out. */
export const DoorRequest = v.object({ ...requestEntries, reader: ReaderId, credential: Credential });
export type DoorRequest = v.InferOutput<typeof DoorRequest>;

/** A member presented a credential at an entry reader: may they come in? */
export const CheckInRequest = v.pipe(
  DoorRequest,
  v.title('CheckInRequest'),
  v.description('Ask the cloud whether a credential presented at an entry reader may check in.'),
);
export type CheckInRequest = DoorRequest;

/** A member presented a credential at an exit reader: close their session. Same shape as `CheckInRequest`. */
export const CheckOutRequest = v.pipe(
  DoorRequest,
  v.title('CheckOutRequest'),
  v.description('Ask the cloud to check out the member behind a credential presented at an exit reader.'),
);
export type CheckOutRequest = DoorRequest;

/** A member presented a credential at a machine (its `qr-scanned` or `nfc-tapped` event): link them to it. */
export const LinkRequest = v.pipe(
  v.object({ ...requestEntries, machine: MachineId, credential: Credential }),
  v.title('LinkRequest'),
  v.description('Ask the cloud to link the member behind a credential to a machine (at most one member each).'),
);
export type LinkRequest = v.InferOutput<typeof LinkRequest>;

/** A machine's member link should end (idle timeout seen by the gateway, or the member left). */
export const UnlinkRequest = v.pipe(
  v.object({
    ...requestEntries,
    machine: MachineId,
    userId: v.optional(v.pipe(UserId, v.description('Only if this member is the one linked'))),
    reason: v.pipe(Code, v.description('e.g. idle-timeout, member')),
  }),
  v.title('UnlinkRequest'),
  v.description('Ask the cloud to release a machine’s member link.'),
);
export type UnlinkRequest = v.InferOutput<typeof UnlinkRequest>;

/** The cloud's (or, offline, the gateway's) decision on a request. */
export const Decision = v.variant('decision', [
  v.object({
    decision: v.literal('allow'),
    userId: v.optional(v.pipe(UserId, v.description('The member the decision is about'))),
    sessionId: v.optional(v.pipe(SessionId, v.description('The session opened, closed or linked'))),
    greeting: v.optional(text(64, 'What a console or door display may show, e.g. "Hi Ana"')),
  }),
  v.object({
    decision: v.literal('deny'),
    reason: v.pipe(Code, v.description('Why (see DENY_REASONS); unknown reasons are plain denies')),
    userId: v.optional(v.pipe(UserId, v.description('The member, if the credential was recognised'))),
  }),
]);
export type Decision = v.InferOutput<typeof Decision>;

/**
 * The answer to any request: a decision, or an error when no decision could be taken (the gateway may then
 * decide offline). A deny is a decision, not an error.
 */
export const RequestResponse = v.pipe(
  v.variant('ok', [
    v.object({ reqId: ReqId, ok: v.literal(true), decision: Decision }),
    v.object({ reqId: ReqId, ok: v.literal(false), error: ErrorInfo }),
  ]),
  v.title('RequestResponse'),
  v.description('`{reqId, ok: true, decision}` or `{reqId, ok: false, error}`, echoing the request’s reqId.'),
);
export type RequestResponse = v.InferOutput<typeof RequestResponse>;

// ---------------------------------------------------------------------------------------------------------------
// Records

/**
 * A link or unlink the gateway decided alone while the cloud was unreachable, so the cloud can apply it (or undo
 * it) when the record arrives. Door check-ins and check-outs need no such record: their `AccessScan` carries the
 * decision.
 */
export const OfflineDecision = v.pipe(
  v.variant('name', [
    v.object({ ...envelopeEntries, name: v.literal('link'), request: LinkRequest, decision: Decision }),
    v.object({ ...envelopeEntries, name: v.literal('unlink'), request: UnlinkRequest, decision: Decision }),
  ]),
  v.title('OfflineDecision'),
  v.description('A request the gateway decided offline from its cached allow-list; the gateway is the source.'),
);
export type OfflineDecision = v.InferOutput<typeof OfflineDecision>;

// A diagnostic clock: never a reason to refuse a record (see DiagnosticTimestamp).
const receivedAt = v.optional(
  v.pipe(
    DiagnosticTimestamp,
    v.description('Gateway clock when the record entered its queue, ms (lag and skew figures only; untrusted)'),
  ),
);

/**
 * One record in an uplink batch, discriminated by `kind`. `payload` is the message as its source published it,
 * envelope included.
 */
export const UplinkRecord = v.pipe(
  v.variant('kind', [
    v.object({ kind: v.literal('meta'), receivedAt, payload: MachineMeta }),
    v.object({ kind: v.literal('status'), receivedAt, payload: MachineStatus }),
    v.object({ kind: v.literal('telemetry'), receivedAt, payload: Telemetry }),
    v.object({ kind: v.literal('workout'), receivedAt, payload: Workout }),
    v.object({ kind: v.literal('event'), receivedAt, payload: MachineEvent }),
    v.object({ kind: v.literal('access-scan'), receivedAt, payload: AccessScan }),
    v.object({ kind: v.literal('offline-decision'), receivedAt, payload: OfflineDecision }),
  ]),
  v.title('UplinkRecord'),
  v.description('A queued record: `kind` names the payload schema; `payload` carries the envelope.'),
);
export type UplinkRecord = v.InferOutput<typeof UplinkRecord>;
export type RecordKind = UplinkRecord['kind'];
/** The record of one kind, e.g. `RecordOf<'workout'>`. */
export type RecordOf<K extends RecordKind> = Extract<UplinkRecord, { kind: K }>;

/** Which lane of the gateway queue each record kind travels in. */
export const RECORD_KIND_LANE = {
  'access-scan': 'access',
  meta: 'records',
  status: 'records',
  workout: 'records',
  event: 'records',
  'offline-decision': 'records',
  telemetry: 'telemetry',
} as const satisfies Record<RecordKind, Lane>;

/** Every record kind. */
export const RECORD_KINDS = Object.keys(RECORD_KIND_LANE) as [RecordKind, ...RecordKind[]];

/** Whether a string (e.g. an untrusted record's `kind`) names a record kind; `__proto__` and friends do not. */
export function isRecordKind(kind: string): kind is RecordKind {
  return Object.hasOwn(RECORD_KIND_LANE, kind);
}

/**
 * The lane a record kind is queued in; undefined for a string that is not a record kind (an own-property check,
 * so an untrusted `constructor` or `__proto__` finds nothing).
 */
export function laneOf(kind: RecordKind): Lane;
export function laneOf(kind: string): Lane | undefined;
export function laneOf(kind: string): Lane | undefined {
  return isRecordKind(kind) ? RECORD_KIND_LANE[kind] : undefined;
}

// ---------------------------------------------------------------------------------------------------------------
// Batches and acks (gw/{gateway}/up/{lane}, gw/{gateway}/ack)

/** Most records in one batch. */
export const MAX_BATCH_RECORDS = 500;
/** Most bytes of one batch payload; the gateway closes a batch at 500 records or this size, whichever is first. */
export const MAX_BATCH_BYTES = 240 * 1024;

/**
 * A batch of queued records of one lane. A batchId names one exact set of records: the gateway resends the batch
 * unchanged (same batchId, same records in the same order) until an ack for that batchId answers it; the cloud's
 * writes are idempotent by msgId, so a resend is harmless. Records an ack names in neither `acked` nor `rejected`
 * are never resent under that batchId: they return to the queue and travel in a new batch with a new batchId.
 *
 * Receivers read it with `parseUplinkBatch`, not with this schema: this schema describes what a sender must
 * produce (and the JSON Schema), while `parseUplinkBatch` checks each record on its own.
 *
 * `live: true` marks a snapshot of each machine's latest status and sample, sent beside a draining backlog so
 * apps see the present: the cloud applies it to live state only (no MongoDB write, no ack), and the gateway
 * neither waits for an ack nor resends it. The same records still travel, in order, through the queue.
 */
export const UplinkBatch = v.pipe(
  v.object({
    batchId: BatchId,
    sentAt: v.pipe(
      DiagnosticTimestamp,
      v.description('Gateway clock when the batch was first sent, ms (diagnostics only; untrusted)'),
    ),
    live: v.optional(v.pipe(v.literal(true), v.description('Live snapshot: apply to live state only, never acked'))),
    records: v.pipe(
      v.array(UplinkRecord),
      v.minLength(1),
      v.maxLength(MAX_BATCH_RECORDS),
      v.description('1–500 records, in queue order per source'),
    ),
  }),
  v.title('UplinkBatch'),
  v.description(
    'Up to 500 queued records of one lane (at most 240 KiB). The cloud reads it with parseUplinkBatch, record ' +
      'by record, so a bad record is rejected alone.',
  ),
);
export type UplinkBatch = v.InferOutput<typeof UplinkBatch>;

/**
 * The part of a batch that must be readable before any record can be answered: its id, its diagnostic clock and
 * an array of 1–500 records of any shape. Each record is then checked against `UplinkRecord` on its own and, if it
 * fails, rejected by its position, so one broken record — even one without a readable msgId — never costs its
 * neighbours.
 */
export const UplinkBatchShell = v.object({
  batchId: BatchId,
  sentAt: DiagnosticTimestamp,
  live: v.optional(v.literal(true)),
  records: v.pipe(v.array(v.unknown()), v.minLength(1), v.maxLength(MAX_BATCH_RECORDS)),
});

/**
 * Known reasons for rejecting a record (an open set). `duplicate-in-batch`: a second record of the batch with a
 * msgId an earlier record of the same batch already has (the first is kept; msgIds are global, so this is a
 * sender bug, never a redelivery).
 */
export const REJECT_REASONS = [
  'invalid',
  'unknown-kind',
  'duplicate-in-batch',
  'wrong-source',
  'wrong-branch',
  'too-old',
  'member-deleted',
] as const;

/**
 * A record the cloud will never store, with why; it goes to the cloud's dead-letter collection. `index` always
 * names it (its position in the batch, from 0); `msgId` is there when it could be read. The gateway matches
 * rejected entries by `index`: a record without a readable msgId, or a duplicate msgId, has no other name.
 */
export const RejectedRecord = v.object({
  msgId: v.optional(v.pipe(MsgId, v.description('The record’s msgId, when it could be read'))),
  index: v.pipe(
    v.number(),
    v.safeInteger(),
    v.minValue(0),
    v.maxValue(MAX_BATCH_RECORDS - 1),
    v.description('Position of the record in the batch, from 0'),
  ),
  reason: v.pipe(Code, v.description('Why (see REJECT_REASONS)')),
  path: v.optional(v.pipe(v.string(), v.maxLength(256), v.description('Failing field, e.g. payload.speedMps'))),
});
export type RejectedRecord = v.InferOutput<typeof RejectedRecord>;

/**
 * The cloud's answer to a batch, sent after the MongoDB write. Any ack answers its batch: the gateway stops
 * resending that batchId.
 * - `acked`: durable (or already stored: duplicates are acked) — the gateway deletes them;
 * - `rejected`: will never be stored (dead-lettered in the cloud), named by `index` — the gateway deletes them too;
 * - records in neither list (e.g. a partial write failure) stay queued and go into a new batch with a new batchId
 *   (never resent under this batchId, which names the exact set of records it was first sent with);
 * - `error`: the batch as a whole could not be read (no record could be named); nothing was stored, and the
 *   gateway moves all of its records to its local rejected table instead of resending forever.
 */
export const UplinkAck = v.pipe(
  v.object({
    batchId: BatchId,
    acked: v.pipe(v.array(MsgId), v.maxLength(MAX_BATCH_RECORDS), v.description('Durable records')),
    rejected: v.pipe(v.array(RejectedRecord), v.maxLength(MAX_BATCH_RECORDS), v.description('Refused records')),
    error: v.optional(v.pipe(Code, v.description('Set when the batch could not be read at all'))),
  }),
  v.forward(
    v.partialCheck(
      [['error'], ['acked'], ['rejected']],
      (ack) => ack.error === undefined || (ack.acked.length === 0 && ack.rejected.length === 0),
      'Invalid ack: a batch error cannot ack or reject records',
    ),
    ['error'],
  ),
  v.title('UplinkAck'),
  v.description('Which records of a batch are durable and which were rejected; only these may the gateway delete.'),
);
export type UplinkAck = v.InferOutput<typeof UplinkAck>;

// ---------------------------------------------------------------------------------------------------------------
// Gateway state (gw/{gateway}/state, retained; birth and last will)

/** One lane of the durable queue. */
export const LaneStats = v.object({
  depth: count(1_000_000_000, 'Records waiting'),
  bytes: v.optional(count(Number.MAX_SAFE_INTEGER, 'Bytes on disk')),
  oldestAgeS: v.optional(
    v.pipe(v.number(), v.minValue(0), v.maxValue(1e9), v.description('Age of the oldest record, s; absent if empty')),
  ),
  evicted: v.optional(count(Number.MAX_SAFE_INTEGER, 'Records evicted since boot (telemetry only)')),
});
export type LaneStats = v.InferOutput<typeof LaneStats>;

/** A reader attached to the gateway. */
export const GatewayReader = v.object({
  reader: ReaderId,
  kind: v.picklist(CREDENTIAL_KINDS),
  connected: v.boolean(),
});

/**
 * Birth: published retained after every connect and whenever a figure changes notably, with the connection number
 * `conn` of the connection it belongs to.
 */
export const GatewayOnline = v.object({
  online: v.literal(true),
  v: MinorVersion,
  bootId: BootId,
  conn: ConnectionNumber,
  since: v.pipe(Timestamp, v.description('Connected since')),
  ts: v.pipe(Timestamp, v.description('As of')),
  version: Version,
  queue: v.object({
    access: LaneStats,
    records: LaneStats,
    telemetry: LaneStats,
    full: v.pipe(v.boolean(), v.description('At capacity: new QoS 1 records from machines are refused')),
    capBytes: v.optional(count(Number.MAX_SAFE_INTEGER, 'Queue capacity, bytes')),
    fullReason: v.optional(
      v.pipe(
        v.picklist(['capacity', 'storage']),
        v.description('Why new records are refused: caps reached, or the store failed (disk full, I/O error)'),
      ),
    ),
    drainPerS: v.optional(
      v.pipe(v.number(), v.minValue(0), v.maxValue(1e9), v.description('Records/s acked by the cloud (recent)')),
    ),
    offlineHoursLeft: v.optional(
      v.pipe(
        v.number(),
        v.minValue(0),
        v.maxValue(1e9),
        v.description(
          'Hours of outage the queue absorbs at the current intake before it must evict; absent: no intake',
        ),
      ),
    ),
  }),
  readers: v.pipe(v.array(GatewayReader), v.maxLength(32)),
  machinesConnected: count(MAX_GATEWAY_MACHINES, 'Machines connected to the local broker'),
  configRevision: v.optional(count(Number.MAX_SAFE_INTEGER, 'Configuration revision in use')),
  allowListRevision: v.optional(count(Number.MAX_SAFE_INTEGER, 'Allow-list revision in use')),
});

/**
 * Offline: the last will registered at CONNECT (`lastWill: true`, no `since`, `ts` = when it was registered), or
 * published before a clean disconnect (with `since`). Either carries the `conn` of the connection it ends. The
 * cloud then marks the branch's machines `unknown`.
 */
export const GatewayOffline = v.object({
  online: v.literal(false),
  v: MinorVersion,
  bootId: BootId,
  conn: ConnectionNumber,
  ts: v.pipe(Timestamp, v.description('As of; for a last will, when it was registered at CONNECT')),
  since: v.optional(v.pipe(Timestamp, v.description('Offline since (clean shutdown only)'))),
  lastWill: v.optional(v.literal(true)),
});

/** A gateway's state, discriminated by `online`. */
export const GatewayState = v.pipe(
  v.variant('online', [GatewayOnline, GatewayOffline]),
  v.title('GatewayState'),
  v.description(
    'Birth (`online: true`: version, queue depth and oldest age by lane, readers) or offline (the last will, or a ' +
      'clean shutdown), each with the connection number `conn` (see gatewayStateSupersedes). Retained.',
  ),
);
export type GatewayState = v.InferOutput<typeof GatewayState>;

type GatewayStateOrder = Pick<GatewayState, 'online' | 'bootId' | 'conn' | 'ts'>;

/**
 * Whether `incoming` should replace `held` as a gateway's current state (both from the same gateway), mirroring
 * `statusSupersedes`. A will is composed at CONNECT and published by the broker whenever that connection dies —
 * possibly after the gateway has reconnected and sent a new birth — so arrival order says nothing:
 * - another boot: the later `ts` wins (boot ids are random and cannot be ordered; a will's `ts` is its CONNECT);
 * - same boot, another connection: the higher `conn` wins, so a late will of an earlier connection is ignored;
 * - same connection: an offline state (its will, or a clean shutdown) ends it and nothing of that connection
 *   applies after it; between births of one connection, the later `ts` wins.
 */
export function gatewayStateSupersedes(incoming: GatewayStateOrder, held: GatewayStateOrder | undefined): boolean {
  if (held === undefined) return true;
  if (incoming.bootId !== held.bootId) return incoming.ts > held.ts;
  if (incoming.conn !== held.conn) return incoming.conn > held.conn;
  if (!held.online) return false;
  if (!incoming.online) return true;
  return incoming.ts > held.ts;
}
