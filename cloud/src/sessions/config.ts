/**
 * Gym sessions' and gateway requests' environment variables (spread into cloud/src/config.ts, which parses the
 * environment once).
 */
import { envInt } from '../../../tools/runtime/env-config.ts';

export const SessionsEnv = {
  /** A session ends by itself this long after check-in (or at the branch's closing time, if earlier). */
  SESSION_MAX_HOURS: envInt(4, 1, 24),
  /** How often the auto-termination and claim reconciliation jobs run. */
  SESSION_JOBS_INTERVAL_SECONDS: envInt(60, 1, 3_600),
  /**
   * How long a node may hold a session job before another may take it over (the sweeps take well under a second).
   * Agenda keeps a timer of half of it after each run: tests use a short one so their process exits promptly.
   */
  SESSION_JOBS_LOCK_SECONDS: envInt(60, 1, 3_600),
  /** A claim younger than this is never taken for a crash's leftover. */
  SESSION_CLAIM_GRACE_SECONDS: envInt(60, 5, 3_600),
  /** A gateway request not decided within this is answered `{ok: false, error: timeout}`. */
  GATEWAY_REQUEST_DEADLINE_MS: envInt(500, 50, 10_000),
  /** Requests of one gateway decided at once; more are answered `busy`. */
  GATEWAY_REQUEST_MAX_IN_FLIGHT: envInt(16, 1, 1_000),
};

export interface SessionsConfig {
  maxDurationMs: number;
  jobsIntervalSeconds: number;
  jobsLockMs: number;
  claimGraceMs: number;
  gatewayRequests: { deadlineMs: number; maxInFlightPerGateway: number };
}

type Parsed = { [K in keyof typeof SessionsEnv]: number };

export function sessionsConfigFrom(e: Parsed): SessionsConfig {
  return {
    maxDurationMs: e.SESSION_MAX_HOURS * 3_600_000,
    jobsIntervalSeconds: e.SESSION_JOBS_INTERVAL_SECONDS,
    jobsLockMs: e.SESSION_JOBS_LOCK_SECONDS * 1000,
    claimGraceMs: e.SESSION_CLAIM_GRACE_SECONDS * 1000,
    gatewayRequests: {
      deadlineMs: e.GATEWAY_REQUEST_DEADLINE_MS,
      maxInFlightPerGateway: e.GATEWAY_REQUEST_MAX_IN_FLIGHT,
    },
  };
}
