/**
 * A stand-in for the cloud in the gateway's tests: a bare Aedes on a free loopback port that checks the gateway's
 * credentials (SHA-256 of its secret, as the cloud broker stores it), and an acker — an mqtt.js client that reads
 * uplink batches with the protocol's parseUplinkBatch and answers each with an UplinkAck, as the cloud ingest does
 * after its MongoDB write. Its behaviour per batch is switchable (ack, ignore, or a custom answer), so tests can
 * withhold acks, answer partially, or stop and restart it.
 */
import { once } from 'node:events';
import net from 'node:net';
import tls from 'node:tls';
import { Aedes, type AuthenticateError } from 'aedes';
import mqtt, { type MqttClient } from 'mqtt';
import { filters, parseTopic, parseUplinkBatch, rejectionOf, topics } from '../../../protocol/index.ts';
import type { BatchParseResult, Lane, UplinkAck } from '../../../protocol/index.ts';
import { hashSecret, verifySecret } from '../../../tools/mqtt/secrets.ts';

export type ParsedBatch = Extract<BatchParseResult, { ok: true }>;

export interface ReceivedBatch {
  readonly lane: Lane;
  readonly gateway: string;
  readonly branch: string;
  readonly batch: ParsedBatch;
  readonly bytes: number;
}

/** What the acker does with a batch: answer it (with the given ack) or stay silent. */
export type AckPolicy = (received: ReceivedBatch) => UplinkAck | undefined;

/** Acks every readable record; rejects the unreadable ones by index. */
export const ackAll: AckPolicy = ({ batch }) => ({
  batchId: batch.batchId,
  acked: batch.records.flatMap((r) => (r.ok ? [r.record.payload.msgId] : [])),
  rejected: batch.records.flatMap((r) => (r.ok ? [] : [rejectionOf(r)])),
});

export const ignoreAll: AckPolicy = () => undefined;

export interface StandInCloud {
  readonly url: string;
  readonly port: number;
  readonly broker: Aedes;
  /** Every batch received, in arrival order (answered or not). */
  readonly received: ReceivedBatch[];
  policy: AckPolicy;
  /** Stops and starts the acker client (acks stop while it is away). */
  stopAcker(): Promise<void>;
  startAcker(): Promise<void>;
  /** Cuts a client's connection from the broker side (its last will is published). */
  dropClient(clientId: string): void;
  /** The retained message on a topic, parsed as JSON (undefined if none). */
  retained(topic: string): Promise<unknown>;
  stop(): Promise<void>;
}

export async function startStandInCloud(
  gateway: { id: string; secret: string },
  options: {
    port?: number;
    tls?: { key: Buffer; cert: Buffer; ca: Buffer };
    /** Refuse the gateway's ack subscription (a cloud ACL that does not grant it). */
    refuseAckSubscription?: boolean;
  } = {},
): Promise<StandInCloud> {
  const gatewayHash = hashSecret(gateway.secret);
  const ackerId = 'stand-in-acker';
  const broker = await Aedes.createBroker({
    authenticate(client, username, password, done) {
      if (client.id === ackerId || client.id.startsWith('observer-')) return done(null, true);
      if (username === gateway.id && client.id === gateway.id && verifySecret(password, gatewayHash)) {
        return done(null, true);
      }
      const err = new Error('not authorized') as AuthenticateError;
      err.returnCode = 5;
      done(err, null);
    },
    authorizeSubscribe(client, subscription, done) {
      const refused = options.refuseAckSubscription === true && subscription.topic.endsWith('/ack');
      done(null, refused ? null : subscription);
    },
  });
  const tlsOptions = options.tls;
  const server =
    tlsOptions === undefined
      ? net.createServer({ noDelay: true }, (socket) => broker.handle(socket))
      : tls.createServer({ key: tlsOptions.key, cert: tlsOptions.cert }, (socket) => broker.handle(socket));
  server.listen(options.port ?? 0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as net.AddressInfo).port;
  const url = `${tlsOptions === undefined ? 'mqtt' : 'mqtts'}://127.0.0.1:${port}`;
  const clientTls = tlsOptions === undefined ? {} : { ca: tlsOptions.ca };
  const received: ReceivedBatch[] = [];
  let acker: MqttClient | undefined;

  const cloud: StandInCloud = {
    url,
    port,
    broker,
    received,
    policy: ackAll,
    async startAcker() {
      const client = await mqtt.connectAsync(url, { clientId: ackerId, reconnectPeriod: 0, clean: true, ...clientTls });
      client.on('message', (topic, payload) => {
        const parsed = parseTopic(topic);
        if (parsed?.kind !== 'gateway-uplink') return;
        const batch = parseUplinkBatch(payload);
        if (!batch.ok) return;
        const entry: ReceivedBatch = {
          lane: parsed.lane,
          gateway: parsed.gateway,
          branch: parsed.branch,
          batch,
          bytes: payload.length,
        };
        received.push(entry);
        const ack = cloud.policy(entry);
        if (ack !== undefined) {
          client.publish(topics.gatewayAck(parsed.branch, parsed.gateway), JSON.stringify(ack), { qos: 1 });
        }
      });
      await client.subscribeAsync(filters.allGatewayUplinks(), { qos: 1 });
      acker = client;
    },
    async stopAcker() {
      const client = acker;
      acker = undefined;
      await client?.endAsync();
    },
    dropClient(clientId) {
      const clients = (broker as unknown as { clients: Record<string, { conn: net.Socket } | undefined> }).clients;
      clients[clientId]?.conn.destroy();
    },
    async retained(topic) {
      const observer = await mqtt.connectAsync(url, {
        clientId: `observer-${Math.random().toString(36).slice(2)}`,
        reconnectPeriod: 0,
        ...clientTls,
      });
      try {
        const message = new Promise<Buffer>((resolve) => {
          observer.on('message', (t, payload) => {
            if (t === topic) resolve(payload);
          });
        });
        await observer.subscribeAsync(topic, { qos: 1 });
        const got = await Promise.race([message, new Promise<undefined>((r) => setTimeout(() => r(undefined), 300))]);
        return got === undefined ? undefined : (JSON.parse(got.toString('utf8')) as unknown);
      } finally {
        await observer.endAsync();
      }
    },
    async stop() {
      await cloud.stopAcker();
      await new Promise<void>((resolve) => broker.close(() => resolve()));
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
  await cloud.startAcker();
  return cloud;
}

/** Polls `probe` every 20 ms until it returns true; fails after `timeoutMs` with `what`. */
export async function eventually(probe: () => boolean | Promise<boolean>, what: string, timeoutMs = 5_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await probe()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for: ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
