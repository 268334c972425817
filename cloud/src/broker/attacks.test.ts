import { once } from 'node:events';
import http from 'node:http';
import net from 'node:net';
import { expect } from 'chai';
import type { MqttClient } from 'mqtt';
import WebSocket from 'ws';
import { asBranchId, asGatewayId, asUserId } from '../../../protocol/ids.ts';
import { topics } from '../../../protocol/topics.ts';
import { addGateway, addObserver } from './provisioning.ts';
import {
  closed,
  connackCode,
  connectClient,
  metricValue,
  startBrokerFixture,
  subscribeGranted,
  type BrokerFixture,
} from './testing.ts';

const demo = asBranchId('demo');
const gwA = asGatewayId('gw-a');
const wait = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const MiB = 1024 * 1024;

/** Writes `total` bytes of junk after `head` until the peer closes; resolves with what was written. */
async function flood(socket: net.Socket, head: Buffer, total: number): Promise<number> {
  socket.on('error', () => undefined);
  let closedNow = socket.destroyed;
  socket.once('close', () => (closedNow = true));
  const chunk = Buffer.alloc(MiB, 0x61);
  let written = 0;
  socket.write(head);
  written += head.length;
  while (!closedNow && written < total) {
    if (!socket.write(chunk)) {
      await new Promise<void>((resolve) => {
        const done = () => {
          socket.off('drain', done);
          socket.off('close', done);
          resolve();
        };
        socket.on('drain', done);
        socket.on('close', done);
      });
    }
    written += chunk.length;
  }
  if (!socket.destroyed) await once(socket, 'close');
  return written;
}

