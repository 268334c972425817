/**
 * A fleet of simulated machines, each with its own MQTT connection (client id = username = machine id, as a real
 * machine connects to its branch gateway), publishing on the protocol's machine topics:
 * - on every connect: retained `meta` and retained `status` (QoS 1), with a last will `{status: offline, lastWill:
 *   true, conn}` registered at CONNECT for that connection number;
 * - at `rate` Hz: a telemetry sample (QoS 0 by default, as TOPIC_POLICY says), and as they happen: workout segments,
 *   machine-state events and status changes (QoS 1).
 *
 * Reconnects use exponential backoff with jitter (the client's own fixed-period reconnect is off). While a machine is
 * disconnected its samples are dropped, as a console's would be; QoS 1 records wait in the client's queue, at most
 * `maxPending` per machine (MQTT.js's in-memory store loses messages past 65,535 packet ids: RELIABILITY.md,
 * finding 2), and past that they are dropped and counted.
 *
 * The PUBACK ledger keeps, per machine, the msgIds of QoS 1 records sent and acknowledged: what the gateway promised
 * to hold. Tests and the ingest benchmark compare it with MongoDB.
 */
import { connect, type IClientOptions, type MqttClient } from 'mqtt';
import type { Logger } from 'pino';
import { pino } from 'pino';
import hdr from 'hdr-histogram-js';
import { createEnvelopeStamper, type EnvelopeStamper } from '../../protocol/envelope.ts';
import { asBranchId, asMachineId, type BranchId } from '../../protocol/ids.ts';
import type { MachineType } from '../../protocol/messages/machine-type.ts';
import { topics } from '../../protocol/topics.ts';
import { createSimMachine, toPayload, type OutgoingKind, type SimMachine } from './machine.ts';
import type { Body } from './machines/model.ts';

export interface FleetMachine {
  readonly id: string;
  /** Absent: connect without a password (a bare broker). */
  readonly secret?: string | undefined;
  readonly type: MachineType;
}

export interface FleetOptions {
  /** The branch gateway's broker for machines, e.g. mqtt://127.0.0.1:1884. */
  readonly url: string;
  readonly branch: string;
  readonly machines: readonly FleetMachine[];
  /** Telemetry samples per second per machine (default 1). */
  readonly rate?: number;
  /** Run seed: the same seed gives every machine the same behaviour. */
  readonly seed: number;
  /** Simulated seconds per real second (default 1); > 1 makes sessions and sets finish sooner, for demos. */
  readonly timeScale?: number;
  /** QoS of telemetry samples (default 0, the protocol's; the ingest benchmark uses 1 to account for every one). */
  readonly telemetryQos?: 0 | 1;
  /** QoS 1 records waiting for a PUBACK, per machine, before new ones are dropped (default 1,000). */
  readonly maxPending?: number;
  /** New connections per second while the fleet starts (default 500), so a large fleet does not storm the broker. */
  readonly connectRate?: number;
  /** Reconnect backoff: first delay and ceiling, ms (defaults 500 and 30,000), each with ±50 % jitter. */
  readonly backoffMs?: { readonly initial: number; readonly max: number };
  /** Event time; default Date.now. */
  readonly now?: () => number;
  readonly log?: Logger;
  /** Called for every message handed to the client (benchmarks track each record to MongoDB with it). */
  readonly onPublish?: (message: PublishedMessage) => void;
}

export interface PublishedMessage {
  readonly machine: string;
  readonly kind: OutgoingKind | 'meta';
  readonly qos: 0 | 1;
  readonly msgId: string;
  readonly bootId: string;
  readonly seq: number;
  readonly ts: number;
}

export interface MachineLedger {
  /** msgIds of QoS 1 records published, in order. */
  readonly sent: string[];
  /** msgIds the broker acknowledged (PUBACK). */
  readonly acked: Set<string>;
}

export interface FleetStats {
  readonly machines: number;
  readonly connected: number;
  readonly connects: number;
  readonly reconnects: number;
  readonly published: Readonly<Record<OutgoingKind | 'meta', number>>;
  readonly publishedBytes: number;
  readonly acked: number;
  readonly pendingAcks: number;
  /** QoS 1 records refused because `maxPending` was reached, plus samples dropped while disconnected. */
  readonly dropped: number;
  readonly errors: number;
  /** Publish → PUBACK, µs. */
  readonly ackLatencyUs: { readonly p50: number; readonly p99: number; readonly max: number; readonly count: number };
}

export interface Fleet {
  /** Resolves once every machine has connected at least once; rejects after `timeoutMs`. */
  whenConnected(timeoutMs?: number): Promise<void>;
  stats(): FleetStats;
  /** PUBACK ledger per machine id. */
  ledger(): ReadonlyMap<string, MachineLedger>;
  /** Status `offline` (clean-shutdown) from every connected machine, then DISCONNECT. Idempotent. */
  stop(): Promise<void>;
}

interface Runner {
  readonly sim: SimMachine;
  readonly client: MqttClient;
  readonly stamper: EnvelopeStamper;
  readonly ledger: MachineLedger;
  conn: number;
  everConnected: boolean;
  attempt: number;
  pending: number;
  tickTimer: NodeJS.Timeout | undefined;
  reconnectTimer: NodeJS.Timeout | undefined;
}

