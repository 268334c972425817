/**
 * Signed documents between cloud and gateway: compact ES256 JWS with a `typ` per document kind, so a token of one
 * kind can never be accepted as another (a member QR token is not a gateway configuration, an access token is
 * neither). The cloud signs (`signJws`); the gateway verifies offline with public keys only (`verifyJws`): no
 * shared secret lives on the gateway.
 *
 * Verification pins everything before it parses anything: at most `maxLength` characters, three base64url parts,
 * a header of exactly `{alg: "ES256", typ, kid}` with the expected `typ` and a `kid` the caller holds, a 64-byte
 * P1363 signature, then the payload as JSON, then (by the caller) the payload's schema.
 */
import { createPublicKey, sign, verify, type KeyObject } from 'node:crypto';
import * as v from 'valibot';
import { UserId } from './ids.ts';
import type { QrVerificationKey } from './messages/command.ts';
import { MAX_COMMAND_JWS_LENGTH, MAX_JWS_HEADER_LENGTH } from './messages/command.ts';

/** The `typ` header of each signed document kind. */
export const JWS_TYPES = {
  /** A member's QR token (payload `QrTokenClaims`). */
  qr: 'nxg-qr+jwt',
  /** A gateway configuration (payload `GatewayConfigDocument`). */
  gatewayConfig: 'nxg-gateway-config+jwt',
  /** One part of a branch's allow-list (payload `AllowListDocument`). */
  allowList: 'nxg-allow-list+jwt',
} as const;
export type JwsType = (typeof JWS_TYPES)[keyof typeof JWS_TYPES];

/** Longest a member QR token may stay valid, s. */
export const MAX_QR_TOKEN_TTL_S = 60;

/**
 * Claims of a member QR token. Times in epoch seconds, as in every JWT. The nonce lets the cloud refuse a replay
 * where it can see one; a gateway offline refuses a nonce it has already seen within the token's lifetime.
 */
export const QrTokenClaims = v.pipe(
  v.object({
    sub: v.pipe(UserId, v.description('The member')),
    nonce: v.pipe(v.string(), v.regex(/^[A-Za-z0-9_-]{12,64}$/), v.description('Single-use nonce, base64url')),
    iat: v.pipe(v.number(), v.safeInteger(), v.minValue(1_577_836_800), v.description('Issued at, epoch s')),
    exp: v.pipe(v.number(), v.safeInteger(), v.minValue(1_577_836_800), v.description('Expires at, epoch s')),
  }),
  v.check(
    (claims) => claims.exp > claims.iat && claims.exp - claims.iat <= MAX_QR_TOKEN_TTL_S,
    'Invalid exp: valid ≤ 60 s',
  ),
  v.title('QrTokenClaims'),
  v.description('Payload of a member QR token (ES256 JWS, typ nxg-qr+jwt, valid ≤ 60 s).'),
);
export type QrTokenClaims = v.InferOutput<typeof QrTokenClaims>;

/** A P-256 public key in JWK form, as in `GatewayConfigDocument.qrKeys` and the enrolment's `configKeys`. */
export type PublicKeyJwk = v.InferOutput<typeof QrVerificationKey>;

/** Turns a JWK into a key for `verifyJws`; throws on a key that is not a valid P-256 point. */
export function publicKeyFromJwk(jwk: Pick<PublicKeyJwk, 'crv' | 'x' | 'y'>): KeyObject {
  return createPublicKey({ key: { kty: 'EC', crv: jwk.crv, x: jwk.x, y: jwk.y }, format: 'jwk' });
}

/** Signs `payload` as a compact ES256 JWS with header `{alg, typ, kid}`. */
export function signJws(typ: JwsType, payload: unknown, key: { kid: string; privateKey: KeyObject }): string {
  const header = Buffer.from(JSON.stringify({ alg: 'ES256', typ, kid: key.kid })).toString('base64url');
  const body = Buffer.from(JSON.stringify(payload)).toString('base64url');
  const signature = sign('sha256', Buffer.from(`${header}.${body}`), {
    key: key.privateKey,
    dsaEncoding: 'ieee-p1363',
  });
  return `${header}.${body}.${signature.toString('base64url')}`;
}

export type JwsRefusal = 'malformed' | 'wrong-header' | 'wrong-type' | 'unknown-key' | 'bad-signature';
export type JwsResult = { ok: true; kid: string; payload: unknown } | { ok: false; reason: JwsRefusal };

const BASE64URL = /^[A-Za-z0-9_-]+$/;
const ES256_SIGNATURE_BYTES = 64;

/**
 * Verifies a compact ES256 JWS of kind `typ` with the key `keyFor(kid)` and returns its decoded payload (still to
 * be checked against its schema). Never throws.
 */
export function verifyJws(
  jws: string,
  typ: JwsType,
  keyFor: (kid: string) => KeyObject | undefined,
  maxLength: number = MAX_COMMAND_JWS_LENGTH,
): JwsResult {
  if (typeof jws !== 'string' || jws.length > maxLength) return { ok: false, reason: 'malformed' };
  const parts = jws.split('.');
  if (parts.length !== 3) return { ok: false, reason: 'malformed' };
  const [headerPart, payloadPart, signaturePart] = parts as [string, string, string];
  if (
    headerPart.length > MAX_JWS_HEADER_LENGTH ||
    ![headerPart, payloadPart, signaturePart].every((p) => BASE64URL.test(p))
  ) {
    return { ok: false, reason: 'malformed' };
  }
  const header = decodeJsonPart(headerPart);
  if (
    !isPlainObject(header) ||
    Object.keys(header).length !== 3 ||
    header.alg !== 'ES256' ||
    typeof header.kid !== 'string'
  ) {
    return { ok: false, reason: 'wrong-header' };
  }
  if (header.typ !== typ) return { ok: false, reason: 'wrong-type' };
  const key = keyFor(header.kid);
  if (key === undefined) return { ok: false, reason: 'unknown-key' };
  const signature = Buffer.from(signaturePart, 'base64url');
  if (signature.length !== ES256_SIGNATURE_BYTES) return { ok: false, reason: 'bad-signature' };
  let valid: boolean;
  try {
    valid = verify(
      'sha256',
      Buffer.from(`${headerPart}.${payloadPart}`),
      { key, dsaEncoding: 'ieee-p1363' },
      signature,
    );
  } catch {
    valid = false;
  }
  if (!valid) return { ok: false, reason: 'bad-signature' };
  const payload = decodeJsonPart(payloadPart);
  if (payload === undefined) return { ok: false, reason: 'malformed' };
  return { ok: true, kid: header.kid, payload };
}

function decodeJsonPart(part: string): unknown {
  try {
    return JSON.parse(Buffer.from(part, 'base64url').toString('utf8')) as unknown;
  } catch {
    return undefined;
  }
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
