/**
 * Authentication's environment variables (spread into cloud/src/config.ts, which parses the environment once).
 */
import * as v from 'valibot';
import { envInt, envList } from '../../../tools/runtime/env-config.ts';

export const authEnv = {
  /** `iss` of the access tokens we sign and the only issuer we accept. */
  AUTH_ISSUER: v.optional(v.pipe(v.string(), v.minLength(1), v.maxLength(200)), 'nxg'),
  /** `aud` of the access tokens; other audiences are refused (RELIABILITY c2). */
  AUTH_AUDIENCE: v.optional(v.pipe(v.string(), v.minLength(1), v.maxLength(200)), 'nxg-api'),
  /** PEM file of the EC P-256 private key that signs access tokens (ES256). Unset: a development key (see below). */
  AUTH_SIGNING_KEY_FILE: v.optional(v.pipe(v.string(), v.minLength(1))),
  /** Comma-separated PEM files (public or private) of retired signing keys: still accepted, never used to sign. */
  AUTH_VERIFY_KEY_FILES: envList(''),
  /** Where a development signing key is created and kept when AUTH_SIGNING_KEY_FILE is unset (loopback only). */
  AUTH_DEV_KEY_DIR: v.optional(v.pipe(v.string(), v.minLength(1)), 'data/keys'),
  /** Access token lifetime. */
  AUTH_ACCESS_TOKEN_TTL_S: envInt(900, 60, 3600),
  /** Refresh token lifetime; each use rotates it and restarts it. */
  AUTH_REFRESH_TOKEN_TTL_S: envInt(7 * 24 * 3600, 300, 90 * 24 * 3600),
  /** A login session's absolute lifetime: past it, refreshing stops and the member logs in again. */
  AUTH_SESSION_MAX_AGE_S: envInt(30 * 24 * 3600, 3600, 365 * 24 * 3600),
  /** A rotated refresh token presented again within this time, by the same device, is not reuse (lost response). */
  AUTH_REFRESH_REUSE_GRACE_S: envInt(10, 0, 60),
  /** Failed logins per account (email) per window before 429. */
  AUTH_LOGIN_ACCOUNT_FAILURES: envInt(5, 1, 100),
  /** Failed logins per client address per window before 429: a gym's members share one NAT address. */
  AUTH_LOGIN_IP_FAILURES: envInt(100, 1, 100_000),
  /** The login-limit window. */
  AUTH_LOGIN_WINDOW_S: envInt(900, 60, 24 * 3600),
  /** How long an email-verification link stays valid. */
  AUTH_VERIFY_EMAIL_TTL_S: envInt(48 * 3600, 600, 30 * 24 * 3600),
  /** How long a password-reset link stays valid. */
  AUTH_RESET_PASSWORD_TTL_S: envInt(1800, 300, 24 * 3600),
};

type AuthEnv = v.InferOutput<v.ObjectSchema<typeof authEnv, undefined>>;

export interface AuthConfig {
  issuer: string;
  audience: string;
  keys: {
    signingKeyFile: string | undefined;
    verifyKeyFiles: string[];
    devKeyDir: string;
    /**
     * A development key only while the API listens on loopback: a deployment must not sign with a key generated
     * into a container's scratch space (different on every node, lost on every redeploy). Checked when the keyring
     * loads, so a deployment's configuration still parses without its secrets.
     */
    allowDevKey: boolean;
  };
  accessTokenTtlS: number;
  refreshTokenTtlS: number;
  refreshReuseGraceS: number;
  sessionMaxAgeS: number;
  login: { accountFailures: number; ipFailures: number; windowS: number };
  verifyEmailTtlS: number;
  resetPasswordTtlS: number;
}

export function authConfig(e: AuthEnv, { loopback }: { loopback: boolean }): AuthConfig {
  return {
    issuer: e.AUTH_ISSUER,
    audience: e.AUTH_AUDIENCE,
    keys: {
      signingKeyFile: e.AUTH_SIGNING_KEY_FILE,
      verifyKeyFiles: e.AUTH_VERIFY_KEY_FILES,
      devKeyDir: e.AUTH_DEV_KEY_DIR,
      allowDevKey: loopback,
    },
    accessTokenTtlS: e.AUTH_ACCESS_TOKEN_TTL_S,
    refreshTokenTtlS: e.AUTH_REFRESH_TOKEN_TTL_S,
    refreshReuseGraceS: e.AUTH_REFRESH_REUSE_GRACE_S,
    sessionMaxAgeS: e.AUTH_SESSION_MAX_AGE_S,
    login: {
      accountFailures: e.AUTH_LOGIN_ACCOUNT_FAILURES,
      ipFailures: e.AUTH_LOGIN_IP_FAILURES,
      windowS: e.AUTH_LOGIN_WINDOW_S,
    },
    verifyEmailTtlS: e.AUTH_VERIFY_EMAIL_TTL_S,
    resetPasswordTtlS: e.AUTH_RESET_PASSWORD_TTL_S,
  };
}
