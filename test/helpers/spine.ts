/**
 * Process-level harness for the hub's spine (issue 4, RELIABILITY "Common harness"): provisions a branch in a
 * MongoDB database of its own, runs the cloud, the edge gateway and the simulator as real processes on free ports
 * over loopback, and checks what reached MongoDB against what the machines were acknowledged (the checker:
 * acked ⊆ mongo, duplicate documents 0, gaps 0 per machine).
 */
import { spawn } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { connectAsync, type MqttClient } from 'mqtt';
import type { Connection } from 'mongoose';
import { newBootId, newMsgId, topics, asBranchId, asMachineId } from '../../protocol/index.ts';
import { createIdentityStore } from '../../cloud/src/broker/identities.ts';
import { addGateway, addMachine, addObserver, gatewayMachines } from '../../cloud/src/broker/provisioning.ts';
import { findFreePort, spawnNode, type ServiceProcess } from '../../tools/services/index.ts';

export const repoRoot = path.resolve(import.meta.dirname, '../..');

export interface Credential {
  id: string;
  secret: string;
}

export interface ProvisionedBranch {
  branch: string;
  gateway: Credential;
  /** The gateway's machines file and secret file, as npm start writes them (scripts/demo-branch.ts). */
  machinesFile: string;
  gatewaySecretFile: string;
  machines: (Credential & { type: string })[];
  observer: Credential;
  /** Gateways provisioned on the branch that run no process (a test publishes as them directly), with machines. */
  extraGateways: (Credential & { machines: Credential[] })[];
}

/** Provisions a gateway, its machines and an observer with the same functions as `npm run hub`. */
export async function provisionBranch(
  mongo: Connection,
  dir: string,
  {
    branch,
    gatewayId,
    machines,
    extraGateways = [],
  }: {
    branch: string;
    gatewayId: string;
    machines: { id: string; type: string }[];
    extraGateways?: { id: string; machines: string[] }[];
  },
): Promise<ProvisionedBranch> {
  const store = createIdentityStore(mongo);
  const gateway = await addGateway({ store }, { id: gatewayId, branch });
  const observer = await addObserver({ store }, { id: `${branch}-observer`, branches: [branch] });
  const issued: (Credential & { type: string })[] = [];
  for (const m of machines) {
    const { secret } = await addMachine({ store }, { id: m.id, branch, gateway: gatewayId });
    issued.push({ id: m.id, secret, type: m.type });
  }
  const extras: (Credential & { machines: Credential[] })[] = [];
  for (const extra of extraGateways) {
    const { secret } = await addGateway({ store }, { id: extra.id, branch });
    const own: Credential[] = [];
    for (const id of extra.machines) {
      own.push({ id, secret: (await addMachine({ store }, { id, branch, gateway: extra.id })).secret });
    }
    extras.push({ id: extra.id, secret, machines: own });
  }
  const machinesFile = path.join(dir, `${gatewayId}-machines.json`);
  const gatewaySecretFile = path.join(dir, `${gatewayId}.secret`);
  await writeFile(machinesFile, JSON.stringify(await gatewayMachines({ store }, gatewayId)));
  await writeFile(gatewaySecretFile, `${gateway.secret}\n`, { mode: 0o600 });
  observers.set(branch, { id: observer.identity.id, secret: observer.secret });
  return {
    branch,
    gateway: { id: gatewayId, secret: gateway.secret },
    machinesFile,
    gatewaySecretFile,
    machines: issued,
    observer: { id: observer.identity.id, secret: observer.secret },
    extraGateways: extras,
  };
}

export interface CloudProcess {
  proc: ServiceProcess;
  apiUrl: string;
  /** Plain MQTT on loopback (tools, tests) and MQTT over TLS (gateways). */
  tcpPort: number;
  tlsPort: number;
  caFile: string;
  redisPrefix: string;
  /** Starts the cloud again on the same ports, data and database (after a kill); `env` overrides variables. */
  restart(env?: Record<string, string>): Promise<void>;
}

