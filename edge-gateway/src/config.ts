/**
 * The gateway's configuration: every environment variable it reads, parsed once in main.ts (a wrong value stops the
 * process naming the variable). Each is documented in README ("Edge gateway"). No other module reads process.env.
 */
import path from 'node:path';
import * as v from 'valibot';
import {
  ConfigError,
  envBool,
  envInt,
  envLogLevel,
  envPort,
  envUrl,
  parseEnv,
} from '../../tools/runtime/env-config.ts';
import { AccessEnvEntries, accessConfigOf, type AccessConfig } from './access/config.ts';

/** The uplink queue's file name under GATEWAY_DATA_DIR. */
export const QUEUE_FILE = 'uplink-queue.sqlite';

/** Where the gateway keeps its files unless GATEWAY_DATA_DIR says otherwise. */
export const DEFAULT_DATA_DIR = 'data/gateway';

const KiB = 1024;
const MiB = 1024 * KiB;

const GatewayEnv = v.object({
  LOG_LEVEL: envLogLevel,
  LOG_FORMAT: v.optional(v.picklist(['json', 'pretty'], 'expected json or pretty'), 'json'),
  /** Required unless the gateway is enrolled (its machines then come with the signed configuration). */
  GATEWAY_MACHINES_FILE: v.optional(v.pipe(v.string(), v.minLength(1))),
  GATEWAY_SECRET: v.optional(v.pipe(v.string(), v.minLength(16, 'expected the 43-character issued secret'))),
  GATEWAY_SECRET_FILE: v.optional(v.string()),
  GATEWAY_MQTT_HOST: v.optional(v.string(), '127.0.0.1'),
  GATEWAY_MQTT_PORT: envPort(1884),
  GATEWAY_MQTT_MAX_PACKET_BYTES: envInt(64 * KiB, 1 * KiB, 16 * MiB),
  GATEWAY_MQTT_CONNECT_TIMEOUT_MS: envInt(5_000, 100, 120_000),
  GATEWAY_HEALTH_HOST: v.optional(v.string(), '127.0.0.1'),
  GATEWAY_HEALTH_PORT: envPort(8081),
  GATEWAY_UPLINK_URL: v.optional(envUrl(['mqtts', 'mqtt']), 'mqtts://127.0.0.1:8883'),
  GATEWAY_UPLINK_CA_FILE: v.optional(v.string()),
  GATEWAY_UPLINK_KEEPALIVE_S: envInt(15, 1, 3_600),
  GATEWAY_UPLINK_CONNECT_TIMEOUT_MS: envInt(10_000, 100, 120_000),
  GATEWAY_UPLINK_ACK_TIMEOUT_MS: envInt(15_000, 100, 600_000),
  GATEWAY_UPLINK_WINDOW_BATCHES: envInt(4, 1, 64),
  GATEWAY_UPLINK_RECONNECT_MIN_MS: envInt(500, 10, 600_000),
  GATEWAY_UPLINK_RECONNECT_MAX_MS: envInt(30_000, 10, 3_600_000),
  GATEWAY_STATE_INTERVAL_MS: envInt(30_000, 0, 3_600_000),
  /** Where the gateway keeps its files: the uplink queue (uplink-queue.sqlite), configuration, allow-list. */
  GATEWAY_DATA_DIR: v.optional(v.pipe(v.string(), v.minLength(1)), DEFAULT_DATA_DIR),
  GATEWAY_QUEUE_MAX_RECORDS: envInt(2_000_000, 1, 100_000_000),
  GATEWAY_QUEUE_MAX_BYTES: envInt(1024 * MiB, 64 * KiB, 64 * 1024 * MiB),
  GATEWAY_QUEUE_COMMIT_MS: envInt(5, 0, 10),
  GATEWAY_QUEUE_COMMIT_ROWS: envInt(100, 1, 1_000),
  GATEWAY_QUEUE_MIN_OFFLINE_HOURS: envInt(4, 0, 8_760),
  /** Testing/ops limit: SQLite max_page_count of the queue file (SQLITE_FULL past it); 0: SQLite's own limit. */
  GATEWAY_QUEUE_MAX_PAGES: envInt(0, 0, 2_147_483_647),
  GATEWAY_UPLINK_DRAIN_MAX_PER_S: envInt(10_000, 0, 1_000_000),
  GATEWAY_UPLINK_LIVE: envBool(true),
  GATEWAY_REJECTED_KEEP: envInt(1_000, 0, 100_000),
  /** Most telemetry samples per second per machine (FTMS machines send ≤ 4 Hz); beyond it samples are dropped. */
  GATEWAY_TELEMETRY_MAX_HZ: envInt(50, 1, 100_000),
  /** Most `event` messages per second per machine; beyond it a QoS 1 event is refused (no PUBACK). */
  GATEWAY_EVENT_MAX_HZ: envInt(20, 1, 100_000),
  ...AccessEnvEntries,
});

