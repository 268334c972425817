/**
 * The fault tests' rig (RELIABILITY (b), "Common harness"), built on the spine harness (test/helpers/spine.ts): one
 * cloud process per test file over the run's MongoDB stand-in and Redis, and per scenario a branch of its own with
 * its gateway process (`node edge-gateway/src/main.ts`, its queue files in a directory of its own) whose uplink runs
 * through a TCP proxy (edge-gateway/src/testing/tcp-proxy.ts): the link is cut by refusing (`cut('refuse')`),
 * black-holed (`cut('blackhole')`) and restored there.
 *
 * Machines are MQTT.js clients in the test process that publish workouts (QoS 1, seq 1..n per machine) and keep a
 * PUBACK ledger: what the gateway promised to hold. A machine whose connection drops reconnects with a new client and
 * publishes again, in seq order and with the same msgId, every record it has no PUBACK for (what a machine with a
 * persistent store does), so after a gateway crash every record a machine published is eventually acknowledged.
 *
 * The checker reads the scenario's records from MongoDB once and compares them with the ledger, per machine:
 * acked ⊆ mongo, duplicate documents (same boot and seq stored twice), gaps (seqs missing in 1..max acked) and
 * first-arrival inversions (a record stored — `ingestedAt`, the cloud's receive time of the first copy — strictly
 * before a record of a lower seq of the same machine and lane).
 */
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { expect } from 'chai';
import { connect, type MqttClient } from 'mqtt';
import type { Connection } from 'mongoose';
import { asBranchId, asMachineId, newBootId, topics } from '../../protocol/index.ts';
import { telemetryOf } from '../../edge-gateway/src/testing/fixtures.ts';
import type { ReceivedBatch } from '../../edge-gateway/src/testing/stand-in-cloud.ts';
import { startTcpProxy, type TcpProxy } from '../../edge-gateway/src/testing/tcp-proxy.ts';
import { connectMongoose, testServices, uniqueDbName } from '../helpers/services.ts';
import {
  provisionBranch,
  scrapeMetric,
  startCloudProcess,
  startGatewayProcess,
  workoutPayload,
  type CloudProcess,
  type Credential,
  type GatewayProcess,
  type LedgerEntry,
  type ProvisionedBranch,
} from '../helpers/spine.ts';

export { eventually } from '../helpers/eventually.ts';

/** A lane's figures on the gateway's /health (the fields every queue implementation reports). */
export interface LaneHealth {
  depth: number;
  bytes: number;
  oldestAgeS: number | null;
  evicted: number;
  inFlightBatches: number;
}

/** The gateway's /health as the fault tests read it (edge-gateway/src/health/health-server.ts). */
export interface FaultHealth {
  status: string;
  uplink: 'up' | 'down';
  since: string;
  uplinkConnects: number;
  queue: {
    depth: number;
    bytes: number;
    oldestAgeS: number | null;
    full: boolean;
    capRecords: number;
    capBytes: number;
    lanes: Record<'access' | 'records' | 'telemetry', LaneHealth>;
    offlineHoursLeft?: number | null;
    [key: string]: unknown;
  };
  machinesConnected: number;
  [key: string]: unknown;
}

/** Health as JSON whatever the HTTP status (503 while full or stopping still carries the document). */
export async function readHealth(gateway: GatewayProcess): Promise<FaultHealth> {
  const res = await fetch(gateway.healthUrl);
  return (await res.json()) as FaultHealth;
}

