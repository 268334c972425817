/**
 * The payload registry: every payload schema by name with its size limit, which payload each topic carries, and
 * the never-throwing parsers built on them.
 *
 * ```ts
 * const topic = parseTopic(packet.topic);                  // undefined: not in the tree
 * const result = parsePayload('Telemetry', packet.payload); // { ok: true, value, unknownKeys } | { ok: false, … }
 * ```
 */
import type * as v from 'valibot';
import { MsgId } from './ids.ts';
import type { BatchId } from './ids.ts';
import { AccessScan } from './messages/access.ts';
import { CloudState, LiveMachine, UserLiveWorkout, UserNotification } from './messages/cloud.ts';
import {
  AllowListCommand,
  AllowListDocument,
  CommandResponse,
  DisplayCommand,
  GatewayConfigCommand,
  GatewayConfigDocument,
  GatewayRebirthCommand,
  MAX_SIGNED_DOCUMENT_BYTES,
  MachineConfigCommand,
  MachineLinkCommand,
  MachineRebirthCommand,
  MachineUnlinkCommand,
} from './messages/command.ts';
import { GatewayEnrolmentRequest, GatewayEnrolmentResponse } from './messages/enrolment.ts';
import { MachineEvent } from './messages/event.ts';
import {
  CheckInRequest,
  CheckOutRequest,
  GatewayState,
  LinkRequest,
  MAX_BATCH_BYTES,
  OfflineDecision,
  RequestResponse,
  UnlinkRequest,
  UplinkAck,
  UplinkBatch,
  UplinkBatchShell,
  UplinkRecord,
  isRecordKind,
} from './messages/gateway.ts';
import type { RejectedRecord } from './messages/gateway.ts';
import { MachineMeta } from './messages/meta.ts';
import { MachineStatus } from './messages/status.ts';
import { Telemetry } from './messages/telemetry.ts';
import { Workout } from './messages/workout.ts';
import { QrTokenClaims } from './jws.ts';
import { decodeJson, unknownKeysOf, validate } from './parse.ts';
import type { ParseFailure, ParseResult } from './parse.ts';
import type { GatewayCommandName, MachineCommandName, ParsedTopic, RequestName, UserLiveTopic } from './topics.ts';

const KiB = 1024;

interface PayloadSpec {
  readonly schema: v.GenericSchema;
  /** Largest payload accepted, in bytes, checked before decoding. */
  readonly maxBytes: number;
}

/**
 * Every payload by name, with its byte limit. Limits are a few times the largest legitimate payload and stay
 * below the brokers' frame limits (64 KiB on a gateway's broker for machines, 256 KiB on the cloud's).
 */