export interface LocalBrokerConfig {
  readonly host: string;
  /** 0: any free port (tests). */
  readonly port: number;
  /** Largest MQTT packet a machine may send; the frame guard cuts the connection above it. */
  readonly maxPacketBytes: number;
  /** How long a new connection has to complete its CONNECT. */
  readonly connectTimeoutMs: number;
}

export interface UplinkConfig {
  /** `mqtts://host:8883` (TLS) or `mqtt://…` (loopback, tests). */
  readonly url: string;
  /** GATEWAY_UPLINK_URL was set: it wins over the broker URL of the enrolment. */
  readonly urlFromEnv?: boolean;
  /** PEM file of the CA that signed the cloud's certificate; undefined: the system's CAs. */
  readonly caFile: string | undefined;
  readonly keepaliveS: number;
  readonly connectTimeoutMs: number;
  /** A batch not answered within this time is sent again (same batchId). */
  readonly ackTimeoutMs: number;
  /** Most unanswered batches per lane (telemetry: always 1, see forwarder.ts). */
  readonly windowBatches: number;
  readonly reconnectMinMs: number;
  readonly reconnectMaxMs: number;
  /** How often the retained birth is refreshed with current figures; 0: only on connect. */
  readonly stateIntervalMs: number;
  /** Most backlog records per second sent to the cloud (records and telemetry lanes); 0: no limit. */
  readonly drainMaxPerS: number;
  /** Each machine's latest status and sample jump a backlog (forwarder.ts, "Live path"). */
  readonly live: boolean;
}

export interface QueueConfig {
  /** The SQLite file of the durable queue (under GATEWAY_DATA_DIR). */
  readonly file: string;
  readonly capRecords: number;
  readonly capBytes: number;
  /** Group commit: longest a record waits for its transaction, ms, and rows that start one at once. */
  readonly commitDelayMs: number;
  readonly commitMaxRows: number;
  /** Below this forecast of offline hours left the queue raises its alarm. */
  readonly minOfflineHours: number;
  /** SQLite max_page_count (a testing/ops limit: SQLITE_FULL past it); undefined: SQLite's own. */
  readonly maxPages?: number;
}

export type GatewaySecretSource = { readonly value: string } | { readonly file: string };

export interface GatewayConfig {
  readonly log: { readonly level: v.InferOutput<typeof envLogLevel>; readonly pretty: boolean };
  /** Undefined for an enrolled gateway without one (machines come with the signed configuration). */
  readonly machinesFile: string | undefined;
  /** The gateway's own MQTT secret for the cloud broker: given directly or as a file (read at start). */
  readonly secret: GatewaySecretSource | undefined;
  readonly broker: LocalBrokerConfig;
  readonly health: { readonly host: string; readonly port: number };
  readonly uplink: UplinkConfig;
  /** The gateway's own files (queue, configuration, allow-list). */
  readonly dataDir: string;
  readonly queue: QueueConfig;
  /** How many refused machine payloads are kept (with their reason) for inspection. */
  readonly rejectedKeep: number;
  /** Most telemetry samples per second per machine; beyond it samples are dropped (`telemetry-rate`). */
  readonly telemetryMaxHz: number;
  /** Most events per second per machine; beyond it a QoS 1 event is refused, no PUBACK (`event-rate`). */
  readonly eventMaxHz?: number;
  /** Readers, online decision deadline, door hook (access/config.ts); defaults when absent (tests). */
  readonly access?: AccessConfig;
}

/** Whether the gateway is enrolled (main.ts looks for the enrolment file; tests decide). */
export interface ConfigProbe {
  readonly enrolled?: (dataDir: string) => boolean;
}

