/**
 * Access's environment variables (spread into cloud/src/config.ts, which parses the environment once).
 */
import { envInt } from '../../../tools/runtime/env-config.ts';

export const AccessEnv = {
  /** How long a member QR token (GET /api/access/qr-token) stays valid, s (the protocol allows at most 60). */
  ACCESS_QR_TOKEN_TTL_S: envInt(30, 5, 60),
  /** QR tokens one member may fetch per minute. */
  ACCESS_QR_TOKENS_PER_MINUTE: envInt(12, 1, 600),
  /** Oldest allow-list a gateway may decide offline with, s (sent in its configuration as allowListMaxAgeS). */
  ACCESS_ALLOW_LIST_MAX_AGE_S: envInt(3 * 86_400, 60, 30 * 86_400),
  /** A card change is pushed to gateways this long after the first change of a burst (which later ones join), ms. */
  ACCESS_ALLOW_LIST_DEBOUNCE_MS: envInt(2_000, 0, 50_000),
  /** How often every branch's allow-list is rebuilt and pushed if it changed (memberships, ageing), s. */
  ACCESS_ALLOW_LIST_SWEEP_S: envInt(60, 5, 3_600),
};

export interface AccessConfig {
  qrTokenTtlS: number;
  qrTokensPerMinute: number;
  allowListMaxAgeS: number;
  allowListDebounceMs: number;
  allowListSweepS: number;
}

type Parsed = { [K in keyof typeof AccessEnv]: number };

export function accessConfigFrom(e: Parsed): AccessConfig {
  return {
    qrTokenTtlS: e.ACCESS_QR_TOKEN_TTL_S,
    qrTokensPerMinute: e.ACCESS_QR_TOKENS_PER_MINUTE,
    allowListMaxAgeS: e.ACCESS_ALLOW_LIST_MAX_AGE_S,
    allowListDebounceMs: e.ACCESS_ALLOW_LIST_DEBOUNCE_MS,
    allowListSweepS: e.ACCESS_ALLOW_LIST_SWEEP_S,
  };
}