/** The cloud (node cloud/src/main.ts) on free ports, ready once GET /health answers 200. */
export async function startCloudProcess({
  mongoUrl,
  redisUrl,
  redisPrefix,
  dataDir,
  env = {},
}: {
  /** With the database: mongodb://host:port/db */
  mongoUrl: string;
  redisUrl: string;
  redisPrefix: string;
  dataDir: string;
  env?: Record<string, string>;
}): Promise<CloudProcess> {
  const httpPort = await findFreePort();
  const tcpPort = await findFreePort();
  const tlsPort = await findFreePort();
  const apiUrl = `http://127.0.0.1:${httpPort}`;
  const baseEnv: Record<string, string> = {
    LOG_LEVEL: 'info',
    MONGO_URL: mongoUrl,
    REDIS_URL: redisUrl,
    REDIS_KEY_PREFIX: redisPrefix,
    HTTP_PORT: String(httpPort),
    MQTT_TCP_PORT: String(tcpPort),
    MQTT_TLS_PORT: String(tlsPort),
    MQTT_DATA_DIR: path.join(dataDir, 'mqtt'),
    DEV_KEYS_FILE: path.join(dataDir, 'dev-keys.json'),
    AUTH_DEV_KEY_DIR: path.join(dataDir, 'keys'),
    MAIL_DIR: path.join(dataDir, 'mail'),
  };
  const start = async (overrides: Record<string, string>) => {
    const proc = await spawnNode('cloud', ['cloud/src/main.ts'], { ...baseEnv, ...overrides });
    await proc.waitUntil(async () => (await fetch(`${apiUrl}/health`)).ok, 60_000, 100);
    return proc;
  };
  let currentEnv = env;
  const cloud: CloudProcess = {
    proc: await start(currentEnv),
    apiUrl,
    tcpPort,
    tlsPort,
    caFile: path.join(dataDir, 'mqtt', 'tls', 'ca.crt'),
    redisPrefix,
    async restart(overrides = {}) {
      currentEnv = { ...currentEnv, ...overrides };
      cloud.proc = await start(currentEnv);
    },
  };
  return cloud;
}

export interface GatewayHealth {
  status: string;
  uplink: 'up' | 'down';
  queue: { depth: number; lanes: Record<string, { depth: number; inFlightBatches: number }> };
  machinesConnected: number;
  rejected: { total: number; byReason: Record<string, number> };
}

export interface GatewayProcess {
  proc: ServiceProcess;
  /** The gateway's broker for machines, mqtt://127.0.0.1:port */
  mqttUrl: string;
  mqttPort: number;
  healthUrl: string;
  health(): Promise<GatewayHealth>;
  /** A counter or gauge from /metrics, summed over the series with `labels` (0 when absent). */
  metric(name: string, labels?: Record<string, string>): Promise<number>;
}

/** The edge gateway (node edge-gateway/src/main.ts) with its uplink over TLS to the cloud. */
export async function startGatewayProcess(
  branch: ProvisionedBranch,
  cloud: CloudProcess,
  env: Record<string, string> = {},
): Promise<GatewayProcess> {
  const proc = await spawnNode('gateway', ['edge-gateway/src/main.ts'], {
    LOG_LEVEL: 'info',
    GATEWAY_MACHINES_FILE: branch.machinesFile,
    GATEWAY_SECRET_FILE: branch.gatewaySecretFile,
    // Its queue beside its machines file, never the repository's data/gateway.
    GATEWAY_DATA_DIR: path.join(path.dirname(branch.machinesFile), 'gateway-data'),
    GATEWAY_MQTT_PORT: '0',
    GATEWAY_HEALTH_PORT: '0',
    GATEWAY_UPLINK_URL: `mqtts://127.0.0.1:${cloud.tlsPort}`,
    GATEWAY_UPLINK_CA_FILE: cloud.caFile,
    ...env,
  });
  const ready = await proc.waitForLine(/"msg":"gateway ready"/, 60_000);
  const { mqtt, health: healthUrl } = JSON.parse(ready.input) as { mqtt: string; health: string };
  const metricsUrl = healthUrl.replace(/\/health$/, '/metrics');
  return {
    proc,
    mqttUrl: mqtt,
    mqttPort: Number(new URL(mqtt).port),
    healthUrl,
    async health() {
      return (await (await fetch(healthUrl)).json()) as GatewayHealth;
    },
    metric: (name: string, labels?: Record<string, string>) => scrapeMetric(metricsUrl, name, labels),
  };
}

