import { once } from 'node:events';
import net from 'node:net';
import { expect } from 'chai';
import { pino } from 'pino';
import { systemClock } from '../../../tools/runtime/clock.ts';
import { testServices, uniqueDbName } from '../../../test/helpers/services.ts';
import { asBranchId, asGatewayId } from '../../../protocol/ids.ts';
import { topics } from '../../../protocol/topics.ts';
import { startCloud, type RunningCloud } from '../cloud.ts';
import { loadCloudConfig } from '../config.ts';
import { createIdentityStore } from './identities.ts';
import { addGateway, addObserver } from './provisioning.ts';
import { closed, connectClient, metricValue, startBrokerFixture } from './testing.ts';

describe('cloud broker inside the cloud process (startCloud)', function () {
  this.timeout(40_000);
  let cloud: RunningCloud;
  const secrets: Record<string, string> = {};

  before(async () => {
    const { mongoUrl, redisUrl } = testServices();
    cloud = await startCloud({
      config: loadCloudConfig({
        MONGO_URL: `${mongoUrl}/${uniqueDbName('cloud-broker')}`,
        REDIS_URL: redisUrl,
        REDIS_KEY_PREFIX: `test:${process.pid}:cloud-broker:`,
        HTTP_PORT: '0',
        MQTT_TCP_PORT: '0',
        MQTT_TLS_PORT: '0',
        SHUTDOWN_GRACE_MS: '2000',
      }),
      log: pino({ level: 'silent' }),
      clock: systemClock,
    });
    const store = createIdentityStore(cloud.mongo);
    secrets['gw-a'] = (await addGateway({ store }, { id: 'gw-a', branch: 'demo' })).secret;
    secrets.ops = (await addObserver({ store }, { id: 'ops', branches: ['demo'] })).secret;
  });
  after(async () => {
    await cloud.stop();
  });

  it('serves MQTT over WebSocket on the API port at /mqtt, reports the broker in /health and metrics', async () => {
    const ws = await connectClient(`${cloud.url.replace('http:', 'ws:')}/mqtt`, {
      username: 'ops',
      password: secrets.ops!,
      clientId: 'ops.dash',
    });
    const health = (await (await fetch(`${cloud.url}/health`)).json()) as {
      checks: Record<string, { status: string; clients?: number }>;
    };
    expect(health.checks.broker).to.deep.include({ status: 'up', clients: 1 });
    const metrics = await (await fetch(`${cloud.url}/metrics`)).text();
    expect(metrics).to.match(/mqtt_clients_connected\{role="observer",service="cloud"\} 1/);
    expect(metrics).to.include('mqtt_connects_total{listener="ws",role="observer"');
    expect(cloud.broker.webSocketPaths).to.deep.equal(['/mqtt', '/api/ws/machines']);
    await ws.endAsync();
  });

  it('lets ingest subscribe in-process on broker.aedes and see a gateway uplink over TCP', async () => {
    const got: string[] = [];
    await new Promise<void>((resolve) =>
      cloud.broker.aedes.subscribe(
        'nxg/v1/b/+/gw/+/up/+',
        (packet, cb) => {
          got.push(packet.topic);
          cb();
        },
        () => resolve(),
      ),
    );
    const gw = await connectClient(cloud.broker.tcp.url, {
      username: 'gw-a',
      password: secrets['gw-a']!,
      clientId: 'gw-a',
    });
    await gw.publishAsync('nxg/v1/b/demo/gw/gw-a/up/telemetry', '{}', { qos: 1 });
    expect(got).to.deep.equal(['nxg/v1/b/demo/gw/gw-a/up/telemetry']);
    await gw.endAsync();
  });

  it('tells a subscribed gateway the cloud is going offline when it stops, then closes the connection', async () => {
    const gw = await connectClient(cloud.broker.tls.url, {
      username: 'gw-a',
      password: secrets['gw-a']!,
      clientId: 'gw-a',
      ca: await import('node:fs/promises').then((fs) => fs.readFile(cloud.broker.tls.caFile!)),
      will: {
        topic: topics.gatewayState(asBranchId('demo'), asGatewayId('gw-a')),
        payload: Buffer.from('{"online":false}'),
        qos: 1,
        retain: true,
      },
    });
    // Ingest's view: the gateway's will must not be published because the cloud (not the gateway) goes away.
    const wills: string[] = [];
    await new Promise<void>((resolve) =>
      cloud.broker.aedes.subscribe(
        'nxg/v1/b/+/gw/+/state',
        (packet, cb) => {
          wills.push(packet.topic);
          cb();
        },
        () => resolve(),
      ),
    );
    const states: { online: boolean }[] = [];
    gw.on('message', (_t, payload) => states.push(JSON.parse(payload.toString()) as { online: boolean }));
    await gw.subscribeAsync(topics.cloudState(), { qos: 1 });
    await new Promise((r) => setTimeout(r, 100));
    const gone = closed(gw);
    await cloud.stop();
    await gone;
    expect(states.map((s) => s.online)).to.deep.equal([true, false]);
    expect(wills).to.deep.equal([]);
  });
});

