/**
 * What a run drives: the hub it talks to and the branch gateways its machines connect to.
 * - `npm-start`: the hub `npm start` runs, found through `<data dir>/hub.json` (written by scripts/start.ts):
 *   MongoDB for provisioning and the read-back, the cloud's MQTT over TLS for the run's own gateways.
 * - `own`: a hub of the run's own (MongoDB stand-in in memory and Redis unless URLs are given, and the cloud as a
 *   process on free ports), stopped at the end — what CI and the cloud-restart scenario use.
 * - `attach`: machines connect to a given broker (`--url`), with `--credentials`; nothing provisioned or started.
 *
 * For `npm-start` and `own` the run provisions fresh branches, enrolled gateways, machines, door readers and members
 * (provision.ts; ids tagged with the run, so runs never collide), and runs one edge gateway process per gateway
 * (edge-gateway/src/main.ts) on a fixed port, so a gateway killed by a scenario comes back where its machines look
 * for it.
 */
import { createWriteStream } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import * as v from 'valibot';
import {
  findFreePort,
  spawnNode,
  startServices,
  type ServiceProcess,
  type Services,
} from '../../tools/services/index.ts';
import type { PlannedGateway } from './provision.ts';

export const repoRoot = path.resolve(import.meta.dirname, '../..');

/** `<data dir>/hub.json`: where npm start's hub listens (scripts/start.ts writes it, mode 0600). */
export const HubFile = v.object({
  mongoUrl: v.string(),
  apiUrl: v.string(),
  mqttTlsUrl: v.string(),
  caFile: v.string(),
  demo: v.optional(
    v.object({ branch: v.string(), gatewayUrl: v.string(), credentialsFile: v.string(), machines: v.number() }),
  ),
});
export type HubFile = v.InferOutput<typeof HubFile>;

export async function readHubFile(dataDir: string): Promise<HubFile | undefined> {
  const file = path.join(dataDir, 'hub.json');
  const text = await readFile(file, 'utf8').catch(() => undefined);
  if (text === undefined) return undefined;
  return v.parse(HubFile, JSON.parse(text));
}

export interface Hub {
  readonly kind: 'npm-start' | 'own';
  readonly mongoUrl: string;
  /** The cloud's MQTT over TLS for gateways, and the CA that signed it. */
  readonly mqttTlsUrl: string;
  readonly caFile: string;
  readonly apiUrl: string;
  /** Stops the cloud gracefully and starts it again on the same ports and data (`own` only). */
  restartCloud?(): Promise<void>;
  stop(): Promise<void>;
}

export function hubFromFile(file: HubFile): Hub {
  return {
    kind: 'npm-start',
    mongoUrl: file.mongoUrl,
    mqttTlsUrl: file.mqttTlsUrl,
    caFile: file.caFile,
    apiUrl: file.apiUrl,
    stop: () => Promise.resolve(),
  };
}

/** A hub of the run's own: databases (unless given) and the cloud on free ports, data under `dir`. */
export async function startOwnHub({
  dir,
  mongoUrl,
  redisUrl,
  database = `sim_${Date.now().toString(36)}`,
}: {
  dir: string;
  mongoUrl?: string | undefined;
  redisUrl?: string | undefined;
  database?: string;
}): Promise<Hub> {
  const services: Services = await startServices({
    mongo: { url: mongoUrl, storage: { kind: 'memory' } },
    redis: { url: redisUrl },
  });
  const url = new URL(services.mongoUrl);
  url.pathname = `/${database}`;
  const dbUrl = url.toString();
  const [httpPort, tcpPort, tlsPort] = [await findFreePort(), await findFreePort(), await findFreePort()];
  const env: Record<string, string> = {
    LOG_LEVEL: 'warn',
    MONGO_URL: dbUrl,
    REDIS_URL: services.redisUrl,
    REDIS_KEY_PREFIX: `sim:${database}:`,
    HTTP_PORT: String(httpPort),
    MQTT_TCP_PORT: String(tcpPort),
    MQTT_TLS_PORT: String(tlsPort),
    MQTT_DATA_DIR: path.join(dir, 'mqtt'),
    DEV_KEYS_FILE: path.join(dir, 'dev-keys.json'),
    AUTH_DEV_KEY_DIR: path.join(dir, 'keys'),
    MAIL_DIR: path.join(dir, 'mail'),
  };
  const apiUrl = `http://127.0.0.1:${httpPort}`;
  const start = async () => {
    const proc = await spawnNode('cloud', ['cloud/src/main.ts'], env);
    await proc.waitUntil(async () => (await fetch(`${apiUrl}/health`).catch(() => undefined))?.ok === true, 60_000);
    return proc;
  };
  let cloud: ServiceProcess;
  try {
    cloud = await start();
  } catch (err) {
    await services.stop();
    throw err;
  }
  return {
    kind: 'own',
    mongoUrl: dbUrl,
    mqttTlsUrl: `mqtts://127.0.0.1:${tlsPort}`,
    caFile: path.join(dir, 'mqtt', 'tls', 'ca.crt'),
    apiUrl,
    async restartCloud() {
      await cloud.stop(15_000);
      cloud = await start();
    },
    async stop() {
      await cloud.stop(15_000);
      await services.stop();
    },
  };
}

