import { expect } from 'chai';
import { connectAsync, type MqttClient } from 'mqtt';
import type { Connection } from 'mongoose';
import { createManualClock } from '../../../tools/runtime/clock.ts';
import {
  asBranchId,
  asGatewayId,
  asMachineId,
  filters,
  newMsgId,
  parsePayload,
  topics,
} from '../../../protocol/index.ts';
import type { LiveMachine, UplinkAck } from '../../../protocol/index.ts';
import { connectMongoose, connectTestRedis, uniqueDbName, type TestRedis } from '../../../test/helpers/services.ts';
import {
  DEAD_LETTER_COLLECTION,
  RECORD_COLLECTIONS,
  TELEMETRY_BUCKET_SAMPLES,
  TELEMETRY_COLLECTION,
  type DeadLetterDocument,
} from './store.ts';
import { T0, TestGateway, batchId, machineRecords, startIngestFixture, type IngestFixture } from './testing.ts';

const branch = asBranchId('demo');
const gatewayId = asGatewayId('gw-demo-1');

async function metric(fixture: IngestFixture, name: string, labels: Record<string, string> = {}): Promise<number> {
  const found = (await fixture.registry.getSingleMetric(name)?.get())?.values ?? [];
  return found
    .filter((value) => Object.entries(labels).every(([k, v]) => value.labels[k] === v))
    .reduce((sum, value) => sum + value.value, 0);
}