export interface Scenario {
  readonly site: ProvisionedBranch;
  readonly proxy: TcpProxy;
  /** Where this gateway keeps its queue (GATEWAY_DATA_DIR). */
  readonly dataDir: string;
  gateway: GatewayProcess;
  /** Gateway environment of every (re)start. */
  readonly env: Record<string, string>;
  /** Starts the gateway again on the same data (after a kill); resolves once it is ready. */
  restartGateway(extraEnv?: Record<string, string>): Promise<GatewayProcess>;
  /** Cuts the link: `refuse` drops every connection and refuses new ones; `blackhole` keeps them, forwards nothing. */
  cut(mode: 'refuse' | 'blackhole'): void;
  restore(): void;
  /** The health document once `probe` holds (polling), for waits on the gateway. */
  waitHealth(
    what: string,
    probe: (h: FaultHealth) => boolean,
    timeoutMs: number,
    intervalMs?: number,
  ): Promise<FaultHealth>;
}

export interface FaultRig {
  readonly dir: string;
  readonly mongo: Connection;
  readonly cloud: CloudProcess;
  /** A branch with `machines` machines and its gateway behind a proxy; `offline`: the link is refused from the start. */
  scenario(
    name: string,
    options: {
      machines: number;
      env?: Record<string, string>;
      offline?: boolean;
      machinePrefix?: string;
      /** Runs once the data directory exists, before the gateway starts (e.g. mounts a small tmpfs on it). */
      beforeStart?: (dataDir: string, site: ProvisionedBranch) => Promise<void>;
      /**
       * Another peer for the gateway's uplink than the cloud's TLS listener (e.g. the stand-in cloud of
       * edge-gateway/src/testing/stand-in-cloud.ts, plain MQTT): started once the branch exists; returns its port.
       */
      upstream?: (site: ProvisionedBranch) => Promise<number>;
    },
  ): Promise<Scenario>;
  /** A counter or gauge from the cloud's /metrics. */
  cloudMetric(name: string, labels?: Record<string, string>): Promise<number>;
  /**
   * Stops the gateways of the scenarios so far and deletes their branches' documents: the run's MongoDB stand-in
   * holds every suite's data in a 256 MiB heap, and a scenario leaves up to 70,000 records.
   */
  finish(): Promise<void>;
  close(): Promise<void>;
}

/** What a fault suite's tests use: the rig and the machines of the running test (faultSuite). */
export interface FaultSuite {
  /** The rig, started in the suite's `before`. */
  readonly rig: FaultRig;
  /** Starts the scenario's machines (startMachines), stopped after the test. */
  startMachines(s: Scenario): Machines;
  /** Stops the test's machines now (they are stopped after the test anyway). */
  stopMachines(): Promise<void>;
}

/**
 * Registers the hooks a fault suite shares in the calling `describe`: the rig started once before its tests
 * (startFaultRig), after each test its machines stopped and then its scenarios finished, the rig closed at the end.
 */
export function faultSuite(name: string, cloudEnv: Record<string, string> = {}): FaultSuite {
  let rig: FaultRig | undefined;
  let machines: Machines | undefined;
  const stopMachines = async () => {
    await machines?.stop();
    machines = undefined;
  };
  before(async function () {
    this.timeout(120_000);
    rig = await startFaultRig(name, cloudEnv);
  });
  afterEach(async function () {
    this.timeout(30_000);
    await stopMachines();
    await rig?.finish();
  });
  after(async function () {
    this.timeout(60_000);
    await rig?.close();
  });
  return {
    get rig(): FaultRig {
      if (!rig) throw new Error(`fault suite ${name}: the rig is not started`);
      return rig;
    },
    startMachines(s) {
      machines = startMachines(() => s.gateway.mqttUrl, s.site);
      return machines;
    },
    stopMachines,
  };
}

/** Gateway settings for fast fault detection in tests (keepalive 3 s, reconnect 100–1000 ms). */
export const FAST_LINK: Readonly<Record<string, string>> = {
  LOG_LEVEL: 'info',
  GATEWAY_UPLINK_KEEPALIVE_S: '3',
  GATEWAY_UPLINK_CONNECT_TIMEOUT_MS: '3000',
  GATEWAY_UPLINK_RECONNECT_MIN_MS: '100',
  GATEWAY_UPLINK_RECONNECT_MAX_MS: '1000',
  GATEWAY_UPLINK_ACK_TIMEOUT_MS: '10000',
  GATEWAY_STATE_INTERVAL_MS: '1000',
};

