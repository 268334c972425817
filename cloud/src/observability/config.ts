/**
 * Error reporting to Sentry: environment variables, spread into the cloud's one parse by cloud/src/config.ts.
 * Without SENTRY_DSN nothing is sent anywhere.
 */
import * as v from 'valibot';

export const observabilityEnv = {
  /** Where errors go: the project's DSN (https://<key>@<host>/<project>); unset sends nothing. */
  SENTRY_DSN: v.optional(
    v.pipe(
      v.string(),
      v.url('expected a Sentry DSN URL'),
      v.check((s) => /^https?:\/\/[^@/]+@/.test(s), 'expected a Sentry DSN such as https://key@host/1'),
    ),
  ),
  /** The environment events are filed under (production, staging, …). */
  SENTRY_ENVIRONMENT: v.optional(
    v.pipe(v.string(), v.regex(/^[A-Za-z0-9._-]{1,64}$/, 'expected 1-64 of A-Z a-z 0-9 . _ -')),
    'production',
  ),
  /** Share of error events sent, 0 to 1. */
  SENTRY_SAMPLE_RATE: v.optional(
    v.pipe(v.string(), v.regex(/^(0(\.\d+)?|1(\.0*)?|\.\d+)$/, 'expected a number from 0 to 1'), v.transform(Number)),
    '1',
  ),
};

export type ObservabilityEnv = v.InferOutput<v.ObjectSchema<typeof observabilityEnv, undefined>>;

export interface SentryConfig {
  dsn: string | undefined;
  environment: string;
  sampleRate: number;
}

export function observabilityConfig(e: ObservabilityEnv): { sentry: SentryConfig } {
  return { sentry: { dsn: e.SENTRY_DSN, environment: e.SENTRY_ENVIRONMENT, sampleRate: e.SENTRY_SAMPLE_RATE } };
}