/** Parses the gateway's environment; throws ConfigError naming every bad variable. */
export function loadGatewayConfig(
  env: Readonly<Record<string, string | undefined>>,
  probe: ConfigProbe = {},
): GatewayConfig {
  const given = (name: string) => env[name] !== undefined && env[name] !== '';
  const machinesFileProblem =
    'GATEWAY_MACHINES_FILE: required: the path of the machines file (unless the gateway is enrolled)';
  let e: v.InferOutput<typeof GatewayEnv>;
  try {
    e = parseEnv(GatewayEnv, env);
  } catch (err) {
    // Name a missing machines file beside the schema's problems, as when the variable was always required.
    const dataDir = given('GATEWAY_DATA_DIR') ? (env.GATEWAY_DATA_DIR ?? '') : DEFAULT_DATA_DIR;
    const mayBeEnrolled =
      !given('GATEWAY_SECRET') && !given('GATEWAY_SECRET_FILE') && (probe.enrolled?.(dataDir) ?? false);
    if (err instanceof ConfigError && !given('GATEWAY_MACHINES_FILE') && !mayBeEnrolled) {
      throw new ConfigError([...err.problems, machinesFileProblem]);
    }
    throw err;
  }
  const problems: string[] = [];
  const noSecret = e.GATEWAY_SECRET === undefined && e.GATEWAY_SECRET_FILE === undefined;
  // An enrolled gateway (GATEWAY_DATA_DIR/enrolment.json) has its secret and identity from its enrolment.
  const enrolled = noSecret && (probe.enrolled?.(e.GATEWAY_DATA_DIR) ?? false);
  if (!enrolled && (e.GATEWAY_SECRET === undefined) === (e.GATEWAY_SECRET_FILE === undefined)) {
    problems.push(
      'GATEWAY_SECRET: set exactly one of GATEWAY_SECRET and GATEWAY_SECRET_FILE, or enrol this gateway (npm run gateway -- enrol)',
    );
  }
  if (!enrolled && e.GATEWAY_MACHINES_FILE === undefined) {
    problems.push(machinesFileProblem);
  }
  if (e.GATEWAY_UPLINK_RECONNECT_MIN_MS > e.GATEWAY_UPLINK_RECONNECT_MAX_MS) {
    problems.push('GATEWAY_UPLINK_RECONNECT_MIN_MS: expected ≤ GATEWAY_UPLINK_RECONNECT_MAX_MS');
  }
  if (problems.length > 0) throw new ConfigError(problems);
  return {
    log: { level: e.LOG_LEVEL, pretty: e.LOG_FORMAT === 'pretty' },
    machinesFile: e.GATEWAY_MACHINES_FILE,
    secret:
      e.GATEWAY_SECRET !== undefined
        ? { value: e.GATEWAY_SECRET }
        : e.GATEWAY_SECRET_FILE !== undefined
          ? { file: e.GATEWAY_SECRET_FILE }
          : undefined,
    broker: {
      host: e.GATEWAY_MQTT_HOST,
      port: e.GATEWAY_MQTT_PORT,
      maxPacketBytes: e.GATEWAY_MQTT_MAX_PACKET_BYTES,
      connectTimeoutMs: e.GATEWAY_MQTT_CONNECT_TIMEOUT_MS,
    },
    health: { host: e.GATEWAY_HEALTH_HOST, port: e.GATEWAY_HEALTH_PORT },
    uplink: {
      url: e.GATEWAY_UPLINK_URL,
      urlFromEnv: env.GATEWAY_UPLINK_URL !== undefined && env.GATEWAY_UPLINK_URL !== '',
      caFile: e.GATEWAY_UPLINK_CA_FILE,
      keepaliveS: e.GATEWAY_UPLINK_KEEPALIVE_S,
      connectTimeoutMs: e.GATEWAY_UPLINK_CONNECT_TIMEOUT_MS,
      ackTimeoutMs: e.GATEWAY_UPLINK_ACK_TIMEOUT_MS,
      windowBatches: e.GATEWAY_UPLINK_WINDOW_BATCHES,
      reconnectMinMs: e.GATEWAY_UPLINK_RECONNECT_MIN_MS,
      reconnectMaxMs: e.GATEWAY_UPLINK_RECONNECT_MAX_MS,
      stateIntervalMs: e.GATEWAY_STATE_INTERVAL_MS,
      drainMaxPerS: e.GATEWAY_UPLINK_DRAIN_MAX_PER_S,
      live: e.GATEWAY_UPLINK_LIVE,
    },
    dataDir: e.GATEWAY_DATA_DIR,
    queue: {
      file: path.join(e.GATEWAY_DATA_DIR, QUEUE_FILE),
      capRecords: e.GATEWAY_QUEUE_MAX_RECORDS,
      capBytes: e.GATEWAY_QUEUE_MAX_BYTES,
      commitDelayMs: e.GATEWAY_QUEUE_COMMIT_MS,
      commitMaxRows: e.GATEWAY_QUEUE_COMMIT_ROWS,
      minOfflineHours: e.GATEWAY_QUEUE_MIN_OFFLINE_HOURS,
      ...(e.GATEWAY_QUEUE_MAX_PAGES > 0 ? { maxPages: e.GATEWAY_QUEUE_MAX_PAGES } : {}),
    },
    rejectedKeep: e.GATEWAY_REJECTED_KEEP,
    telemetryMaxHz: e.GATEWAY_TELEMETRY_MAX_HZ,
    eventMaxHz: e.GATEWAY_EVENT_MAX_HZ,
    access: accessConfigOf(e),
  };
}
