import net from 'node:net';
import { expect } from 'chai';
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';

type QoS = 0 | 1 | 2;
import { newMsgId, topics } from '../../../protocol/index.ts';
import { examples } from '../../../protocol/examples.ts';
import { createLogger } from '../../../tools/runtime/logger.ts';
import { systemClock } from '../../../tools/runtime/clock.ts';
import { startGateway, type RunningGateway } from '../gateway.ts';
import { createTestSite, statusOf, telemetryOf, testConfig, workoutOf, type TestSite } from '../testing/fixtures.ts';
import { eventually } from '../testing/stand-in-cloud.ts';
import { MAX_PENDING_PER_ADDRESS } from './broker.ts';
import { MemoryQueue } from '../uplink/memory-queue.ts';
import type { UplinkQueue } from '../uplink/queue.ts';

/** The granted QoS list of a SUBSCRIBE (mqtt.js rejects when every filter was refused). */
async function grantedOf(client: MqttClient, filter: string, qos: QoS): Promise<number[]> {
  try {
    return (await client.subscribeAsync(filter, { qos })).map((g) => g.qos);
  } catch (err) {
    const packet = (err as { packet?: { granted?: number[] } }).packet;
    if (packet?.granted === undefined) throw err;
    return packet.granted;
  }
}
const closeOf = (client: MqttClient) => new Promise<void>((resolve) => client.once('close', () => resolve()));
const log = createLogger({ name: 'test', level: 'silent' });
// Nothing listens on port 1: the gateway runs with its uplink down, which intake does not care about.
const NO_CLOUD = 'mqtt://127.0.0.1:1';

