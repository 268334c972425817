/**
 * Test support for ingest's suites: an in-process Aedes on a free port with ingest attached, and a gateway-like
 * mqtt.js client that publishes batches and waits for their acks.
 */
import { once } from 'node:events';
import net from 'node:net';
import { Aedes } from 'aedes';
import type { Redis } from 'ioredis';
import { connectAsync, type MqttClient } from 'mqtt';
import type { Connection } from 'mongoose';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import type { Clock } from '../../../tools/runtime/clock.ts';
import { newBatchId, newBootId, newMsgId, topics } from '../../../protocol/index.ts';
import type {
  BranchId,
  GatewayId,
  Lane,
  MachineId,
  MachineStatusValue,
  UplinkAck,
  UplinkRecord,
} from '../../../protocol/index.ts';
import type { IngestConfig } from './config.ts';
import { startIngest, type Ingest, type IngestOptions } from './ingest.ts';

export const T0 = Date.UTC(2026, 10, 24, 19, 40, 0);

export interface IngestFixture {
  aedes: Aedes;
  url: string;
  ingest: Ingest;
  registry: Registry;
  stop(): Promise<void>;
}

export async function startIngestFixture({
  mongo,
  redis,
  clock,
  config = {},
  telemetryRetentionDays,
  erasedMembers,
  storedSweep,
}: {
  mongo: Connection;
  redis: Redis;
  clock: Clock;
  config?: Partial<IngestConfig>;
  telemetryRetentionDays?: number;
  erasedMembers?: IngestOptions['erasedMembers'];
  storedSweep?: IngestOptions['storedSweep'];
}): Promise<IngestFixture> {
  const aedes = await Aedes.createBroker();
  const server = net.createServer((socket) => aedes.handle(socket));
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as net.AddressInfo;
  const registry = new Registry();
  const ingest = await startIngest({
    aedes,
    mongo,
    redis,
    log: pino({ level: 'silent' }),
    clock,
    metrics: { registry },
    config: { concurrency: 4, maxQueuedBatches: 64, writeTimeoutMs: 5_000, ...config },
    ...(telemetryRetentionDays === undefined ? {} : { telemetryRetentionDays }),
    ...(erasedMembers === undefined ? {} : { erasedMembers }),
    ...(storedSweep === undefined ? {} : { storedSweep }),
  });
  return {
    aedes,
    url: `mqtt://127.0.0.1:${port}`,
    ingest,
    registry,
    async stop() {
      await ingest.stop();
      await new Promise<void>((resolve) => aedes.close(() => resolve()));
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** A gateway-like client: publishes batches on its uplink topics and collects the acks it receives. */
export class TestGateway {
  readonly client: MqttClient;
  readonly branch: BranchId;
  readonly gateway: GatewayId;
  readonly acks = new Map<string, UplinkAck>();
  private readonly waiting = new Map<string, (ack: UplinkAck) => void>();

  private constructor(client: MqttClient, branch: BranchId, gateway: GatewayId) {
    this.client = client;
    this.branch = branch;
    this.gateway = gateway;
    client.on('message', (topic, payload) => {
      if (topic !== topics.gatewayAck(branch, gateway)) return;
      const ack = JSON.parse(payload.toString()) as UplinkAck;
      this.acks.set(ack.batchId, ack);
      this.waiting.get(ack.batchId)?.(ack);
    });
  }

  static async connect(
    url: string,
    branch: BranchId,
    gateway: GatewayId,
    credentials: { username: string; password: string } | Record<string, never> = {},
  ): Promise<TestGateway> {
    const client = await connectAsync(url, { clientId: gateway, reconnectPeriod: 0, ...credentials });
    await client.subscribeAsync(topics.gatewayAck(branch, gateway), { qos: 1 });
    return new TestGateway(client, branch, gateway);
  }

  /** Publishes a raw payload on an uplink lane (QoS1: resolves on PUBACK, which means transport only). */
  async publishRaw(lane: Lane, payload: string | Buffer): Promise<void> {
    await this.client.publishAsync(topics.gatewayUplink(this.branch, this.gateway, lane), payload, { qos: 1 });
  }

  /** Publishes a batch and resolves with its ack, or rejects after `timeoutMs`. */
  async send(
    lane: Lane,
    batch: { batchId: string; records: unknown[]; live?: true },
    timeoutMs = 10_000,
  ): Promise<UplinkAck> {
    const acked = this.ackOf(batch.batchId, timeoutMs);
    await this.publishRaw(lane, JSON.stringify({ sentAt: T0, ...batch }));
    return acked;
  }

  /** Resolves with the ack of `batchId` (already received or still to come), or rejects after `timeoutMs`. */
  ackOf(batchId: string, timeoutMs = 10_000): Promise<UplinkAck> {
    const known = this.acks.get(batchId);
    if (known) return Promise.resolve(known);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting.delete(batchId);
        reject(new Error(`no ack for ${batchId} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiting.set(batchId, (ack) => {
        clearTimeout(timer);
        this.waiting.delete(batchId);
        resolve(ack);
      });
    });
  }

  close(): Promise<void> {
    return this.client.endAsync();
  }
}

/** Builds records of one machine with a running seq. */
export function machineRecords(machine: MachineId, { bootId = newBootId(), ts = T0 } = {}) {
  let seq = 0;
  const envelope = (at?: number) => {
    const s = seq++;
    return { msgId: newMsgId(), source: machine, bootId, seq: s, ts: at ?? ts + s * 1000, v: 0 };
  };
  return {
    bootId,
    telemetry: (powerW = 200, at?: number): UplinkRecord => ({
      kind: 'telemetry',
      payload: { ...envelope(at), type: 'rower', powerW, strokeRateSpm: 24 },
    }),
    status: (status: MachineStatusValue, conn = 0, at?: number): UplinkRecord => {
      const e = envelope(at);
      return { kind: 'status', payload: { ...e, status, since: e.ts, conn } };
    },
    meta: (displayName: string): UplinkRecord => ({
      kind: 'meta',
      payload: {
        ...envelope(),
        type: 'rower',
        manufacturer: 'Concept2',
        model: 'RowErg',
        firmware: '1.0.0',
        displayName,
        fields: ['powerW', 'strokeRateSpm'],
      },
    }),
    workout: (): UplinkRecord => ({
      kind: 'workout',
      payload: {
        ...envelope(),
        segment: 'interval',
        machineType: 'rower',
        intent: 'work',
        startedAt: ts - 60_000,
        endedAt: ts - 1_000,
        distanceM: 250,
      },
    }),
  };
}

export const batchId = (): string => newBatchId();
