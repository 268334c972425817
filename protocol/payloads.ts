/**
 * The payload registry: every payload schema by name with its size limit, which payload each topic carries, and
 * the never-throwing parsers built on them.
 *
 * ```ts
 * const topic = parseTopic(packet.topic);                  // undefined: not in the tree
 * const result = parsePayload('Telemetry', packet.payload); // { ok: true, value } | { ok: false, reason, path }
 * ```
 */
import type * as v from 'valibot';
import type { BatchId, MsgId } from './ids.ts';
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
  MachineConfigCommand,
  MachineLinkCommand,
  MachineRebirthCommand,
  MachineUnlinkCommand,
} from './messages/command.ts';
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
} from './messages/gateway.ts';
import type { RejectedRecord } from './messages/gateway.ts';
import { MachineMeta } from './messages/meta.ts';
import { MachineStatus } from './messages/status.ts';
import { Telemetry } from './messages/telemetry.ts';
import { Workout } from './messages/workout.ts';
import { decodeJson, validate } from './parse.ts';
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
  GatewayConfigDocument: { schema: GatewayConfigDocument, maxBytes: 176 * KiB },
  AllowListCommand: { schema: AllowListCommand, maxBytes: 240 * KiB },
  AllowListDocument: { schema: AllowListDocument, maxBytes: 176 * KiB },
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
} as const satisfies Record<string, PayloadSpec>;

export type PayloadName = keyof typeof PAYLOADS;
/** The parsed type of a payload, e.g. `PayloadOf<'Telemetry'>`. */
export type PayloadOf<K extends PayloadName> = v.InferOutput<(typeof PAYLOADS)[K]['schema']>;

/** Every payload name, in registry order. */
export const PAYLOAD_NAMES = Object.keys(PAYLOADS) as [PayloadName, ...PayloadName[]];

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
 * Parses a payload of a known kind: size limit, UTF-8, JSON, schema. Never throws. Unknown keys are stripped
 * (a newer minor version's extra fields parse on an older receiver).
 */
export function parsePayload<K extends PayloadName>(name: K, input: Uint8Array | string): ParseResult<PayloadOf<K>> {
  const spec: PayloadSpec = PAYLOADS[name];
  const decoded = decodeJson(input, spec.maxBytes);
  if (!decoded.ok) return decoded;
  return validate(spec.schema, decoded.value) as ParseResult<PayloadOf<K>>;
}

/** Validates an already decoded value (e.g. a JWS payload) against a payload schema. Never throws. */
export function validatePayload<K extends PayloadName>(name: K, value: unknown): ParseResult<PayloadOf<K>> {
  return validate(PAYLOADS[name].schema, value);
}

// ---------------------------------------------------------------------------------------------------------------
// Uplink batches, record by record

/** One record of a batch: parsed, or refused with the msgId to reject it by. */
export type RecordResult =
  | { readonly ok: true; readonly record: UplinkRecord }
  | {
      readonly ok: false;
      readonly msgId: MsgId;
      /** `unknown-kind`: a kind this receiver does not know (a newer sender); `invalid`: fails its schema. */
      readonly reason: 'unknown-kind' | 'invalid';
      /** Failing field within the record, e.g. `payload.speedMps`. */
      readonly path?: string;
      readonly issue?: string;
    };

export type BatchParseResult =
  | {
      readonly ok: true;
      readonly batchId: BatchId;
      readonly sentAt: number;
      readonly live: boolean;
      readonly records: readonly RecordResult[];
    }
  | (ParseFailure & {
      /** Present when the batch id could be read, so the cloud can answer with `UplinkAck.error`. */
      readonly batchId?: BatchId;
    });

/**
 * Parses an uplink batch in two steps, so one bad record cannot hold up its neighbours: first the shell (batch
 * id, and a kind and msgId for every record), then every record against `UplinkRecord` on its own. If the shell
 * fails, no record can be named: answer `{batchId, acked: [], rejected: [], error}` when `batchId` is present.
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
  // The shell proved `records` is an array of objects of the same length; re-read the raw ones, which keep the
  // fields the shell's schema stripped.
  const rawRecords = (raw as { records: unknown[] }).records;
  const records = shell.value.records.map((head, index): RecordResult => {
    const parsed = validate(UplinkRecord, rawRecords[index]);
    if (parsed.ok) return { ok: true, record: parsed.value };
    return {
      ok: false,
      msgId: head.payload.msgId,
      reason: parsed.path === 'kind' ? 'unknown-kind' : 'invalid',
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
  };
}

function readBatchId(raw: unknown): BatchId | undefined {
  if (typeof raw !== 'object' || raw === null || !('batchId' in raw)) return undefined;
  const result = validate(UplinkBatchShell.entries.batchId, raw.batchId);
  return result.ok ? result.value : undefined;
}

/** The `rejected` entry of an ack for a record that failed to parse. */
export function rejectionOf(result: Extract<RecordResult, { ok: false }>): RejectedRecord {
  return {
    msgId: result.msgId,
    reason: result.reason,
    ...(result.path === undefined ? {} : { path: result.path }),
  };
}