export async function startFaultRig(name: string, cloudEnv: Record<string, string> = {}): Promise<FaultRig> {
  const dir = await mkdtemp(path.join(tmpdir(), `nxg-faults-${name}-`));
  const dbName = uniqueDbName(`faults_${name}`);
  const mongo = await connectMongoose(dbName);
  const cloud = await startCloudProcess({
    mongoUrl: `${testServices().mongoUrl}/${dbName}`,
    redisUrl: testServices().redisUrl,
    redisPrefix: `faults-${name}-${randomBytes(4).toString('hex')}:`,
    dataDir: path.join(dir, 'cloud'),
    env: { LOG_LEVEL: 'warn', ...cloudEnv },
  });
  const scenarios: Scenario[] = [];
  const finished = new Set<Scenario>();

  return {
    dir,
    mongo,
    cloud,
    async scenario(
      scenarioName,
      { machines, env = {}, offline = false, machinePrefix = scenarioName, beforeStart, upstream },
    ) {
      const branch = `f-${scenarioName}`;
      const site = await provisionBranch(mongo, dir, {
        branch,
        gatewayId: `gw-${scenarioName}`,
        machines: Array.from({ length: machines }, (_, i) => ({
          id: `${machinePrefix}-${String(i + 1).padStart(3, '0')}`,
          type: 'rower',
        })),
      });
      const proxy = await startTcpProxy(upstream === undefined ? cloud.tlsPort : await upstream(site));
      if (offline) proxy.mode = 'refuse';
      const dataDir = path.join(dir, `gw-${scenarioName}-data`);
      await mkdir(dataDir, { recursive: true });
      await beforeStart?.(dataDir, site);
      const fullEnv = {
        ...FAST_LINK,
        GATEWAY_DATA_DIR: dataDir,
        GATEWAY_UPLINK_URL: `${upstream === undefined ? 'mqtts' : 'mqtt'}://127.0.0.1:${proxy.port}`,
        ...env,
      };
      const scenario: Scenario = {
        site,
        proxy,
        dataDir,
        env: fullEnv,
        gateway: await startGatewayProcess(site, cloud, fullEnv),
        async restartGateway(extraEnv = {}) {
          scenario.gateway = await startGatewayProcess(site, cloud, { ...fullEnv, ...extraEnv });
          return scenario.gateway;
        },
        cut(mode) {
          proxy.mode = mode;
          if (mode === 'refuse') proxy.cut();
        },
        restore() {
          proxy.mode = 'pass';
          // Connections accepted while black-holed carry a half-done handshake: drop them so the gateway redials.
          proxy.cut();
        },
        async waitHealth(what, probe, timeoutMs, intervalMs = 100) {
          const deadline = Date.now() + timeoutMs;
          let last: FaultHealth | undefined;
          for (;;) {
            try {
              last = await readHealth(scenario.gateway);
              if (probe(last)) return last;
            } catch {
              // not answering (restarting): poll on
            }
            if (Date.now() > deadline) {
              throw new Error(
                `${what}: not within ${timeoutMs} ms; last /health: ${JSON.stringify(last)}\n` +
                  `--- gateway ---\n${scenario.gateway.proc.recentOutput()}\n--- cloud ---\n${cloud.proc.recentOutput()}`,
              );
            }
            await new Promise((resolve) => setTimeout(resolve, intervalMs));
          }
        },
      };
      scenarios.push(scenario);
      return scenario;
    },
    cloudMetric: (metric, labels) => scrapeMetric(`${cloud.apiUrl}/metrics`, metric, labels),
    async finish() {
      const done = scenarios.filter((s) => !finished.has(s));
      if (done.length === 0) return;
      for (const s of done) {
        finished.add(s);
        await s.gateway.proc.stop(3_000).catch(() => undefined);
      }
      const branches = done.map((s) => s.site.branch);
      const collections = await mongo.db!.listCollections({}, { nameOnly: true }).toArray();
      for (const { name: collection } of collections) {
        await mongo
          .db!.collection(collection)
          .deleteMany({ branch: { $in: branches } })
          .catch(() => undefined);
      }
    },
    async close() {
      for (const s of scenarios) {
        await s.gateway.proc.stop(3_000).catch(() => undefined);
        await s.proxy.close().catch(() => undefined);
      }
      await cloud.proc.stop(5_000).catch(() => undefined);
      await mongo.dropDatabase().catch(() => undefined);
      await mongo.close().catch(() => undefined);
      await rm(dir, { recursive: true, force: true });
    },
  };
}