export const PAYLOADS = {
  CloudState: { schema: CloudState, maxBytes: 1 * KiB },
  GatewayState: { schema: GatewayState, maxBytes: 16 * KiB },
  UplinkBatch: { schema: UplinkBatch, maxBytes: MAX_BATCH_BYTES },
  UplinkRecord: { schema: UplinkRecord, maxBytes: 64 * KiB },
  UplinkAck: { schema: UplinkAck, maxBytes: 240 * KiB },
  CheckInRequest: { schema: CheckInRequest, maxBytes: 4 * KiB },
  CheckOutRequest: { schema: CheckOutRequest, maxBytes: 4 * KiB },
  LinkRequest: { schema: LinkRequest, maxBytes: 4 * KiB },
  UnlinkRequest: { schema: UnlinkRequest, maxBytes: 4 * KiB },
  RequestResponse: { schema: RequestResponse, maxBytes: 4 * KiB },
  GatewayConfigCommand: { schema: GatewayConfigCommand, maxBytes: 240 * KiB },
  GatewayConfigDocument: { schema: GatewayConfigDocument, maxBytes: MAX_SIGNED_DOCUMENT_BYTES },
  AllowListCommand: { schema: AllowListCommand, maxBytes: 240 * KiB },
  AllowListDocument: { schema: AllowListDocument, maxBytes: MAX_SIGNED_DOCUMENT_BYTES },
  GatewayRebirthCommand: { schema: GatewayRebirthCommand, maxBytes: 1 * KiB },
  MachineLinkCommand: { schema: MachineLinkCommand, maxBytes: 4 * KiB },
  MachineUnlinkCommand: { schema: MachineUnlinkCommand, maxBytes: 4 * KiB },
  DisplayCommand: { schema: DisplayCommand, maxBytes: 4 * KiB },
  MachineConfigCommand: { schema: MachineConfigCommand, maxBytes: 4 * KiB },
  MachineRebirthCommand: { schema: MachineRebirthCommand, maxBytes: 1 * KiB },
  CommandResponse: { schema: CommandResponse, maxBytes: 4 * KiB },
  MachineMeta: { schema: MachineMeta, maxBytes: 16 * KiB },
  MachineStatus: { schema: MachineStatus, maxBytes: 2 * KiB },
  Telemetry: { schema: Telemetry, maxBytes: 4 * KiB },
  Workout: { schema: Workout, maxBytes: 48 * KiB },
  MachineEvent: { schema: MachineEvent, maxBytes: 4 * KiB },
  AccessScan: { schema: AccessScan, maxBytes: 4 * KiB },
  OfflineDecision: { schema: OfflineDecision, maxBytes: 8 * KiB },
  LiveMachine: { schema: LiveMachine, maxBytes: 2 * KiB },
  UserLiveWorkout: { schema: UserLiveWorkout, maxBytes: 64 * KiB },
  UserNotification: { schema: UserNotification, maxBytes: 8 * KiB },
  QrTokenClaims: { schema: QrTokenClaims, maxBytes: 1 * KiB },
  GatewayEnrolmentRequest: { schema: GatewayEnrolmentRequest, maxBytes: 1 * KiB },
  GatewayEnrolmentResponse: { schema: GatewayEnrolmentResponse, maxBytes: 4 * KiB },
} as const satisfies Record<string, PayloadSpec>;

export type PayloadName = keyof typeof PAYLOADS;
/** The parsed type of a payload, e.g. `PayloadOf<'Telemetry'>`. */
export type PayloadOf<K extends PayloadName> = v.InferOutput<(typeof PAYLOADS)[K]['schema']>;

/** Every payload name, in registry order. */
export const PAYLOAD_NAMES = Object.keys(PAYLOADS) as [PayloadName, ...PayloadName[]];

/** Whether a string names a payload (an own-property check: `__proto__` or `constructor` name nothing). */
export function isPayloadName(name: string): name is PayloadName {
  return Object.hasOwn(PAYLOADS, name);
}

// A name that reached us unchecked (a cast, a tool's argument) finds no spec instead of Object.prototype.
const NO_SUCH_PAYLOAD: ParseFailure = { ok: false, reason: 'invalid', issue: 'payload-name' };

/** Payload per request name on `req/{name}`. */
export const REQUEST_PAYLOADS = {
  'check-in': 'CheckInRequest',
  'check-out': 'CheckOutRequest',
  link: 'LinkRequest',
  unlink: 'UnlinkRequest',
} as const satisfies Record<RequestName, PayloadName>;

/** Payload per machine command name on `m/{machine}/cmd/{name}`. */
export const MACHINE_COMMAND_PAYLOADS = {
  link: 'MachineLinkCommand',
  unlink: 'MachineUnlinkCommand',
  display: 'DisplayCommand',
  config: 'MachineConfigCommand',
  rebirth: 'MachineRebirthCommand',
} as const satisfies Record<MachineCommandName, PayloadName>;

/** Payload per gateway command name on `gw/{gateway}/cmd/{name}`. */
export const GATEWAY_COMMAND_PAYLOADS = {
  config: 'GatewayConfigCommand',
  'allow-list': 'AllowListCommand',
  rebirth: 'GatewayRebirthCommand',
} as const satisfies Record<GatewayCommandName, PayloadName>;

/** Payload per user live topic on `u/{user}/live/{topic}`. */
export const USER_LIVE_PAYLOADS = {
  workout: 'UserLiveWorkout',
  notification: 'UserNotification',
} as const satisfies Record<UserLiveTopic, PayloadName>;

