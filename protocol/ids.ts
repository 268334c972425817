/**
 * Identifiers: what may appear as a topic level, and the opaque ids that only travel in payloads.
 *
 * Every id is a branded string: a `MachineId` cannot be passed where a `BranchId` is expected, and the only ways
 * to get one are parsing untrusted input with the schema (`v.safeParse(MachineId, x)`) or the `as…` helpers below
 * for trusted literals (configuration, tests). Builders in topics.ts accept branded ids only, so a topic can never
 * be assembled from an unchecked string.
 */
import * as v from 'valibot';

/**
 * A topic-level id: lowercase letters, digits and `-`, 1–63 characters, not starting with `-`.
 * It can never contain `+`, `#`, `/`, `$`, NUL or upper case, so an id substituted into a topic or an ACL
 * pattern cannot widen it (CVE-2017-7650 was exactly that).
 */
export const ID_PATTERN = /^[a-z0-9][a-z0-9-]{0,62}$/;
/** Longest topic-level id. */
export const ID_MAX_LENGTH = 63;

/**
 * An opaque id that travels only in payloads (boot, request, batch, session ids): 1–64 characters of
 * `[A-Za-z0-9_-]`, which covers UUIDs, ULIDs, nanoids and MongoDB ObjectIds without any escaping. These are only
 * ever compared within one scope (a boot id within its source, a request or batch id on its own gateway's
 * topics, a session id issued by the cloud), so they need no global uniqueness. Message ids do: `MSG_ID_PATTERN`.
 */
export const OPAQUE_ID_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;
/** Longest opaque id. */
export const OPAQUE_ID_MAX_LENGTH = 64;

/**
 * A message id: 16–64 characters of `[A-Za-z0-9_-]`. The cloud deduplicates records by msgId alone, across every
 * machine and gateway of every branch, so a msgId must be globally unique, not just unique per source: a short
 * counter such as `m-1` on two machines would make the second machine's record a "duplicate" that is acked and
 * silently dropped. 16 characters is the least that leaves room for a random or time-ordered id: a UUID (36), a
 * ULID (26), or 128 random bits in base64url (22). Use `newMsgId()`.
 */
export const MSG_ID_PATTERN = /^[A-Za-z0-9_-]{16,64}$/;
/** Shortest message id. */
export const MSG_ID_MIN_LENGTH = 16;

// maxLength before regex: a 200 KiB hostile string is refused by length, not scanned.
const topicLevelId = (description: string) =>
  v.pipe(
    v.string(),
    v.maxLength(ID_MAX_LENGTH),
    v.regex(ID_PATTERN, 'Invalid id: expected ^[a-z0-9][a-z0-9-]{0,62}$'),
    v.description(description),
  );

const opaqueId = (description: string) =>
  v.pipe(
    v.string(),
    v.maxLength(OPAQUE_ID_MAX_LENGTH),
    v.regex(OPAQUE_ID_PATTERN, 'Invalid id: expected ^[A-Za-z0-9_-]{1,64}$'),
    v.description(description),
  );

/** A branch (one gym site); the first id level of the topic tree. */
export const BranchId = v.pipe(topicLevelId('Branch id (topic level)'), v.brand('BranchId'));
export type BranchId = v.InferOutput<typeof BranchId>;

/**
 * The source of a record: a machine or a gateway. Machine and gateway ids are both sources (they carry the
 * `SourceId` brand too), so `record.source === machineId` type-checks while a machine id still cannot be used as a
 * gateway id.
 */
export const SourceId = v.pipe(topicLevelId('Record source: a machine or gateway id'), v.brand('SourceId'));
export type SourceId = v.InferOutput<typeof SourceId>;

/** An edge gateway; its MQTT client id and username equal this id. */
export const GatewayId = v.pipe(topicLevelId('Gateway id (topic level)'), v.brand('SourceId'), v.brand('GatewayId'));
export type GatewayId = v.InferOutput<typeof GatewayId>;

/** A machine (treadmill, rower, selectorised station, …); its MQTT client id and username equal this id. */
export const MachineId = v.pipe(topicLevelId('Machine id (topic level)'), v.brand('SourceId'), v.brand('MachineId'));
export type MachineId = v.InferOutput<typeof MachineId>;

/** An NFC or QR reader attached to a gateway (door, front desk). */
export const ReaderId = v.pipe(topicLevelId('Reader id (topic level)'), v.brand('ReaderId'));
export type ReaderId = v.InferOutput<typeof ReaderId>;