// ----------------------------------------------------------------------------------------------------------------
// Machines with a PUBACK ledger

interface PendingRecord {
  readonly seq: number;
  readonly msgId: string;
  readonly json: string;
}

/**
 * A machine publishing workouts (QoS 1) to the gateway's broker. Records without a PUBACK stay pending and are
 * published again, in order and unchanged, on the next connection; a PUBACK moves a record to the ledger.
 */
export class LedgerMachine {
  readonly id: string;
  readonly bootId = newBootId();
  readonly acked: LedgerEntry[] = [];
  readonly pending = new Map<number, PendingRecord>();
  /** Connections made (the first included). */
  connects = 0;
  /** Connections that ended without our asking (the gateway closed them or died). */
  drops = 0;
  private seq = 0;
  private client: MqttClient | undefined;
  private ready = false;
  private stopped = false;
  private reconnectTimer: NodeJS.Timeout | undefined;
  private readonly topic: string;
  private readonly telemetryTopic: string;
  private readonly url: () => string;
  private readonly secret: string;
  private telemetrySeq = 0;

  constructor(url: () => string, branch: string, machine: Credential) {
    this.id = machine.id;
    this.secret = machine.secret;
    this.url = url;
    this.topic = topics.machineWorkout(asBranchId(branch), asMachineId(machine.id));
    this.telemetryTopic = topics.machineTelemetry(asBranchId(branch), asMachineId(machine.id));
  }

  get published(): number {
    return this.seq;
  }

  get connected(): boolean {
    return this.ready;
  }

  start(): void {
    this.stopped = false;
    this.dial();
  }

  private dial(): void {
    this.reconnectTimer = undefined;
    if (this.stopped) return;
    const client = connect(this.url(), {
      clientId: this.id,
      username: this.id,
      password: this.secret,
      keepalive: 10,
      reconnectPeriod: 0,
      connectTimeout: 3_000,
      protocolVersion: 4,
      clean: true,
    });
    this.client = client;
    client.on('error', () => undefined);
    client.on('connect', () => {
      if (this.client !== client) return;
      this.connects += 1;
      this.ready = true;
      for (const record of [...this.pending.values()].sort((a, b) => a.seq - b.seq)) this.send(client, record);
    });
    client.on('close', () => {
      if (this.client !== client) return;
      if (this.ready && !this.stopped) this.drops += 1;
      this.ready = false;
      this.client = undefined;
      client.end(true);
      if (!this.stopped) this.reconnectTimer = setTimeout(() => this.dial(), 200);
    });
  }

  private send(client: MqttClient, record: PendingRecord): void {
    client.publish(this.topic, record.json, { qos: 1 }, (err) => {
      if (err || !this.pending.has(record.seq)) return;
      this.pending.delete(record.seq);
      this.acked.push({ msgId: record.msgId, seq: record.seq });
    });
  }

  /** Publishes the next workout (sent now when connected, else on the next connection). */
  publishNext(): void {
    const payload = workoutPayload(this.id, this.bootId, ++this.seq);
    const record = { seq: payload.seq, msgId: payload.msgId, json: JSON.stringify(payload) };
    this.pending.set(record.seq, record);
    if (this.ready && this.client) this.send(this.client, record);
  }

