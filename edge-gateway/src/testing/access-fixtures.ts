/**
 * Signing for the gateway's access tests, exactly as the cloud signs (protocol signJws, ES256, P-256 keys made by
 * node:crypto): configuration documents, allow-list parts, member QR tokens. Real keys and real signatures, no
 * shortcut in verification.
 */
import { createHash, generateKeyPairSync, randomBytes, type KeyObject } from 'node:crypto';
import { JWS_TYPES, MAX_ALLOW_LIST_PART_MEMBERS, newReqId, signJws } from '../../../protocol/index.ts';
import type {
  AllowListCommand,
  AllowListDocument,
  BranchId,
  GatewayConfigCommand,
  GatewayConfigDocument,
  GatewayId,
  PublicKeyJwk,
  UserId,
} from '../../../protocol/index.ts';

export interface TestSigningKey {
  readonly kid: string;
  readonly privateKey: KeyObject;
  readonly jwk: PublicKeyJwk;
}

/** A fresh P-256 key; kid = base64url SHA-256 of the public JWK's x‖y (a thumbprint-like id). */
export function newSigningKey(kid?: string): TestSigningKey {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const jwk = publicKey.export({ format: 'jwk' }) as { x: string; y: string };
  const id = kid ?? createHash('sha256').update(`${jwk.x}${jwk.y}`).digest('base64url').slice(0, 43);
  return { kid: id, privateKey, jwk: { kid: id, crv: 'P-256', x: jwk.x, y: jwk.y } };
}

export function configDocument(
  fields: Pick<GatewayConfigDocument, 'branch' | 'gateway' | 'revision' | 'qrKeys'> &
    Partial<Omit<GatewayConfigDocument, 'branch' | 'gateway' | 'revision' | 'qrKeys'>>,
): GatewayConfigDocument {
  return { issuedAt: Date.now(), machines: [], readers: [], ...fields };
}

export function configCommand(key: TestSigningKey, document: GatewayConfigDocument): GatewayConfigCommand {
  return { reqId: newReqId(), revision: document.revision, jws: signJws(JWS_TYPES.gatewayConfig, document, key) };
}

export interface TestMember {
  readonly userId: UserId;
  readonly validUntil?: number;
  /** Card UIDs (lowercase hex); hashed as the cloud does. */
  readonly uids?: readonly string[];
}

export function uidHash(uid: string): string {
  return createHash('sha256').update(uid.toLowerCase(), 'utf8').digest('hex');
}

/** The allow-list of `members` as signed part commands of one revision. */
export function allowListCommands(
  key: TestSigningKey,
  options: {
    branch: BranchId;
    revision: number;
    members: readonly TestMember[];
    issuedAt?: number;
    partSize?: number;
  },
): AllowListCommand[] {
  const size = options.partSize ?? MAX_ALLOW_LIST_PART_MEMBERS;
  const chunks: TestMember[][] = [];
  for (let i = 0; i < options.members.length; i += size) chunks.push(options.members.slice(i, i + size));
  if (chunks.length === 0) chunks.push([]);
  return chunks.map((chunk, part) => {
    const document: AllowListDocument = {
      branch: options.branch,
      revision: options.revision,
      part,
      parts: chunks.length,
      issuedAt: options.issuedAt ?? Date.now(),
      members: chunk.map((m) => ({
        userId: m.userId,
        ...(m.validUntil === undefined ? {} : { validUntil: m.validUntil }),
        nfc: (m.uids ?? []).map(uidHash),
      })),
    };
    return {
      reqId: newReqId(),
      revision: options.revision,
      part,
      parts: chunks.length,
      jws: signJws(JWS_TYPES.allowList, document, key),
    };
  });
}

/** A member QR token as the cloud issues it: valid `ttlS` seconds from `nowMs`, a fresh nonce. */
export function qrToken(
  key: TestSigningKey,
  sub: UserId,
  options: { nowMs?: number; ttlS?: number; nonce?: string; iat?: number; exp?: number } = {},
): string {
  const iat = options.iat ?? Math.floor((options.nowMs ?? Date.now()) / 1000);
  const exp = options.exp ?? iat + (options.ttlS ?? 30);
  return signJws(JWS_TYPES.qr, { sub, nonce: options.nonce ?? randomBytes(16).toString('base64url'), iat, exp }, key);
}

export type { GatewayId };
