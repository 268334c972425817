/**
 * Scheduled jobs' environment variables (spread into cloud/src/config.ts, which parses the environment once).
 */
import { envInt } from '../../../tools/runtime/env-config.ts';

export const JobsEnv = {
  /** Telemetry buckets older than this are deleted by the retention job (the stand-in ignores TTL indexes). */
  TELEMETRY_RETENTION_DAYS: envInt(30, 1, 3650),
  /** Dead letters (refused uplink records) older than this are deleted by the retention job. */
  DEAD_LETTER_RETENTION_DAYS: envInt(30, 1, 3650),
  /** How often the retention job runs. */
  RETENTION_INTERVAL_MINUTES: envInt(60, 1, 10_080),
  /** How often the job scheduler (agenda) looks for due jobs. */
  JOBS_POLL_INTERVAL_MS: envInt(5_000, 100, 600_000),
};

export interface JobsConfig {
  telemetryRetentionDays: number;
  deadLetterRetentionDays: number;
  retentionIntervalMinutes: number;
  pollIntervalMs: number;
}

type Parsed = { [K in keyof typeof JobsEnv]: number };

export function jobsConfigFrom(e: Parsed): JobsConfig {
  return {
    telemetryRetentionDays: e.TELEMETRY_RETENTION_DAYS,
    deadLetterRetentionDays: e.DEAD_LETTER_RETENTION_DAYS,
    retentionIntervalMinutes: e.RETENTION_INTERVAL_MINUTES,
    pollIntervalMs: e.JOBS_POLL_INTERVAL_MS,
  };
}
