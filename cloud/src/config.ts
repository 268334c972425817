/**
 * The cloud's configuration: every environment variable it reads, with defaults, parsed once in main.ts.
 * README's configuration table lists the same variables; keep them together.
 */
import * as v from 'valibot';
import {
  ConfigError,
  envBool,
  envInt,
  envList,
  envLogLevel,
  envPort,
  envUrl,
  parseEnv,
} from '../../tools/runtime/env-config.ts';
import { AccessEnv, accessConfigFrom, type AccessConfig } from './access/config.ts';
import { authConfig, authEnv, type AuthConfig } from './auth/config.ts';
import { brokerConfig, brokerConfigProblems, brokerEnv, type BrokerConfig } from './broker/config.ts';
import { cryptoConfig, cryptoEnvEntries, type CryptoConfig } from './crypto/config.ts';
import { GatewaysEnv, gatewaysConfigFrom, type GatewaysConfig } from './gateways/config.ts';
import { IngestEnv, ingestConfigFrom, type IngestConfig } from './ingest/config.ts';
import { MachinesEnv, machinesConfigFrom, type MachinesConfig } from './machines/config.ts';
import { JobsEnv, jobsConfigFrom, type JobsConfig } from './jobs/config.ts';
import { SessionsEnv, sessionsConfigFrom, type SessionsConfig } from './sessions/config.ts';
import { mailConfig, mailEnv, type MailConfig } from './mail/config.ts';
import { observabilityConfig, observabilityEnv, type SentryConfig } from './observability/config.ts';
import { rateLimitConfig, rateLimitEnv, type RateLimitConfig } from './ratelimit/config.ts';

const CloudEnv = v.object({
  LOG_LEVEL: envLogLevel,
  /** pretty: human-readable lines for a terminal; json: one object per line for log shippers. */
  LOG_FORMAT: v.optional(v.picklist(['json', 'pretty'], 'expected json or pretty'), 'json'),
  HTTP_HOST: v.optional(v.pipe(v.string(), v.ip('expected an IP address')), '127.0.0.1'),
  HTTP_PORT: envPort(8080),
  /** Origins (scheme://host[:port]) whose browsers may call the API; empty means no cross-origin access. */
  CORS_ORIGINS: v.pipe(
    envList(''),
    v.check(
      (origins) => origins.every((o) => /^https?:\/\/[a-z0-9.-]+(:\d{1,5})?$/i.test(o)),
      'expected comma-separated origins such as https://app.example.com',
    ),
  ),
  /** Trust X-Forwarded-* headers: only behind a reverse proxy that overwrites them (ASVS 5 4.1.3). */
  TRUST_PROXY: envBool(false),
  /**
   * With TRUST_PROXY, how many proxies append to X-Forwarded-For: the client address is taken that many entries
   * from the right, never from the left, which the client writes itself.
   */
  TRUST_PROXY_HOPS: envInt(1, 1, 10),
  /** Largest JSON body accepted, in bytes. */
  HTTP_JSON_LIMIT_BYTES: envInt(256 * 1024, 1024, 16 * 1024 * 1024),
  /** Time a client has to send a whole request (slow-client guard); handlers are bounded by their own deadlines. */
  HTTP_REQUEST_TIMEOUT_MS: envInt(30_000, 1000, 300_000),
  /** How long a shutdown waits for in-flight requests before closing their connections. */
  SHUTDOWN_GRACE_MS: envInt(10_000, 0, 120_000),
  /** How long a shutdown keeps serving with /health at 503 before it stops accepting: a balancer's check interval. */
  SHUTDOWN_DRAIN_DELAY_MS: envInt(0, 0, 120_000),
  MONGO_URL: envUrl(['mongodb', 'mongodb+srv']),
  /** How long a MongoDB operation waits for a server before failing (and /health reporting it down). */
  MONGO_TIMEOUT_MS: envInt(5000, 100, 60_000),
  REDIS_URL: envUrl(['redis', 'rediss']),
  /** Per-command deadline: without it ioredis retries ~20 times while Redis is down (RELIABILITY finding 8). */
  REDIS_COMMAND_TIMEOUT_MS: envInt(500, 50, 30_000),
  /** Prefix of every Redis key the cloud writes, so several deployments (or test runs) can share one Redis. */
  REDIS_KEY_PREFIX: v.optional(
    v.pipe(v.string(), v.regex(/^[A-Za-z0-9:_-]{1,64}$/, 'expected 1-64 of A-Z a-z 0-9 : _ -')),
    'nxg:',
  ),
  /** When set, GET /metrics requires it as a bearer token (the API may be reachable from outside). */
  METRICS_TOKEN: v.optional(v.pipe(v.string(), v.minLength(16, 'expected at least 16 characters'))),
  /** Deadline of each dependency check in GET /health. */
  HEALTH_CHECK_TIMEOUT_MS: envInt(1000, 50, 30_000),
  ...authEnv,
  ...brokerEnv,
  ...mailEnv,
  ...rateLimitEnv,
  ...observabilityEnv,
  ...cryptoEnvEntries,
  ...IngestEnv,
  ...MachinesEnv,
  ...JobsEnv,
  ...AccessEnv,
  ...GatewaysEnv,
  ...SessionsEnv,
});

