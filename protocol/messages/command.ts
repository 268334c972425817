/**
 * Commands and their responses: `m/{machine}/cmd/{name}` (from the cloud or the gateway) and
 * `gw/{gateway}/cmd/{name}` (from the cloud). Every command carries a `reqId`; the receiver answers on
 * `…/cmd/{name}/res` with `{reqId, ok: true}` or `{reqId, ok: false, error}`, and catches its own failures to do
 * so — a command never goes unanswered unless it could not be parsed at all.
 *
 * Commands are QoS 1 and may sit in a persistent session while the receiver is away, so each may carry
 * `expiresAt`: a command received after it is answered with the error `expired` and not executed (a "welcome"
 * on a console an hour late is worse than none).
 */
import * as v from 'valibot';
import { BranchId, GatewayId, MachineId, ReaderId, ReqId, SessionId, UserId } from '../ids.ts';
import { Code, ErrorInfo, Sha256Hex, Timestamp, jwsCompact, label, text } from '../scalars.ts';
import { ACCESS_ACTIONS, CREDENTIAL_KINDS } from './access.ts';
import { DISPLAY_UNITS, TelemetryIntervalMs } from './meta.ts';

const commandEntries = {
  reqId: ReqId,
  expiresAt: v.optional(v.pipe(Timestamp, v.description('Answer `expired` instead of executing after this time'))),
};

// ---------------------------------------------------------------------------------------------------------------
// Machine commands

/** A member is now linked to the machine: tag the following workout segments with them and greet them. */
export const MachineLinkCommand = v.pipe(
  v.object({
    ...commandEntries,
    userId: UserId,
    sessionId: v.optional(SessionId),
    greeting: v.optional(text(64, 'What the console shows, e.g. "Hi Ana"')),
  }),
  v.title('MachineLinkCommand'),
  v.description('Link a member to the machine: later workout segments carry their userId until unlink.'),
);
export type MachineLinkCommand = v.InferOutput<typeof MachineLinkCommand>;

/** The member is no longer linked (they left, timed out, or another member took over). */
export const MachineUnlinkCommand = v.pipe(
  v.object({
    ...commandEntries,
    userId: v.optional(v.pipe(UserId, v.description('Only unlink if this member is the one linked'))),
    reason: v.optional(v.pipe(Code, v.description('e.g. member, idle-timeout, checked-out'))),
  }),
  v.title('MachineUnlinkCommand'),
  v.description('Unlink the member: later segments carry no userId.'),
);
export type MachineUnlinkCommand = v.InferOutput<typeof MachineUnlinkCommand>;

export const DISPLAY_LEVELS = ['info', 'success', 'warning', 'error'] as const;

/** Show a short message on the machine's console. */
export const DisplayCommand = v.pipe(
  v.object({
    ...commandEntries,
    text: v.pipe(text(140, 'Message to show'), v.minLength(1)),
    level: v.optional(v.pipe(v.picklist(DISPLAY_LEVELS), v.description('Styling; defaults to info'))),
    durationS: v.optional(
      v.pipe(v.number(), v.safeInteger(), v.minValue(1), v.maxValue(600), v.description('How long to show it, s')),
    ),
  }),
  v.title('DisplayCommand'),
  v.description('Show a short message on the console.'),
);
export type DisplayCommand = v.InferOutput<typeof DisplayCommand>;

/** Change machine settings; only the fields given change. */
export const MachineConfigCommand = v.pipe(
  v.object({
    ...commandEntries,
    telemetryIntervalMs: v.optional(TelemetryIntervalMs),
    displayUnits: v.optional(v.picklist(DISPLAY_UNITS)),
    displayName: v.optional(label(64, 'Name shown to members')),
    idleUnlinkS: v.optional(
      v.pipe(
        v.number(),
        v.safeInteger(),
        v.minValue(10),
        v.maxValue(3_600),
        v.description('Unlink the member after this long without activity, s'),
      ),
    ),
  }),
  v.title('MachineConfigCommand'),
  v.description('Change settings; fields left out keep their value. Answered once applied.'),
);
export type MachineConfigCommand = v.InferOutput<typeof MachineConfigCommand>;

/** Republish meta and status (after the cloud lost retained state, or to resynchronise a dashboard). */
export const MachineRebirthCommand = v.pipe(
  v.object(commandEntries),
  v.title('MachineRebirthCommand'),
  v.description('Republish meta and status now.'),
);
export type MachineRebirthCommand = v.InferOutput<typeof MachineRebirthCommand>;

// ---------------------------------------------------------------------------------------------------------------
// Gateway commands

/** Longest JWS a gateway command may carry (stays below the cloud's 256 KiB frame limit). */
export const MAX_COMMAND_JWS_LENGTH = 230 * 1024;
/**
 * Longest JWS protected header the cloud signs with, in base64url characters: `{"alg":"ES256","typ":…,"kid":…}`
 * with a kid of at most 64 characters is under 200. A verifier may refuse a longer header.
 */