export interface GatewayHandle {
  readonly id: string;
  /** Its GATEWAY_DATA_DIR (durable queue, enrolment, configuration). */
  readonly dataDir: string;
  readonly url: string;
  /** Its health endpoint (`queue.depth`: what it still has to forward), on a port fixed for the run. */
  readonly healthUrl: string;
  /** SIGKILL: a power cut at the branch. */
  kill(): Promise<void>;
  /** Starts it again on the same port. */
  start(): Promise<void>;
  stop(): Promise<void>;
}

/** Whether the gateway's health says it holds a signed configuration and an allow-list. */
async function configured(healthUrl: string): Promise<boolean> {
  const response = await fetch(healthUrl, { signal: AbortSignal.timeout(2_000) }).catch(() => undefined);
  if (!response) return false;
  const body = (await response.json().catch(() => ({}))) as {
    access?: { configRevision?: unknown; allowList?: { revision?: unknown } };
  };
  return body.access?.configRevision !== undefined && body.access.allowList?.revision !== undefined;
}

/**
 * An edge gateway process for `gateway`, its uplink to the hub's cloud over TLS; with `logFile`, its log (JSON lines:
 * access decisions, uplink state) is appended there, for a look after the run.
 */
export async function startGateway(gateway: PlannedGateway, hub: Hub, logFile?: string): Promise<GatewayHandle> {
  let proc: ServiceProcess | undefined;
  const log = logFile === undefined ? undefined : createWriteStream(logFile, { flags: 'a', mode: 0o600 });
  // A fixed port, so the health endpoint stays where the run asks after a kill and a restart.
  const healthPort = await findFreePort();
  const healthUrl = `http://127.0.0.1:${healthPort}/health`;
  const start = async () => {
    proc = await spawnNode(
      `gateway ${gateway.id}`,
      ['edge-gateway/src/main.ts'],
      {
        LOG_LEVEL: 'info',
        LOG_FORMAT: 'json',
        // Enrolled: its enrolment file, signed configuration, allow-list and durable queue are all in its own
        // directory (two gateways never share, or lock, one queue).
        GATEWAY_DATA_DIR: gateway.dataDir,
        ...(gateway.lineReaders.length === 0
          ? {}
          : { GATEWAY_QR_READERS: gateway.lineReaders.map((r) => `${r.reader}=${r.file}`).join(',') }),
        GATEWAY_MQTT_PORT: String(gateway.port),
        GATEWAY_HEALTH_PORT: String(healthPort),
        GATEWAY_UPLINK_URL: hub.mqttTlsUrl,
        GATEWAY_UPLINK_CA_FILE: hub.caFile,
        // A simulator may publish faster than a real console (--rate): the gateway's per-machine limit follows.
        GATEWAY_TELEMETRY_MAX_HZ: '1000',
      },
      log === undefined ? {} : { onLine: (line) => log.write(`${line}\n`) },
    );
    await proc.waitForLine(/"msg":"gateway ready"/, 60_000);
    // Its machines are let in once it holds the cloud's signed configuration (and the allow-list for its doors):
    // machines connecting before that are refused, and retry with backoff.
    await proc.waitUntil(async () => configured(healthUrl), 60_000, 200);
  };
  await start();
  return {
    id: gateway.id,
    dataDir: gateway.dataDir,
    url: `mqtt://127.0.0.1:${gateway.port}`,
    healthUrl,
    async kill() {
      if (!proc) return;
      process.kill(proc.pid, 'SIGKILL');
      await proc.exited;
      proc = undefined;
    },
    start,
    async stop() {
      await proc?.stop(15_000);
      proc = undefined;
      await new Promise<void>((resolve) => (log ? log.end(resolve) : resolve()));
    },
  };
}
