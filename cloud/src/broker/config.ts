/**
 * The cloud broker's environment variables; cloud/src/config.ts spreads them into the cloud's one parse.
 * Defaults follow ARCHITECTURE.md ("Defaults"): MQTT over TLS on 8883 for gateways, plain MQTT on loopback 1883
 * for tools and tests, MQTT over WebSocket on the API's HTTP server.
 */
import path from 'node:path';
import * as v from 'valibot';
import { MAX_BATCH_BYTES } from '../../../protocol/index.ts';
import { envInt, envPort } from '../../../tools/runtime/env-config.ts';

const repoRoot = path.resolve(import.meta.dirname, '../../..');
const optionalPath = v.optional(v.pipe(v.string(), v.minLength(1)));

/**
 * The smallest packet bound that still lets a gateway's fullest uplink batch through: MAX_BATCH_BYTES of payload
 * plus the PUBLISH's own fixed header (≤ 5), topic (≤ 2 + 160) and packet id (2), rounded up. A lower bound would
 * make the frame guard cut every full batch, and the gateway would reconnect and resend it forever.
 */
export const MIN_MAX_PACKET_BYTES = MAX_BATCH_BYTES + 1024;

export const brokerEnv = {
  /** Plain MQTT for tools and tests, bound to 127.0.0.1 only (0: any free port). */
  MQTT_TCP_PORT: envPort(1883),
  /** Address of the MQTT-over-TLS listener for gateways; 0.0.0.0 to accept them from the network. */
  MQTT_TLS_HOST: v.optional(v.pipe(v.string(), v.ip('expected an IP address')), '127.0.0.1'),
  /** Port of the MQTT-over-TLS listener (0: any free port). */
  MQTT_TLS_PORT: envPort(8883),
  /** Server certificate (PEM, with its chain). Unset: a development CA and certificate in MQTT_DATA_DIR. */
  MQTT_TLS_CERT_FILE: optionalPath,
  /** The server certificate's private key (PEM); set together with MQTT_TLS_CERT_FILE. */
  MQTT_TLS_KEY_FILE: optionalPath,
  /** The CA certificate clients verify the server with (PEM); reported to operators, not used by the server. */
  MQTT_TLS_CA_FILE: optionalPath,
  /** Where the development CA and server certificate are generated on first start. */
  MQTT_DATA_DIR: v.optional(v.pipe(v.string(), v.minLength(1)), path.join(repoRoot, 'data', 'mqtt')),
  /**
   * Largest MQTT packet accepted from a client (frame guard; larger declarations close the connection); at least
   * a gateway's fullest uplink batch (MIN_MAX_PACKET_BYTES).
   */
  MQTT_MAX_PACKET_BYTES: envInt(256 * 1024, MIN_MAX_PACKET_BYTES, 16 * 1024 * 1024),
  /** Largest CONNECT packet (credentials and will included), checked before authentication. */
  MQTT_MAX_CONNECT_BYTES: envInt(32 * 1024, 256, 1024 * 1024),
  /** Largest WebSocket message on /mqtt (ws maxPayload); larger ones close the socket with 1009. */
  MQTT_WS_MAX_PAYLOAD_BYTES: envInt(64 * 1024, 1024, 16 * 1024 * 1024),
  /** Time a new connection has to send its CONNECT. */
  MQTT_CONNECT_TIMEOUT_MS: envInt(5000, 500, 120_000),
  /** Longest keepalive a client may ask for, in seconds; 0 (none) is refused too, so dead links are noticed. */
  MQTT_KEEPALIVE_LIMIT_S: envInt(300, 10, 65_535),
  /** How long a subscriber that stopped reading may hold up deliveries before it is disconnected (RELIABILITY C5). */
  MQTT_DRAIN_TIMEOUT_MS: envInt(10_000, 1000, 120_000),
  /** CONNECTs accepted per client address per window (preConnect), across listeners; 0 turns it off. */
  MQTT_CONNECT_LIMIT_PER_IP: envInt(300, 0, 1_000_000),
  /** Length of that window, in seconds. */
  MQTT_CONNECT_LIMIT_WINDOW_S: envInt(10, 1, 3600),
  /** Connections per client address that have not yet sent CONNECT; more are closed at once (RELIABILITY A5). */
  MQTT_MAX_PENDING_PER_IP: envInt(256, 1, 100_000),
  /** Most connections open at once, all listeners together (each TCP/TLS listener also refuses past it). */
  MQTT_MAX_CONNECTIONS: envInt(10_000, 1, 1_000_000),
  /** How often connected identities are checked against the store, so a revoked one is disconnected. */
  MQTT_IDENTITY_RECHECK_MS: envInt(30_000, 1000, 3_600_000),
  /** Identities each cloud node keeps in memory for CONNECT authentication (LRU, identity-cache.ts); 0: none. */
  MQTT_IDENTITY_CACHE_MAX: envInt(20_000, 0, 1_000_000),
  /**
   * How long a cached identity is trusted. Revocations reach every node at once over Redis; this bounds how long
   * one whose invalidation was lost (a revocation by `npm run hub` without REDIS_URL, Redis trouble) can still connect.
   */
  MQTT_IDENTITY_CACHE_TTL_MS: envInt(30_000, 1000, 300_000),
};