  /** A telemetry sample (QoS 0, fire and forget: lossy by design); false when not connected. */
  publishTelemetry(): boolean {
    if (!this.ready || !this.client) return false;
    const sample = { ...telemetryOf(asMachineId(this.id), ++this.telemetrySeq, this.bootId), ts: Date.now() };
    this.client.publish(this.telemetryTopic, JSON.stringify(sample), { qos: 0 });
    return true;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.reconnectTimer);
    const client = this.client;
    this.client = undefined;
    this.ready = false;
    if (client) await client.endAsync(true).catch(() => undefined);
  }
}

export interface Machines {
  readonly list: readonly LedgerMachine[];
  /** Records published, acknowledged and still without a PUBACK, over all machines. */
  published(): number;
  acked(): number;
  pending(): number;
  drops(): number;
  connected(): number;
  /** Waits until every machine is connected. */
  whenConnected(timeoutMs: number): Promise<void>;
  /** `perSecond` workouts per machine per second (one tick every 1000/perSecond ms) until `stopTraffic`. */
  startTraffic(perSecond: number, options?: { telemetryPerWorkout?: number; ticks?: number }): Promise<void>;
  stopTraffic(): void;
  /** `count` workouts per machine at once (MQTT.js sends them as fast as the link takes them). */
  burst(count: number): void;
  /** Waits until every published record has its PUBACK. */
  whenAllAcked(timeoutMs: number): Promise<void>;
  ledger(): Map<string, LedgerEntry[]>;
  stop(): Promise<void>;
}

