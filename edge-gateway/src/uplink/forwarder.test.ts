import { expect } from 'chai';
import mqtt, { type MqttClient } from 'mqtt';
import {
  MAX_BATCH_BYTES,
  MAX_BATCH_RECORDS,
  asMachineId,
  filters,
  parsePayload,
  topics,
} from '../../../protocol/index.ts';
import { examples } from '../../../protocol/examples.ts';
import type { GatewayState, MsgId, UplinkAck } from '../../../protocol/index.ts';
import { systemClock } from '../../../tools/runtime/clock.ts';
import { createLogger } from '../../../tools/runtime/logger.ts';
import { startGateway, type RunningGateway } from '../gateway.ts';
import { createTestSite, recordOf, testConfig, workoutOf, type TestSite } from '../testing/fixtures.ts';
import { startTcpProxy } from '../testing/tcp-proxy.ts';
import { MemoryQueue } from './memory-queue.ts';
import {
  ackAll,
  eventually,
  ignoreAll,
  startStandInCloud,
  type ReceivedBatch,
  type StandInCloud,
} from '../testing/stand-in-cloud.ts';

const log = createLogger({ name: 'test', level: 'silent' });

describe('edge gateway: forwarder to the cloud', function () {
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

  async function start(overrides: Parameters<typeof testConfig>[2] = {}, url = cloud.url): Promise<RunningGateway> {
    gateway = await startGateway({
      config: testConfig(site, url, overrides),
      log,
      clock: systemClock,
      defaultMetrics: false,
    });
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
    clients.push(client);
    return client;
  }

  async function publishWorkouts(client: MqttClient, index: number, from: number, count: number): Promise<MsgId[]> {
    const m = site.machines[index]!;
    const ids: MsgId[] = [];
    for (let seq = from; seq < from + count; seq++) {
      const w = workoutOf(m.id, seq);
      ids.push(w.msgId);
      await client.publishAsync(topics.machineWorkout(site.branch, m.id), JSON.stringify(w), { qos: 1 });
    }
    return ids;
  }

  const msgIdsOf = (batches: readonly ReceivedBatch[]) =>
    batches.flatMap((b) => b.batch.records.flatMap((r) => (r.ok ? [r.record.payload.msgId as string] : [])));

  async function observeStates(): Promise<{ states: GatewayState[]; client: MqttClient }> {
    const observer = await mqtt.connectAsync(cloud.url, { clientId: 'observer-states', reconnectPeriod: 0 });
    clients.push(observer);
    const states: GatewayState[] = [];
    observer.on('message', (_topic, payload) => {
      const parsed = parsePayload('GatewayState', payload);
      if (parsed.ok) states.push(parsed.value);
    });
    await observer.subscribeAsync(filters.allGatewayStates(), { qos: 1 });
    return { states, client: observer };
  }

  it('forwards machine records in batches per lane and deletes them once the cloud acks them', async () => {
    const gw = await start();
    const machine = await connectMachine(0);
    const sent = await publishWorkouts(machine, 0, 0, 20);
    await eventually(() => gw.queue.stats().depth === 0, 'the queue drained by acks');
    const got = msgIdsOf(cloud.received.filter((b) => b.lane === 'records'));
    expect(got).to.deep.equal(sent); // each once, in the order the machine sent them
    for (const b of cloud.received) {
      expect(b.gateway).to.equal(site.gatewayId);
      expect(b.branch).to.equal(site.branch);
      expect(b.batch.records.every((r) => r.ok)).to.equal(true);
    }
    const acked = await gw.metrics.registry.getSingleMetricAsString('gateway_uplink_records_acked_total');
    expect(acked).to.match(/lane="records"[^\n]* 20/);
  });

  it('refuses start() after stop() with a clear error (one run per forwarder), and start() twice', async () => {
    const gw = await start();
    expect(() => gw.forwarder.start()).to.throw(/started twice/);
    await gw.forwarder.stop();
    expect(() => gw.forwarder.start()).to.throw(/start\(\) after stop\(\) is not supported/);
    expect(gw.forwarder.status().up).to.equal(false);
  });

  it('keeps batches within the protocol limits, one telemetry batch in flight, records in order', async () => {
    const gw = await start();
    const m = site.machines[1]!;
    const total = 1_200;
    await Promise.all(
      Array.from({ length: total }, (_, seq) => gw.queue.append(recordOf.telemetry(m.id, seq), Date.now())),
    );
    gw.forwarder.wake();
    await eventually(() => gw.queue.stats().depth === 0, 'the telemetry drained', 15_000);
    const batches = cloud.received.filter((b) => b.lane === 'telemetry');
    expect(batches.length).to.be.at.least(Math.ceil(total / MAX_BATCH_RECORDS));
    for (const b of batches) {
      expect(b.batch.records.length).to.be.at.most(MAX_BATCH_RECORDS);
      expect(b.bytes).to.be.at.most(MAX_BATCH_BYTES);
    }
    const seqs = batches.flatMap((b) => b.batch.records.map((r) => (r.ok ? r.record.payload.seq : -1)));
    expect(seqs).to.deep.equal(Array.from({ length: total }, (_, i) => i));
  });

  it('keeps records until acked: an unanswered batch is resent unchanged after the ack timeout', async () => {
    cloud.policy = ignoreAll;
    const gw = await start({ ackTimeoutMs: 500 });
    const machine = await connectMachine(0);
    const sent = await publishWorkouts(machine, 0, 0, 5);
    // Unanswered: nothing is deleted, and a batch comes again under its batchId with the same records.
    const copiesOf = (id: string) => cloud.received.filter((b) => b.batch.batchId === id);
    await eventually(() => cloud.received.some((b) => copiesOf(b.batch.batchId).length >= 2), 'a resend');
    expect(gw.queue.stats().depth).to.equal(5);
    const [first, resent] = copiesOf(cloud.received.find((b) => copiesOf(b.batch.batchId).length >= 2)!.batch.batchId);
    expect(resent!.batch.sentAt).to.equal(first!.batch.sentAt);
    expect(msgIdsOf([resent!])).to.deep.equal(msgIdsOf([first!]));
    cloud.policy = ackAll;
    await eventually(() => gw.queue.stats().depth === 0, 'acked after the acker answers');
    expect(new Set(msgIdsOf(cloud.received))).to.deep.equal(new Set(sent));
    const resends = await gw.metrics.registry.getSingleMetricAsString('gateway_uplink_batches_sent_total');
    expect(resends).to.include('attempt="resend"');
  });

  it('resends after the acker restarts, and after the cloud broker itself comes back', async () => {
    const gw = await start({ ackTimeoutMs: 600 });
    const machine = await connectMachine(0);
    await cloud.stopAcker();
    const early = await publishWorkouts(machine, 0, 0, 3);
    await new Promise((r) => setTimeout(r, 200));
    expect(gw.queue.stats().depth).to.equal(3);
    await cloud.startAcker();
    await eventually(() => gw.queue.stats().depth === 0, 'drained once the acker is back');

    // The whole cloud goes away: the gateway keeps accepting, reports the uplink down, and drains on return.
    const port = cloud.port;
    await cloud.stop();
    await eventually(() => !gw.forwarder.status().up, 'uplink down');
    const late = await publishWorkouts(machine, 0, 3, 4);
    const health = (await (await fetch(`http://127.0.0.1:${gw.healthPort}/health`)).json()) as {
      uplink: string;
      status: string;
      queue: { depth: number };
    };
    expect(health).to.deep.include({ uplink: 'down', status: 'degraded' });
    expect(health.queue.depth).to.equal(4);
    cloud = await startStandInCloud({ id: site.gatewayId, secret: site.gatewaySecret }, { port });
    await eventually(() => gw.queue.stats().depth === 0, 'drained after the cloud returned', 10_000);
    expect(msgIdsOf(cloud.received)).to.include.members(late);
    expect(early).to.have.length(3);
    expect(gw.forwarder.status().connects).to.be.at.least(2);
  });

  it('notices a black-holed link by keepalive, reconnects when it passes again, and loses nothing', async () => {
    const proxy = await startTcpProxy(cloud.port);
    try {
      const gw = await start({ keepaliveS: 1, ackTimeoutMs: 5_000 }, `mqtt://127.0.0.1:${proxy.port}`);
      await eventually(() => gw.forwarder.status().up, 'uplink up through the proxy');
      const machine = await connectMachine(0);
      const before = await publishWorkouts(machine, 0, 0, 3);
      await eventually(() => gw.queue.stats().depth === 0, 'acked through the proxy');
      proxy.mode = 'blackhole';
      const cutAt = Date.now();
      const during = await publishWorkouts(machine, 0, 3, 3); // accepted while the link is silently dead
      await eventually(() => !gw.forwarder.status().up, 'uplink down by keepalive', 10_000);
      const detectedMs = Date.now() - cutAt;
      expect(detectedMs).to.be.below(3 * 1.5 * 1_000 + 3_000);
      expect(gw.queue.stats().depth).to.equal(3);
      proxy.mode = 'pass';
      await eventually(() => gw.queue.stats().depth === 0, 'drained after the link passes again', 10_000);
      expect(msgIdsOf(cloud.received)).to.include.members([...before, ...during]);
      console.log(`      black-hole noticed after ${detectedMs} ms with keepalive 1 s`);
    } finally {
      await proxy.close();
    }
  });

  it('publishes a retained birth, has its last will published when the link dies, and goes offline cleanly', async () => {
    const { states } = await observeStates();
    const gw = await start();
    await eventually(() => states.some((s) => s.online), 'a birth');
    const birth = states.find((s) => s.online)!;
    expect(birth).to.deep.include({ online: true, bootId: gw.bootId, conn: 0 });
    const retained = await cloud.retained(topics.gatewayState(site.branch, site.gatewayId));
    expect(parsePayload('GatewayState', JSON.stringify(retained)).ok).to.equal(true);
    expect(retained).to.deep.include({ online: true, conn: 0 });

    cloud.dropClient(site.gatewayId);
    await eventually(() => states.some((s) => !s.online && s.lastWill === true), 'the last will');
    await eventually(() => states.some((s) => s.online && s.conn === 1), 'a new birth on the next connection');
    const will = states.find((s) => !s.online)!;
    expect(will).to.deep.include({ online: false, lastWill: true, conn: 0, bootId: gw.bootId });

    await gw.stop();
    gateway = undefined;
    const last = (await cloud.retained(topics.gatewayState(site.branch, site.gatewayId))) as GatewayState;
    expect(last).to.deep.include({ online: false, conn: 1 });
    expect(last.online === false && last.since).to.be.a('number');
    expect(last.online === false && last.lastWill).to.equal(undefined);
  });

  it('deletes acked and rejected records, returns unnamed ones in a new batch, and moves an unreadable batch aside', async () => {
    let answered = 0;
    cloud.policy = ({ batch }): UplinkAck | undefined => {
      answered += 1;
      const ids = batch.records.flatMap((r) => (r.ok ? [r.record.payload.msgId] : []));
      if (answered === 1) {
        // Ack the first, reject the second, leave the rest unanswered.
        return { batchId: batch.batchId, acked: ids.slice(0, 1), rejected: [{ index: 1, reason: 'too-old' }] };
      }
      return ackAll({ batch } as ReceivedBatch);
    };
    const gw = await start({ windowBatches: 1 });
    const m = site.machines[0]!;
    const records = Array.from({ length: 4 }, (_, i) => recordOf.workout(m.id, i));
    // Appended together (one group commit), so the first batch holds all four.
    await Promise.all(records.map((r) => gw.queue.append(r, Date.now())));
    gw.forwarder.wake();
    await eventually(() => gw.queue.stats().depth === 0, 'all settled');
    expect(cloud.received.length).to.equal(2);
    const [first, second] = cloud.received;
    expect(second!.batch.batchId).to.not.equal(first!.batch.batchId);
    expect(msgIdsOf([second!])).to.deep.equal([records[2]!.payload.msgId, records[3]!.payload.msgId]);
    const cloudRejected = gw.rejected.entries().filter((e) => e.origin === 'cloud');
    expect(cloudRejected).to.have.length(1);
    expect(cloudRejected[0]).to.deep.include({ reason: 'too-old', msgId: records[1]!.payload.msgId });

    // A batch the cloud could not read at all: its records go to the rejected list, not round and round.
    cloud.policy = ({ batch }) => ({ batchId: batch.batchId, acked: [], rejected: [], error: 'unreadable' });
    await gw.queue.append(recordOf.workout(m.id, 10), Date.now());
    gw.forwarder.wake();
    await eventually(() => gw.queue.stats().depth === 0, 'moved aside');
    expect(gw.rejected.counts()['cloud:unreadable']).to.equal(1);
  });

  it('sends records again when deleting them after an ack failed, instead of stranding them behind the cursor', async () => {
    // A queue whose first delete fails (a disk error in the durable queue): the acked records are still queued.
    class FlakyDeleteQueue extends MemoryQueue {
      failures = 1;
      override deleteBySeq(seqs: Iterable<number>): Promise<number> {
        if (this.failures > 0) {
          this.failures -= 1;
          return Promise.reject(new Error('injected delete failure'));
        }
        return super.deleteBySeq(seqs);
      }
    }
    const queue = new FlakyDeleteQueue({ capRecords: 1_000, capBytes: 1 << 20 });
    gateway = await startGateway({
      config: testConfig(site, cloud.url, { ackTimeoutMs: 60_000 }),
      log,
      clock: systemClock,
      defaultMetrics: false,
      queue,
    });
    const m = site.machines[0]!;
    const records = Array.from({ length: 3 }, (_, i) => recordOf.workout(m.id, i));
    for (const r of records) await queue.append(r, Date.now());
    gateway.forwarder.wake();
    // Without the fix the three records stay queued forever: out of flight, below the cursor, never sent again.
    await eventually(() => queue.stats().depth === 0, 'deleted after a second round');
    expect(queue.failures).to.equal(0);
    expect(cloud.received.length).to.equal(2);
    expect(msgIdsOf([cloud.received[1]!])).to.deep.equal(records.map((r) => r.payload.msgId));
    expect(gateway.forwarder.status().inFlight.records).to.deep.equal({ batches: 0, records: 0 });
  });

  it('sets aside a record too large for any batch instead of stalling its lane', async () => {
    const gw = await start();
    const m = site.machines[0]!;
    const huge = recordOf.workout(m.id, 1);
    (huge.payload as unknown as Record<string, string>).padding = 'x'.repeat(MAX_BATCH_BYTES);
    const normal = recordOf.workout(m.id, 2);
    await gw.queue.append(huge, Date.now());
    await gw.queue.append(normal, Date.now());
    gw.forwarder.wake();
    await eventually(() => gw.queue.stats().depth === 0, 'the lane moved on');
    expect(msgIdsOf(cloud.received)).to.deep.equal([normal.payload.msgId]);
    expect(gw.rejected.entries()[0]).to.deep.include({ origin: 'gateway', reason: 'too-large-for-batch' });
  });

  it('applies an ack for a batch it no longer tracks by msgId, and ignores an unreadable ack', async () => {
    cloud.policy = ignoreAll;
    const gw = await start({ ackTimeoutMs: 60_000 });
    const m = site.machines[0]!;
    const record = recordOf.workout(m.id, 1);
    await gw.queue.append(record, Date.now());
    gw.forwarder.wake();
    await eventually(() => cloud.received.length === 1, 'sent');
    const cloudClient = await mqtt.connectAsync(cloud.url, { clientId: 'observer-acker', reconnectPeriod: 0 });
    clients.push(cloudClient);
    const ackTopic = topics.gatewayAck(site.branch, site.gatewayId);
    await cloudClient.publishAsync(ackTopic, 'garbage', { qos: 1 });
    await cloudClient.publishAsync(
      ackTopic,
      JSON.stringify({ batchId: 'from-an-earlier-run', acked: [record.payload.msgId], rejected: [] }),
      { qos: 1 },
    );
    await eventually(() => gw.queue.stats().depth === 0, 'deleted by msgId');
    const acks = await gw.metrics.registry.getSingleMetricAsString('gateway_uplink_acks_total');
    expect(acks).to.include('result="invalid"').and.include('result="unknown-batch"');
  });

  it('relays a machine’s command response to the cloud broker as it is', async () => {
    await start();
    const observer = await mqtt.connectAsync(cloud.url, { clientId: 'observer-res', reconnectPeriod: 0 });
    clients.push(observer);
    const got = new Promise<string>((resolve) => observer.on('message', (_t, p) => resolve(p.toString())));
    await observer.subscribeAsync(filters.allMachineCommandResponses(), { qos: 1 });
    await eventually(() => gateway!.forwarder.status().up, 'uplink up');
    const machine = await connectMachine(2);
    const m = site.machines[2]!;
    const response = JSON.stringify({ reqId: 'req-1', ok: true });
    await machine.publishAsync(topics.machineCommandResponse(site.branch, m.id, 'link'), response, { qos: 1 });
    expect(await got).to.equal(response);
  });

  it('passes the cloud’s commands on to its machines, and only valid ones for machines it knows', async () => {
    const gw = await start();
    await eventually(() => gw.forwarder.status().up, 'uplink up');
    const m = site.machines[1]!;
    const machine = await connectMachine(1);
    const received: string[] = [];
    machine.on('message', (topic, payload) => received.push(`${topic} ${payload.toString()}`));
    await machine.subscribeAsync(`nxg/v1/b/${site.branch}/m/${m.id}/cmd/+`, { qos: 1 });
    const operator = await mqtt.connectAsync(cloud.url, { clientId: 'observer-commands', reconnectPeriod: 0 });
    clients.push(operator);
    const command = JSON.stringify(examples.DisplayCommand[0]);
    // The gateway's command subscription is made right after its ack subscription: wait until it holds.
    await eventually(async () => {
      await operator.publishAsync(topics.machineCommand(site.branch, m.id, 'display'), command, { qos: 1 });
      await new Promise((r) => setTimeout(r, 50));
      return received.length > 0;
    }, 'the command at the machine');
    expect(received[0]).to.equal(`${topics.machineCommand(site.branch, m.id, 'display')} ${command}`);
    await operator.publishAsync(topics.machineCommand(site.branch, m.id, 'display'), '{"nope":1}', { qos: 1 });
    await operator.publishAsync(topics.machineCommand(site.branch, asMachineId('m-99'), 'display'), command, {
      qos: 1,
    });
    await eventually(() => gw.rejected.total === 2, 'two commands refused');
    expect(gw.rejected.counts()).to.deep.equal({ 'cloud:invalid': 1, 'cloud:unknown-machine': 1 });
    const relayed = await gw.metrics.registry.getSingleMetricAsString('gateway_commands_relayed_total');
    expect(relayed).to.include('result="delivered"').and.include('result="invalid"');
  });

  it('does not send batches while the cloud refuses its ack subscription, and says so', async () => {
    await cloud.stop();
    cloud = await startStandInCloud(
      { id: site.gatewayId, secret: site.gatewaySecret },
      { refuseAckSubscription: true },
    );
    const gw = await start({ reconnectMinMs: 100, reconnectMaxMs: 200 });
    await gw.queue.append(recordOf.workout(site.machines[0]!.id, 1), Date.now());
    gw.forwarder.wake();
    await eventually(() => gw.forwarder.status().connects >= 2, 'repeated attempts');
    expect(gw.forwarder.status()).to.deep.include({
      up: false,
      lastError: 'ack subscription refused by the cloud broker',
    });
    expect(cloud.received).to.deep.equal([]);
    expect(gw.queue.stats().depth).to.equal(1);
  });

  it('never connects with a wrong secret, and says why on /health', async () => {
    const other = await createTestSite(1, site.gatewayId);
    try {
      gateway = await startGateway({
        config: testConfig(other, cloud.url),
        log,
        clock: systemClock,
        defaultMetrics: false,
      });
      await eventually(() => gateway!.forwarder.status().lastError !== undefined, 'a refusal');
      const res = await fetch(`http://127.0.0.1:${gateway.healthPort}/health`);
      const body = (await res.json()) as { uplink: string; uplinkError: string };
      expect(res.status).to.equal(200);
      expect(body.uplink).to.equal('down');
      expect(body.uplinkError).to.match(/Not authorized|refused/i);
    } finally {
      await other.remove();
    }
  });
});