export type BrokerEnv = v.InferOutput<v.ObjectSchema<typeof brokerEnv, undefined>>;

export interface BrokerConfig {
  tcp: { host: string; port: number };
  tls: {
    host: string;
    port: number;
    certFile: string | undefined;
    keyFile: string | undefined;
    caFile: string | undefined;
  };
  dataDir: string;
  maxPacketBytes: number;
  maxConnectBytes: number;
  wsMaxPayloadBytes: number;
  connectTimeoutMs: number;
  keepaliveLimitS: number;
  drainTimeoutMs: number;
  connectLimitPerIp: number;
  connectLimitWindowS: number;
  maxPendingPerIp: number;
  maxConnections: number;
  identityRecheckMs: number;
  identityCache: { maxEntries: number; ttlMs: number };
}

/** Problems a single variable cannot show (pairs that must be set together). */
export function brokerConfigProblems(e: BrokerEnv): string[] {
  const problems: string[] = [];
  if ((e.MQTT_TLS_CERT_FILE === undefined) !== (e.MQTT_TLS_KEY_FILE === undefined)) {
    problems.push('MQTT_TLS_CERT_FILE and MQTT_TLS_KEY_FILE: set both or neither');
  }
  if (e.MQTT_MAX_CONNECT_BYTES > e.MQTT_MAX_PACKET_BYTES) {
    problems.push('MQTT_MAX_CONNECT_BYTES: expected ≤ MQTT_MAX_PACKET_BYTES');
  }
  return problems;
}

export function brokerConfig(e: BrokerEnv): BrokerConfig {
  return {
    tcp: { host: '127.0.0.1', port: e.MQTT_TCP_PORT },
    tls: {
      host: e.MQTT_TLS_HOST,
      port: e.MQTT_TLS_PORT,
      certFile: e.MQTT_TLS_CERT_FILE,
      keyFile: e.MQTT_TLS_KEY_FILE,
      caFile: e.MQTT_TLS_CA_FILE,
    },
    dataDir: path.resolve(e.MQTT_DATA_DIR),
    maxPacketBytes: e.MQTT_MAX_PACKET_BYTES,
    maxConnectBytes: e.MQTT_MAX_CONNECT_BYTES,
    wsMaxPayloadBytes: e.MQTT_WS_MAX_PAYLOAD_BYTES,
    connectTimeoutMs: e.MQTT_CONNECT_TIMEOUT_MS,
    keepaliveLimitS: e.MQTT_KEEPALIVE_LIMIT_S,
    drainTimeoutMs: e.MQTT_DRAIN_TIMEOUT_MS,
    connectLimitPerIp: e.MQTT_CONNECT_LIMIT_PER_IP,
    connectLimitWindowS: e.MQTT_CONNECT_LIMIT_WINDOW_S,
    maxPendingPerIp: e.MQTT_MAX_PENDING_PER_IP,
    maxConnections: e.MQTT_MAX_CONNECTIONS,
    identityRecheckMs: e.MQTT_IDENTITY_RECHECK_MS,
    identityCache: { maxEntries: e.MQTT_IDENTITY_CACHE_MAX, ttlMs: e.MQTT_IDENTITY_CACHE_TTL_MS },
  };
}
