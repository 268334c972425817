/**
 * Access tokens: JWTs signed with ES256, short-lived, with a key id so keys can rotate.
 *
 * Verification pins everything (RELIABILITY c1/c2; jsonwebtoken CVE-2022-23539/23540/23541): the header must say
 * ES256 and name a kid we hold; jsonwebtoken is then given that one public key and `algorithms: ['ES256']`, and checks
 * issuer, audience, expiry (≤ 30 s leeway) and the signature. `alg: none`, HS256 signed with the public key, an
 * unknown or path-like kid and a refresh token (not a JWT) all end as a TokenRefused.
 */
import { randomUUID } from 'node:crypto';
import jwt from 'jsonwebtoken';
import type { Clock } from '../../../tools/runtime/clock.ts';
import type { Keyring } from './keyring.ts';

/** RFC 9068's media type for JWT access tokens, in the `typ` header: an ID token or another JWT is not one. */
export const ACCESS_TOKEN_TYP = 'at+jwt';
export const CLOCK_LEEWAY_S = 30;

export interface AccessClaims {
  /** Account id. */
  sub: string;
  /** Login session (refresh family) id. */
  sid: string;
  jti: string;
  iat: number;
  exp: number;
}

export interface IssuedAccessToken {
  token: string;
  jti: string;
  /** Epoch seconds. */
  expiresAt: number;
  expiresInS: number;
}

export type RefusalReason =
  | 'malformed'
  | 'wrong-algorithm'
  | 'wrong-type'
  | 'unknown-key'
  | 'bad-signature'
  | 'expired'
  | 'not-yet-valid'
  | 'wrong-issuer'
  | 'wrong-audience'
  | 'bad-claims';

export class TokenRefused extends Error {
  readonly reason: RefusalReason;
  constructor(reason: RefusalReason) {
    super(`access token refused: ${reason}`);
    this.name = 'TokenRefused';
    this.reason = reason;
  }
}

export interface AccessTokens {
  issue(subject: { userId: string; sessionId: string }): IssuedAccessToken;
  /** The token's claims, or throws TokenRefused. Does not look at revocation (the guard does). */
  verify(token: string): AccessClaims;
}

export interface AccessTokenOptions {
  keyring: Keyring;
  issuer: string;
  audience: string;
  ttlS: number;
  clock: Clock;
}

/** Session ids are ours (random, base64url); anything else in a validly signed token is a bug: refuse it. */
const SESSION_ID = /^[A-Za-z0-9_-]{16,64}$/;
const JWT_SHAPE = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/;

function refusalOf(err: unknown): RefusalReason {
  if (err instanceof jwt.TokenExpiredError) return 'expired';
  if (err instanceof jwt.NotBeforeError) return 'not-yet-valid';
  const message = (err as Error).message ?? '';
  if (/audience/.test(message)) return 'wrong-audience';
  if (/issuer/.test(message)) return 'wrong-issuer';
  if (/signature/.test(message)) return 'bad-signature';
  if (/algorithm/.test(message)) return 'wrong-algorithm';
  return 'malformed';
}

export function createAccessTokens({ keyring, issuer, audience, ttlS, clock }: AccessTokenOptions): AccessTokens {
  return {
    issue({ userId, sessionId }) {
      const iat = Math.floor(clock.nowMs() / 1000);
      const exp = iat + ttlS;
      const jti = randomUUID();
      const token = jwt.sign(
        { sub: userId, sid: sessionId, jti, iat, exp, iss: issuer, aud: audience },
        keyring.signing.privateKey,
        {
          algorithm: 'ES256',
          keyid: keyring.signing.kid,
          header: { alg: 'ES256', typ: ACCESS_TOKEN_TYP, kid: keyring.signing.kid },
        },
      );
      return { token, jti, expiresAt: exp, expiresInS: ttlS };
    },

    verify(token) {
      if (token.length > 4096 || !JWT_SHAPE.test(token)) throw new TokenRefused('malformed');
      const decoded = jwt.decode(token, { complete: true });
      if (!decoded || typeof decoded.payload === 'string') throw new TokenRefused('malformed');
      const { header } = decoded;
      if (header.alg !== 'ES256') throw new TokenRefused('wrong-algorithm');
      if (header.typ !== ACCESS_TOKEN_TYP) throw new TokenRefused('wrong-type');
      const key = typeof header.kid === 'string' ? keyring.verifyKey(header.kid) : undefined;
      if (!key) throw new TokenRefused('unknown-key');
      let payload: jwt.JwtPayload | string;
      try {
        payload = jwt.verify(token, key, {
          algorithms: ['ES256'],
          issuer,
          audience,
          clockTolerance: CLOCK_LEEWAY_S,
          clockTimestamp: Math.floor(clock.nowMs() / 1000),
        });
      } catch (err) {
        throw new TokenRefused(refusalOf(err));
      }
      if (typeof payload === 'string') throw new TokenRefused('bad-claims');
      const { sub, sid, jti, iat, exp } = payload as Record<string, unknown>;
      if (
        typeof sub !== 'string' ||
        !/^[a-f0-9]{24}$/.test(sub) ||
        typeof sid !== 'string' ||
        !SESSION_ID.test(sid) ||
        typeof jti !== 'string' ||
        typeof iat !== 'number' ||
        typeof exp !== 'number'
      ) {
        throw new TokenRefused('bad-claims');
      }
      return { sub, sid, jti, iat, exp };
    },
  };
}