/**
 * A counter or gauge from a Prometheus text endpoint, summed over the series whose labels include `labels`
 * (0 when there is none).
 */
export async function scrapeMetric(url: string, name: string, labels: Record<string, string> = {}): Promise<number> {
  const text = await (await fetch(url)).text();
  let sum = 0;
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{([^}]*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const has = m[2] ?? '';
    if (Object.entries(labels).every(([k, v]) => has.includes(`${k}="${v}"`))) sum += Number(m[3]);
  }
  return sum;
}

/** The simulator CLI (node simulators/src/cli.ts) for the machines in `credentialsFile`. */
export async function startSimulatorProcess(
  credentialsFile: string,
  { url, branch, seed = 7 }: { url: string; branch: string; seed?: number },
): Promise<ServiceProcess> {
  const proc = await spawnNode(
    'simulator',
    [
      'simulators/src/cli.ts',
      '--branch',
      branch,
      '--credentials',
      credentialsFile,
      '--url',
      url,
      '--seed',
      String(seed),
      '--time-scale',
      '30',
      '--stats-every',
      '0',
      '--log-level',
      'info',
    ],
    { LOG_FORMAT: 'json' },
  );
  // The simulator's coordinator logs `scenario: fleet connected` once every process is past its connect phase (older
  // builds: `all machines connected`).
  await proc.waitForLine(/all machines connected|fleet connected/, 60_000);
  return proc;
}

export interface AvailabilityMachine {
  machine: string;
  status: string;
  gateway?: string;
  lastSeen?: number;
}

/** Observers provisioned by provisionBranch, by branch: availability() reads with them (HTTP Basic). */
const observers = new Map<string, Credential>();

/**
 * The branch's machines from GET /api/machines/availability, read as the branch's observer (the route needs
 * credentials: a member's or staff token, or an observer's Basic `id:secret`); `observer` defaults to the one
 * provisionBranch made for `branch`.
 */
export async function availability(
  apiUrl: string,
  branch: string,
  observer: Credential | undefined = observers.get(branch),
): Promise<AvailabilityMachine[]> {
  if (!observer) throw new Error(`availability: no observer credentials for branch ${branch} (provisionBranch first)`);
  const basic = Buffer.from(`${observer.id}:${observer.secret}`).toString('base64');
  const res = await fetch(`${apiUrl}/api/machines/availability?branchId=${branch}`, {
    headers: { Authorization: `Basic ${basic}` },
  });
  if (!res.ok) throw new Error(`availability: HTTP ${res.status}`);
  return ((await res.json()) as { machines: AvailabilityMachine[] }).machines;
}

/** A finished workout interval from `machine` with envelope seq `seq` (valid per protocol/messages/workout.ts). */
export function workoutPayload(machine: string, bootId: string, seq: number, ts = Date.now()) {
  return {
    msgId: newMsgId(),
    source: machine,
    bootId,
    seq,
    ts,
    v: 0,
    segment: 'interval',
    machineType: 'rower',
    intent: 'work',
    startedAt: ts - 60_000,
    endedAt: ts - 1_000,
    distanceM: 250,
  };
}

export interface LedgerEntry {
  msgId: string;
  seq: number;
}