/** The payload a topic carries. */
export function payloadNameFor(topic: ParsedTopic): PayloadName {
  switch (topic.kind) {
    case 'cloud-state':
      return 'CloudState';
    case 'gateway-state':
      return 'GatewayState';
    case 'gateway-uplink':
      return 'UplinkBatch';
    case 'gateway-ack':
      return 'UplinkAck';
    case 'gateway-request':
      return REQUEST_PAYLOADS[topic.name];
    case 'gateway-request-response':
      return 'RequestResponse';
    case 'gateway-command':
      return GATEWAY_COMMAND_PAYLOADS[topic.name];
    case 'gateway-command-response':
    case 'machine-command-response':
      return 'CommandResponse';
    case 'machine-meta':
      return 'MachineMeta';
    case 'machine-status':
      return 'MachineStatus';
    case 'machine-telemetry':
      return 'Telemetry';
    case 'machine-workout':
      return 'Workout';
    case 'machine-event':
      return 'MachineEvent';
    case 'machine-command':
      return MACHINE_COMMAND_PAYLOADS[topic.name];
    case 'access-scan':
      return 'AccessScan';
    case 'live-machine':
      return 'LiveMachine';
    case 'user-live':
      return USER_LIVE_PAYLOADS[topic.topic];
  }
}

/**
 * Parses a payload of a known kind: empty check, size limit, UTF-8, JSON, schema. Never throws. Unknown keys are
 * stripped (a newer minor version's extra fields parse on an older receiver) and listed in `unknownKeys`, so the
 * receiver can count and log them. A zero-length payload is `{ ok: false, reason: 'empty' }`: on a retained topic,
 * a retained message was cleared.
 */
export function parsePayload<K extends PayloadName>(name: K, input: Uint8Array | string): ParseResult<PayloadOf<K>> {
  if (!isPayloadName(name)) return NO_SUCH_PAYLOAD;
  const spec: PayloadSpec = PAYLOADS[name];
  const decoded = decodeJson(input, spec.maxBytes);
  if (!decoded.ok) return decoded;
  return validate(spec.schema, decoded.value) as ParseResult<PayloadOf<K>>;
}

/** Validates an already decoded value (e.g. a JWS payload) against a payload schema. Never throws. */
export function validatePayload<K extends PayloadName>(name: K, value: unknown): ParseResult<PayloadOf<K>> {
  if (!isPayloadName(name)) return NO_SUCH_PAYLOAD;
  return validate(PAYLOADS[name].schema, value);
}

// ---------------------------------------------------------------------------------------------------------------
// Uplink batches, record by record

/** Why a record of a batch was refused (see `REJECT_REASONS`). */
export type RecordRejectReason = 'unknown-kind' | 'invalid' | 'duplicate-in-batch';

/** One record of a batch, by its position: parsed, or refused with what to reject it by. */
export type RecordResult =
  | {
      readonly ok: true;
      /** Position in the batch, from 0. */
      readonly index: number;
      readonly record: UplinkRecord;
      /**
       * Keys the schemas do not know: the record's own top-level ones (`futureField`) and its payload's, prefixed
       * (`payload.speedKmh`). They were stripped from `record`.
       */
      readonly unknownKeys: readonly string[];
    }
  | {
      readonly ok: false;
      /** Position in the batch, from 0: always present, and how the ack names the record. */
      readonly index: number;
      /** The record's msgId, when `payload.msgId` could be read as one. */
      readonly msgId?: MsgId;
      /**
       * `unknown-kind`: a kind this receiver does not know (a newer sender); `invalid`: fails its schema (a
       * missing or malformed msgId included); `duplicate-in-batch`: an earlier record of the batch has its msgId.
       */
      readonly reason: RecordRejectReason;
      /** Failing field within the record, e.g. `payload.speedMps`. */
      readonly path?: string;
      readonly issue?: string;
    };

export type BatchParseResult =
  | {
      readonly ok: true;
      readonly batchId: BatchId;
      /** The gateway's clock when it first sent the batch: diagnostics only, untrusted (may be near 0). */
      readonly sentAt: number;
      readonly live: boolean;
      /** One result per record, in batch order (`records[i].index === i`). */
      readonly records: readonly RecordResult[];
      /** Top-level keys of the batch object that the batch schema does not know. */
      readonly unknownKeys: readonly string[];
    }
  | (ParseFailure & {
      /** Present when the batch id could be read, so the cloud can answer with `UplinkAck.error`. */
      readonly batchId?: BatchId;
    });

