/**
 * A broker for `npm run bench:broker`, in a process of its own so the bench can pin it to a core apart from the load:
 * - `aedes`: a bare Aedes (no authentication, in-memory persistence), MQTT over TCP and over WebSocket;
 * - `cloud <mongoUrl> <observers> <redisUrl>`: our cloud broker (cloud/src/broker) with authentication and ACL on,
 *   its identities in MongoDB behind the identity cache as startCloud builds it (identity-cache.ts: its invalidation
 *   channel on the Redis at redisUrl, MQTT_IDENTITY_CACHE_* at their defaults): 10 gateways `bench-gw-<i>` and
 *   `observers` observers `bench-obs-<i>` of branch `bench`, all with the secret in BENCH_SECRET, provisioned first
 *   with the functions of `npm run hub`. The cache starts empty: every identity's first CONNECT reads MongoDB.
 * Prints `ready {"tcp":port,"ws":port}`; stops on SIGTERM or when its parent's stdin pipe closes; on SIGUSR2 prints its
 * memory after a garbage collection.
 */
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import { mkdtemp } from 'node:fs/promises';
import path from 'node:path';
import { Aedes } from 'aedes';
import { Redis } from 'ioredis';
import mongoose from 'mongoose';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import * as v from 'valibot';
import { WebSocketServer, createWebSocketStream } from 'ws';
import { startCloudBroker } from '../../cloud/src/broker/broker.ts';
import { brokerConfig, brokerEnv } from '../../cloud/src/broker/config.ts';
import { IdentityExists, createIdentityStore } from '../../cloud/src/broker/identities.ts';
import { createCachedIdentityStore } from '../../cloud/src/broker/identity-cache.ts';
import { addGateway, addObserver } from '../../cloud/src/broker/provisioning.ts';
import { systemClock } from '../runtime/clock.ts';
import { parseEnv } from '../runtime/env-config.ts';

const [mode, mongoUrl, count, redisUrl] = process.argv.slice(2);
let stop: () => Promise<void>;
let ports: { tcp: number; ws: number };

const listen = (server: net.Server | http.Server) =>
  new Promise<number>((resolve) =>
    server.listen(0, '127.0.0.1', () => resolve((server.address() as net.AddressInfo).port)),
  );

if (mode === 'aedes') {
  const broker = await Aedes.createBroker();
  const tcp = net.createServer((socket) => {
    socket.setNoDelay(true);
    broker.handle(socket);
  });
  const httpServer = http.createServer();
  const wss = new WebSocketServer({ server: httpServer });
  wss.on('connection', (socket) => broker.handle(createWebSocketStream(socket)));
  ports = { tcp: await listen(tcp), ws: await listen(httpServer) };
  stop = () =>
    new Promise((resolve) => {
      tcp.close();
      httpServer.close();
      broker.close(() => resolve());
    });
} else if (mode === 'cloud' && mongoUrl && redisUrl) {
  const secret = process.env.BENCH_SECRET ?? '';
  const mongo = await mongoose.createConnection(mongoUrl).asPromise();
  const store = createIdentityStore(mongo);
  const n = Number(count ?? 10);
  const ensure = async (add: () => Promise<unknown>) => {
    try {
      await add();
    } catch (err) {
      if (!(err instanceof IdentityExists)) throw err;
    }
  };
  for (let i = 0; i < 10; i++)
    await ensure(() => addGateway({ store }, { id: `bench-gw-${i}`, branch: 'bench', secret }));
  for (let i = 0; i < Math.max(10, n); i++)
    await ensure(() => addObserver({ store }, { id: `bench-obs-${i}`, branches: ['bench'], secret }));
  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'nxg-bench-broker-'));
  // Configured as a deployment is for a load test, with its documented variables only (README): the per-address
  // CONNECT limits stay at their defaults (the bench spreads its clients over 127.0.0.x addresses, as a fleet comes
  // from many addresses), and room for the idle connections asked for plus the workload's own.
  const config = brokerConfig(
    parseEnv(v.object(brokerEnv), {
      MQTT_TCP_PORT: '0',
      MQTT_TLS_PORT: '0',
      MQTT_DATA_DIR: dataDir,
      MQTT_MAX_CONNECTIONS: String(Math.max(10_000, n + 1_000)),
    }),
  );
  const log = pino({ level: 'silent' });
  const redis = new Redis(redisUrl, { lazyConnect: true, enableOfflineQueue: false, maxRetriesPerRequest: 1 });
  await redis.connect();
  const keyPrefix = `bench:${process.pid}:`;
  const identities = await createCachedIdentityStore({
    store,
    redis,
    redisKeyPrefix: keyPrefix,
    ...config.identityCache,
    clock: systemClock,
    log,
  });
  const broker = await startCloudBroker({
    config,
    log,
    clock: systemClock,
    identities,
    registry: new Registry(),
    version: 'bench',
  });
  const httpServer = http.createServer();
  broker.attachWebSocket(httpServer);
  ports = { tcp: broker.tcp.port, ws: await listen(httpServer) };
  stop = async () => {
    httpServer.close();
    await broker.close();
    await identities.close();
    redis.disconnect();
    await mongo.close();
  };
} else {
  process.stderr.write('usage: broker-server.ts aedes | cloud <mongoUrl> <identities> <redisUrl>\n');
  process.exit(2);
}

// SIGUSR2: collect garbage (node --expose-gc) and print `mem {rss, heapUsed, external}`: memory per connection is
// measured between two of these, not between two moments of an unknown garbage collector.
process.on('SIGUSR2', () => {
  globalThis.gc?.();
  const m = process.memoryUsage();
  process.stdout.write(
    `mem ${JSON.stringify({ rss: m.rss, heapUsed: m.heapUsed, external: m.external + m.arrayBuffers })}\n`,
  );
});
process.stdout.write(`ready ${JSON.stringify(ports)}\n`);
const shutdown = () => void stop().finally(() => process.exit(0));
process.on('SIGTERM', shutdown);
process.stdin.on('end', shutdown);
process.stdin.resume();
