/**
 * Test fixtures for the gateway's suites: a machines file with fresh secrets, a configuration on free ports, and
 * valid machine payloads built from the protocol's examples. Real values only: the secrets are issued with
 * newSecret and stored hashed exactly as in production.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { asBranchId, asGatewayId, asMachineId, newMsgId, validatePayload } from '../../../protocol/index.ts';
import type { BranchId, GatewayId, MachineId, PayloadName, PayloadOf, UplinkRecord } from '../../../protocol/index.ts';
import { examples } from '../../../protocol/examples.ts';
import { hashSecret, newSecret } from '../../../tools/mqtt/secrets.ts';
import type { GatewayConfig } from '../config.ts';

export interface TestMachine {
  readonly id: MachineId;
  readonly secret: string;
}

export interface TestSite {
  readonly dir: string;
  readonly branch: BranchId;
  readonly gatewayId: GatewayId;
  readonly gatewaySecret: string;
  readonly machines: readonly TestMachine[];
  readonly machinesFile: string;
  remove(): Promise<void>;
}

/** A temporary directory with a machines file for `count` machines (m-01, m-02, …) of branch `demo`. */
export async function createTestSite(count = 3, gateway = 'gw-test-1'): Promise<TestSite> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'nxg-gw-'));
  const machines = Array.from({ length: count }, (_, i) => ({
    id: asMachineId(`m-${String(i + 1).padStart(2, '0')}`),
    secret: newSecret(),
  }));
  const branch = asBranchId('demo');
  const gatewayId = asGatewayId(gateway);
  const machinesFile = path.join(dir, 'machines.json');
  await writeFile(
    machinesFile,
    JSON.stringify({
      gatewayId,
      branch,
      machines: machines.map((m) => ({ id: m.id, secretHash: hashSecret(m.secret) })),
    }),
  );
  return {
    dir,
    branch,
    gatewayId,
    gatewaySecret: newSecret(),
    machines,
    machinesFile,
    remove: () => rm(dir, { recursive: true, force: true }),
  };
}

let dataDirs = 0;

/**
 * A configuration for in-process tests: loopback, port 0 everywhere, short timers. Each call gets a data directory
 * of its own under the site (so a fresh, empty durable queue); a test restarting "the same" gateway reuses the
 * configuration object it started with.
 */
export function testConfig(site: TestSite, uplinkUrl: string, overrides: Partial<GatewayConfig['uplink']> = {}) {
  const dataDir = path.join(site.dir, `data-${++dataDirs}`);
  return {
    log: { level: 'silent', pretty: false },
    machinesFile: site.machinesFile,
    secret: { value: site.gatewaySecret },
    broker: { host: '127.0.0.1', port: 0, maxPacketBytes: 64 * 1024, connectTimeoutMs: 2_000 },
    health: { host: '127.0.0.1', port: 0 },
    uplink: {
      url: uplinkUrl,
      caFile: undefined,
      keepaliveS: 5,
      connectTimeoutMs: 2_000,
      ackTimeoutMs: 1_000,
      windowBatches: 4,
      reconnectMinMs: 50,
      reconnectMaxMs: 200,
      stateIntervalMs: 0,
      drainMaxPerS: 0,
      live: true,
      ...overrides,
    },
    dataDir,
    queue: {
      file: path.join(dataDir, 'uplink-queue.sqlite'),
      capRecords: 100_000,
      capBytes: 64 * 1024 * 1024,
      commitDelayMs: 2,
      commitMaxRows: 100,
      minOfflineHours: 0,
    },
    rejectedKeep: 100,
    telemetryMaxHz: 50,
  } satisfies GatewayConfig;
}

const BASE_TS = Date.now();

function valid<K extends PayloadName>(name: K, value: unknown): PayloadOf<K> {
  const result = validatePayload(name, value);
  if (!result.ok) throw new Error(`fixture ${name} is invalid at ${result.path ?? '(root)'}: ${result.issue ?? ''}`);
  return result.value;
}

/** A valid telemetry sample of `machine` (seq `seq`), as a machine publishes it. */
export function telemetryOf(machine: MachineId, seq: number, bootId = 'boot-a'): PayloadOf<'Telemetry'> {
  return valid('Telemetry', {
    ...examples.Telemetry[0],
    msgId: newMsgId(),
    source: machine,
    bootId,
    seq,
    ts: BASE_TS + seq,
  });
}

/** A valid finished workout set of `machine`. */
export function workoutOf(machine: MachineId, seq: number, bootId = 'boot-a'): PayloadOf<'Workout'> {
  return valid('Workout', {
    ...examples.Workout[0],
    msgId: newMsgId(),
    source: machine,
    bootId,
    seq,
    ts: BASE_TS + seq,
  });
}

/** A valid status of `machine`. */
export function statusOf(
  machine: MachineId,
  seq: number,
  status: 'available' | 'in_use' = 'available',
): PayloadOf<'MachineStatus'> {
  return valid('MachineStatus', {
    msgId: newMsgId(),
    source: machine,
    bootId: 'boot-a',
    seq,
    ts: BASE_TS + seq,
    v: 0,
    status,
    conn: 0,
  });
}

/** Records of the three kinds above, as the intake queues them. */
export const recordOf = {
  telemetry: (machine: MachineId, seq: number, receivedAt = BASE_TS): UplinkRecord => ({
    kind: 'telemetry',
    receivedAt,
    payload: telemetryOf(machine, seq),
  }),
  workout: (machine: MachineId, seq: number, receivedAt = BASE_TS): UplinkRecord => ({
    kind: 'workout',
    receivedAt,
    payload: workoutOf(machine, seq),
  }),
  status: (machine: MachineId, seq: number, receivedAt = BASE_TS): UplinkRecord => ({
    kind: 'status',
    receivedAt,
    payload: statusOf(machine, seq),
  }),
};
