/**
 * Shared steps of the multi-process benches (e2e.ts, gateway-outage.ts, live.ts, api/stack.ts): provisioning the
 * bench gateway and its machines in the cloud's database, starting the cloud (`node cloud/src/main.ts`) and the
 * edge gateway as processes, and reading the JSON log lines the services announce themselves with.
 */
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import mongoose from 'mongoose';
import { addGateway, addMachine, gatewayMachines } from '../../cloud/src/broker/provisioning.ts';
import { createIdentityStore } from '../../cloud/src/broker/identities.ts';
import type { FleetMachine } from '../../simulators/src/fleet.ts';
import { machineIdAt, typeAt } from '../../simulators/src/machines/index.ts';
import { spawnService, type ServiceProcess } from '../../tools/services/index.ts';
import { repoRoot } from './cli.ts';

export const BRANCH = 'bench';
export const GATEWAY = 'gw-bench-1';
/** Log settings for the spawned services: JSON lines at info, which waitForLog reads. */
export const QUIET_LOGS = { LOG_LEVEL: 'info', LOG_FORMAT: 'json' };

function jsonLine(line: string): Record<string, unknown> | undefined {
  try {
    return JSON.parse(line) as Record<string, unknown>;
  } catch {
    return undefined;
  }
}

/** Waits for the JSON log line whose `msg` is `message` and returns it parsed. */
export async function waitForLog(
  proc: ServiceProcess,
  message: string,
  timeoutMs: number,
): Promise<Record<string, unknown>> {
  const escaped = message.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  const match = await proc.waitForLine(new RegExp(`"msg":"${escaped}"`), timeoutMs);
  const parsed = jsonLine(match.input);
  if (!parsed) throw new Error(`${proc.name}: unreadable log line ${match.input}`);
  return parsed;
}

export interface ProvisionedGateway {
  readonly secret: string;
  readonly machines: FleetMachine[];
  /** The gateway's GATEWAY_MACHINES_FILE, written under `dir`. */
  readonly machinesFile: string;
}

/** Provisions GATEWAY and `count` machines in the cloud's database, as `npm run hub` would. */
export async function provisionGateway(mongoUrl: string, dir: string, count: number): Promise<ProvisionedGateway> {
  const connection = await mongoose.createConnection(mongoUrl, { serverSelectionTimeoutMS: 10_000 }).asPromise();
  try {
    const store = createIdentityStore(connection);
    const gateway = await addGateway({ store }, { id: GATEWAY, branch: BRANCH });
    const machines: FleetMachine[] = [];
    for (let i = 0; i < count; i++) {
      const id = machineIdAt(i);
      const issued = await addMachine({ store }, { id, branch: BRANCH, gateway: GATEWAY });
      machines.push({ id, secret: issued.secret, type: typeAt(i) });
    }
    const machinesFile = path.join(dir, 'machines.json');
    await writeFile(machinesFile, JSON.stringify(await gatewayMachines({ store }, GATEWAY)));
    return { secret: gateway.secret, machines, machinesFile };
  } finally {
    await connection.close();
  }
}

/** `node cloud/src/main.ts` with `env` over this process's environment. */
function spawnCloud(
  env: Record<string, string>,
  extra: { parentDeathSignal?: 'SIGTERM' } = {},
): Promise<ServiceProcess> {
  return spawnService({
    name: 'cloud',
    command: process.execPath,
    args: [path.join(repoRoot, 'cloud/src/main.ts')],
    cwd: repoRoot,
    env: { ...process.env, ...env },
    ...extra,
  });
}

/** The TLS listener on any free port, and what the cloud would write under ./data in `dir`. */
function cloudLocalEnv(dir: string): Record<string, string> {
  return {
    MQTT_TLS_PORT: '0',
    MQTT_DATA_DIR: path.join(dir, 'mqtt'),
    AUTH_DEV_KEY_DIR: path.join(dir, 'keys'),
    MAIL_DIR: path.join(dir, 'mail'),
  };
}

export interface CloudProcess {
  readonly proc: ServiceProcess;
  /** The broker's TLS listener for gateways (`mqtts://host:port`). */
  readonly tlsUrl: string;
  readonly caFile: string;
  readonly metricsUrl: string;
}

/**
 * Spawns the cloud with everything it would write under ./data in `dir`, and waits until the whole cloud (ingest
 * included, not only its broker) is up. `onSpawned` gets the process as soon as it is spawned (to register its
 * stop as a cleanup before the waits, which may throw).
 */
