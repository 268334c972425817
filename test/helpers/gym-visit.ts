/**
 * Process helpers for the gym-visit end-to-end test (issue 7): the gateway's `enrol` command and an enrolled gateway
 * as processes (node edge-gateway/src/main.ts, what `npm run gateway` runs), a door hook that writes each door
 * decision to a file, a strength machine as a raw MQTT.js client on the gateway's broker, and small REST helpers.
 */
import { chmod, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { connectAsync, type MqttClient } from 'mqtt';
import { asBranchId, asMachineId, newBootId, newMsgId, topics } from '../../protocol/index.ts';
import { spawnNode } from '../../tools/services/index.ts';
import { scrapeMetric, type CloudProcess, type GatewayHealth } from './spine.ts';
import type { ServiceProcess } from '../../tools/services/index.ts';

export interface ApiAnswer<T = Record<string, unknown>> {
  status: number;
  body: T;
}

/** One REST call with an optional bearer token; the body parsed when there is one. */
export async function api<T = Record<string, unknown>>(
  baseUrl: string,
  method: string,
  urlPath: string,
  token?: string,
  body?: unknown,
): Promise<ApiAnswer<T>> {
  const headers: Record<string, string> = {};
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const res = await fetch(`${baseUrl}${urlPath}`, {
    method,
    headers,
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await res.text();
  return { status: res.status, body: (text ? JSON.parse(text) : undefined) as T };
}

/** Like api(), but throws with the answer unless the status is `expected`. */
export async function apiOk<T = Record<string, unknown>>(
  expected: number,
  ...args: Parameters<typeof api>
): Promise<T> {
  const res = await api<T>(...args);
  if (res.status !== expected) {
    throw new Error(`${args[1]} ${args[2]}: expected ${expected}, got ${res.status}: ${JSON.stringify(res.body)}`);
  }
  return res.body;
}

export interface EnrolResult {
  code: number | null;
  output: string;
}

/** `npm run gateway -- enrol --cloud … --token … --data-dir …` as a process, run to its end. */
export async function runGatewayEnrol(cloudUrl: string, token: string, dataDir: string): Promise<EnrolResult> {
  const proc = await spawnNode(
    'gateway-enrol',
    ['edge-gateway/src/main.ts', 'enrol', '--cloud', cloudUrl, '--token', token, '--data-dir', dataDir],
    { LOG_LEVEL: 'info' },
  );
  const { code } = await proc.exited;
  return { code, output: proc.recentOutput() };
}

export interface EnrolledGatewayProcess {
  proc: ServiceProcess;
  mqttUrl: string;
  healthUrl: string;
  health(): Promise<GatewayHealth & { access?: GatewayAccessHealth }>;
  metric(name: string, labels?: Record<string, string>): Promise<number>;
}

export interface GatewayAccessHealth {
  configRevision?: number;
  allowList: { revision?: number; members: number; stale: boolean };
  readers: { reader: string; connected: boolean }[];
}

/**
 * An enrolled gateway (no machines file, no secret: GATEWAY_DATA_DIR/enrolment.json), its uplink over TLS to
 * `uplinkPort` (the cloud's TLS port, or a TCP proxy in front of it).
 */
export async function startEnrolledGatewayProcess(
  dataDir: string,
  cloud: CloudProcess,
  uplinkPort: number,
  env: Record<string, string> = {},
): Promise<EnrolledGatewayProcess> {
  const proc = await spawnNode('gateway', ['edge-gateway/src/main.ts'], {
    LOG_LEVEL: 'info',
    GATEWAY_DATA_DIR: dataDir,
    GATEWAY_MQTT_PORT: '0',
    GATEWAY_HEALTH_PORT: '0',
    GATEWAY_UPLINK_URL: `mqtts://127.0.0.1:${uplinkPort}`,
    GATEWAY_UPLINK_CA_FILE: cloud.caFile,
    ...env,
  });
  const ready = await proc.waitForLine(/"msg":"gateway ready"/, 60_000);
  const { mqtt, health: healthUrl } = JSON.parse(ready.input) as { mqtt: string; health: string };
  const metricsUrl = healthUrl.replace(/\/health$/, '/metrics');
  return {
    proc,
    mqttUrl: mqtt,
    healthUrl,
    async health() {
      return (await (await fetch(healthUrl)).json()) as GatewayHealth & { access?: GatewayAccessHealth };
    },
    metric: (name, labels) => scrapeMetric(metricsUrl, name, labels),
  };
}

export interface DoorDecision {
  atMs: number;
  reader: string;
  action: string;
  decision: string;
  reason: string;
}

/**
 * A GATEWAY_DOOR_COMMAND hook (the relay or display a branch would attach): a shell script appending
 * `<epoch ms> <reader> <action> <allow|deny> <reason>` to `logFile` for each door decision.
 */
export async function writeDoorHook(dir: string): Promise<{ command: string; decisions(): Promise<DoorDecision[]> }> {
  const command = path.join(dir, 'door-hook.sh');
  const logFile = path.join(dir, 'door.log');
  await writeFile(logFile, '');
  await writeFile(command, `#!/bin/sh\necho "$(date +%s%3N) $1 $2 $3 $4" >> '${logFile}'\n`);
  await chmod(command, 0o755);
  return {
    command,
    async decisions() {
      const text = await readFile(logFile, 'utf8');
      return text
        .split('\n')
        .filter((l) => l.trim() !== '')
        .map((l) => {
          const [atMs, reader, action, decision, reason] = l.split(' ');
          return {
            atMs: Number(atMs),
            reader: reader ?? '',
            action: action ?? '',
            decision: decision ?? '',
            reason: reason ?? '',
          };
        });
    },
  };
}

/**
 * A selectorised strength machine as a raw MQTT.js client on the gateway's broker (client id = username = its id,
 * its secret from the registration): meta, status, telemetry and finished sets, QoS 1; commands to it are kept.
 */
export class StrengthMachine {
  readonly id: string;
  readonly client: MqttClient;
  readonly commands: { name: string; body: Record<string, unknown> }[] = [];
  private readonly branch: string;
  private readonly bootId = newBootId();
  private seq = 0;

  private constructor(client: MqttClient, id: string, branch: string) {
    this.client = client;
    this.id = id;
    this.branch = branch;
    client.on('message', (topic, payload) => {
      const name = topic.split('/').at(-1) ?? '';
      this.commands.push({ name, body: JSON.parse(payload.toString()) as Record<string, unknown> });
    });
  }

  static async connect(url: string, branch: string, id: string, secret: string): Promise<StrengthMachine> {
    const client = await connectAsync(url, {
      clientId: id,
      username: id,
      password: secret,
      reconnectPeriod: 0,
      protocolVersion: 4,
    });
    const machine = new StrengthMachine(client, id, branch);
    const linkTopic = topics.machineCommand(asBranchId(branch), asMachineId(id), 'link');
    await client.subscribeAsync(`${linkTopic.slice(0, -'link'.length)}+`, { qos: 1 });
    return machine;
  }

  private envelope(ts = Date.now()) {
    return { msgId: newMsgId(), source: this.id, bootId: this.bootId, seq: ++this.seq, ts, v: 0 };
  }

  private async publish(topic: string, payload: Record<string, unknown>, retain = false): Promise<void> {
    await this.client.publishAsync(topic, JSON.stringify(payload), { qos: 1, retain });
  }

  async announce(): Promise<void> {
    const b = asBranchId(this.branch);
    const m = asMachineId(this.id);
    await this.publish(
      topics.machineMeta(b, m),
      {
        ...this.envelope(),
        type: 'selectorised',
        manufacturer: 'NXG Test',
        model: 'Press 1',
        firmware: '1.0.0',
        displayName: this.id,
        fields: ['reps', 'loadKg'],
      },
      true,
    );
    const now = Date.now();
    await this.publish(
      topics.machineStatus(b, m),
      { ...this.envelope(now), status: 'available', since: now, conn: 0 },
      true,
    );
  }

  /** A telemetry sample; resolves on its PUBACK with the sample's ts. */
  async sample(reps: number, loadKg: number): Promise<number> {
    const env = this.envelope();
    await this.publish(topics.machineTelemetry(asBranchId(this.branch), asMachineId(this.id)), {
      ...env,
      type: 'selectorised',
      reps,
      loadKg,
    });
    return env.ts;
  }

  /** A finished set; resolves on its PUBACK with its msgId. */
  async set(reps: number, loadKg: number, durationMs = 30_000): Promise<string> {
    const env = this.envelope();
    await this.publish(topics.machineWorkout(asBranchId(this.branch), asMachineId(this.id)), {
      ...env,
      segment: 'set',
      machineType: 'selectorised',
      exercise: 'chest-press',
      startedAt: env.ts - durationMs,
      endedAt: env.ts,
      reps,
      loadKg,
    });
    return env.msgId;
  }

  close(): Promise<void> {
    return this.client.endAsync(true);
  }
}
