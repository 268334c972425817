/**
 * Public keys by `kid`, for verifyJws: the cloud's configuration keys (from the enrolment) or the QR keys (from
 * the signed configuration). Only P-256 public keys; a key that is not a valid point is left out (and reported).
 */
import type { KeyObject } from 'node:crypto';
import { publicKeyFromJwk } from '../../../protocol/index.ts';
import type { PublicKeyJwk } from '../../../protocol/index.ts';

export interface Keyring {
  /** The key for a JWS header's kid; undefined for an unknown kid. */
  readonly keyFor: (kid: string) => KeyObject | undefined;
  readonly kids: readonly string[];
  /** Kids whose JWK could not be turned into a key. */
  readonly invalid: readonly string[];
}

export function createKeyring(jwks: readonly PublicKeyJwk[]): Keyring {
  const keys = new Map<string, KeyObject>();
  const invalid: string[] = [];
  for (const jwk of jwks) {
    try {
      keys.set(jwk.kid, publicKeyFromJwk(jwk));
    } catch {
      invalid.push(jwk.kid);
    }
  }
  return { keyFor: (kid) => keys.get(kid), kids: [...keys.keys()], invalid };
}