/** A member or staff user (e.g. a MongoDB ObjectId in lowercase hex). */
export const UserId = v.pipe(topicLevelId('User id (topic level)'), v.brand('UserId'));
export type UserId = v.InferOutput<typeof UserId>;

/**
 * Globally unique id of one record; the cloud writes idempotently by it alone (see `MSG_ID_PATTERN`). Use
 * `newMsgId()`.
 */
export const MsgId = v.pipe(
  v.string(),
  v.maxLength(OPAQUE_ID_MAX_LENGTH),
  v.regex(MSG_ID_PATTERN, 'Invalid msgId: expected ^[A-Za-z0-9_-]{16,64}$'),
  v.description('Globally unique record id (idempotency key), 16–64 of [A-Za-z0-9_-]; use newMsgId()'),
  v.brand('MsgId'),
);
export type MsgId = v.InferOutput<typeof MsgId>;

/** Changes every time a source restarts, so that `seq` may restart from 0. */
export const BootId = v.pipe(opaqueId('Boot id: changes when the source restarts'), v.brand('BootId'));
export type BootId = v.InferOutput<typeof BootId>;

/** Correlates a request or command with its response (MQTT 3.1.1 has no correlation data property). */
export const ReqId = v.pipe(opaqueId('Request id, echoed by the response'), v.brand('ReqId'));
export type ReqId = v.InferOutput<typeof ReqId>;

/** Correlates an uplink batch with its ack. */
export const BatchId = v.pipe(opaqueId('Batch id, echoed by the ack'), v.brand('BatchId'));
export type BatchId = v.InferOutput<typeof BatchId>;

/** A member's gym session (check-in to check-out), as issued by the cloud. */
export const SessionId = v.pipe(opaqueId('Session id issued by the cloud'), v.brand('SessionId'));
export type SessionId = v.InferOutput<typeof SessionId>;

/** Whether a string is a valid topic-level id. */
export function isTopicLevelId(value: string): boolean {
  return value.length <= ID_MAX_LENGTH && ID_PATTERN.test(value);
}

// Trusted-input helpers: they throw on an invalid value, which for a literal or a configuration value is a bug
// to surface at once. Untrusted input goes through the schemas (v.safeParse) instead.

/** Brands a trusted branch id; throws if it is invalid. */
export const asBranchId = (value: string): BranchId => v.parse(BranchId, value);
/** Brands a trusted gateway id; throws if it is invalid. */
export const asGatewayId = (value: string): GatewayId => v.parse(GatewayId, value);
/** Brands a trusted machine id; throws if it is invalid. */
export const asMachineId = (value: string): MachineId => v.parse(MachineId, value);
/** Brands a trusted reader id; throws if it is invalid. */
export const asReaderId = (value: string): ReaderId => v.parse(ReaderId, value);
/** Brands a trusted user id; throws if it is invalid. */
export const asUserId = (value: string): UserId => v.parse(UserId, value);
/** Brands a trusted source id; throws if it is invalid. */
export const asSourceId = (value: string): SourceId => v.parse(SourceId, value);
/** Brands a trusted message id; throws if it is invalid. */
export const asMsgId = (value: string): MsgId => v.parse(MsgId, value);
/** Brands a trusted boot id; throws if it is invalid. */
export const asBootId = (value: string): BootId => v.parse(BootId, value);
/** Brands a trusted request id; throws if it is invalid. */
export const asReqId = (value: string): ReqId => v.parse(ReqId, value);
/** Brands a trusted batch id; throws if it is invalid. */
export const asBatchId = (value: string): BatchId => v.parse(BatchId, value);
/** Brands a trusted session id; throws if it is invalid. */
export const asSessionId = (value: string): SessionId => v.parse(SessionId, value);

// Random UUIDv4 (36 chars of [0-9a-f-], 122 random bits) fit the opaque-id rule and the msgId rule. globalThis.crypto exists in Node and browsers
// alike, so protocol/ stays importable by app code.

/** A new random, globally unique message id (a UUIDv4). */
export const newMsgId = (): MsgId => globalThis.crypto.randomUUID() as MsgId;
/** A new random boot id: call once per process start. */
export const newBootId = (): BootId => globalThis.crypto.randomUUID() as BootId;
/** A new random request id. */
export const newReqId = (): ReqId => globalThis.crypto.randomUUID() as ReqId;
/** A new random batch id. */
export const newBatchId = (): BatchId => globalThis.crypto.randomUUID() as BatchId;