export const MAX_JWS_HEADER_LENGTH = 256;
/** An ES256 signature (64 bytes, IEEE P1363) in base64url. */
export const ES256_SIGNATURE_LENGTH = 86;
/**
 * Largest signed document (`GatewayConfigDocument`, `AllowListDocument`), in bytes of compact JSON: the payload
 * limit of both. Chosen so that any document within it still signs into a JWS within `MAX_COMMAND_JWS_LENGTH`:
 * header (≤ 256) + `.` + payload in base64url (4 characters per 3 bytes: 234,838 for 172 KiB) + `.` + signature
 * (86) = 235,182 ≤ 235,520. A larger limit would accept documents the cloud cannot send.
 */
export const MAX_SIGNED_DOCUMENT_BYTES = 172 * 1024;
/** Most machines in one gateway configuration (worst case about 160 KiB, within MAX_SIGNED_DOCUMENT_BYTES). */
export const MAX_GATEWAY_MACHINES = 1_000;
/**
 * Most members in one allow-list part; a branch's list is split into parts of at most this many. Bounded by size:
 * the largest member the schema accepts (63-character userId, `validUntil`, four card hashes) is 380 bytes of
 * JSON, so 400 of them (about 149 KiB) fit `MAX_SIGNED_DOCUMENT_BYTES` with room for additive fields; 500 did not.
 */
export const MAX_ALLOW_LIST_PART_MEMBERS = 400;
/** Most parts of one allow-list revision (up to 400,000 members per branch). */
export const MAX_ALLOW_LIST_PARTS = 1_000;
/** Most card hashes per member in the allow-list. */
export const MAX_MEMBER_CARDS = 4;

const revision = v.pipe(
  v.number(),
  v.safeInteger(),
  v.minValue(0),
  v.description('Revision, increasing; a gateway ignores one older than what it holds'),
);

/**
 * Push a new gateway configuration. The configuration is a JWS (ES256) signed by the cloud whose payload is a
 * `GatewayConfigDocument`: the gateway verifies it before use and keeps it on disk, so it can start offline
 * with a configuration it can still trust.
 */
export const GatewayConfigCommand = v.pipe(
  v.object({
    ...commandEntries,
    revision,
    jws: jwsCompact(MAX_COMMAND_JWS_LENGTH, 'Signed GatewayConfigDocument (ES256 JWS compact)'),
  }),
  v.title('GatewayConfigCommand'),
  v.description('A new signed configuration; the JWS payload is a GatewayConfigDocument.'),
);
export type GatewayConfigCommand = v.InferOutput<typeof GatewayConfigCommand>;

/** A P-256 public key for verifying member QR tokens offline (JWK members `kid`, `x`, `y`). */
export const QrVerificationKey = v.object({
  kid: label(64, 'Key id, as in the tokens’ JWS header'),
  crv: v.literal('P-256'),
  x: v.pipe(v.string(), v.regex(/^[A-Za-z0-9_-]{43}$/), v.description('JWK x, base64url')),
  y: v.pipe(v.string(), v.regex(/^[A-Za-z0-9_-]{43}$/), v.description('JWK y, base64url')),
});

/**
 * A reader attached to the gateway: at a door (a scan checks in or out) or mounted on a machine (a scan links the
 * member to that machine, or unlinks them if they are the one linked).
 */
export const GatewayReaderConfig = v.variant('action', [
  v.object({ reader: ReaderId, kind: v.picklist(CREDENTIAL_KINDS), action: v.picklist(ACCESS_ACTIONS) }),
  v.object({
    reader: ReaderId,
    kind: v.picklist(CREDENTIAL_KINDS),
    action: v.pipe(v.literal('link'), v.description('Machine-mounted: link or unlink the member')),
    machine: MachineId,
  }),
]);
export type GatewayReaderConfig = v.InferOutput<typeof GatewayReaderConfig>;