export type CloudEnv = v.InferOutput<typeof CloudEnv>;

export interface CloudConfig {
  log: { level: CloudEnv['LOG_LEVEL']; pretty: boolean };
  http: {
    host: string;
    port: number;
    corsOrigins: string[];
    trustProxy: boolean;
    trustProxyHops: number;
    jsonLimitBytes: number;
    requestTimeoutMs: number;
    shutdownGraceMs: number;
    shutdownDrainDelayMs: number;
  };
  mongo: { url: string; timeoutMs: number };
  redis: { url: string; commandTimeoutMs: number; keyPrefix: string };
  health: { checkTimeoutMs: number };
  metrics: { bearerToken: string | undefined };
  auth: AuthConfig;
  mqtt: BrokerConfig;
  mail: MailConfig;
  rateLimit: RateLimitConfig;
  sentry: SentryConfig;
  crypto: CryptoConfig;
  ingest: IngestConfig;
  machines: MachinesConfig;
  jobs: JobsConfig;
  access: AccessConfig;
  gateways: GatewaysConfig;
  sessions: SessionsConfig;
}

export function loadCloudConfig(env: Readonly<Record<string, string | undefined>>): CloudConfig {
  const e = parseEnv(CloudEnv, env);
  if (!e.METRICS_TOKEN && !isLoopback(e.HTTP_HOST)) {
    // Off loopback, /metrics would tell anyone the routes, traffic and process internals.
    throw new ConfigError([`METRICS_TOKEN: required when HTTP_HOST (${e.HTTP_HOST}) is not a loopback address`]);
  }
  const mqttProblems = brokerConfigProblems(e);
  if (mqttProblems.length > 0) throw new ConfigError(mqttProblems);
  return {
    log: { level: e.LOG_LEVEL, pretty: e.LOG_FORMAT === 'pretty' },
    http: {
      host: e.HTTP_HOST,
      port: e.HTTP_PORT,
      corsOrigins: e.CORS_ORIGINS,
      trustProxy: e.TRUST_PROXY,
      trustProxyHops: e.TRUST_PROXY_HOPS,
      jsonLimitBytes: e.HTTP_JSON_LIMIT_BYTES,
      requestTimeoutMs: e.HTTP_REQUEST_TIMEOUT_MS,
      shutdownGraceMs: e.SHUTDOWN_GRACE_MS,
      shutdownDrainDelayMs: e.SHUTDOWN_DRAIN_DELAY_MS,
    },
    mongo: { url: e.MONGO_URL, timeoutMs: e.MONGO_TIMEOUT_MS },
    redis: { url: e.REDIS_URL, commandTimeoutMs: e.REDIS_COMMAND_TIMEOUT_MS, keyPrefix: e.REDIS_KEY_PREFIX },
    health: { checkTimeoutMs: e.HEALTH_CHECK_TIMEOUT_MS },
    metrics: { bearerToken: e.METRICS_TOKEN },
    auth: authConfig(e, { loopback: isLoopback(e.HTTP_HOST) }),
    mqtt: brokerConfig(e),
    mail: mailConfig(e),
    rateLimit: rateLimitConfig(e),
    ...observabilityConfig(e),
    ...cryptoConfig(e, { loopback: isLoopback(e.HTTP_HOST) }),
    ingest: ingestConfigFrom(e),
    machines: machinesConfigFrom(e),
    jobs: jobsConfigFrom(e),
    access: accessConfigFrom(e),
    gateways: gatewaysConfigFrom(e),
    sessions: sessionsConfigFrom(e),
  };
}

function isLoopback(host: string): boolean {
  return host === '::1' || host.startsWith('127.');
}

/** Only the MongoDB settings, parsed by the same rules: for tools that need nothing else (the `hub` CLI). */
export function loadMongoConfig(env: Readonly<Record<string, string | undefined>>): CloudConfig['mongo'] {
  const e = parseEnv(v.pick(CloudEnv, ['MONGO_URL', 'MONGO_TIMEOUT_MS']), env);
  return { url: e.MONGO_URL, timeoutMs: e.MONGO_TIMEOUT_MS };
}

/** Only the Redis settings, parsed by the same rules: for tools that tell the cloud nodes of a change (`hub revoke`). */
export function loadRedisConfig(env: Readonly<Record<string, string | undefined>>): CloudConfig['redis'] {
  const e = parseEnv(v.pick(CloudEnv, ['REDIS_URL', 'REDIS_COMMAND_TIMEOUT_MS', 'REDIS_KEY_PREFIX']), env);
  return { url: e.REDIS_URL, commandTimeoutMs: e.REDIS_COMMAND_TIMEOUT_MS, keyPrefix: e.REDIS_KEY_PREFIX };
}

/** The variable names, for README's table check. */
export const cloudEnvNames: readonly string[] = Object.keys(CloudEnv.entries);