/** The site's machines as ledger machines on `url()` (a function: a restarted gateway listens on a new port). */
export function startMachines(url: () => string, site: ProvisionedBranch, count = site.machines.length): Machines {
  const list = site.machines.slice(0, count).map((m) => new LedgerMachine(url, site.branch, m));
  for (const m of list) m.start();
  let timer: NodeJS.Timeout | undefined;
  let trafficDone: (() => void) | undefined;
  const sum = (f: (m: LedgerMachine) => number) => list.reduce((n, m) => n + f(m), 0);
  const machines: Machines = {
    list,
    published: () => sum((m) => m.published),
    acked: () => sum((m) => m.acked.length),
    pending: () => sum((m) => m.pending.size),
    drops: () => sum((m) => m.drops),
    connected: () => sum((m) => (m.connected ? 1 : 0)),
    async whenConnected(timeoutMs) {
      const deadline = Date.now() + timeoutMs;
      while (machines.connected() < list.length) {
        if (Date.now() > deadline) throw new Error(`${machines.connected()}/${list.length} machines connected`);
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    },
    startTraffic(perSecond, { telemetryPerWorkout = 0, ticks } = {}) {
      machines.stopTraffic();
      let done = 0;
      return new Promise<void>((resolve) => {
        trafficDone = resolve;
        timer = setInterval(() => {
          for (const m of list) {
            m.publishNext();
            for (let i = 0; i < telemetryPerWorkout; i++) m.publishTelemetry();
          }
          done += 1;
          if (ticks !== undefined && done >= ticks) machines.stopTraffic();
        }, 1000 / perSecond);
      });
    },
    stopTraffic() {
      clearInterval(timer);
      timer = undefined;
      trafficDone?.();
      trafficDone = undefined;
    },
    burst(count) {
      for (let i = 0; i < count; i++) for (const m of list) m.publishNext();
    },
    async whenAllAcked(timeoutMs) {
      const deadline = Date.now() + timeoutMs;
      while (machines.pending() > 0) {
        if (Date.now() > deadline) {
          throw new Error(`${machines.pending()} of ${machines.published()} records still without a PUBACK`);
        }
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    },
    ledger: () => new Map(list.map((m) => [m.id, m.acked])),
    async stop() {
      machines.stopTraffic();
      await Promise.all(list.map((m) => m.stop()));
    },
  };
  return machines;
}

// ----------------------------------------------------------------------------------------------------------------
// The checker

export interface Figures {
  machines: number;
  acked: number;
  inMongo: number;
  /** Acknowledged records not in MongoDB (loss). */
  missing: number;
  /** Documents holding a record (same source, boot, seq) already held by another. */
  dupDocs: number;
  gaps: number;
  inversions: number;
  /** Stored records that no machine of the ledger published (must be 0). */
  strangers: number;
  /** Per machine, the first few problems (empty when clean). */
  problems: string[];
}

interface StoredWorkout {
  _id: string;
  source: string;
  bootId: string;
  seq: number;
  ingestedAt: Date;
  batchId: string;
}

/** Compares the `workouts` of `sources` in MongoDB with the PUBACK ledger (one read of the collection). */
export async function checkLedger(mongo: Connection, ledger: Map<string, LedgerEntry[]>): Promise<Figures> {
  const docs = await mongo
    .db!.collection<StoredWorkout>('workouts')
    .find(
      { source: { $in: [...ledger.keys()] } },
      { projection: { _id: 1, source: 1, bootId: 1, seq: 1, ingestedAt: 1, batchId: 1 } },
    )
    .toArray();
  const bySource = new Map<string, StoredWorkout[]>();
  for (const d of docs) {
    const list = bySource.get(d.source) ?? [];
    list.push(d);
    bySource.set(d.source, list);
  }
  const figures: Figures = {
    machines: ledger.size,
    acked: 0,
    inMongo: docs.length,
    missing: 0,
    dupDocs: 0,
    gaps: 0,
    inversions: 0,
    strangers: 0,
    problems: [],
  };
  for (const [machine, acked] of ledger) {
    const stored = bySource.get(machine) ?? [];
    const ids = new Set(stored.map((d) => String(d._id)));
    const byKey = new Map<string, StoredWorkout>();
    let dup = 0;
    for (const d of stored) {
      const key = `${d.bootId}:${d.seq}`;
      if (byKey.has(key)) dup += 1;
      else byKey.set(key, d);
    }
    const ackedIds = new Set(acked.map((e) => e.msgId));
    const missing = acked.filter((e) => !ids.has(e.msgId));
    const strangers = stored.filter((d) => !ackedIds.has(String(d._id)));
    const seqs = new Set(stored.map((d) => d.seq));
    const maxAcked = acked.reduce((max, e) => Math.max(max, e.seq), 0);
    const gaps: number[] = [];
    for (let s = 1; s <= maxAcked; s++) if (!seqs.has(s)) gaps.push(s);
    // First arrival per record, in seq order: a later seq stored strictly earlier than an earlier one is an inversion.
    const ordered = [...byKey.values()].sort((a, b) => a.seq - b.seq);
    let inversions = 0;
    let firstInversion = '';
    for (let i = 1; i < ordered.length; i++) {
      const [a, b] = [ordered[i - 1]!, ordered[i]!];
      if (b.ingestedAt.getTime() < a.ingestedAt.getTime()) {
        inversions += 1;
        firstInversion ||=
          ` (seq ${b.seq} in batch ${b.batchId} at ${b.ingestedAt.toISOString()} before seq ${a.seq} in batch ` +
          `${a.batchId} at ${a.ingestedAt.toISOString()})`;
      }
    }
    figures.acked += acked.length;
    figures.missing += missing.length;
    figures.dupDocs += dup;
    figures.gaps += gaps.length;
    figures.inversions += inversions;
    // A stored record the ledger lacks is fine only while its PUBACK is still due (counted by the caller).
    figures.strangers += strangers.length;
    if (missing.length + dup + gaps.length + inversions > 0 && figures.problems.length < 10) {
      figures.problems.push(
        `${machine}: missing ${missing.length} (first seq ${missing[0]?.seq}), dup ${dup}, gaps ${gaps.length} ` +
          `(first ${gaps.slice(0, 5).join(',')}), inversions ${inversions}${firstInversion}`,
      );
    }
  }
  return figures;
}

/**
 * The checker over what a stand-in cloud received (edge-gateway/src/testing/stand-in-cloud.ts), in arrival order:
 * `inMongo` counts the distinct records received (the stand-in stores nothing), `dupDocs` stays 0 (distinct by
 * construction; `redeliveries` counts the copies), and inversions are exact: a record whose first copy arrived after
 * the first copy of a higher seq of the same machine.
 */
export function checkReceived(
  received: readonly ReceivedBatch[],
  ledger: Map<string, LedgerEntry[]>,
): Figures & { redeliveries: number } {
  const firstSeen = new Map<string, { source: string; seq: number }>();
  const order = new Map<string, number[]>();
  let copies = 0;
  for (const { batch } of received) {
    for (const r of batch.records) {
      if (!r.ok) continue;
      const { msgId, source, seq } = r.record.payload;
      copies += 1;
      if (firstSeen.has(msgId)) continue;
      firstSeen.set(msgId, { source, seq });
      const list = order.get(source) ?? [];
      list.push(seq);
      order.set(source, list);
    }
  }
  const figures: Figures & { redeliveries: number } = {
    machines: ledger.size,
    acked: 0,
    inMongo: 0,
    missing: 0,
    dupDocs: 0,
    gaps: 0,
    inversions: 0,
    strangers: 0,
    problems: [],
    redeliveries: copies - firstSeen.size,
  };
  const ledgerIds = new Set<string>();
  for (const [machine, acked] of ledger) {
    for (const e of acked) ledgerIds.add(e.msgId);
    const seqs = order.get(machine) ?? [];
    const missing = acked.filter((e) => !firstSeen.has(e.msgId)).length;
    const have = new Set(seqs);
    const maxAcked = acked.reduce((max, e) => Math.max(max, e.seq), 0);
    let gaps = 0;
    for (let s = 1; s <= maxAcked; s++) if (!have.has(s)) gaps += 1;
    let inversions = 0;
    for (let i = 1; i < seqs.length; i++) if (seqs[i]! < seqs[i - 1]!) inversions += 1;
    figures.acked += acked.length;
    figures.inMongo += seqs.length;
    figures.missing += missing;
    figures.gaps += gaps;
    figures.inversions += inversions;
    if (missing + gaps + inversions > 0 && figures.problems.length < 10) {
      figures.problems.push(`${machine}: missing ${missing}, gaps ${gaps}, inversions ${inversions}`);
    }
  }
  for (const msgId of firstSeen.keys()) if (!ledgerIds.has(msgId)) figures.strangers += 1;
  return figures;
}

/** Every machine's records acknowledged and the gateway's queue empty: then MongoDB holds all there will be. */
export async function settle(s: Scenario, machines: Machines, timeoutMs: number): Promise<FaultHealth> {
  await machines.whenAllAcked(timeoutMs);
  return s.waitHealth('the gateway queue empty', (h) => h.uplink === 'up' && h.queue.depth === 0, timeoutMs, 200);
}

/**
 * The checker's verdict: every published record acknowledged and in MongoDB exactly once, no gaps, no inversions,
 * nothing stored that no machine published. `line` (from `report`) names the scenario in each failure.
 */
export function expectExactlyOnce(line: string, f: Figures, published: number): void {
  expect(f.acked, `${line}: every published record acknowledged`).to.equal(published);
  expect(f.missing, `${line}: acknowledged records missing from MongoDB`).to.equal(0);
  expect(f.inMongo, `${line}: records in MongoDB`).to.equal(published);
  expect(f.dupDocs, `${line}: duplicate documents`).to.equal(0);
  expect(f.gaps, `${line}: gaps`).to.equal(0);
  expect(f.inversions, `${line}: first-arrival inversions`).to.equal(0);
  expect(f.strangers, `${line}: stored records nobody published`).to.equal(0);
}

/** The line every fault test prints. */
export function report(name: string, f: Figures, extra: Record<string, string | number> = {}): string {
  const more = Object.entries(extra)
    .map(([k, v]) => ` / ${k} ${v}`)
    .join('');
  const line =
    `${name}: acked ${f.acked} / in-MongoDB ${f.inMongo} / duplicate documents ${f.dupDocs} / gaps ${f.gaps} / ` +
    `inversions ${f.inversions} / missing ${f.missing}${more}`;
  console.log(`      ${line}`);
  for (const p of f.problems) console.log(`        ${p}`);
  return line;
}

export interface Observed {
  readonly messages: { atMs: number; topic: string; payload: Record<string, unknown> }[];
  close(): Promise<void>;
}

/** The branch observer on the cloud broker (plain TCP on loopback), subscribed to `filter`, keeping what arrives. */
export async function observe(cloud: CloudProcess, site: ProvisionedBranch, filter: string): Promise<Observed> {
  const client = connect(`mqtt://127.0.0.1:${cloud.tcpPort}`, {
    clientId: `${site.observer.id}.faults`,
    username: site.observer.id,
    password: site.observer.secret,
    protocolVersion: 4,
    reconnectPeriod: 500,
  });
  const messages: Observed['messages'] = [];
  client.on('error', () => undefined);
  client.on('message', (topic, payload) => {
    try {
      messages.push({ atMs: Date.now(), topic, payload: JSON.parse(payload.toString()) as Record<string, unknown> });
    } catch {
      // not JSON: not ours to check
    }
  });
  client.on('connect', () => client.subscribe(filter, { qos: 1 }));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('observer not connected within 15 s')), 15_000);
    client.once('connect', () => {
      clearTimeout(timer);
      resolve();
    });
  });
  return { messages, close: () => client.endAsync(true) };
}

