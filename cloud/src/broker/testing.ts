/**
 * Test support for the broker's suites: a broker on free ports against the run's MongoDB stand-in, with its own
 * database, registry and data directory, and MQTT clients that report CONNACK codes and disconnects.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { Connection } from 'mongoose';
import { connect, type IClientOptions, type MqttClient } from 'mqtt';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import type { RequestResponse } from '../../../protocol/index.ts';
import { systemClock } from '../../../tools/runtime/clock.ts';
import { connectMongoose, uniqueDbName } from '../../../test/helpers/services.ts';
import type { AppTokenAuthenticator } from './auth.ts';
import { startCloudBroker, type CloudBroker } from './broker.ts';
import { brokerConfig, brokerEnv, type BrokerConfig } from './config.ts';
import { createIdentityStore, type IdentityStore } from './identities.ts';
import { parseEnv } from '../../../tools/runtime/env-config.ts';
import * as v from 'valibot';

export interface BrokerFixture {
  broker: CloudBroker;
  identities: IdentityStore;
  mongo: Connection;
  registry: Registry;
  config: BrokerConfig;
  dataDir: string;
  stop(): Promise<void>;
}

/** Configuration as the cloud would parse it from `env`, on free ports and a fresh data directory. */
export function testBrokerConfig(dataDir: string, env: Record<string, string> = {}): BrokerConfig {
  return brokerConfig(
    parseEnv(v.object(brokerEnv), {
      MQTT_TCP_PORT: '0',
      MQTT_TLS_PORT: '0',
      MQTT_DATA_DIR: dataDir,
      MQTT_CONNECT_LIMIT_PER_IP: '0',
      ...env,
    }),
  );
}

export async function startBrokerFixture({
  env = {},
  appTokens,
  dataDir: givenDataDir,
}: { env?: Record<string, string>; appTokens?: AppTokenAuthenticator; dataDir?: string } = {}): Promise<BrokerFixture> {
  const dataDir = givenDataDir ?? (await mkdtemp(path.join(os.tmpdir(), 'nxg-broker-test-')));
  const mongo = await connectMongoose(uniqueDbName('broker'));
  const identities = createIdentityStore(mongo);
  const registry = new Registry();
  const config = testBrokerConfig(dataDir, env);
  let broker: CloudBroker;
  try {
    broker = await startCloudBroker({
      config,
      log: pino({ level: 'silent' }),
      clock: systemClock,
      identities,
      registry,
      version: '0.1.0',
      ...(appTokens ? { appTokens } : {}),
    });
  } catch (err) {
    await mongo.close();
    if (!givenDataDir) await rm(dataDir, { recursive: true, force: true });
    throw err;
  }
  return {
    broker,
    identities,
    mongo,
    registry,
    config,
    dataDir,
    async stop() {
      await broker.close();
      await mongo.dropDatabase().catch(() => undefined);
      await mongo.close();
      if (!givenDataDir) await rm(dataDir, { recursive: true, force: true });
    },
  };
}

/**
 * Connects and resolves with the client, or rejects with the CONNACK return code as `code` — or with
 * `code: 'closed'` when the broker closes the connection without a CONNACK (MQTT.js' connectAsync would wait).
 */
export function connectClient(url: string, options: IClientOptions = {}): Promise<MqttClient> {
  return new Promise((resolve, reject) => {
    const client = connect(url, { reconnectPeriod: 0, connectTimeout: 5000, protocolVersion: 4, ...options });
    client.once('connect', () => resolve(client));
    client.once('error', (err) => {
      client.end(true);
      reject(err);
    });
    client.once('close', () => {
      if (!client.connected) reject(Object.assign(new Error('closed before CONNACK'), { code: 'closed' }));
    });
  });
}

/** The CONNACK return code a CONNECT gets (0 when accepted; the client is closed again). */
export async function connackCode(url: string, options: IClientOptions = {}): Promise<number> {
  try {
    const client = await connectClient(url, options);
    await client.endAsync();
    return 0;
  } catch (err) {
    const code = (err as { code?: unknown }).code;
    if (typeof code === 'number') return code;
    throw err;
  }
}

/** Resolves when the client's connection closes (or at once if it already has). */
export function closed(client: MqttClient): Promise<void> {
  return new Promise((resolve) => {
    if (!client.connected) return resolve();
    client.once('close', () => resolve());
  });
}

/** Resolves with the value of a counter or gauge series (0 when it does not exist yet). */
export async function metricValue(registry: Registry, name: string, labels: Record<string, string>): Promise<number> {
  const metric = registry.getSingleMetric(name);
  if (!metric) return 0;
  const data = await metric.get();
  const match = data.values.find((value) =>
    Object.entries(labels).every(([k, want]) => String((value.labels as Record<string, unknown>)[k]) === want),
  );
  return match?.value ?? 0;
}

/** SUBSCRIBEs `filters` in one packet and resolves with the granted codes (128 for a refusal), in order. */
export async function subscribeGranted(
  client: MqttClient,
  filters: readonly string[],
  qos: 0 | 1 | 2 = 1,
): Promise<number[]> {
  const map = Object.fromEntries(filters.map((topic) => [topic, { qos }]));
  try {
    const granted = await client.subscribeAsync(map);
    return granted.map((g) => g.qos);
  } catch (err) {
    const packet = (err as { packet?: { granted?: number[] } }).packet;
    if (packet?.granted) return packet.granted;
    throw err;
  }
}

/**
 * Publishes a gateway request (`body` names its reqId) on `topic` and resolves with the cloud's answer naming that
 * reqId, as it arrives on a `…/res` topic the client subscribed to.
 */
export async function gatewayRequest(
  client: MqttClient,
  topic: string,
  body: { reqId: string } & Record<string, unknown>,
): Promise<RequestResponse> {
  const answered = new Promise<RequestResponse>((resolve) => {
    const onMessage = (received: string, payload: Buffer) => {
      if (!received.endsWith('/res')) return;
      const answer = JSON.parse(payload.toString()) as RequestResponse;
      if (answer.reqId !== body.reqId) return;
      client.off('message', onMessage);
      resolve(answer);
    };
    client.on('message', onMessage);
  });
  await client.publishAsync(topic, JSON.stringify(body), { qos: 1 });
  return answered;
}