const PAYLOAD_QOS: Record<Exclude<OutgoingKind, 'telemetry'> | 'meta', 1> = {
  meta: 1,
  status: 1,
  workout: 1,
  event: 1,
};

export function startFleet(options: FleetOptions): Fleet {
  const rate = options.rate ?? 1;
  if (!(rate > 0 && rate <= 1000)) throw new RangeError(`rate must be in (0, 1000] samples/s, got ${rate}`);
  const timeScale = options.timeScale ?? 1;
  const now = options.now ?? Date.now;
  const log = options.log ?? pino({ level: 'silent' });
  const branch: BranchId = asBranchId(options.branch);
  const tickMs = 1000 / rate;
  const tickS = (timeScale * tickMs) / 1000;
  const intervalMs = Math.round(tickMs);
  // The protocol bounds telemetryIntervalMs to 100 ms … 60 s; faster benchmark rates leave it out of the meta.
  const telemetryIntervalMs = intervalMs >= 100 && intervalMs <= 60_000 ? intervalMs : undefined;
  const telemetryQos = options.telemetryQos ?? 0;
  const maxPending = options.maxPending ?? 1_000;
  const backoff = options.backoffMs ?? { initial: 500, max: 30_000 };
  const connectGapMs = 1000 / (options.connectRate ?? 500);

  const published: Record<OutgoingKind | 'meta', number> = { meta: 0, status: 0, telemetry: 0, workout: 0, event: 0 };
  let publishedBytes = 0;
  let connects = 0;
  let reconnects = 0;
  let acked = 0;
  let dropped = 0;
  let errors = 0;
  let stopping: Promise<void> | undefined;
  const ackLatency = hdr.build({
    lowestDiscernibleValue: 1,
    highestTrackableValue: 60_000_000,
    numberOfSignificantValueDigits: 3,
  });
  const connectWaiters = new Set<() => void>();
  const runners: Runner[] = [];
  const ordinals = new Map<MachineType, number>();
  const startTimers: NodeJS.Timeout[] = [];

  const publish = (runner: Runner, kind: OutgoingKind | 'meta', body: Body) => {
    const machine = asMachineId(runner.sim.id);
    const topic = topics.machineUplink(branch, machine, kind);
    const qos = kind === 'telemetry' ? telemetryQos : PAYLOAD_QOS[kind];
    if (qos === 0 && !runner.client.connected) {
      dropped += 1;
      return;
    }
    if (qos === 1 && runner.pending >= maxPending) {
      dropped += 1;
      return;
    }
    const payload = toPayload(runner.stamper, kind, body, runner.conn);
    const text = JSON.stringify(payload);
    const msgId = payload.msgId as string;
    options.onPublish?.({
      machine: runner.sim.id,
      kind,
      qos,
      msgId,
      bootId: payload.bootId as string,
      seq: payload.seq as number,
      ts: payload.ts as number,
    });
    published[kind] += 1;
    publishedBytes += text.length;
    if (qos === 0) {
      runner.client.publish(topic, text, { qos: 0 });
      return;
    }
    runner.ledger.sent.push(msgId);
    runner.pending += 1;
    const sentAt = process.hrtime.bigint();
    runner.client.publish(topic, text, { qos: 1, retain: kind === 'status' || kind === 'meta' }, (err) => {
      runner.pending -= 1;
      if (err) {
        errors += 1;
        log.debug({ machine: runner.sim.id, err: err.message }, 'publish failed');
        return;
      }
      runner.ledger.acked.add(msgId);
      acked += 1;
      ackLatency.recordValue(Math.max(1, Number((process.hrtime.bigint() - sentAt) / 1000n)));
    });
  };

  const tick = (runner: Runner) => {
    for (const out of runner.sim.tick(now())) publish(runner, out.kind, out.body);
  };

  // The will belongs to one connection: compose it just before each CONNECT (status.ts, `conn`).
  const armWill = (runner: Runner) => {
    runner.conn += 1;
    const will = toPayload(runner.stamper, 'status', { status: 'offline', lastWill: true }, runner.conn);
    runner.client.options.will = {
      topic: topics.machineStatus(branch, asMachineId(runner.sim.id)),
      payload: Buffer.from(JSON.stringify(will)),
      qos: 1,
      retain: true,
    };
  };

  const scheduleReconnect = (runner: Runner) => {
    if (stopping || runner.reconnectTimer) return;
    const ceiling = Math.min(backoff.max, backoff.initial * 2 ** runner.attempt);
    const delay = ceiling * (0.5 + Math.random() * 0.5);
    runner.attempt += 1;
    runner.reconnectTimer = setTimeout(() => {
      runner.reconnectTimer = undefined;
      if (stopping) return;
      reconnects += 1;
      armWill(runner);
      runner.client.reconnect();
    }, delay);
  };

  options.machines.forEach((machine, index) => {
    const ordinal = (ordinals.get(machine.type) ?? 0) + 1;
    ordinals.set(machine.type, ordinal);
    const sim = createSimMachine({
      id: machine.id,
      type: machine.type,
      seed: options.seed,
      ordinal,
      tickS,
      telemetryIntervalMs,
      nowMs: now(),
    });
    const clientOptions: IClientOptions = {
      clientId: machine.id,
      username: machine.id,
      ...(machine.secret === undefined ? {} : { password: machine.secret }),
      protocolVersion: 4,
      clean: true,
      keepalive: 30,
      connectTimeout: 10_000,
      reconnectPeriod: 0,
      queueQoSZero: false,
      manualConnect: true,
    };
    const client = connect(options.url, clientOptions);
    const runner: Runner = {
      sim,
      client,
      stamper: createEnvelopeStamper({ source: asMachineId(machine.id), now }),
      ledger: { sent: [], acked: new Set() },
      conn: -1,
      everConnected: false,
      attempt: 0,
      pending: 0,
      tickTimer: undefined,
      reconnectTimer: undefined,
    };
    runners.push(runner);
    client.on('connect', () => {
      connects += 1;
      runner.attempt = 0;
      publish(runner, 'meta', sim.meta);
      publish(runner, 'status', { status: sim.status, since: sim.statusSince });
      if (!runner.everConnected) {
        runner.everConnected = true;
        for (const waiter of connectWaiters) waiter();
        // Spread the machines' ticks over the interval so the broker sees a steady stream, not bursts.
        const offset = (index / options.machines.length) * tickMs;
        runner.tickTimer = setTimeout(() => {
          tick(runner);
          runner.tickTimer = setInterval(() => tick(runner), intervalMs);
        }, offset);
      }
    });
    client.on('close', () => scheduleReconnect(runner));
    // A refused CONNECT (wrong secret, unknown machine) is worth one warning per machine until it gets in; other
    // errors come with a close and a reconnect.
    let warned = false;
    client.on('connect', () => (warned = false));
    client.on('error', (err: Error & { code?: unknown }) => {
      const refused = typeof err.code === 'number' && err.code > 0;
      if (refused && !warned) {
        warned = true;
        log.warn({ machine: machine.id, err: err.message }, 'connection refused by the broker; retrying with backoff');
      } else {
        log.debug({ machine: machine.id, err: err.message }, 'mqtt error');
      }
    });
    startTimers.push(
      setTimeout(() => {
        if (stopping) return;
        armWill(runner);
        client.connect();
      }, index * connectGapMs),
    );
  });

  const connectedCount = () => runners.filter((runner) => runner.client.connected).length;
  const allConnectedOnce = () => runners.every((runner) => runner.everConnected);

  const stopRunner = async (runner: Runner) => {
    clearTimeout(runner.reconnectTimer);
    clearTimeout(runner.tickTimer);
    clearInterval(runner.tickTimer);
    const { client } = runner;
    if (client.connected) {
      const body = { status: 'offline', since: now(), reason: 'clean-shutdown' };
      const payload = JSON.stringify(toPayload(runner.stamper, 'status', body, runner.conn));
      const topic = topics.machineStatus(branch, asMachineId(runner.sim.id));
      published.status += 1;
      await Promise.race([
        client.publishAsync(topic, payload, { qos: 1, retain: true }).catch(() => undefined),
        new Promise((resolve) => setTimeout(resolve, 2_000)),
      ]);
    }
    await Promise.race([client.endAsync(!client.connected), new Promise((resolve) => setTimeout(resolve, 2_000))]);
    if (!client.disconnected) client.end(true);
  };

  return {
    whenConnected(timeoutMs = 30_000) {
      if (allConnectedOnce()) return Promise.resolve();
      return new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => {
          connectWaiters.delete(check);
          const missing = runners.filter((runner) => !runner.everConnected).map((runner) => runner.sim.id);
          reject(
            new Error(
              `${missing.length} machines not connected after ${timeoutMs} ms: ${missing.slice(0, 5).join(', ')}`,
            ),
          );
        }, timeoutMs);
        const check = () => {
          if (!allConnectedOnce()) return;
          clearTimeout(timer);
          connectWaiters.delete(check);
          resolve();
        };
        connectWaiters.add(check);
      });
    },
    stats() {
      const pendingAcks = runners.reduce((sum, runner) => sum + runner.pending, 0);
      return {
        machines: runners.length,
        connected: connectedCount(),
        connects,
        reconnects,
        published: { ...published },
        publishedBytes,
        acked,
        pendingAcks,
        dropped,
        errors,
        ackLatencyUs: {
          p50: ackLatency.totalCount ? ackLatency.getValueAtPercentile(50) : 0,
          p99: ackLatency.totalCount ? ackLatency.getValueAtPercentile(99) : 0,
          max: ackLatency.totalCount ? ackLatency.maxValue : 0,
          count: ackLatency.totalCount,
        },
      };
    },
    ledger() {
      return new Map(runners.map((runner) => [runner.sim.id, runner.ledger]));
    },
    stop() {
      stopping ??= (async () => {
        for (const timer of startTimers) clearTimeout(timer);
        await Promise.all(runners.map(stopRunner));
      })();
      return stopping;
    },
  };
}
