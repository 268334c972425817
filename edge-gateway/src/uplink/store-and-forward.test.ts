/**
 * The durable queue in the running gateway (SqliteQueue in its worker thread, the default): the refuse-with-alarm path at capacity, a
 * restart with the backlog on disk, the live path ahead of a backlog, and the drain rate limit.
 */
import { expect } from 'chai';
import mqtt, { type MqttClient } from 'mqtt';
import { topics } from '../../../protocol/index.ts';
import type { GatewayState, MsgId } from '../../../protocol/index.ts';
import { systemClock } from '../../../tools/runtime/clock.ts';
import { createLogger } from '../../../tools/runtime/logger.ts';
import type { GatewayConfig } from '../config.ts';
import { startGateway, type RunningGateway } from '../gateway.ts';
import type { HealthReport } from '../health/health-server.ts';
import { createTestSite, recordOf, telemetryOf, testConfig, workoutOf, type TestSite } from '../testing/fixtures.ts';
import { ackAll, eventually, ignoreAll, startStandInCloud, type StandInCloud } from '../testing/stand-in-cloud.ts';
import { startTcpProxy } from '../testing/tcp-proxy.ts';
import { WorkerSqliteQueue } from './worker-queue.ts';

const log = createLogger({ name: 'test', level: 'silent' });