/**
 * Parses an uplink batch in two steps, so one bad record cannot hold up its neighbours: first the shell (batch
 * id, diagnostic clock, an array of 1–500 records of any shape), then every record against `UplinkRecord` on its
 * own. A record that fails is rejected by its position (`index`) and, when `payload.msgId` can be read, its
 * msgId; a record whose msgId an earlier record of the batch already has is rejected as `duplicate-in-batch` (the
 * first is kept). Only a shell that cannot be read — empty, too large, not JSON, no batch id, no record array —
 * fails the whole batch: answer `{batchId, acked: [], rejected: [], error}` when `batchId` is present.
 */
export function parseUplinkBatch(input: Uint8Array | string): BatchParseResult {
  const decoded = decodeJson(input, MAX_BATCH_BYTES);
  if (!decoded.ok) return decoded;
  const raw = decoded.value;
  const shell = validate(UplinkBatchShell, raw);
  if (!shell.ok) {
    const batchId = readBatchId(raw);
    return batchId === undefined ? shell : { ...shell, batchId };
  }
  const seen = new Set<string>();
  const records = shell.value.records.map((rawRecord, index): RecordResult => {
    const msgId = readMsgId(rawRecord);
    if (msgId !== undefined) {
      if (seen.has(msgId)) return { ok: false, index, msgId, reason: 'duplicate-in-batch' };
      seen.add(msgId);
    }
    const parsed = validate(UplinkRecord, rawRecord);
    if (parsed.ok) {
      return { ok: true, index, record: parsed.value, unknownKeys: recordUnknownKeys(rawRecord, parsed.value) };
    }
    return {
      ok: false,
      index,
      ...(msgId === undefined ? {} : { msgId }),
      reason: isUnknownKind(rawRecord) ? 'unknown-kind' : 'invalid',
      ...(parsed.path === undefined ? {} : { path: parsed.path }),
      ...(parsed.issue === undefined ? {} : { issue: parsed.issue }),
    };
  });
  return {
    ok: true,
    batchId: shell.value.batchId,
    sentAt: shell.value.sentAt,
    live: shell.value.live === true,
    records,
    unknownKeys: shell.unknownKeys,
  };
}

function readBatchId(raw: unknown): BatchId | undefined {
  if (typeof raw !== 'object' || raw === null || !Object.hasOwn(raw, 'batchId')) return undefined;
  const result = validate(UplinkBatchShell.entries.batchId, (raw as { batchId: unknown }).batchId);
  return result.ok ? result.value : undefined;
}

function readMsgId(rawRecord: unknown): MsgId | undefined {
  const payload = ownField(rawRecord, 'payload');
  const result = validate(MsgId, ownField(payload, 'msgId'));
  return result.ok ? result.value : undefined;
}

// A kind that is a string but names no record kind: a newer sender's kind, not a malformed record.
function isUnknownKind(rawRecord: unknown): boolean {
  const kind = ownField(rawRecord, 'kind');
  return typeof kind === 'string' && !isRecordKind(kind);
}

function recordUnknownKeys(rawRecord: unknown, record: UplinkRecord): string[] {
  const own = unknownKeysOf(rawRecord, record);
  const inPayload = unknownKeysOf(ownField(rawRecord, 'payload'), record.payload).map((key) => `payload.${key}`);
  return inPayload.length === 0 ? own : [...own, ...inPayload];
}

function ownField(value: unknown, key: string): unknown {
  return typeof value === 'object' && value !== null && Object.hasOwn(value, key)
    ? (value as Record<string, unknown>)[key]
    : undefined;
}

/** The `rejected` entry of an ack for a record that failed to parse. */
export function rejectionOf(result: Extract<RecordResult, { ok: false }>): RejectedRecord {
  return {
    ...(result.msgId === undefined ? {} : { msgId: result.msgId }),
    index: result.index,
    reason: result.reason,
    ...(result.path === undefined ? {} : { path: result.path }),
  };
}
