/**
 * Access control at the door: the credentials members present and the record of each scan with the decision
 * taken. A scan record is published as it happens on `access/{reader}/scan` and queued in the access lane, which
 * is sent first and never evicted.
 */
import * as v from 'valibot';
import { envelopeEntries } from '../envelope.ts';
import { ReaderId, ReqId, SessionId, UserId } from '../ids.ts';
import { Code, count, jwsCompact } from '../scalars.ts';

/** NFC card UID: 4, 7 or 10 bytes (ISO 14443-3 single, double, triple size), lowercase hex, no separators. */
export const NFC_UID_PATTERN = /^(?:[0-9a-f]{8}|[0-9a-f]{14}|[0-9a-f]{20})$/;

export const NfcUid = v.pipe(
  v.string(),
  v.maxLength(20),
  v.regex(NFC_UID_PATTERN, 'Invalid UID: expected 4, 7 or 10 bytes in lowercase hex'),
  v.description('NFC card UID, lowercase hex (8, 14 or 20 digits)'),
);

/** Longest member QR token accepted (an ES256 JWS with a few claims is about 300 characters). */
export const MAX_QR_TOKEN_LENGTH = 1024;

/** Member QR token: an ES256 JWS signed by the cloud, valid ≤ 60 s, with a nonce; gateways verify it offline. */
export const QrToken = jwsCompact(MAX_QR_TOKEN_LENGTH, 'Member QR token (ES256 JWS compact, valid ≤ 60 s)');

/** A credential a member presents: an NFC card or a QR token from the app. */
export const Credential = v.variant('kind', [
  v.object({ kind: v.literal('nfc'), uid: NfcUid }),
  v.object({ kind: v.literal('qr'), token: QrToken }),
]);
export type Credential = v.InferOutput<typeof Credential>;

export const CREDENTIAL_KINDS = ['nfc', 'qr'] as const;
export type CredentialKind = (typeof CREDENTIAL_KINDS)[number];

/** What a door scan asks for: the reader's role (entry or exit). */
export const ACCESS_ACTIONS = ['check-in', 'check-out'] as const;

/**
 * Known reasons for a deny (an open set: a receiver treats an unknown reason as a plain deny).
 * `allow-list-stale`: the gateway was offline and its cached allow-list was too old to decide on.
 * `unlinked`: a link request by the member already linked to that machine unlinked them (a second tap toggles);
 * the cloud has sent the machine its unlink command.
 */
export const DENY_REASONS = [
  'unknown-credential',
  'invalid-token',
  'expired-token',
  'replayed-token',
  'membership-inactive',
  'outside-opening-hours',
  'already-checked-in',
  'not-checked-in',
  'blocked',
  'rate-limited',
  'allow-list-stale',
  'machine-busy',
  'machine-unavailable',
  'unlinked',
] as const;

/** Who decided: the cloud (online request) or the gateway alone from its cached allow-list. */
export const DECIDED_BY = ['online', 'offline'] as const;

/** A scan at a door reader and the decision taken; the gateway is the record's source. */
export const AccessScan = v.pipe(
  v.object({
    ...envelopeEntries,
    reader: ReaderId,
    action: v.pipe(v.picklist(ACCESS_ACTIONS), v.description('What the scan asks for')),
    credential: Credential,
    decision: v.pipe(v.picklist(['allow', 'deny']), v.description('The outcome at the door')),
    reason: v.optional(v.pipe(Code, v.description('Why; required for a deny (see DENY_REASONS)'))),
    decidedBy: v.pipe(v.picklist(DECIDED_BY), v.description('online: the cloud decided; offline: the gateway')),
    userId: v.optional(v.pipe(UserId, v.description('The member, when the credential was recognised'))),
    sessionId: v.optional(v.pipe(SessionId, v.description('Session opened or closed (online decisions)'))),
    reqId: v.optional(
      v.pipe(
        ReqId,
        v.description(
          'The online request this decision answered, or — decided offline — the one tried first (the cloud may ' +
            'have taken that decision too late to answer: one tap, one effect)',
        ),
      ),
    ),
    latencyMs: v.optional(count(60_000, 'Time from scan to decision, ms')),
  }),
  v.forward(
    v.partialCheck(
      [['decision'], ['reason']],
      (scan) => scan.decision === 'allow' || scan.reason !== undefined,
      'Invalid reason: a deny needs a reason',
    ),
    ['reason'],
  ),
  v.title('AccessScan'),
  v.description(
    'An NFC or QR scan at a door reader with the decision taken and who took it (cloud online, or the gateway ' +
      'offline from its cached allow-list). The gateway is the source of the envelope.',
  ),
);
export type AccessScan = v.InferOutput<typeof AccessScan>;