/** The gateway's durable queue file under its data directory (edge-gateway/src/config.ts, QUEUE_FILE). */
export const queueFileOf = (s: Scenario) => path.join(s.dataDir, 'uplink-queue.sqlite');

/**
 * Opens a gateway's queue file while the gateway is not running (after a kill: the WAL is recovered as on a
 * restart) and reads what is on disk: `PRAGMA integrity_check`, the journal mode, and rows per lane.
 */
export function inspectQueueFile(file: string): {
  integrity: string;
  journalMode: string;
  rows: Record<string, number>;
} {
  const db = new DatabaseSync(file);
  try {
    const integrity = (db.prepare('PRAGMA integrity_check').all() as { integrity_check: string }[])
      .map((r) => r.integrity_check)
      .join('; ');
    const journalMode = (db.prepare('PRAGMA journal_mode').get() as { journal_mode: string }).journal_mode;
    const rows: Record<string, number> = {};
    for (const r of db.prepare('SELECT lane, count(*) AS n FROM uplink GROUP BY lane').all() as {
      lane: string;
      n: number;
    }[]) {
      rows[r.lane] = r.n;
    }
    return { integrity, journalMode, rows };
  } finally {
    db.close();
  }
}

/** Workouts of `branch` stored in MongoDB (documents, duplicates included). */
export function storedWorkouts(mongo: Connection, branch: string): Promise<number> {
  return mongo.db!.collection('workouts').countDocuments({ branch });
}

/** Resident set size of a process, MiB (from /proc). */
export async function rssMiB(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const kb = /^VmRSS:\s+(\d+) kB/m.exec(status);
  return kb ? Number(kb[1]) / 1024 : Number.NaN;
}

/** Milliseconds since `t0`, for the figures a test prints. */
export const since = (t0: number) => Date.now() - t0;

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