/**
 * A machine as a raw MQTT.js client on the gateway's broker that publishes workouts with seq 1..n (QoS 1) and keeps
 * a PUBACK ledger: the records the gateway acknowledged, i.e. promised to deliver.
 */
export class WorkoutMachine {
  readonly id: string;
  readonly client: MqttClient;
  readonly bootId = newBootId();
  readonly acked: LedgerEntry[] = [];
  sent = 0;
  private seq = 0;
  private readonly topic: string;

  private constructor(client: MqttClient, id: string, branch: string) {
    this.client = client;
    this.id = id;
    this.topic = topics.machineWorkout(asBranchId(branch), asMachineId(id));
  }

  static async connect(url: string, branch: string, machine: Credential, keepalive = 30): Promise<WorkoutMachine> {
    const client = await connectAsync(url, {
      clientId: machine.id,
      username: machine.id,
      password: machine.secret,
      keepalive,
      reconnectPeriod: 0,
      protocolVersion: 4,
    });
    return new WorkoutMachine(client, machine.id, branch);
  }

  /** Publishes the next workout; resolves on its PUBACK (then it is in the ledger). */
  async publishNext(): Promise<void> {
    const payload = workoutPayload(this.id, this.bootId, ++this.seq);
    this.sent += 1;
    await this.client.publishAsync(this.topic, JSON.stringify(payload), { qos: 1 });
    this.acked.push({ msgId: payload.msgId, seq: payload.seq });
  }

  close(): Promise<void> {
    return this.client.endAsync(true);
  }
}

/** A stored record as the checks read it: `_id` is the record's msgId (cloud/src/ingest/store.ts). */
export interface StoredRecord {
  _id: string;
  source: string;
  bootId: string;
  seq: number;
}

/** The `workouts` collection, typed for msgId lookups. */
export function workoutsIn(mongo: Connection) {
  return mongo.db!.collection<StoredRecord>('workouts');
}

export interface CheckResult {
  machine: string;
  acked: number;
  inMongo: number;
  missing: string[];
  dupDocs: number;
  gaps: number[];
}

/**
 * The checker (RELIABILITY "Common harness") over the `workouts` collection, per machine: every acknowledged msgId
 * is stored; no two documents hold the same record (same source, boot and seq); the stored seqs are exactly
 * 1..max(acked seq) (no gaps).
 */
export async function checkWorkouts(mongo: Connection, ledger: Map<string, LedgerEntry[]>): Promise<CheckResult[]> {
  const results: CheckResult[] = [];
  for (const [machine, acked] of ledger) {
    const docs = await mongo
      .db!.collection('workouts')
      .find({ source: machine }, { projection: { _id: 1, seq: 1, bootId: 1 } })
      .toArray();
    const ids = new Set(docs.map((d) => String(d._id)));
    const keys = new Set(docs.map((d) => `${String(d.bootId)}:${Number(d.seq)}`));
    const seqs = new Set(docs.map((d) => Number(d.seq)));
    const maxAcked = acked.reduce((max, e) => Math.max(max, e.seq), 0);
    const gaps: number[] = [];
    for (let s = 1; s <= maxAcked; s++) if (!seqs.has(s)) gaps.push(s);
    results.push({
      machine,
      acked: acked.length,
      inMongo: docs.length,
      missing: acked.filter((e) => !ids.has(e.msgId)).map((e) => e.msgId),
      dupDocs: docs.length - keys.size,
      gaps,
    });
  }
  return results;
}

export interface MosquittoResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs mosquitto_pub or mosquitto_sub (Debian mosquitto-clients) to completion; never rejects on its exit code. */
export function mosquitto(
  command: 'mosquitto_pub' | 'mosquitto_sub',
  args: string[],
  timeoutMs = 20_000,
): Promise<MosquittoResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, ['-V', 'mqttv311', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code: code ?? (signal ? -1 : 0), stdout, stderr });
    });
  });
}