export async function startCloudProcess(
  dir: string,
  mongoUrl: string,
  redisUrl: string,
  onSpawned: (proc: ServiceProcess) => void,
): Promise<CloudProcess> {
  const proc = await spawnCloud({
    ...QUIET_LOGS,
    MONGO_URL: mongoUrl,
    REDIS_URL: redisUrl,
    REDIS_KEY_PREFIX: 'bench:',
    HTTP_PORT: '0',
    MQTT_TCP_PORT: '0',
    ...cloudLocalEnv(dir),
    DEV_KEYS_FILE: path.join(dir, 'dev-keys.json'),
  });
  onSpawned(proc);
  const listening = await waitForLog(proc, 'mqtt broker listening', 60_000);
  const api = await waitForLog(proc, 'cloud API listening', 60_000);
  return {
    proc,
    tlsUrl: String(listening.tls),
    caFile: String(listening.caFile),
    metricsUrl: `${String(api.url).replace(/\/+$/, '')}/metrics`,
  };
}

export interface GatewayProcess {
  readonly proc: ServiceProcess;
  /** The gateway's local broker, for machines. */
  readonly mqttUrl: string;
  readonly healthUrl: string;
  readonly metricsUrl: string;
}

/**
 * Spawns the edge gateway for `provisioned`, its durable queue under `dir`, uplinked to `uplinkUrl`, and waits until
 * it is ready. `env` adds or overrides gateway variables; `onSpawned` as for startCloudProcess.
 */
export async function startGatewayProcess(
  dir: string,
  provisioned: ProvisionedGateway,
  uplink: { readonly url: string; readonly caFile: string },
  env: Record<string, string>,
  onSpawned: (proc: ServiceProcess) => void,
): Promise<GatewayProcess> {
  const proc = await spawnService({
    name: 'gateway',
    command: process.execPath,
    args: [path.join(repoRoot, 'edge-gateway/src/main.ts')],
    cwd: repoRoot,
    env: {
      ...process.env,
      ...QUIET_LOGS,
      GATEWAY_MACHINES_FILE: provisioned.machinesFile,
      GATEWAY_SECRET: provisioned.secret,
      GATEWAY_DATA_DIR: path.join(dir, 'gateway'),
      GATEWAY_MQTT_PORT: '0',
      GATEWAY_HEALTH_PORT: '0',
      GATEWAY_UPLINK_URL: uplink.url,
      GATEWAY_UPLINK_CA_FILE: uplink.caFile,
      ...env,
    },
  });
  onSpawned(proc);
  const ready = await waitForLog(proc, 'gateway ready', 60_000);
  const healthUrl = String(ready.health);
  return {
    proc,
    mqttUrl: String(ready.mqtt),
    healthUrl,
    metricsUrl: healthUrl.replace(/\/health$/, '/metrics'),
  };
}

export interface CloudOnPortOptions {
  /** The run's temporary directory: the cloud's MQTT data, dev keys and mail go below it. */
  readonly dir: string;
  readonly mongoUrl: string;
  readonly redisUrl: string;
  readonly keyPrefix: string;
  readonly httpPort: number;
  /** 0 (the default): any free port. */
  readonly mqttTcpPort?: number;
  /** The bench's own variables (limits, log level, …); the ones set here win over them. */
  readonly env: Record<string, string>;
}

/**
 * Spawns the cloud with its API on `httpPort` (the TLS listener on any free port) and waits until `GET /health`
 * answers 200. It is stopped with a parent-death signal if this process dies; `onSpawned` as for startCloudProcess.
 */
export async function startCloudOnPort(
  options: CloudOnPortOptions,
  onSpawned: (proc: ServiceProcess) => void,
): Promise<{ readonly proc: ServiceProcess; readonly url: string }> {
  const proc = await spawnCloud(
    {
      ...options.env,
      MONGO_URL: options.mongoUrl,
      REDIS_URL: options.redisUrl,
      REDIS_KEY_PREFIX: options.keyPrefix,
      HTTP_PORT: String(options.httpPort),
      MQTT_TCP_PORT: String(options.mqttTcpPort ?? 0),
      ...cloudLocalEnv(options.dir),
      SHUTDOWN_GRACE_MS: '2000',
    },
    { parentDeathSignal: 'SIGTERM' },
  );
  onSpawned(proc);
  const url = `http://127.0.0.1:${options.httpPort}`;
  await proc.waitUntil(async () => (await fetch(`${url}/health`).catch(() => undefined))?.status === 200, 60_000, 200);
  return { proc, url };
}
