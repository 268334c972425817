/**
 * The gateway's configuration: every environment variable it reads, parsed once in main.ts (a wrong value stops the
 * process naming the variable). Each is documented in README ("Edge gateway"). No other module reads process.env.
 */
import * as v from 'valibot';
import { ConfigError, envInt, envLogLevel, envPort, envUrl, parseEnv } from '../../tools/runtime/env-config.ts';

const KiB = 1024;
const MiB = 1024 * KiB;

const GatewayEnv = v.object({
  LOG_LEVEL: envLogLevel,
  LOG_FORMAT: v.optional(v.picklist(['json', 'pretty'], 'expected json or pretty'), 'json'),
  GATEWAY_MACHINES_FILE: v.pipe(v.string('required: the path of the machines file'), v.minLength(1)),
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
  GATEWAY_QUEUE_MAX_RECORDS: envInt(200_000, 1, 100_000_000),
  GATEWAY_QUEUE_MAX_BYTES: envInt(128 * MiB, 64 * KiB, 64 * 1024 * MiB),
  GATEWAY_REJECTED_KEEP: envInt(1_000, 0, 100_000),
  /** Most telemetry samples per second per machine (FTMS machines send ≤ 4 Hz); beyond it samples are dropped. */
  GATEWAY_TELEMETRY_MAX_HZ: envInt(50, 1, 100_000),
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
}

export type GatewaySecretSource = { readonly value: string } | { readonly file: string };

export interface GatewayConfig {
  readonly log: { readonly level: v.InferOutput<typeof envLogLevel>; readonly pretty: boolean };
  readonly machinesFile: string;
  /** The gateway's own MQTT secret for the cloud broker: given directly or as a file (read at start). */
  readonly secret: GatewaySecretSource;
  readonly broker: LocalBrokerConfig;
  readonly health: { readonly host: string; readonly port: number };
  readonly uplink: UplinkConfig;
  readonly queue: { readonly capRecords: number; readonly capBytes: number };
  /** How many refused machine payloads are kept (with their reason) for inspection. */
  readonly rejectedKeep: number;
  /** Most telemetry samples per second per machine; beyond it samples are dropped (`telemetry-rate`). */
  readonly telemetryMaxHz: number;
}

/** Parses the gateway's environment; throws ConfigError naming every bad variable. */
export function loadGatewayConfig(env: Readonly<Record<string, string | undefined>>): GatewayConfig {
  const e = parseEnv(GatewayEnv, env);
  const problems: string[] = [];
  if ((e.GATEWAY_SECRET === undefined) === (e.GATEWAY_SECRET_FILE === undefined)) {
    problems.push('GATEWAY_SECRET: set exactly one of GATEWAY_SECRET and GATEWAY_SECRET_FILE');
  }
  if (e.GATEWAY_UPLINK_RECONNECT_MIN_MS > e.GATEWAY_UPLINK_RECONNECT_MAX_MS) {
    problems.push('GATEWAY_UPLINK_RECONNECT_MIN_MS: expected ≤ GATEWAY_UPLINK_RECONNECT_MAX_MS');
  }
  if (problems.length > 0) throw new ConfigError(problems);
  return {
    log: { level: e.LOG_LEVEL, pretty: e.LOG_FORMAT === 'pretty' },
    machinesFile: e.GATEWAY_MACHINES_FILE,
    secret: e.GATEWAY_SECRET !== undefined ? { value: e.GATEWAY_SECRET } : { file: e.GATEWAY_SECRET_FILE ?? '' },
    broker: {
      host: e.GATEWAY_MQTT_HOST,
      port: e.GATEWAY_MQTT_PORT,
      maxPacketBytes: e.GATEWAY_MQTT_MAX_PACKET_BYTES,
      connectTimeoutMs: e.GATEWAY_MQTT_CONNECT_TIMEOUT_MS,
    },
    health: { host: e.GATEWAY_HEALTH_HOST, port: e.GATEWAY_HEALTH_PORT },
    uplink: {
      url: e.GATEWAY_UPLINK_URL,
      caFile: e.GATEWAY_UPLINK_CA_FILE,
      keepaliveS: e.GATEWAY_UPLINK_KEEPALIVE_S,
      connectTimeoutMs: e.GATEWAY_UPLINK_CONNECT_TIMEOUT_MS,
      ackTimeoutMs: e.GATEWAY_UPLINK_ACK_TIMEOUT_MS,
      windowBatches: e.GATEWAY_UPLINK_WINDOW_BATCHES,
      reconnectMinMs: e.GATEWAY_UPLINK_RECONNECT_MIN_MS,
      reconnectMaxMs: e.GATEWAY_UPLINK_RECONNECT_MAX_MS,
      stateIntervalMs: e.GATEWAY_STATE_INTERVAL_MS,
    },
    queue: { capRecords: e.GATEWAY_QUEUE_MAX_RECORDS, capBytes: e.GATEWAY_QUEUE_MAX_BYTES },
    rejectedKeep: e.GATEWAY_REJECTED_KEEP,
    telemetryMaxHz: e.GATEWAY_TELEMETRY_MAX_HZ,
  };
}
