/**
 * What the gateway can tell about a credential by itself: an NFC UID's SHA-256 (the allow-list holds only hashes)
 * and a QR token's signature and claims, verified with the QR keys of the signed configuration (typ
 * `nxg-qr+jwt`, ES256, `exp` with a small leeway for clock skew, `iat` not in the future). The nonce is checked
 * by the caller against the replay cache.
 */
import { createHash } from 'node:crypto';
import * as v from 'valibot';
import { JWS_TYPES, MAX_QR_TOKEN_LENGTH, QrTokenClaims, verifyJws } from '../../../protocol/index.ts';
import type { Keyring } from '../cloud-config/keys.ts';

/** Clock skew tolerated on a QR token's `exp` and `iat`. */
export const QR_LEEWAY_MS = 5_000;

/** SHA-256 (lowercase hex) of a card UID as lowercase hex text: what the allow-list holds. */
export function cardHash(uid: string): string {
  return createHash('sha256').update(uid.toLowerCase(), 'utf8').digest('hex');
}

export type QrCheck =
  | { readonly ok: true; readonly claims: QrTokenClaims }
  | { readonly ok: false; readonly reason: 'invalid-token' | 'expired-token' };

export function checkQrToken(token: string, keys: Keyring | undefined, nowMs: number): QrCheck {
  if (keys === undefined) return { ok: false, reason: 'invalid-token' };
  const checked = verifyJws(token, JWS_TYPES.qr, keys.keyFor, MAX_QR_TOKEN_LENGTH);
  if (!checked.ok) return { ok: false, reason: 'invalid-token' };
  const claims = v.safeParse(QrTokenClaims, checked.payload);
  if (!claims.success) return { ok: false, reason: 'invalid-token' };
  if (claims.output.iat * 1000 - QR_LEEWAY_MS > nowMs) return { ok: false, reason: 'invalid-token' };
  if (claims.output.exp * 1000 + QR_LEEWAY_MS < nowMs) return { ok: false, reason: 'expired-token' };
  return { ok: true, claims: claims.output };
}