describe('cloud broker under attack (RELIABILITY A1–A6, M4)', function () {
  this.timeout(60_000);
  let fx: BrokerFixture;
  let httpServer: http.Server;
  let wsUrl: string;
  const secrets: Record<string, string> = {};
  const open: MqttClient[] = [];
  const appTokens = new Map<string, { user: string; branches: string[]; expiresAtMs: number }>();

  const connect = async (id: string, clientId = id) => {
    const client = await connectClient(fx.broker.tcp.url, { username: id, password: secrets[id]!, clientId });
    open.push(client);
    return client;
  };

  before(async () => {
    fx = await startBrokerFixture({
      env: { MQTT_CONNECT_TIMEOUT_MS: '1000', MQTT_MAX_PENDING_PER_IP: '150' },
      // The accounts work provides this function; here it is a table of tokens, so the broker's side
      // (client id binding, ACL, expiry) is what is tested.
      appTokens: (token) => {
        const app = appTokens.get(token);
        return Promise.resolve(
          app && { user: asUserId(app.user), branches: app.branches.map(asBranchId), expiresAtMs: app.expiresAtMs },
        );
      },
    });
    httpServer = http.createServer((_req, res) => res.end('api'));
    httpServer.listen(0, '127.0.0.1');
    await once(httpServer, 'listening');
    fx.broker.attachWebSocket(httpServer);
    wsUrl = `ws://127.0.0.1:${(httpServer.address() as net.AddressInfo).port}`;
    const deps = { store: fx.identities };
    secrets['gw-a'] = (await addGateway(deps, { id: 'gw-a', branch: 'demo' })).secret;
    secrets.ops = (await addObserver(deps, { id: 'ops', branches: ['demo'] })).secret;
  });
  afterEach(async () => {
    await Promise.all(open.splice(0).map((c) => c.endAsync(true).catch(() => undefined)));
  });
  after(async () => {
    await fx.stop();
    httpServer.closeAllConnections();
    await new Promise<void>((resolve) => httpServer.close(() => resolve()));
  });

  describe('A1: oversized frames', () => {
    it('cuts a 200 MiB CONNECT after the header; RSS stays flat; a connected client sees nothing', async () => {
      const observer = await connect('ops', 'ops.a1');
      await observer.subscribeAsync('nxg/v1/b/demo/gw/+/state', { qos: 1 });
      const got: string[] = [];
      observer.on('message', (topic) => got.push(topic));
      const before = await metricValue(fx.registry, 'mqtt_connections_refused_total', {
        listener: 'tcp',
        reason: 'connect-oversized',
      });
      globalThis.gc?.();
      const rss0 = process.memoryUsage().rss;
      const attacker = net.connect(fx.broker.tcp.port, '127.0.0.1');
      await once(attacker, 'connect');
      const written = await flood(attacker, Buffer.from([0x10, 0xff, 0xff, 0xff, 0x7f]), 200 * MiB);
      const growth = process.memoryUsage().rss - rss0;
      expect(
        await metricValue(fx.registry, 'mqtt_connections_refused_total', {
          listener: 'tcp',
          reason: 'connect-oversized',
        }),
      ).to.equal(before + 1);
      expect(written, 'the broker closed long before 200 MiB').to.be.below(200 * MiB);
      expect(growth).to.be.below(10 * MiB);
      const gw = await connect('gw-a');
      await gw.publishAsync(topics.gatewayState(demo, gwA), '{}', { qos: 1, retain: true });
      await wait(50);
      expect(got).to.deep.equal([topics.gatewayState(demo, gwA)]);
      expect(observer.connected).to.equal(true);
      console.log(
        `      A1 (TCP, before auth): closed after the attacker wrote ${(written / MiB).toFixed(1)} MiB ` +
          `(kernel buffers); RSS growth ${(growth / MiB).toFixed(1)} MiB`,
      );
    });

    it('cuts an authenticated gateway that declares a PUBLISH above MQTT_MAX_PACKET_BYTES', async () => {
      const gw = await connect('gw-a');
      gw.publish(topics.gatewayUplink(demo, gwA, 'records'), Buffer.alloc(fx.config.maxPacketBytes + 1), { qos: 1 });
      await Promise.race([closed(gw), wait(5000)]);
      expect(gw.connected).to.equal(false);
      expect(await metricValue(fx.registry, 'mqtt_connections_refused_total', { reason: 'oversized' })).to.equal(1);
      // Just under the limit is fine.
      const ok = await connect('gw-a');
      await ok.publishAsync(topics.gatewayUplink(demo, gwA, 'records'), Buffer.alloc(200 * 1024), { qos: 1 });
      expect(ok.connected).to.equal(true);
    });

    it('closes a 1 MiB WebSocket message with 1009 while a WebSocket observer keeps receiving', async () => {
      const observer = await connectClient(`${wsUrl}/mqtt`, {
        username: 'ops',
        password: secrets.ops!,
        clientId: 'ops.ws',
      });
      open.push(observer);
      await observer.subscribeAsync('nxg/v1/b/demo/gw/+/state', { qos: 1 });
      const got: string[] = [];
      observer.on('message', (topic) => got.push(topic));

      const attacker = new WebSocket(`${wsUrl}/mqtt`, 'mqtt');
      await once(attacker, 'open');
      const closing = once(attacker, 'close') as Promise<[number, Buffer]>;
      attacker.send(Buffer.alloc(MiB, 0x10));
      const [code] = await closing;
      expect(code).to.equal(1009);

      const gw = await connect('gw-a');
      await gw.publishAsync(topics.gatewayState(demo, gwA), '{"n":2}', { qos: 1, retain: true });
      await wait(100);
      expect(got).to.include(topics.gatewayState(demo, gwA));
      expect(observer.connected).to.equal(true);
      expect(await metricValue(fx.registry, 'mqtt_connections_refused_total', { reason: 'ws-oversized' })).to.equal(1);
    });

    it('answers /api/ws/machines too, and refuses gateways on WebSocket (observers only until accounts)', async () => {
      const o = await connectClient(`${wsUrl}/api/ws/machines`, {
        username: 'ops',
        password: secrets.ops!,
        clientId: 'ops.ws2',
      });
      open.push(o);
      expect(o.connected).to.equal(true);
      expect(
        await connackCode(`${wsUrl}/mqtt`, { username: 'gw-a', password: secrets['gw-a']!, clientId: 'gw-a' }),
      ).to.equal(5);
      // Not a WebSocket path: the upgrade is answered 404, never served.
      const raw = net.connect((httpServer.address() as net.AddressInfo).port, '127.0.0.1');
      await once(raw, 'connect');
      raw.write(
        'GET /elsewhere HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n' +
          'Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n',
      );
      let answer = '';
      raw.on('data', (d: Buffer) => (answer += d.toString()));
      await once(raw, 'close');
      expect(answer).to.match(/^HTTP\/1\.1 404 /);
    });
  });

  describe('A2: topic depth', () => {
    it('refuses a 101-level SUBSCRIBE or PUBLISH by closing the connection; 100 levels are parsed; broker alive', async () => {
      const level100 = Array.from({ length: 100 }, (_, i) => `l${i}`).join('/');
      const level101 = `${level100}/x`;
      const o = await connect('ops', 'ops.a2');
      expect(await subscribeGranted(o, [level100])).to.deep.equal([128]);
      expect(o.connected).to.equal(true);
      o.subscribe(level101, { qos: 1 });
      await Promise.race([closed(o), wait(5000)]);
      expect(o.connected).to.equal(false);
      const gw = await connect('gw-a');
      gw.publish(level101, 'x', { qos: 1 });
      await Promise.race([closed(gw), wait(5000)]);
      expect(gw.connected).to.equal(false);
      // In-process, the broker takes a 100-level subscription and refuses 101 without throwing.
      const delivered: string[] = [];
      await new Promise<void>((resolve) =>
        fx.broker.aedes.subscribe(
          level100,
          (p, cb) => {
            delivered.push(p.topic);
            cb();
          },
          () => resolve(),
        ),
      );
      await new Promise<void>((resolve) =>
        fx.broker.aedes.publish(
          { cmd: 'publish', topic: level100, payload: Buffer.from('x'), qos: 0, retain: false, dup: false },
          () => resolve(),
        ),
      );
      expect(delivered).to.deep.equal([level100]);
      const err = await new Promise<Error | undefined>((resolve) =>
        fx.broker.aedes.publish(
          { cmd: 'publish', topic: level101, payload: Buffer.from('x'), qos: 0, retain: false, dup: false },
          resolve,
        ),
      );
      expect(err?.message).to.include('too many levels');
      expect((await connect('ops', 'ops.alive')).connected).to.equal(true);
    });
  });

  describe('A3: QoS 2 flood', () => {
    it('disconnects at the first QoS 2 PUBLISH of 5,000 sent without PUBREL', async () => {
      const gw = await connect('gw-a');
      const before = await metricValue(fx.registry, 'mqtt_authz_denied_total', { action: 'publish', reason: 'qos2' });
      for (let i = 0; i < 5000 && gw.connected; i++) {
        gw.publish(topics.gatewayUplink(demo, gwA, 'records'), `{"i":${i}}`, { qos: 2 });
      }
      await Promise.race([closed(gw), wait(10_000)]);
      expect(gw.connected).to.equal(false);
      const denied =
        (await metricValue(fx.registry, 'mqtt_authz_denied_total', { action: 'publish', reason: 'qos2' })) - before;
      expect(denied).to.be.at.least(1).and.at.most(1000);
      expect((await connect('gw-a')).connected).to.equal(true);
    });
  });

  describe('A4: prototype names', () => {
    it('refuses prototype client ids and subscriptions without a crash; unsubscribe answers normally', async () => {
      for (const id of ['__proto__', 'constructor', 'toString']) {
        expect(await connackCode(fx.broker.tcp.url, { clientId: id, username: id, password: 'x' })).to.equal(5);
      }
      const o = await connect('ops', 'ops.a4');
      expect(await subscribeGranted(o, ['__proto__', 'constructor', 'toString', '__proto__/#'])).to.deep.equal([
        128, 128, 128, 128,
      ]);
      await o.unsubscribeAsync(['__proto__', 'constructor', 'toString']);
      expect(o.connected).to.equal(true);
      const gw = await connect('gw-a');
      gw.publish('__proto__', 'x', { qos: 1 });
      await Promise.race([closed(gw), wait(5000)]);
      expect(gw.connected).to.equal(false);
      expect((await connect('gw-a')).connected).to.equal(true);
    });
  });

  describe('A5: connections that never send CONNECT', () => {
    it('closes 200 idle connections (150 at connectTimeout, 50 at once over the per-address cap)', async () => {
      globalThis.gc?.();
      const rss0 = process.memoryUsage().rss;
      const started = Date.now();
      const sockets = await Promise.all(
        Array.from({ length: 200 }, async () => {
          const s = net.connect(fx.broker.tcp.port, '127.0.0.1');
          s.on('error', () => undefined);
          await once(s, 'connect');
          return s;
        }),
      );
      const closeTimes = await Promise.all(
        sockets.map((s) => (s.destroyed ? Promise.resolve(0) : once(s, 'close').then(() => Date.now() - started))),
      );
      const growth = process.memoryUsage().rss - rss0;
      const atOnce = closeTimes.filter((t) => t < 500).length;
      const atTimeout = closeTimes.filter((t) => t >= 900).length;
      expect(atOnce).to.equal(50);
      expect(atTimeout).to.equal(150);
      expect(Math.max(...closeTimes)).to.be.below(3 * 1000 + 1000);
      expect(growth).to.be.below(50 * MiB);
      expect(await metricValue(fx.registry, 'mqtt_connections_refused_total', { reason: 'too-many-pending' })).to.equal(
        50,
      );
      expect((await connect('ops', 'ops.a5')).connected).to.equal(true);
      console.log(
        `      A5: 200 idle connects, all closed within ${Math.max(...closeTimes)} ms; RSS growth ${(growth / MiB).toFixed(1)} MiB`,
      );
    });
  });

  describe('M4: apps over WebSocket (through the accounts extension point)', () => {
    const token = 'eyJ0eXAiOiJKV1QifQ.eyJzdWIiOiJ1c2VyLWEifQ.c2ln';
    before(() => {
      appTokens.set(token, { user: 'user-a', branches: ['demo'], expiresAtMs: Date.now() + 60_000 });
    });

    it("subscribes to its branch's live topics and its own user topics only, and never publishes", async () => {
      const app = await connectClient(`${wsUrl}/mqtt`, {
        username: 'app',
        password: token,
        clientId: 'u.user-a.phone',
      });
      open.push(app);
      expect(
        await subscribeGranted(app, [
          'nxg/v1/b/demo/live/machines/+',
          'nxg/v1/u/user-a/live/#',
          'nxg/v1/u/user-b/live/#',
          'nxg/v1/u/+/live/#',
          'nxg/v1/b/other/live/#',
        ]),
      ).to.deep.equal([1, 1, 128, 128, 128]);
      app.publish('nxg/v1/b/demo/m/tm-01/cmd/link', '{}', { qos: 1 });
      await Promise.race([closed(app), wait(5000)]);
      expect(app.connected).to.equal(false);
    });

    it('refuses an unknown token, a client id of another user, and the token on the TCP listener', async () => {
      expect(await connackCode(`${wsUrl}/mqtt`, { username: 'app', password: 'a.b.c', clientId: 'u.user-a' })).to.equal(
        5,
      );
      expect(await connackCode(`${wsUrl}/mqtt`, { username: 'app', password: token, clientId: 'u.user-b' })).to.equal(
        5,
      );
      expect(await connackCode(`${wsUrl}/mqtt`, { username: 'app', password: token, clientId: 'ops' })).to.equal(5);
      expect(await connackCode(fx.broker.tcp.url, { username: 'app', password: token, clientId: 'u.user-a' })).to.equal(
        5,
      );
    });

    it('closes the connection when the token expires', async () => {
      const short = 'eyJ0eXAiOiJKV1QifQ.eyJzdWIiOiJ1c2VyLWMifQ.c2ln';
      appTokens.set(short, { user: 'user-c', branches: ['demo'], expiresAtMs: Date.now() + 300 });
      const app = await connectClient(`${wsUrl}/mqtt`, { username: 'app', password: short, clientId: 'u.user-c' });
      open.push(app);
      await Promise.race([closed(app), wait(5000)]);
      expect(app.connected).to.equal(false);
    });
  });
});