/** Collects retained/live machine messages an app-like client receives. */
async function liveWatcher(
  url: string,
): Promise<{ client: MqttClient; next(machine: string, status?: string): Promise<LiveMachine> }> {
  const client = await connectAsync(url, { clientId: `app-${newMsgId().slice(0, 8)}`, reconnectPeriod: 0 });
  const seen: LiveMachine[] = [];
  const waiters: { match: (m: LiveMachine) => boolean; resolve: (m: LiveMachine) => void }[] = [];
  client.on('message', (_topic, payload) => {
    const parsed = parsePayload('LiveMachine', payload);
    if (!parsed.ok) throw new Error(`invalid live payload: ${parsed.reason}`);
    seen.push(parsed.value);
    for (const w of [...waiters]) {
      if (w.match(parsed.value)) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(parsed.value);
      }
    }
  });
  await client.subscribeAsync(filters.liveMachines(branch), { qos: 1 });
  return {
    client,
    next(machine, status) {
      const match = (m: LiveMachine) => m.machine === machine && (status === undefined || m.status === status);
      const found = seen.find(match);
      if (found) {
        seen.splice(seen.indexOf(found), 1);
        return Promise.resolve(found);
      }
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no live message for ${machine} ${status ?? ''}`)), 10_000);
        waiters.push({
          match,
          resolve: (m) => {
            clearTimeout(timer);
            seen.splice(seen.indexOf(m), 1);
            resolve(m);
          },
        });
      });
    },
  };
}

describe('ingest: gateway batches → MongoDB → ack → live state (real Aedes, mqtt.js, MongoDB stand-in, Redis)', function () {
  this.timeout(30_000);
  const clock = createManualClock(T0 + 60_000);
  let mongo: Connection;
  let redis: TestRedis;
  let fixture: IngestFixture;
  let gw: TestGateway;

  before(async () => {
    mongo = await connectMongoose(uniqueDbName('ingest'));
    redis = await connectTestRedis();
    fixture = await startIngestFixture({ mongo, redis: redis.client, clock, telemetryRetentionDays: 30 });
    gw = await TestGateway.connect(fixture.url, branch, gatewayId);
  });
  after(async () => {
    await gw?.close();
    await fixture?.stop();
    await redis?.close();
    await mongo?.dropDatabase();
    await mongo?.close();
  });

  const collection = (name: string) => mongo.db!.collection(name);

  it('acks a records batch only once its documents are in MongoDB, and a resend again without duplicates', async () => {
    const m = machineRecords(asMachineId('row-03'));
    const records = [m.meta('Rower 3'), m.status('available'), m.workout()];
    const id = batchId();
    const ackArrived = gw.ackOf(id);
    // Read MongoDB the moment the ack arrives: the documents must already be there.
    const atAck = ackArrived.then(async () => ({
      metas: await collection(RECORD_COLLECTIONS.meta).countDocuments({ batchId: id }),
      statuses: await collection(RECORD_COLLECTIONS.status).countDocuments({ batchId: id }),
      workouts: await collection(RECORD_COLLECTIONS.workout).countDocuments({ batchId: id }),
    }));
    await gw.publishRaw('records', JSON.stringify({ batchId: id, sentAt: T0, records }));
    const ack = await ackArrived;
    expect(ack).to.deep.equal({ batchId: id, acked: records.map((r) => r.payload.msgId), rejected: [] });
    expect(await atAck).to.deep.equal({ metas: 1, statuses: 1, workouts: 1 });

    const workout = await collection(RECORD_COLLECTIONS.workout).findOne({ _id: records[2]!.payload.msgId });
    expect(workout).to.include({ branch, gateway: gatewayId, batchId: id, source: 'row-03', segment: 'interval' });
    expect(workout!.at).to.be.instanceOf(Date);

    // The gateway did not get the ack in time and resends the same batch: acked again, stored once.
    gw.acks.delete(id);
    const again = await gw.send('records', { batchId: id, records });
    expect(again.acked).to.deep.equal(ack.acked);
    expect(await collection(RECORD_COLLECTIONS.workout).countDocuments({ batchId: id })).to.equal(1);
    expect(await metric(fixture, 'ingest_records_total', { kind: 'workout', outcome: 'duplicate' })).to.be.at.least(1);
    expect(await metric(fixture, 'ingest_ack_latency_seconds', {})).to.be.greaterThan(0);
  });

  it('stores telemetry in per-machine buckets, every sample once however often and in whatever order it comes', async () => {
    const machine = asMachineId('bike-02');
    const m = machineRecords(machine);
    const samples = Array.from({ length: 90 }, (_, i) => m.telemetry(150 + i));
    const first = batchId();
    const second = batchId();
    // Newest first, then the older half with a replayed overlap, both in flight at once.
    const [a, b] = await Promise.all([
      gw.send('telemetry', { batchId: first, records: samples.slice(45) }),
      gw.send('telemetry', { batchId: second, records: samples.slice(0, 50) }),
    ]);
    expect(a.acked).to.have.length(45);
    expect(b.acked).to.have.length(50);
    const buckets = await collection(TELEMETRY_COLLECTION).find({ branch, machine }).sort({ start: 1 }).toArray();
    const held = buckets.flatMap((doc) =>
      Object.values(doc.samples as Record<string, { seq: number }>).map((s) => s.seq),
    );
    expect(held.sort((x, y) => x - y)).to.deep.equal(samples.map((_, i) => i));
    // Two minutes (60 and 30 samples), each in buckets of at most TELEMETRY_BUCKET_SAMPLES consecutive seqs.
    const perMinute = new Map<number, number>();
    for (const doc of buckets) {
      const n = Object.keys(doc.samples as object).length;
      expect(n).to.be.at.most(TELEMETRY_BUCKET_SAMPLES);
      perMinute.set((doc.start as Date).getTime(), (perMinute.get((doc.start as Date).getTime()) ?? 0) + n);
    }
    expect([...perMinute.values()]).to.deep.equal([60, 30]);
    expect(await metric(fixture, 'ingest_records_total', { kind: 'telemetry', outcome: 'duplicate' })).to.equal(5);
  });

  it('dead-letters invalid records with their reason, rejects them by index, and stores their neighbours', async () => {
    const m = machineRecords(asMachineId('tread-01'));
    const good = m.workout();
    const badField = m.telemetry();
    (badField.payload as unknown as Record<string, unknown>).powerW = 'fast';
    const unknownKind = { kind: 'hologram', payload: { ...m.status('available').payload } };
    const noMsgId = { kind: 'event', payload: { source: 'tread-01', type: 'fault' } };
    const gatewayScan = {
      kind: 'access-scan',
      payload: {
        ...m.status('available').payload,
        source: 'gw-other',
        reader: 'door-in',
        action: 'check-in',
        credential: { kind: 'nfc', uid: '04a2b3c4d5e6f7' },
        decision: 'allow',
        decidedBy: 'online',
      },
    };
    const id = batchId();
    const ack = await gw.send('records', { batchId: id, records: [good, badField, unknownKind, noMsgId, gatewayScan] });
    expect(ack.acked).to.deep.equal([good.payload.msgId]);
    expect(ack.rejected).to.deep.equal([
      { msgId: badField.payload.msgId, index: 1, reason: 'invalid', path: 'payload.powerW' },
      { msgId: unknownKind.payload.msgId, index: 2, reason: 'unknown-kind', path: 'kind' },
      { index: 3, reason: 'invalid', path: 'payload.msgId' },
      // An access scan in the records lane, and not from this gateway: the lane is checked first.
      { msgId: gatewayScan.payload.msgId, index: 4, reason: 'wrong-lane', path: 'kind' },
    ]);
    const letters = await collection(DEAD_LETTER_COLLECTION)
      .find<DeadLetterDocument>({ batchId: id })
      .sort({ index: 1 })
      .toArray();
    expect(letters.map((l) => [l.index, l.reason, l.path])).to.deep.equal([
      [1, 'invalid', 'payload.powerW'],
      [2, 'unknown-kind', 'kind'],
      [3, 'invalid', 'payload.msgId'],
      [4, 'wrong-lane', 'kind'],
    ]);
    expect(letters[0]).to.include({ branch, gateway: gatewayId, lane: 'records', msgId: badField.payload.msgId });
    expect(letters[0]!.receivedAt).to.be.instanceOf(Date);
    expect(letters[0]!.raw).to.contain('"powerW":"fast"');
    // Credentials never reach the dead-letter collection in clear.
    expect(letters[3]!.raw).to.contain('"uid":"[redacted]"').and.not.contain('04a2b3c4d5e6f7');
    expect(await metric(fixture, 'ingest_dead_letters_total', { reason: 'invalid' })).to.be.at.least(2);
    expect(await metric(fixture, 'ingest_invalid_input_total', { reason: 'unknown-kind' })).to.be.at.least(1);
  });

  it('refuses a record whose source does not fit the topic, and telemetry older than retention', async () => {
    const scanOf = (source: string) => ({
      kind: 'access-scan',
      payload: {
        msgId: newMsgId(),
        source,
        bootId: 'gw-boot',
        seq: 1,
        ts: T0,
        v: 0,
        reader: 'door-in',
        action: 'check-in',
        credential: { kind: 'nfc', uid: '04a2b3c4d5e6f7' },
        decision: 'allow',
        decidedBy: 'online',
      },
    });
    const own = scanOf(gatewayId);
    const foreign = scanOf('gw-elsewhere');
    const access = await gw.send('access', { batchId: batchId(), records: [own, foreign] });
    expect(access.acked).to.deep.equal([own.payload.msgId]);
    expect(access.rejected).to.deep.equal([
      { msgId: foreign.payload.msgId, index: 1, reason: 'wrong-source', path: 'payload.source' },
    ]);
    expect(
      await collection(RECORD_COLLECTIONS['access-scan']).countDocuments({ _id: own.payload.msgId as never }),
    ).to.equal(1);

    const m = machineRecords(asMachineId('row-09'));
    const ancient = m.telemetry(100, clock.nowMs() - 31 * 86_400_000);
    const recent = m.telemetry(100, clock.nowMs() - 1_000);
    const ack = await gw.send('telemetry', { batchId: batchId(), records: [ancient, recent] });
    expect(ack.acked).to.deep.equal([recent.payload.msgId]);
    expect(ack.rejected).to.deep.equal([
      { msgId: ancient.payload.msgId, index: 0, reason: 'too-old', path: 'payload.ts' },
    ]);
  });

  it('counts, logs and dead-letters unreadable batches while valid traffic flows on', async () => {
    const before = await metric(fixture, 'ingest_invalid_input_total', { reason: 'batch-not-json' });
    await gw.publishRaw('records', 'this is not json');
    await gw.publishRaw('records', Buffer.from([0xff, 0xfe, 0x00]));
    // A readable batch id but no record array: answered with an error ack, dead-lettered as a whole.
    const broken = batchId();
    const errorAck = gw.ackOf(broken);
    await gw.publishRaw('records', JSON.stringify({ batchId: broken, sentAt: T0, records: 'nope' }));
    expect(await errorAck).to.deep.equal({ batchId: broken, acked: [], rejected: [], error: 'invalid' });
    const letter = await collection(DEAD_LETTER_COLLECTION).findOne<DeadLetterDocument>({
      _id: `${gatewayId}:${broken}:batch` as never,
    });
    expect(letter).to.include({ reason: 'batch-invalid', path: 'records', batchId: broken });
    expect(letter!.raw).to.contain('"records":"nope"');

    // Valid traffic right behind the garbage is stored and acked.
    const m = machineRecords(asMachineId('row-04'));
    const fine = await gw.send('records', { batchId: batchId(), records: [m.workout()] });
    expect(fine.acked).to.have.length(1);
    expect(await metric(fixture, 'ingest_invalid_input_total', { reason: 'batch-not-json' })).to.equal(before + 1);
    expect(await metric(fixture, 'ingest_invalid_input_total', { reason: 'batch-not-utf8' })).to.equal(1);
    expect(await metric(fixture, 'ingest_batches_total', { outcome: 'invalid' })).to.be.at.least(2);
    expect(gw.client.connected, 'the gateway link stays up').to.equal(true);
  });

  it('keeps live state newer-only and republishes availability retained, unknown while the gateway is offline', async () => {
    const watcher = await liveWatcher(fixture.url);
    try {
      const machine = asMachineId('row-05');
      const m = machineRecords(machine);
      const meta = m.meta('Rower 5');
      const older = m.status('available', 1);
      const newer = m.status('in_use', 1);
      const sample = m.telemetry(321);
      // The newer status first, the older one in a later batch: the older one must not win.
      await gw.send('records', { batchId: batchId(), records: [meta, newer] });
      const first = await watcher.next(machine, 'in_use');
      expect(first).to.include({
        machine,
        status: 'in_use',
        type: 'rower',
        displayName: 'Rower 5',
        since: newer.payload.ts,
      });
      await gw.send('records', { batchId: batchId(), records: [older] });
      await gw.send('telemetry', { batchId: batchId(), records: [sample] });
      let [view] = (await fixture.ingest.live.listBranch(branch)).filter((v) => v.machine === machine);
      expect(view).to.include({ status: 'in_use', gateway: gatewayId, lastSeen: sample.payload.ts });
      expect(view!.metrics).to.deep.include({ powerW: 321 });

      // The gateway dies: its will marks the branch's machines unknown and republishes them.
      const will = { online: false, v: 0, bootId: 'gw-boot-1', conn: 1, ts: T0, lastWill: true };
      const birth = {
        online: true,
        v: 0,
        bootId: 'gw-boot-1',
        conn: 1,
        since: T0,
        ts: T0,
        version: '0.1.0',
        queue: { access: { depth: 0 }, records: { depth: 0 }, telemetry: { depth: 0 }, full: false },
        readers: [],
        machinesConnected: 1,
      };
      await gw.client.publishAsync(topics.gatewayState(branch, gatewayId), JSON.stringify(birth), {
        qos: 1,
        retain: true,
      });
      await gw.client.publishAsync(topics.gatewayState(branch, gatewayId), JSON.stringify(will), {
        qos: 1,
        retain: true,
      });
      const unknown = await watcher.next(machine, 'unknown');
      expect(unknown.since).to.equal(clock.nowMs());
      [view] = (await fixture.ingest.live.listBranch(branch)).filter((v) => v.machine === machine);
      expect(view).to.include({ status: 'unknown' });
      // It reconnects: a new connection's birth brings the machine's own status back.
      await gw.client.publishAsync(
        topics.gatewayState(branch, gatewayId),
        JSON.stringify({ ...birth, conn: 2, ts: T0 + 5 }),
        { qos: 1, retain: true },
      );
      expect(await watcher.next(machine, 'in_use')).to.include({ since: newer.payload.ts });
      // A broken state is counted and changes nothing.
      await gw.client.publishAsync(topics.gatewayState(branch, gatewayId), '{"online":"maybe"}', { qos: 1 });
      [view] = (await fixture.ingest.live.listBranch(branch)).filter((v) => v.machine === machine);
      expect(view).to.include({ status: 'in_use' });
    } finally {
      await watcher.client.endAsync();
    }
  });

  it('applies a live snapshot to live state only: nothing stored, no ack', async () => {
    const machine = asMachineId('row-06');
    const m = machineRecords(machine);
    const status = m.status('maintenance');
    const id = batchId();
    const noAck = gw.ackOf(id, 1_500).then(
      () => 'acked',
      () => 'no ack',
    );
    await gw.publishRaw('records', JSON.stringify({ batchId: id, sentAt: T0, live: true, records: [status] }));
    expect(await noAck).to.equal('no ack');
    const [view] = (await fixture.ingest.live.listBranch(branch)).filter((v) => v.machine === machine);
    expect(view).to.include({ status: 'maintenance' });
    expect(await collection(RECORD_COLLECTIONS.status).countDocuments({ _id: status.payload.msgId as never })).to.equal(
      0,
    );
  });

  it('answers each gateway on its own ack topic only', async () => {
    const other = await TestGateway.connect(fixture.url, branch, asGatewayId('gw-demo-2'));
    try {
      const m = machineRecords(asMachineId('rig-07'));
      const id = batchId();
      const ack: UplinkAck = await other.send('records', { batchId: id, records: [m.workout()] });
      expect(ack.acked).to.have.length(1);
      expect(gw.acks.has(id)).to.equal(false);
    } finally {
      await other.close();
    }
  });

  describe('with INGEST_ACK_DELAY_MS (fault injection between the write and the ack)', () => {
    let delayed: IngestFixture;
    let delayedGw: TestGateway;
    before(async () => {
      delayed = await startIngestFixture({ mongo, redis: redis.client, clock, config: { ackDelayMs: 4_000 } });
      delayedGw = await TestGateway.connect(delayed.url, branch, gatewayId);
    });
    after(async () => {
      await delayedGw?.close();
      await delayed?.stop();
    });

    it('has the records in MongoDB while the ack is still outstanding', async () => {
      const m = machineRecords(asMachineId('row-08'));
      const record = m.workout();
      const id = batchId();
      const ack = delayedGw.ackOf(id, 20_000);
      await delayedGw.publishRaw('records', JSON.stringify({ batchId: id, sentAt: T0, records: [record] }));
      while (
        (await collection(RECORD_COLLECTIONS.workout).countDocuments({ _id: record.payload.msgId as never })) === 0
      ) {
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      // Stored, not yet acknowledged: a cloud killed now leaves the gateway to resend, and the resend is a no-op.
      expect(delayedGw.acks.has(id)).to.equal(false);
      expect((await ack).acked).to.deep.equal([record.payload.msgId]);
    });
  });
});