describe('edge gateway: durable store-and-forward', function () {
  this.timeout(30_000);
  let site: TestSite;
  let cloud: StandInCloud;
  let gateway: RunningGateway | undefined;
  const clients: MqttClient[] = [];

  before(async () => {
    site = await createTestSite(3);
  });
  after(async () => {
    await site.remove();
  });
  beforeEach(async () => {
    cloud = await startStandInCloud({ id: site.gatewayId, secret: site.gatewaySecret });
  });
  afterEach(async () => {
    await Promise.all(clients.splice(0).map((c) => c.endAsync(true)));
    await gateway?.stop();
    gateway = undefined;
    await cloud.stop();
  });

  async function start(config: GatewayConfig): Promise<RunningGateway> {
    gateway = await startGateway({ config, log, clock: systemClock, defaultMetrics: false });
    return gateway;
  }

  async function connectMachine(index: number): Promise<MqttClient> {
    const machine = site.machines[index]!;
    const client = await mqtt.connectAsync(`mqtt://127.0.0.1:${gateway!.brokerPort}`, {
      clientId: machine.id,
      username: machine.id,
      password: machine.secret,
      reconnectPeriod: 0,
    });
    client.on('error', () => undefined);
    clients.push(client);
    return client;
  }

  async function health(gw: RunningGateway): Promise<{ status: number; body: HealthReport }> {
    const response = await fetch(`http://127.0.0.1:${gw.healthPort}/health`);
    return { status: response.status, body: (await response.json()) as HealthReport };
  }

  it('runs the SQLite queue under GATEWAY_DATA_DIR and reports the queue on /health', async () => {
    const config = testConfig(site, cloud.url);
    const gw = await start(config);
    expect(gw.queue).to.be.instanceOf(WorkerSqliteQueue);
    const queue = gw.queue as WorkerSqliteQueue;
    expect(queue.file).to.equal(config.queue.file);
    expect(queue.pragmas).to.deep.equal({ journalMode: 'wal', synchronous: 2, lockingMode: 'exclusive' });
    expect(config.queue.file.startsWith(config.dataDir)).to.equal(true);
    const machine = await connectMachine(0);
    const m = site.machines[0]!;
    await machine.publishAsync(topics.machineWorkout(site.branch, m.id), JSON.stringify(workoutOf(m.id, 1)), {
      qos: 1,
    });
    await eventually(() => gw.queue.stats().lanes.records.deleted === 1, 'the workout acked');
    const { status, body } = await health(gw);
    expect(status).to.equal(200);
    expect(body.uplink).to.equal('up');
    for (const lane of ['access', 'records', 'telemetry'] as const) {
      expect(body.queue[lane]).to.have.all.keys('depth', 'bytes', 'oldestAgeS', 'evicted', 'inFlightBatches');
    }
    expect(body.queue).to.include({ full: false, fullReason: null, forecastLow: false });
    expect(body.queue).to.have.property('offlineHoursLeft');
    expect(body.queue).to.have.property('drainPerS');
    expect(await queue.integrityCheck()).to.equal('ok');
  });

  it('at capacity: evicts telemetry, then refuses records without PUBACK, with the alarm on /health and the retained state within a second; recovers', async () => {
    cloud.policy = ignoreAll; // nothing is acked: the queue only fills
    const base = testConfig(site, cloud.url, { ackTimeoutMs: 500 });
    const gw = await start({ ...base, queue: { ...base.queue, capRecords: 6 } });
    await eventually(() => gw.forwarder.status().up, 'uplink up');
    const client = await connectMachine(0);
    const m = site.machines[0]!;
    const publishWorkout = (seq: number) =>
      client.publishAsync(topics.machineWorkout(site.branch, m.id), JSON.stringify(workoutOf(m.id, seq)), { qos: 1 });
    await client.publishAsync(topics.machineTelemetry(site.branch, m.id), JSON.stringify(telemetryOf(m.id, 1)), {
      qos: 1,
    });
    for (let seq = 1; seq <= 6; seq++) await publishWorkout(seq); // the 6th evicts the sample
    expect(gw.queue.stats().lanes.telemetry).to.deep.include({ depth: 0, evicted: 1 });
    expect(gw.queue.stats().lanes.records.depth).to.equal(6);

    // The 7th record does not fit: no PUBACK, the connection is closed (MQTT 3.1.1 has no negative PUBACK).
    const refusedAt = Date.now();
    let acked = false;
    const closed = new Promise<void>((resolve) => client.once('close', () => resolve()));
    publishWorkout(7).then(
      () => (acked = true),
      () => undefined,
    );
    await closed;
    expect(acked).to.equal(false);
    const { status, body } = await health(gw);
    expect(status).to.equal(503);
    expect(body.queue).to.include({ full: true, fullReason: 'capacity' });
    expect(body.queue.records.depth).to.equal(6);
    const stateTopic = topics.gatewayState(site.branch, site.gatewayId);
    await eventually(
      async () => {
        const state = (await cloud.retained(stateTopic)) as GatewayState | undefined;
        return state?.online === true && state.queue.full && state.queue.fullReason === 'capacity';
      },
      'the retained state shows the alarm',
      3_000,
    );
    // Published on the change, not at the next refresh (GATEWAY_STATE_INTERVAL_MS is 0 here: only on connect).
    expect(Date.now() - refusedAt).to.be.lessThan(3_000);
    const metrics = await gw.metrics.registry.getSingleMetricAsString('gateway_queue_full');
    expect(metrics).to.match(/gateway_queue_full\{[^}]*\} 1/);

    // The cloud acks again: records leave, the alarm clears, new records are accepted.
    cloud.policy = ackAll;
    await eventually(() => !gw.queue.stats().full, 'the alarm cleared', 10_000);
    const again = await connectMachine(0);
    await again.publishAsync(topics.machineWorkout(site.branch, m.id), JSON.stringify(workoutOf(m.id, 8)), {
      qos: 1,
    });
    await eventually(() => gw.queue.stats().depth === 0, 'everything delivered', 10_000);
  });

  it('keeps the backlog across a restart of the gateway while the cloud does not ack, and delivers it after', async () => {
    cloud.policy = ignoreAll;
    const config = testConfig(site, cloud.url, { ackTimeoutMs: 500 });
    let gw = await start(config);
    const client = await connectMachine(1);
    const m = site.machines[1]!;
    const sent: MsgId[] = [];
    for (let seq = 0; seq < 30; seq++) {
      const w = workoutOf(m.id, seq);
      sent.push(w.msgId);
      await client.publishAsync(topics.machineWorkout(site.branch, m.id), JSON.stringify(w), { qos: 1 });
    }
    await client.endAsync();
    clients.length = 0;
    await gw.stop();
    gateway = undefined;
    // Same configuration, same data directory: the same queue file.
    gw = await start(config);
    expect(gw.queue.stats().lanes.records.depth).to.equal(30);
    cloud.policy = ackAll;
    await eventually(() => gw.queue.stats().depth === 0, 'the backlog delivered after the restart', 10_000);
    const delivered = new Set(
      cloud.received
        .filter((b) => b.lane === 'records')
        .flatMap((b) => b.batch.records.flatMap((r) => (r.ok ? [r.record.payload.msgId as string] : []))),
    );
    expect(sent.filter((id) => !delivered.has(id))).to.deep.equal([]);
  });

  it("sends a machine's latest sample on the live path ahead of a backlog, then drains the backlog", async () => {
    cloud.policy = ignoreAll; // the backlog's batches stay unanswered: the telemetry window (2 batches) is full
    const gw = await start(testConfig(site, cloud.url, { ackTimeoutMs: 60_000 }));
    await eventually(() => gw.forwarder.status().up, 'uplink up');
    const other = site.machines[2]!;
    // All at once: group commit writes them in transactions of 100.
    await Promise.all(
      Array.from({ length: 1_600 }, (_, seq) => gw.queue.append(recordOf.telemetry(other.id, seq), Date.now())),
    );
    gw.forwarder.wake();
    await eventually(
      () => cloud.received.filter((b) => b.lane === 'telemetry').length === 2,
      'two backlog batches in flight',
    );
    const client = await connectMachine(0);
    const m = site.machines[0]!;
    const sample = telemetryOf(m.id, 1);
    await client.publishAsync(topics.machineTelemetry(site.branch, m.id), JSON.stringify(sample), { qos: 1 });
    await eventually(
      () => cloud.received.some((b) => b.batch.records.some((r) => r.ok && r.record.payload.msgId === sample.msgId)),
      'the latest sample sent live',
    );
    const telemetryBatches = cloud.received.filter((b) => b.lane === 'telemetry');
    expect(telemetryBatches).to.have.length(3);
    expect(telemetryBatches[2]!.batch.records).to.have.length(1);
    const live = await gw.metrics.registry.getSingleMetricAsString('gateway_uplink_live_records_total');
    expect(live).to.match(/lane="telemetry"[^\n]* 1/);
    // The cloud answers again (the resend after the ack timeout is not waited for: ack what is resent later).
    cloud.policy = ackAll;
    for (const b of telemetryBatches) {
      const ack = ackAll(b)!;
      await new Promise<void>((resolve) =>
        cloud.broker.publish(
          {
            cmd: 'publish',
            topic: topics.gatewayAck(site.branch, site.gatewayId),
            payload: Buffer.from(JSON.stringify(ack)),
            qos: 1,
            dup: false,
            retain: false,
          },
          () => resolve(),
        ),
      );
    }
    await eventually(() => gw.queue.stats().depth === 0, 'the backlog drained', 15_000);
    expect(gw.queue.stats().lanes.telemetry.deleted).to.equal(1_601);
  });

  it('drains a backlog no faster than GATEWAY_UPLINK_DRAIN_MAX_PER_S', async () => {
    const proxy = await startTcpProxy(cloud.port);
    proxy.mode = 'refuse'; // offline while the backlog builds
    const gw = await start(testConfig(site, `mqtt://127.0.0.1:${proxy.port}`, { drainMaxPerS: 1_000 }));
    const m = site.machines[0]!;
    await Promise.all(
      Array.from({ length: 3_000 }, (_, seq) => gw.queue.append(recordOf.workout(m.id, seq), Date.now())),
    );
    proxy.mode = 'pass';
    await eventually(() => gw.forwarder.status().up, 'uplink up');
    const started = Date.now();
    await eventually(() => gw.queue.stats().depth === 0, 'the backlog drained', 20_000);
    await proxy.close();
    // One second's worth may go at once (the bucket starts full), the rest at 1,000/s: at least ~2 s for 3,000.
    expect(Date.now() - started).to.be.at.least(1_800);
    const batches = cloud.received.filter((b) => b.lane === 'records');
    expect(batches.reduce((n, b) => n + b.batch.records.length, 0)).to.be.at.least(3_000);
  });
});
