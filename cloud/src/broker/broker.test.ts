import { expect } from 'chai';
import type { MqttClient } from 'mqtt';
import { topics } from '../../../protocol/topics.ts';
import { asBranchId, asGatewayId, asMachineId, asReaderId } from '../../../protocol/ids.ts';
import { addGateway, addObserver, revokeIdentity } from './provisioning.ts';
import {
  closed,
  connackCode,
  connectClient,
  metricValue,
  startBrokerFixture,
  subscribeGranted,
  type BrokerFixture,
} from './testing.ts';
import { MAX_SUBSCRIPTIONS_PER_CLIENT, sessionOf } from './broker.ts';

const demo = asBranchId('demo');
const other = asBranchId('other');
const gwA = asGatewayId('gw-a');
const gwB = asGatewayId('gw-b');
const gwOther = asGatewayId('gw-other');

const wait = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('cloud broker: identities and ACL (real Aedes, sockets and MongoDB stand-in)', function () {
  this.timeout(30_000);
  let fx: BrokerFixture;
  let url: string;
  const secrets: Record<string, string> = {};
  const open: MqttClient[] = [];

  const connect = async (id: string, clientId = id) => {
    const client = await connectClient(url, { username: id, password: secrets[id]!, clientId });
    open.push(client);
    return client;
  };

  before(async () => {
    fx = await startBrokerFixture({ env: { MQTT_IDENTITY_RECHECK_MS: '1000' } });
    url = fx.broker.tcp.url;
    const deps = { store: fx.identities };
    secrets['gw-a'] = (await addGateway(deps, { id: 'gw-a', branch: 'demo' })).secret;
    secrets['gw-b'] = (await addGateway(deps, { id: 'gw-b', branch: 'demo' })).secret;
    secrets['gw-other'] = (await addGateway(deps, { id: 'gw-other', branch: 'other' })).secret;
    secrets.ops = (await addObserver(deps, { id: 'ops', branches: ['demo'] })).secret;
    secrets['ops-all'] = (await addObserver(deps, { id: 'ops-all', branches: ['demo', 'other'] })).secret;
    secrets.doomed = (await addGateway(deps, { id: 'doomed', branch: 'demo' })).secret;
  });
  afterEach(async () => {
    await Promise.all(open.splice(0).map((c) => c.endAsync(true).catch(() => undefined)));
  });
  after(() => fx.stop());

  describe('CONNECT (RELIABILITY M1, M5, A6)', () => {
    it('refuses anonymous clients and wrong secrets with CONNACK 5', async () => {
      expect(await connackCode(url, { clientId: 'gw-a' })).to.equal(5);
      expect(await connackCode(url, { clientId: 'gw-a', username: 'gw-a', password: 'wrong' })).to.equal(5);
      expect(await connackCode(url, { clientId: 'gw-a', username: 'gw-a', password: secrets['gw-b']! })).to.equal(5);
      expect(await connackCode(url, { clientId: 'nobody', username: 'nobody', password: secrets['gw-a']! })).to.equal(
        5,
      );
      expect(
        await metricValue(fx.registry, 'mqtt_connections_refused_total', { reason: 'bad-credentials' }),
      ).to.be.at.least(3);
      expect(await metricValue(fx.registry, 'mqtt_connections_refused_total', { reason: 'no-username' })).to.equal(1);
    });

    it("refuses gateway A's secret with gateway B's client id, and B stays connected (M5)", async () => {
      const b = await connect('gw-b');
      let bClosed = false;
      b.on('close', () => (bClosed = true));
      expect(await connackCode(url, { clientId: 'gw-b', username: 'gw-a', password: secrets['gw-a']! })).to.equal(5);
      // And with B's own id as username but A's secret: still refused.
      expect(await connackCode(url, { clientId: 'gw-b', username: 'gw-b', password: secrets['gw-a']! })).to.equal(5);
      await wait(100);
      expect(bClosed).to.equal(false);
      expect(b.connected).to.equal(true);
      await b.publishAsync(topics.gatewayState(demo, gwB), '{}', { qos: 1, retain: true });
    });

    it('refuses identities with + # / NUL, 300 bytes or prototype names before any lookup (A6, A4)', async () => {
      for (const bad of ['+', '#', 'a/b', 'demo\u0000', 'x'.repeat(300), '__proto__', 'constructor', 'toString']) {
        expect(await connackCode(url, { clientId: bad, username: bad, password: 'x' }), JSON.stringify(bad)).to.equal(
          5,
        );
        expect(await connackCode(url, { clientId: bad, username: 'gw-a', password: secrets['gw-a']! })).to.equal(5);
      }
      // Still alive and serving.
      const a = await connect('gw-a');
      expect(a.connected).to.equal(true);
    });

    it('lets an observer connect several times as id.suffix but a gateway only as itself', async () => {
      const one = await connect('ops', 'ops.dash-1');
      const two = await connect('ops', 'ops.dash-2');
      expect(one.connected && two.connected).to.equal(true);
      expect(await connackCode(url, { clientId: 'gw-a.x', username: 'gw-a', password: secrets['gw-a']! })).to.equal(5);
    });

    it('disconnects a connected identity once it is revoked, and refuses it afterwards', async () => {
      const client = await connect('doomed');
      await revokeIdentity({ store: fx.identities }, 'doomed');
      await Promise.race([closed(client), wait(5000)]);
      expect(client.connected).to.equal(false);
      expect(await connackCode(url, { clientId: 'doomed', username: 'doomed', password: secrets.doomed! })).to.equal(5);
    });

    it('keeps the identity and grants on the Aedes client', async () => {
      await connect('gw-a');
      const client = (fx.broker.aedes as unknown as { clients: Record<string, never> }).clients['gw-a'];
      const session = sessionOf(client);
      expect(session?.principal).to.deep.equal({ role: 'gateway', id: 'gw-a', branch: 'demo' });
      expect(session?.listener).to.equal('tcp');
      expect(session?.grants.publish).to.include(topics.gatewayState(demo, gwA));
    });
  });

  describe('PUBLISH (M2, M6)', () => {
    it("accepts a gateway's own uplink, state, requests, command answers, its branch's scans and relayed machine answers", async () => {
      const a = await connect('gw-a');
      const received: string[] = [];
      fx.broker.aedes.subscribe(
        'nxg/v1/b/demo/#',
        (packet, cb) => {
          received.push(packet.topic);
          cb();
        },
        () => undefined,
      );
      const allowed = [
        topics.gatewayUplink(demo, gwA, 'records'),
        topics.gatewayState(demo, gwA),
        topics.gatewayRequest(demo, gwA, 'check-in'),
        topics.gatewayCommandResponse(demo, gwA, 'config'),
        topics.accessScan(demo, asReaderId('door-1')),
        topics.machineCommandResponse(demo, asMachineId('tm-01'), 'link'),
      ];
      for (const topic of allowed) await a.publishAsync(topic, '{}', { qos: 1, retain: topic.endsWith('/state') });
      const deadline = Date.now() + 5000;
      while (Date.now() < deadline && !allowed.every((t) => received.includes(t))) await wait(20);
      expect(received).to.include.members(allowed);
      expect(a.connected).to.equal(true);
    });

    const refusedCases: [string, string, { qos?: 0 | 1 | 2; retain?: boolean }, string][] = [
      ['another branch (M2)', 'nxg/v1/b/other/m/x/workout', { qos: 1 }, 'out-of-scope'],
      ['a topic outside the tree', 'nxg/v1/b/demo/gw/gw-a/whatever', { qos: 1 }, 'not-in-tree'],
      ['another gateway of its branch', topics.gatewayUplink(demo, gwB, 'records'), { qos: 1 }, 'out-of-scope'],
      ['another branch, in the tree', topics.gatewayUplink(other, gwOther, 'records'), { qos: 1 }, 'out-of-scope'],
      ['a command to a machine', topics.machineCommand(demo, asMachineId('tm-01'), 'link'), { qos: 1 }, 'out-of-scope'],
      ['its own ack (cloud → gateway)', topics.gatewayAck(demo, gwA), { qos: 1 }, 'out-of-scope'],
      ['$SYS (M6)', '$SYS/x', { qos: 0 }, 'not-in-tree'],
      ['QoS 2 (A3)', topics.gatewayUplink(demo, gwA, 'records'), { qos: 2 }, 'qos2'],
      ['a retained uplink', topics.gatewayUplink(demo, gwA, 'records'), { qos: 1, retain: true }, 'retain'],
    ];
    for (const [what, topic, opts, reason] of refusedCases) {
      it(`disconnects a gateway publishing to ${what}, without PUBACK, and counts it`, async () => {
        const before = await metricValue(fx.registry, 'mqtt_authz_denied_total', { action: 'publish', reason });
        const a = await connect('gw-a');
        const leaked: string[] = [];
        const deliver = (packet: { topic: string }, cb: () => void) => {
          leaked.push(packet.topic);
          cb();
        };
        fx.broker.aedes.subscribe(topic.startsWith('$') ? '$SYS/x' : topic, deliver, () => undefined);
        let acked = false;
        a.publish(topic, '{"x":1}', { qos: opts.qos ?? 1, retain: opts.retain ?? false }, (err) => {
          if (!err) acked = true;
        });
        await Promise.race([closed(a), wait(5000)]);
        expect(a.connected, 'connection closed').to.equal(false);
        expect(acked, 'no PUBACK').to.equal(opts.qos === 0 ? acked : false);
        expect(leaked).to.deep.equal([]);
        expect(await metricValue(fx.registry, 'mqtt_authz_denied_total', { action: 'publish', reason })).to.equal(
          before + 1,
        );
        fx.broker.aedes.unsubscribe(topic.startsWith('$') ? '$SYS/x' : topic, deliver, () => undefined);
      });
    }

    it('disconnects an observer that publishes anything', async () => {
      const o = await connect('ops', 'ops.pub');
      o.publish(topics.gatewayState(demo, gwA), '{}', { qos: 1 });
      await Promise.race([closed(o), wait(5000)]);
      expect(o.connected).to.equal(false);
      expect(
        await metricValue(fx.registry, 'mqtt_authz_denied_total', { action: 'publish', reason: 'read-only' }),
      ).to.equal(1);
    });
  });

  describe('last will', () => {
    it("publishes a gateway's will on its own state when it drops; refuses a CONNECT whose will is out of scope", async () => {
      const o = await connect('ops', 'ops.will');
      const got: { topic: string; payload: string }[] = [];
      o.on('message', (topic, payload) => got.push({ topic, payload: payload.toString() }));
      await o.subscribeAsync('nxg/v1/b/demo/gw/+/state', { qos: 1 });
      await wait(50);
      got.length = 0; // retained births of earlier tests
      const gw = await connectClient(url, {
        username: 'gw-a',
        password: secrets['gw-a']!,
        clientId: 'gw-a',
        will: { topic: topics.gatewayState(demo, gwA), payload: Buffer.from('{"online":false}'), qos: 1, retain: true },
      });
      // A will its sender could not publish is refused at CONNECT, not stored to be checked (or swept up) later:
      // an observer's, a gateway's on another gateway's state, a retained uplink.
      const refusedWills = await Promise.all(
        [
          { id: 'ops', clientId: 'ops.sneaky', topic: topics.gatewayState(demo, gwB), retain: true },
          { id: 'gw-a', clientId: 'gw-a', topic: topics.gatewayState(demo, gwB), retain: true },
          { id: 'gw-a', clientId: 'gw-a', topic: topics.gatewayState(other, gwOther), retain: true },
          { id: 'gw-a', clientId: 'gw-a', topic: topics.gatewayUplink(demo, gwA, 'records'), retain: true },
        ].map(({ id, clientId, topic, retain }) =>
          connackCode(url, {
            username: id,
            password: secrets[id]!,
            clientId,
            will: { topic, payload: Buffer.from('{"forged":true}'), qos: 1, retain },
          }),
        ),
      );
      expect(refusedWills).to.deep.equal([5, 5, 5, 5]);
      expect(
        await metricValue(fx.registry, 'mqtt_connections_refused_total', {
          listener: 'tcp',
          reason: 'will-not-allowed',
        }),
      ).to.equal(4);
      // And a CONNECT refused for a wrong secret stores no will at all (M1).
      const refusedWill = await connectClient(url, {
        username: 'gw-b',
        password: 'wrong',
        clientId: 'gw-b',
        will: { topic: topics.gatewayState(demo, gwB), payload: Buffer.from('{"refused":true}'), qos: 1, retain: true },
      }).catch((err: { code?: unknown }) => err.code);
      expect(refusedWill).to.equal(5);
      // Both drop without DISCONNECT.
      gw.stream.destroy();
      const deadline = Date.now() + 5000;
      while (Date.now() < deadline && got.length === 0) await wait(20);
      await wait(100);
      expect(got).to.deep.equal([{ topic: topics.gatewayState(demo, gwA), payload: '{"online":false}' }]);
    });
  });

  describe('SUBSCRIBE and delivery (M3)', () => {
    it('refuses filters past MAX_SUBSCRIPTIONS_PER_CLIENT (0x80), and takes one again after an UNSUBSCRIBE', async () => {
      const o = await connect('ops', 'ops.many');
      const filter = (i: number) => `nxg/v1/b/demo/live/machines/m-${i}`;
      const first = Array.from({ length: MAX_SUBSCRIPTIONS_PER_CLIENT }, (_, i) => filter(i));
      expect(new Set(await subscribeGranted(o, first))).to.deep.equal(new Set([1]));
      // Again the same filters: not new, so still granted; one more: refused, and the connection stays.
      expect(await subscribeGranted(o, [filter(0), filter(MAX_SUBSCRIPTIONS_PER_CLIENT)])).to.deep.equal([1, 128]);
      expect(o.connected).to.equal(true);
      await o.unsubscribeAsync(filter(1));
      expect(await subscribeGranted(o, [filter(MAX_SUBSCRIPTIONS_PER_CLIENT)])).to.deep.equal([1]);
      expect(
        await metricValue(fx.registry, 'mqtt_authz_denied_total', {
          action: 'subscribe',
          reason: 'too-many-subscriptions',
        }),
      ).to.equal(1);
    });

    it('answers 0x80 to #, nxg/v1/b/+/#, $SYS/# and other branches, grants its own filters at QoS ≤ 1', async () => {
      const a = await connect('gw-a');
      const granted = await subscribeGranted(
        a,
        [
          '#',
          'nxg/v1/b/+/#',
          '$SYS/#',
          'nxg/v1/b/other/gw/gw-other/ack',
          'nxg/v1/b/demo/gw/gw-b/ack',
          'nxg/v1/b/demo/gw/gw-a/#',
          topics.gatewayAck(demo, gwA),
          'nxg/v1/b/demo/gw/gw-a/cmd/+',
          'nxg/v1/b/demo/m/+/cmd/+',
          topics.cloudState(),
        ],
        2,
      );
      expect(granted).to.deep.equal([128, 128, 128, 128, 128, 128, 1, 1, 1, 1]);
      expect(a.connected).to.equal(true);
    });

    it('never delivers a retained message of another branch, even to a wide filter', async () => {
      await new Promise<void>((resolve, reject) =>
        fx.broker.aedes.publish(
          {
            cmd: 'publish',
            topic: topics.gatewayCommand(other, gwOther, 'config'),
            payload: Buffer.from('secret-config'),
            qos: 1,
            retain: true,
            dup: false,
          },
          (err) => (err ? reject(err) : resolve()),
        ),
      );
      const a = await connect('gw-a');
      const got: string[] = [];
      a.on('message', (topic) => got.push(topic));
      expect(await subscribeGranted(a, ['#', 'nxg/v1/b/+/gw/+/cmd/+', 'nxg/v1/b/demo/gw/gw-a/cmd/+'])).to.deep.equal([
        128, 128, 1,
      ]);
      await wait(200);
      expect(got).to.deep.equal([]);
    });

    it('receives the retained cloud birth, its commands and acks, but nothing of gateway B', async () => {
      const a = await connect('gw-a');
      const got: { topic: string; payload: string }[] = [];
      a.on('message', (topic, payload) => got.push({ topic, payload: payload.toString() }));
      await a.subscribeAsync([topics.cloudState(), 'nxg/v1/b/demo/gw/gw-a/cmd/+', topics.gatewayAck(demo, gwA)], {
        qos: 1,
      });
      const publish = (topic: string) =>
        new Promise<void>((resolve) =>
          fx.broker.aedes.publish(
            { cmd: 'publish', topic, payload: Buffer.from('{}'), qos: 1, retain: false, dup: false },
            () => resolve(),
          ),
        );
      await publish(topics.gatewayCommand(demo, gwA, 'rebirth'));
      await publish(topics.gatewayAck(demo, gwA));
      await publish(topics.gatewayAck(demo, gwB));
      // Until A's own messages are in (not a fixed pause: a loaded machine may take longer than any guess); B's ack
      // was published after A's, so had it been delivered it would be there by then too.
      const expected = [topics.cloudState(), topics.gatewayCommand(demo, gwA, 'rebirth'), topics.gatewayAck(demo, gwA)];
      const deadline = Date.now() + 5000;
      while (Date.now() < deadline && !expected.every((t) => got.some((m) => m.topic === t))) await wait(20);
      await wait(50);
      const birth = got.find((m) => m.topic === topics.cloudState());
      expect(birth, 'retained birth').to.not.equal(undefined);
      expect(JSON.parse(birth!.payload)).to.deep.include({ online: true, version: '0.1.0' });
      expect(got.map((m) => m.topic)).to.include.members([
        topics.gatewayCommand(demo, gwA, 'rebirth'),
        topics.gatewayAck(demo, gwA),
      ]);
      expect(got.map((m) => m.topic)).to.not.include(topics.gatewayAck(demo, gwB));
    });

    it("lets an observer read its branches' live, gateway state and machine data, nothing else", async () => {
      const o = await connect('ops', 'ops.sub');
      const granted = await subscribeGranted(o, [
        'nxg/v1/b/demo/live/#',
        'nxg/v1/b/demo/gw/+/state',
        'nxg/v1/b/demo/m/+/telemetry',
        'nxg/v1/b/demo/m/+/event',
        'nxg/v1/b/demo/gw/+/up/+',
        'nxg/v1/b/demo/m/#',
        'nxg/v1/b/other/live/#',
        'nxg/v1/b/demo/#',
      ]);
      expect(granted).to.deep.equal([1, 1, 1, 128, 128, 128, 128, 128]);
      const all = await connect('ops-all', 'ops-all.x');
      const both = await all.subscribeAsync(['nxg/v1/b/demo/live/#', 'nxg/v1/b/other/live/#'], { qos: 1 });
      expect(both.map((g) => g.qos)).to.deep.equal([1, 1]);
    });

    it('counts messages in and out by topic class', async () => {
      const a = await connect('gw-a');
      const o = await connect('ops', 'ops.count');
      await o.subscribeAsync('nxg/v1/b/demo/gw/+/state', { qos: 1 });
      const beforeIn = await metricValue(fx.registry, 'mqtt_messages_in_total', { class: 'gateway-state' });
      const beforeOut = await metricValue(fx.registry, 'mqtt_messages_out_total', { class: 'gateway-state' });
      const got = new Promise((resolve) => o.once('message', resolve));
      await a.publishAsync(topics.gatewayState(demo, gwA), '{"online":true}', { qos: 1, retain: true });
      await got;
      expect(await metricValue(fx.registry, 'mqtt_messages_in_total', { class: 'gateway-state' })).to.equal(
        beforeIn + 1,
      );
      expect(await metricValue(fx.registry, 'mqtt_messages_out_total', { class: 'gateway-state' })).to.be.at.least(
        beforeOut + 1,
      );
      expect(await metricValue(fx.registry, 'mqtt_clients_connected', { role: 'gateway' })).to.equal(1);
      expect(await metricValue(fx.registry, 'mqtt_clients_connected', { role: 'observer' })).to.equal(1);
    });
  });

  describe('health', () => {
    it('reports the broker up with its clients', async () => {
      await connect('gw-a');
      const details = await fx.broker.healthCheck().check();
      expect(details).to.deep.include({ clients: 1 });
    });
  });
});