describe('edge gateway: local broker for machines', function () {
  this.timeout(20_000);
  let site: TestSite;
  let gateway: RunningGateway | undefined;
  const clients: MqttClient[] = [];

  before(async () => {
    site = await createTestSite(3);
  });
  after(async () => {
    await site.remove();
  });
  afterEach(async () => {
    await Promise.all(clients.splice(0).map((c) => c.endAsync(true)));
    await gateway?.stop();
    gateway = undefined;
  });

  async function start(queue?: UplinkQueue): Promise<RunningGateway> {
    gateway = await startGateway({
      config: testConfig(site, NO_CLOUD),
      log,
      clock: systemClock,
      defaultMetrics: false,
      ...(queue ? { queue } : {}),
    });
    return gateway;
  }

  async function connectMachine(index: number, options: IClientOptions = {}): Promise<MqttClient> {
    const machine = site.machines[index]!;
    const client = await mqtt.connectAsync(`mqtt://127.0.0.1:${gateway!.brokerPort}`, {
      clientId: machine.id,
      username: machine.id,
      password: machine.secret,
      reconnectPeriod: 0,
      ...options,
    });
    client.on('error', () => undefined);
    clients.push(client);
    return client;
  }

  async function refusedWith(options: IClientOptions): Promise<number | undefined> {
    try {
      const c = await mqtt.connectAsync(`mqtt://127.0.0.1:${gateway!.brokerPort}`, { reconnectPeriod: 0, ...options });
      clients.push(c);
      return undefined;
    } catch (err) {
      return (err as { code?: number }).code;
    }
  }

  /** Publishes and waits until the broker closes the connection; true if it did. */
  async function publishGetsDisconnected(client: MqttClient, topic: string, payload: string, qos: QoS) {
    const closed = closeOf(client);
    client.publish(topic, payload, { qos }, () => undefined);
    await Promise.race([closed, new Promise((r) => setTimeout(r, 3_000))]);
    return !client.connected;
  }

  it('refuses unknown machines, wrong secrets, a client id other than the username, and anonymous clients (CONNACK 5)', async () => {
    await start();
    const [m1, m2] = site.machines;
    expect(await refusedWith({ clientId: 'm-99', username: 'm-99', password: m1!.secret })).to.equal(5);
    expect(await refusedWith({ clientId: m1!.id, username: m1!.id, password: m2!.secret })).to.equal(5);
    expect(await refusedWith({ clientId: m1!.id, username: m1!.id })).to.equal(5);
    expect(await refusedWith({ clientId: m2!.id, username: m1!.id, password: m1!.secret })).to.equal(5);
    expect(await refusedWith({ clientId: 'anon' })).to.equal(5);
    expect(await refusedWith({ clientId: 'Bad+Id', username: 'Bad+Id', password: m1!.secret })).to.equal(5);
    const metrics = await gateway!.metrics.registry.getSingleMetricAsString('gateway_machine_connects_total');
    expect(metrics).to.match(/result="refused"[^\n]* 6/);
  });

  it('queues a valid workout (QoS 1) and telemetry (QoS 0) from their own machine, in their lanes', async () => {
    const gw = await start();
    const m = site.machines[0]!;
    const client = await connectMachine(0);
    // A field of a newer minor version travels on: the record carries the payload as the machine sent it.
    const workout = { ...workoutOf(m.id, 1), futureField: 'kept' };
    await client.publishAsync(topics.machineWorkout(site.branch, m.id), JSON.stringify(workout), { qos: 1 });
    await client.publishAsync(topics.machineTelemetry(site.branch, m.id), JSON.stringify(telemetryOf(m.id, 2)), {
      qos: 0,
    });
    await client.publishAsync(topics.machineStatus(site.branch, m.id), JSON.stringify(statusOf(m.id, 3)), {
      qos: 1,
      retain: true,
    });
    await eventually(() => gw.queue.stats().depth === 3, 'three records queued');
    const records = await gw.queue.peek('records', { limit: 10 });
    expect(records.map((r) => r.kind)).to.deep.equal(['workout', 'status']);
    expect(records[0]!.msgId).to.equal(workout.msgId);
    const held = JSON.parse(records[0]!.json) as { kind: string; receivedAt: number; payload: unknown };
    expect(held.payload).to.deep.equal(workout);
    expect(held.receivedAt).to.be.a('number');
    expect((await gw.queue.peek('telemetry', { limit: 10 })).length).to.equal(1);
  });

  it('refuses a machine’s QoS 1 events beyond GATEWAY_EVENT_MAX_HZ (no PUBACK), keeps its order, others unaffected', async () => {
    gateway = await startGateway({
      config: { ...testConfig(site, NO_CLOUD), eventMaxHz: 5 },
      log,
      clock: systemClock,
      defaultMetrics: false,
    });
    const gw = gateway;
    const [flooder, calm] = [site.machines[0]!, site.machines[1]!];
    const eventOf = (machine: string, seq: number) =>
      JSON.stringify({ ...examples.MachineEvent[0], msgId: newMsgId(), source: machine, bootId: 'boot-a', seq });
    const flood = await connectMachine(0);
    const closed = new Promise<void>((resolve) => flood.once('close', () => resolve()));
    const sent = Array.from({ length: 40 }, (_, i) => eventOf(flooder.id, i + 1));
    const acked: string[] = [];
    for (const payload of sent) {
      flood.publish(topics.machineEvent(site.branch, flooder.id), payload, { qos: 1 }, (err) => {
        if (!err) acked.push((JSON.parse(payload) as { msgId: string }).msgId);
      });
    }
    await closed; // refused: no PUBACK, and Aedes closes the connection
    const queuedIds = async () =>
      (await gw.queue.peek('records', { limit: 1_000 }))
        .filter((r) => r.source === flooder.id)
        .map((r) => r.msgId as string);
    // The events within the budget may still be committing when the refusal closes the connection.
    await eventually(
      async () => {
        const held = await queuedIds();
        return held.length >= 5 && acked.every((id) => held.includes(id));
      },
      'the events within the budget committed',
      15_000,
    );
    const queued = await queuedIds();
    const ids = sent.map((p) => (JSON.parse(p) as { msgId: string }).msgId);
    // The 5/s budget (a one-second burst): a few stored, in publish order with no gap, each one PUBACKed; none after.
    expect(queued.length).to.be.at.least(5).and.below(sent.length);
    expect(queued).to.deep.equal(ids.slice(0, queued.length));
    expect(acked.every((id) => queued.includes(id))).to.equal(true);
    expect(gw.rejected.counts()['machine:event-rate']).to.be.at.least(1);
    // The other machine is not limited by the flooder.
    const other = await connectMachine(1);
    for (let i = 0; i < 3; i++) {
      await other.publishAsync(topics.machineEvent(site.branch, calm.id), eventOf(calm.id, i + 1), { qos: 1 });
    }
    // The flooder reconnects and resends what was not acknowledged, at the allowed rate: stored in its order.
    await flood.endAsync(true);
    const again = await connectMachine(0);
    const rest = sent.slice(queued.length, queued.length + 4);
    await new Promise((r) => setTimeout(r, 1_000)); // the budget refills
    for (const payload of rest)
      await again.publishAsync(topics.machineEvent(site.branch, flooder.id), payload, { qos: 1 });
    expect(await queuedIds()).to.deep.equal(ids.slice(0, queued.length + 4));
    expect((await gw.queue.peek('records', { limit: 1_000 })).filter((r) => r.source === calm.id).length).to.equal(3);
  });

  it('drops a machine’s telemetry beyond GATEWAY_TELEMETRY_MAX_HZ, counted, without touching other machines', async () => {
    const gw = await start();
    const [flooder, calm] = [site.machines[0]!, site.machines[1]!];
    const flood = await connectMachine(0);
    const other = await connectMachine(1);
    const sent = 300;
    // QoS 1 so each publish resolves once intake decided (the protocol's QoS 0 takes the same path).
    await Promise.all(
      Array.from({ length: sent }, (_, i) =>
        flood.publishAsync(
          topics.machineTelemetry(site.branch, flooder.id),
          JSON.stringify(telemetryOf(flooder.id, i + 1)),
          {
            qos: 1,
          },
        ),
      ),
    );
    for (let i = 0; i < 5; i++) {
      await other.publishAsync(
        topics.machineTelemetry(site.branch, calm.id),
        JSON.stringify(telemetryOf(calm.id, i + 1)),
        {
          qos: 1,
        },
      );
    }
    const queued = await gw.queue.peek('telemetry', { limit: 1_000 });
    const fromFlooder = queued.filter(
      (r) => (JSON.parse(r.json) as { payload: { source: string } }).payload.source === flooder.id,
    );
    const dropped = gw.rejected.counts()['machine:telemetry-rate'] ?? 0;
    // The cap is 50/s with a one-second burst: far fewer than 300 in the short time the burst took.
    expect(fromFlooder.length).to.be.at.least(50).and.below(sent);
    expect(dropped).to.equal(sent - fromFlooder.length);
    expect(queued.length - fromFlooder.length, 'the other machine is not limited by the flooder').to.equal(5);
  });

  it('disconnects a machine publishing as another machine, outside the tree, or in another branch', async () => {
    const gw = await start();
    const [m1, m2] = site.machines;
    const cases = [
      topics.machineWorkout(site.branch, m2!.id),
      'nxg/v1/b/other/m/m-01/workout',
      `nxg/v1/b/${site.branch}/live/machines/${m1!.id}`,
      `nxg/v1/b/${site.branch}/m/${m1!.id}/cmd/link`,
      `nxg/v1/b/${site.branch}/gw/${site.gatewayId}/up/records`,
      'somewhere/else',
    ];
    for (const topic of cases) {
      const client = await connectMachine(0);
      expect(await publishGetsDisconnected(client, topic, JSON.stringify(workoutOf(m1!.id, 1)), 1), topic).to.equal(
        true,
      );
    }
    expect(gw.queue.stats().depth).to.equal(0);
  });

  it('disconnects a QoS 2 publish, even to its own topic', async () => {
    const gw = await start();
    const m = site.machines[0]!;
    const client = await connectMachine(0);
    const topic = topics.machineWorkout(site.branch, m.id);
    expect(await publishGetsDisconnected(client, topic, JSON.stringify(workoutOf(m.id, 1)), 2)).to.equal(true);
    expect(gw.queue.stats().depth).to.equal(0);
  });

  it('grants only its own command topics, refusing QoS 2 and anything else with 0x80', async () => {
    await start();
    const m = site.machines[0]!;
    const client = await connectMachine(0);
    expect(await grantedOf(client, topics.machineCommand(site.branch, m.id, 'link'), 1)).to.deep.equal([1]);
    expect(await grantedOf(client, topics.machineCommand(site.branch, m.id, 'display'), 2)).to.deep.equal([128]);
    expect(await grantedOf(client, `nxg/v1/b/${site.branch}/m/${m.id}/cmd/+`, 0)).to.deep.equal([0]);
    for (const filter of [
      `nxg/v1/b/${site.branch}/m/${site.machines[1]!.id}/cmd/+`,
      `nxg/v1/b/${site.branch}/m/+/cmd/+`,
      `nxg/v1/b/${site.branch}/m/${m.id}/#`,
      `nxg/v1/b/${site.branch}/m/${m.id}/workout`,
      '#',
      '$SYS/#',
    ]) {
      expect(await grantedOf(client, filter, 1), filter).to.deep.equal([128]);
    }
    expect(client.connected).to.equal(true);
  });

  it('acknowledges an invalid or foreign-source payload, counts and keeps it, and valid traffic flows on', async () => {
    const gw = await start();
    const [m1, m2] = site.machines;
    const client = await connectMachine(0);
    const topic = topics.machineWorkout(site.branch, m1!.id);
    await client.publishAsync(topic, 'not json', { qos: 1 });
    await client.publishAsync(topic, JSON.stringify({ ...workoutOf(m1!.id, 1), reps: -3 }), { qos: 1 });
    await client.publishAsync(topic, JSON.stringify(workoutOf(m2!.id, 2)), { qos: 1 });
    await client.publishAsync(topics.machineTelemetry(site.branch, m1!.id), '', { qos: 0 });
    await client.publishAsync(topic, JSON.stringify(workoutOf(m1!.id, 3)), { qos: 1 });
    expect(client.connected).to.equal(true);
    await eventually(() => gw.queue.stats().depth === 1, 'the valid record queued');
    await eventually(() => gw.rejected.total === 4, 'four refusals recorded');
    expect(gw.rejected.counts()).to.deep.equal({
      'machine:not-json': 1,
      'machine:invalid': 1,
      'machine:wrong-source': 1,
      'machine:empty': 1,
    });
    const entries = gw.rejected.entries();
    expect(entries.map((e) => e.reason)).to.deep.equal(['not-json', 'invalid', 'wrong-source', 'empty']);
    expect(entries[0]).to.deep.include({ origin: 'machine', source: m1!.id, topic, bytes: 8 });
    expect(entries[0]!.payload?.toString()).to.equal('not json');
    expect(entries[1]!.path).to.be.a('string');
    const text = await gw.metrics.registry.getSingleMetricAsString('gateway_rejected_total');
    expect(text).to.include('reason="wrong-source"');
  });

  it('sends the PUBACK only after the queue append has finished', async () => {
    let release!: () => void;
    let appendStarted!: () => void;
    const started = new Promise<void>((r) => (appendStarted = r));
    const gate = new Promise<void>((r) => (release = r));
    const queue = new MemoryQueue({
      capRecords: 100,
      capBytes: 1_000_000,
      beforeAppend: () => {
        appendStarted();
        return gate;
      },
    });
    const gw = await start(queue);
    const m = site.machines[0]!;
    const client = await connectMachine(0);
    let acked = false;
    const published = client
      .publishAsync(topics.machineWorkout(site.branch, m.id), JSON.stringify(workoutOf(m.id, 1)), { qos: 1 })
      .then(() => {
        acked = true;
      });
    await started;
    // The append is held open: give the broker every chance to ack early.
    await new Promise((r) => setTimeout(r, 300));
    expect(acked, 'PUBACK before the append finished').to.equal(false);
    expect(gw.queue.stats().depth).to.equal(0);
    release();
    await published;
    expect(acked).to.equal(true);
    expect(gw.queue.stats().depth).to.equal(1);
  });

  it('withholds the PUBACK and disconnects when the queue is full, losing nothing it acknowledged', async () => {
    const queue = new MemoryQueue({ capRecords: 2, capBytes: 1_000_000 });
    const gw = await start(queue);
    const m = site.machines[0]!;
    const client = await connectMachine(0);
    const topic = topics.machineWorkout(site.branch, m.id);
    await client.publishAsync(topic, JSON.stringify(workoutOf(m.id, 1)), { qos: 1 });
    await client.publishAsync(topic, JSON.stringify(workoutOf(m.id, 2)), { qos: 1 });
    let thirdAcked = false;
    client.publish(topic, JSON.stringify(workoutOf(m.id, 3)), { qos: 1 }, (err) => {
      if (!err) thirdAcked = true;
    });
    await closeOf(client);
    expect(thirdAcked).to.equal(false);
    expect(gw.queue.stats()).to.deep.include({ depth: 2, full: true });
    const res = await fetch(`http://127.0.0.1:${gw.healthPort}/health`);
    expect(res.status).to.equal(503);
    expect(((await res.json()) as { status: string }).status).to.equal('unavailable');
  });

  it('queues a machine’s last will (status offline) when its connection dies', async () => {
    const gw = await start();
    const m = site.machines[1]!;
    const will = { ...statusOf(m.id, 0), status: 'offline', lastWill: true };
    const client = await connectMachine(1, {
      will: {
        topic: topics.machineStatus(site.branch, m.id),
        payload: Buffer.from(JSON.stringify(will)),
        qos: 1,
        retain: true,
      },
    });
    client.stream.destroy();
    await eventually(() => gw.queue.stats().lanes.records.depth === 1, 'the will queued');
    const [record] = await gw.queue.peek('records', { limit: 1 });
    expect(JSON.parse(record!.json)).to.deep.include({ kind: 'status' });
    expect((JSON.parse(record!.json) as { payload: { lastWill: boolean } }).payload.lastWill).to.equal(true);
  });

  it('closes at once a connection over the per-address cap of connections without CONNECT (A5)', async () => {
    const gw = await start();
    const openSocket = async () => {
      const socket = net.connect(gw.brokerPort, '127.0.0.1');
      socket.on('error', () => undefined);
      await new Promise((resolve) => socket.once('connect', resolve));
      return socket;
    };
    const idle: net.Socket[] = [];
    try {
      for (let i = 0; i < MAX_PENDING_PER_ADDRESS; i++) idle.push(await openSocket());
      const extra = await openSocket();
      idle.push(extra);
      // Closed by the cap, not by connectTimeout (2 s in this configuration): the others are all still open.
      await new Promise((resolve) => extra.once('close', resolve));
      expect(idle.slice(0, -1).every((s) => !s.destroyed && s.readyState === 'open')).to.equal(true);
      const cut = await gw.metrics.registry.getSingleMetricAsString('gateway_mqtt_connections_cut_total');
      expect(cut).to.match(/reason="too-many-pending"[^\n]* 1/);
      // A closed idle socket frees its place: a machine connects, and its CONNECT frees the place it took.
      idle.shift()!.destroy();
      await eventually(async () => {
        const client = await mqtt
          .connectAsync(`mqtt://127.0.0.1:${gw.brokerPort}`, {
            clientId: site.machines[0]!.id,
            username: site.machines[0]!.id,
            password: site.machines[0]!.secret,
            reconnectPeriod: 0,
            connectTimeout: 1_000,
          })
          .catch(() => undefined);
        if (client) clients.push(client);
        return client !== undefined;
      }, 'a machine connected beside the idle sockets');
      // So one more idle socket fits again, and the one after it is over the cap: once that one is closed, the
      // broker has accepted the first (connections are accepted in order), which stays open.
      const fits = await openSocket();
      idle.push(fits);
      const over = await openSocket();
      idle.push(over);
      await new Promise((resolve) => over.once('close', resolve));
      expect(fits.readyState).to.equal('open');
      expect(await gw.metrics.registry.getSingleMetricAsString('gateway_mqtt_connections_cut_total')).to.match(
        /reason="too-many-pending"[^\n]* 2/,
      );
    } finally {
      for (const s of idle) s.destroy();
    }
  });

  it('cuts a connection whose packet is larger than the frame limit', async () => {
    const gw = await start();
    const m = site.machines[0]!;
    const client = await connectMachine(0);
    const big = JSON.stringify({ ...workoutOf(m.id, 1), pad: 'x'.repeat(70 * 1024) });
    expect(await publishGetsDisconnected(client, topics.machineWorkout(site.branch, m.id), big, 1)).to.equal(true);
    expect(gw.queue.stats().depth).to.equal(0);
    const cut = await gw.metrics.registry.getSingleMetricAsString('gateway_mqtt_connections_cut_total');
    expect(cut).to.match(/reason="oversized"[^\n]* 1/);
  });
});