/** The payload of the configuration JWS. */
export const GatewayConfigDocument = v.pipe(
  v.object({
    branch: BranchId,
    gateway: GatewayId,
    revision,
    issuedAt: Timestamp,
    machines: v.pipe(
      v.array(
        v.object({
          machine: MachineId,
          secretSha256: v.pipe(Sha256Hex, v.description('SHA-256 of the machine’s 256-bit MQTT secret')),
        }),
      ),
      v.maxLength(MAX_GATEWAY_MACHINES),
      v.description('Machines allowed on this gateway’s broker, with their secrets’ hashes'),
    ),
    readers: v.pipe(
      v.array(GatewayReaderConfig),
      v.maxLength(32),
      v.description('Readers (door or machine-mounted) and what a scan at each means'),
    ),
    qrKeys: v.pipe(
      v.array(QrVerificationKey),
      v.minLength(1),
      v.maxLength(4),
      v.description('Keys that verify member QR tokens (several during a key rotation)'),
    ),
    telemetryIntervalMs: v.optional(TelemetryIntervalMs),
    allowListMaxAgeS: v.optional(
      v.pipe(
        v.number(),
        v.safeInteger(),
        v.minValue(60),
        v.maxValue(30 * 86_400),
        v.description('Oldest allow-list the gateway may decide offline with, s'),
      ),
    ),
  }),
  v.title('GatewayConfigDocument'),
  v.description('The signed gateway configuration (payload of GatewayConfigCommand.jws).'),
);
export type GatewayConfigDocument = v.InferOutput<typeof GatewayConfigDocument>;

/** `part` of `parts`: carried by the allow-list command and repeated inside its signed document. */
const partEntries = {
  part: v.pipe(
    v.number(),
    v.safeInteger(),
    v.minValue(0),
    v.maxValue(MAX_ALLOW_LIST_PARTS - 1),
    v.description('Part index, from 0'),
  ),
  parts: v.pipe(
    v.number(),
    v.safeInteger(),
    v.minValue(1),
    v.maxValue(MAX_ALLOW_LIST_PARTS),
    v.description('Number of parts of this revision'),
  ),
};
const isPartBelowParts = (value: { part: number; parts: number }): boolean => value.part < value.parts;
const PART_NOT_BELOW_PARTS = 'Invalid part: not below parts';

/**
 * One part of the branch's allow-list, for offline check-in. A branch's list is sent as `parts` commands of one
 * `revision`; the gateway switches to a revision only when it holds every part, so it never decides on half a list.
 */
export const AllowListCommand = v.pipe(
  v.object({
    ...commandEntries,
    revision,
    ...partEntries,
    jws: jwsCompact(MAX_COMMAND_JWS_LENGTH, 'Signed AllowListDocument (ES256 JWS compact)'),
  }),
  v.forward(v.partialCheck([['part'], ['parts']], isPartBelowParts, PART_NOT_BELOW_PARTS), ['part']),
  v.title('AllowListCommand'),
  v.description('One signed part of the allow-list; the JWS payload is an AllowListDocument.'),
);
export type AllowListCommand = v.InferOutput<typeof AllowListCommand>;

/** The payload of an allow-list part's JWS. NFC UIDs travel hashed: the gateway hashes what it reads. */
export const AllowListDocument = v.pipe(
  v.object({
    branch: BranchId,
    revision,
    ...partEntries,
    issuedAt: Timestamp,
    members: v.pipe(
      v.array(
        v.object({
          userId: UserId,
          validUntil: v.optional(v.pipe(Timestamp, v.description('Membership end; absent: open-ended'))),
          nfc: v.pipe(
            v.array(Sha256Hex),
            v.maxLength(MAX_MEMBER_CARDS),
            v.description('SHA-256 of each enrolled card UID (lowercase hex UID as UTF-8)'),
          ),
        }),
      ),
      v.maxLength(MAX_ALLOW_LIST_PART_MEMBERS),
      v.description('At most 400 members, so the largest part fits MAX_SIGNED_DOCUMENT_BYTES'),
    ),
  }),
  v.forward(v.partialCheck([['part'], ['parts']], isPartBelowParts, PART_NOT_BELOW_PARTS), ['part']),
  v.title('AllowListDocument'),
  v.description('Members who may check in while the gateway is offline (one part of the list).'),
);
export type AllowListDocument = v.InferOutput<typeof AllowListDocument>;

/** Republish the gateway state and ask every machine to rebirth. */
export const GatewayRebirthCommand = v.pipe(
  v.object(commandEntries),
  v.title('GatewayRebirthCommand'),
  v.description('Republish the gateway state now and send rebirth to every connected machine.'),
);
export type GatewayRebirthCommand = v.InferOutput<typeof GatewayRebirthCommand>;

// ---------------------------------------------------------------------------------------------------------------
// Responses

/** Known command error codes (an open set). */
export const COMMAND_ERROR_CODES = [
  'expired',
  'invalid',
  'unsupported',
  'busy',
  'failed',
  'bad-signature',
  'stale-revision',
] as const;

/** The answer to any command, machine or gateway: `{reqId, ok: true}` or `{reqId, ok: false, error}`. */
export const CommandResponse = v.pipe(
  v.variant('ok', [
    v.object({ reqId: ReqId, ok: v.literal(true) }),
    v.object({ reqId: ReqId, ok: v.literal(false), error: ErrorInfo }),
  ]),
  v.title('CommandResponse'),
  v.description('Outcome of a command, echoing its reqId.'),
);
export type CommandResponse = v.InferOutput<typeof CommandResponse>;