/** MQTT 3.1.1 string: 16-bit length, UTF-8 bytes. */
const mqttString = (s: string) => {
  const b = Buffer.from(s, 'utf8');
  return Buffer.concat([Buffer.from([b.length >> 8, b.length & 0xff]), b]);
};
const withHeader = (type: number, body: Buffer) => {
  const len: number[] = [];
  let x = body.length;
  do {
    let byte = x % 128;
    x = Math.floor(x / 128);
    if (x > 0) byte |= 0x80;
    len.push(byte);
  } while (x > 0);
  return Buffer.concat([Buffer.from([type, ...len]), body]);
};
function connectPacket(clientId: string, username: string, password: string): Buffer {
  const variable = Buffer.concat([mqttString('MQTT'), Buffer.from([4, 0xc2, 0, 60])]);
  return withHeader(0x10, Buffer.concat([variable, mqttString(clientId), mqttString(username), mqttString(password)]));
}
function subscribePacket(filter: string): Buffer {
  return withHeader(0x82, Buffer.concat([Buffer.from([0, 1]), mqttString(filter), Buffer.from([0])]));
}

describe('cloud broker connect limits and throughput', function () {
  this.timeout(60_000);

  it('fails to start with EADDRINUSE when its port is taken, leaving nothing open', async () => {
    const blocker = net.createServer();
    blocker.listen(0, '127.0.0.1');
    await once(blocker, 'listening');
    const port = (blocker.address() as net.AddressInfo).port;
    try {
      const err = await startBrokerFixture({ env: { MQTT_TLS_PORT: String(port), MQTT_TLS_HOST: '127.0.0.1' } }).then(
        () => undefined,
        (e: NodeJS.ErrnoException) => e,
      );
      expect(err?.code).to.equal('EADDRINUSE');
    } finally {
      blocker.close();
    }
  });

  it('disconnects a subscriber that stops reading after the drain timeout; another keeps receiving (C5)', async () => {
    const fx = await startBrokerFixture({ env: { MQTT_DRAIN_TIMEOUT_MS: '1000' } });
    try {
      const { secret } = await addObserver({ store: fx.identities }, { id: 'ops', branches: ['demo'] });
      // The frozen client: a raw socket that connects and subscribes, then never reads again (kill -STOP, in effect).
      const frozen = net.connect(fx.broker.tcp.port, '127.0.0.1');
      frozen.on('error', () => undefined);
      await once(frozen, 'connect');
      frozen.write(connectPacket('ops.frozen', 'ops', secret));
      await once(frozen, 'data'); // CONNACK
      frozen.write(subscribePacket('nxg/v1/b/demo/live/#'));
      await once(frozen, 'data'); // SUBACK
      frozen.pause();
      // A paused socket never reads the broker's FIN: watch the broker's side instead.
      const clients = (fx.broker.aedes as unknown as { clients: Record<string, unknown> }).clients;
      const healthy = await connectClient(fx.broker.tcp.url, { username: 'ops', password: secret, clientId: 'ops.ok' });
      await healthy.subscribeAsync('nxg/v1/b/demo/live/#', { qos: 0 });
      let healthyGot = 0;
      healthy.on('message', () => (healthyGot += 1));
      const frozenGone = (async () => {
        while (clients['ops.frozen']) await new Promise((r) => setTimeout(r, 20));
      })();
      const started = Date.now();
      const payload = Buffer.alloc(64 * 1024, 0x61);
      let sent = 0;
      let gone = false;
      void frozenGone.then(() => (gone = true));
      while (!gone && Date.now() - started < 15_000) {
        await new Promise<void>((resolve) =>
          fx.broker.aedes.publish(
            { cmd: 'publish', topic: 'nxg/v1/b/demo/live/machines/tm-01', payload, qos: 0, retain: false, dup: false },
            () => resolve(),
          ),
        );
        sent += 1;
        await new Promise((r) => setTimeout(r, 5));
      }
      const tookMs = Date.now() - started;
      expect(gone, 'the frozen subscriber was disconnected').to.equal(true);
      expect(tookMs).to.be.below(3 * (1000 + 2000));
      const before = healthyGot;
      await new Promise<void>((resolve) =>
        fx.broker.aedes.publish(
          {
            cmd: 'publish',
            topic: 'nxg/v1/b/demo/live/machines/tm-02',
            payload: Buffer.from('{}'),
            qos: 0,
            retain: false,
            dup: false,
          },
          () => resolve(),
        ),
      );
      await new Promise((r) => setTimeout(r, 200));
      expect(healthyGot).to.be.above(before);
      console.log(`      C5: frozen subscriber cut ${tookMs} ms after it stopped reading (${sent} × 64 KiB published)`);
      await healthy.endAsync();
      frozen.destroy();
    } finally {
      await fx.stop();
    }
  });

  it('refuses CONNECTs over the per-address rate before looking up the secret', async () => {
    const fx = await startBrokerFixture({ env: { MQTT_CONNECT_LIMIT_PER_IP: '5', MQTT_CONNECT_LIMIT_WINDOW_S: '60' } });
    try {
      const { secret } = await addObserver({ store: fx.identities }, { id: 'ops', branches: ['demo'] });
      const results: string[] = [];
      for (let i = 0; i < 7; i++) {
        results.push(
          await connectClient(fx.broker.tcp.url, {
            username: 'ops',
            password: secret,
            clientId: `ops.n${i}`,
            connectTimeout: 2000,
          })
            .then(async (c) => {
              await c.endAsync();
              return 'ok';
            })
            .catch(() => 'refused'),
        );
      }
      expect(results).to.deep.equal(['ok', 'ok', 'ok', 'ok', 'ok', 'refused', 'refused']);
      // The broker closes a refused connection at once, without a CONNACK (no socket left waiting).
      const raw = net.connect(fx.broker.tcp.port, '127.0.0.1');
      raw.on('error', () => undefined);
      await once(raw, 'connect');
      let answer = Buffer.alloc(0);
      raw.on('data', (d: Buffer) => (answer = Buffer.concat([answer, d])));
      raw.write(connectPacket('ops.raw', 'ops', secret));
      await once(raw, 'close');
      expect(answer.length).to.equal(0);
      expect(await metricValue(fx.registry, 'mqtt_connections_refused_total', { reason: 'rate-limited' })).to.equal(3);
    } finally {
      await fx.stop();
    }
  });

  it('measures gateway connects per second over loopback (reported, not asserted)', async () => {
    const fx = await startBrokerFixture();
    try {
      const { secret } = await addGateway({ store: fx.identities }, { id: 'gw-a', branch: 'demo' });
      const observerSecret = (await addObserver({ store: fx.identities }, { id: 'ops', branches: ['demo'] })).secret;
      const n = 200;
      const concurrency = 20;
      let next = 0;
      const started = performance.now();
      await Promise.all(
        Array.from({ length: concurrency }, async () => {
          while (next < n) {
            const i = next++;
            const c = await connectClient(fx.broker.tcp.url, {
              username: 'ops',
              password: observerSecret,
              clientId: `ops.c${i}`,
            });
            await c.endAsync();
          }
        }),
      );
      const perSecond = n / ((performance.now() - started) / 1000);
      const seqStarted = performance.now();
      for (let i = 0; i < 50; i++) {
        const c = await connectClient(fx.broker.tcp.url, { username: 'gw-a', password: secret, clientId: 'gw-a' });
        await c.endAsync();
      }
      const sequential = 50 / ((performance.now() - seqStarted) / 1000);
      console.log(
        `      connects/s (loopback, MongoDB stand-in lookup each): ${perSecond.toFixed(0)} with ${concurrency} in parallel, ` +
          `${sequential.toFixed(0)} one after another`,
      );
      expect(perSecond).to.be.above(0);
    } finally {
      await fx.stop();
    }
  });
});
