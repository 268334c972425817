/**
 * What a run drives: the hub it talks to and the branch gateways its machines connect to.
 * - `npm-start`: the hub `npm start` runs, found through `<data dir>/hub.json` (written by scripts/start.ts):
 *   MongoDB for provisioning and the read-back, the cloud's MQTT over TLS for the run's own gateways.
 * - `own`: a hub of the run's own (MongoDB stand-in in memory and Redis unless URLs are given, and the cloud as a
 *   process on free ports), stopped at the end — what CI and the cloud-restart scenario use.
 * - `attach`: machines connect to a given broker (`--url`), with `--credentials`; nothing provisioned or started.
 *
 * For `npm-start` and `own` the run provisions fresh branches, gateways and machines (ids tagged with the run, so
 * runs never collide) with the same functions as `npm run hub` (cloud/src/broker/provisioning.ts), and runs one
 * edge gateway process per gateway (edge-gateway/src/main.ts) on a fixed port, so a gateway killed by a scenario
 * comes back where its machines look for it.
 */
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import mongoose from 'mongoose';
import * as v from 'valibot';
import { createIdentityStore } from '../../cloud/src/broker/identities.ts';
import { addGateway, addMachine, gatewayMachines } from '../../cloud/src/broker/provisioning.ts';
import {
  findFreePort,
  spawnNode,
  startServices,
  type ServiceProcess,
  type Services,
} from '../../tools/services/index.ts';
import type { FleetMachine } from './fleet.ts';
import { machineIdAt, typeAt, type SimulatedMachineType } from './machines/index.ts';

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

export interface PlannedGateway {
  readonly id: string;
  readonly branch: string;
  readonly machinesFile: string;
  readonly secretFile: string;
  readonly port: number;
  readonly machines: FleetMachine[];
}

/** The machines of a branch: `mix` cycles through its types, or the fleet's usual mix (machines/index.ts). */
export function branchMachines(
  tag: string,
  count: number,
  mix?: readonly SimulatedMachineType[],
): { id: string; type: SimulatedMachineType }[] {
  return Array.from({ length: count }, (_, i) => {
    const type = mix && mix.length > 0 ? mix[i % mix.length]! : typeAt(i);
    return {
      id: `${tag}-${machineIdAt(i, type).replace(/-(\d{3})$/, (_m, d: string) => `-${d.padStart(4, '0')}`)}`,
      type,
    };
  });
}

/**
 * Provisions `branches` branches of `gatewaysPerBranch` gateways and `machinesPerBranch` machines each (machine i
 * of a branch on gateway i mod gatewaysPerBranch); writes each gateway's machines and secret files under `dir`.
 */
export async function provisionRun(
  mongoUrl: string,
  {
    runTag,
    branches,
    gatewaysPerBranch,
    machinesPerBranch,
    mix,
    dir,
  }: {
    runTag: string;
    branches: number;
    gatewaysPerBranch: number;
    machinesPerBranch: number;
    mix?: readonly SimulatedMachineType[] | undefined;
    dir: string;
  },
): Promise<PlannedGateway[]> {
  const mongo = await mongoose.createConnection(mongoUrl, { serverSelectionTimeoutMS: 10_000 }).asPromise();
  try {
    const store = createIdentityStore(mongo);
    const planned: PlannedGateway[] = [];
    for (let b = 1; b <= branches; b++) {
      const branch = `${runTag}-b${b}`;
      const gateways: PlannedGateway[] = [];
      for (let g = 1; g <= gatewaysPerBranch; g++) {
        const id = `${branch}-gw${g}`;
        const issued = await addGateway({ store }, { id, branch });
        const secretFile = path.join(dir, `${id}.secret`);
        await writeFile(secretFile, `${issued.secret}\n`, { mode: 0o600 });
        gateways.push({
          id,
          branch,
          secretFile,
          machinesFile: path.join(dir, `${id}-machines.json`),
          port: await findFreePort(),
          machines: [],
        });
      }
      const machines = branchMachines(`${runTag}-b${b}`, machinesPerBranch, mix);
      for (const [i, m] of machines.entries()) {
        const gateway = gateways[i % gateways.length]!;
        const { secret } = await addMachine({ store }, { id: m.id, branch, gateway: gateway.id });
        gateway.machines.push({
          id: m.id,
          type: m.type,
          secret,
          branch,
          url: `mqtt://127.0.0.1:${gateway.port}`,
        });
      }
      for (const gateway of gateways) {
        await writeFile(gateway.machinesFile, JSON.stringify(await gatewayMachines({ store }, gateway.id)), {
          mode: 0o600,
        });
      }
      planned.push(...gateways);
    }
    return planned;
  } finally {
    await mongo.close();
  }
}

export interface GatewayHandle {
  readonly id: string;
  readonly url: string;
  /** Its health endpoint (`queue.depth`: what it still has to forward), on a port fixed for the run. */
  readonly healthUrl: string;
  /** SIGKILL: a power cut at the branch. */
  kill(): Promise<void>;
  /** Starts it again on the same port. */
  start(): Promise<void>;
  stop(): Promise<void>;
}

/** An edge gateway process for `gateway`, its uplink to the hub's cloud over TLS. */
export async function startGateway(gateway: PlannedGateway, hub: Hub): Promise<GatewayHandle> {
  let proc: ServiceProcess | undefined;
  // A fixed port, so the health endpoint stays where the run asks after a kill and a restart.
  const healthPort = await findFreePort();
  const start = async () => {
    proc = await spawnNode(`gateway ${gateway.id}`, ['edge-gateway/src/main.ts'], {
      LOG_LEVEL: 'info',
      LOG_FORMAT: 'json',
      GATEWAY_MACHINES_FILE: gateway.machinesFile,
      GATEWAY_SECRET_FILE: gateway.secretFile,
      // Its own durable queue beside its machines file: two gateways never share (or lock) one queue.
      GATEWAY_DATA_DIR: path.join(path.dirname(gateway.machinesFile), `${gateway.id}-data`),
      GATEWAY_MQTT_PORT: String(gateway.port),
      GATEWAY_HEALTH_PORT: String(healthPort),
      GATEWAY_UPLINK_URL: hub.mqttTlsUrl,
      GATEWAY_UPLINK_CA_FILE: hub.caFile,
      // A simulator may publish faster than a real console (--rate): the gateway's per-machine limit follows.
      GATEWAY_TELEMETRY_MAX_HZ: '1000',
    });
    await proc.waitForLine(/"msg":"gateway ready"/, 60_000);
  };
  await start();
  return {
    id: gateway.id,
    url: `mqtt://127.0.0.1:${gateway.port}`,
    healthUrl: `http://127.0.0.1:${healthPort}/health`,
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
    },
  };
}
