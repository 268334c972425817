import { expect } from 'chai';
import type { Connection } from 'mongoose';
import { createManualClock } from '../../../tools/runtime/clock.ts';
import { asBranchId, asGatewayId, asMachineId } from '../../../protocol/index.ts';
import { connectMongoose, connectTestRedis, uniqueDbName, type TestRedis } from '../../../test/helpers/services.ts';
import { eventually } from '../../../test/helpers/eventually.ts';
import { RECORD_COLLECTIONS, type RecordDocument } from './store.ts';
import { RetryLater, type StoredContext, type StoredRecord } from './stored-hooks.ts';
import { T0, TestGateway, batchId, machineRecords, startIngestFixture, type IngestFixture } from './testing.ts';

const branch = asBranchId('demo');
const gatewayId = asGatewayId('gw-hooks-1');
const machine = asMachineId('row-07');

/** Waits until `check` stops throwing (generous deadline). */
const until = (what: string, check: () => unknown): Promise<boolean> =>
  eventually(
    what,
    async () => {
      await check();
      return true;
    },
    10_000,
    50,
  );

describe('ingest.onStored: durable handlers on newly stored records (real Aedes, MongoDB stand-in, Redis)', function () {
  this.timeout(30_000);
  const clock = createManualClock(T0 + 60_000);
  let mongo: Connection;
  let redis: TestRedis;
  const started: { fixture: IngestFixture; gw: TestGateway }[] = [];

  before(async () => {
    mongo = await connectMongoose(uniqueDbName('ingest_hooks'));
    redis = await connectTestRedis();
  });
  afterEach(async () => {
    for (const { fixture, gw } of started.splice(0)) {
      await gw.close();
      await fixture.stop();
    }
  });
  after(async () => {
    await mongo.dropDatabase();
    await mongo.close();
    await redis.close();
  });

  async function start(gateway = gatewayId) {
    const fixture = await startIngestFixture({ mongo, redis: redis.client, clock, storedSweep: { everyMs: 0 } });
    const gw = await TestGateway.connect(fixture.url, branch, gateway);
    started.push({ fixture, gw });
    return { fixture, gw };
  }
  const workouts = () => mongo.db!.collection<RecordDocument>(RECORD_COLLECTIONS.workout);

  it('hands each newly stored record to every handler of its kind once, clears the marker, skips duplicates', async () => {
    const { fixture, gw } = await start();
    const seen: { name: string; records: StoredRecord<'workout'>[]; ctx: StoredContext }[] = [];
    fixture.ingest.onStored('workout', (records, ctx) => Promise.resolve(void seen.push({ name: 'a', records, ctx })), {
      name: 'test-a',
    });
    fixture.ingest.onStored('workout', (records, ctx) => Promise.resolve(void seen.push({ name: 'b', records, ctx })), {
      name: 'test-b',
    });
    const rec = machineRecords(machine);
    const records = [rec.workout(), rec.workout(), rec.telemetry()];
    const batch = { batchId: batchId(), records };
    const ack = await gw.send('records', batch);
    expect(ack.acked).to.have.length(2); // the telemetry sample belongs to the telemetry lane: refused
    await until('both handlers ran', () => expect(seen).to.have.length(2));
    const ids = records.slice(0, 2).map((r) => r.payload.msgId);
    for (const call of seen) {
      expect(call.records.map((r) => r.msgId)).to.have.members(ids);
      expect(call.ctx).to.deep.equal({ branch, gateway: gatewayId, retry: false });
      expect(call.records[0]!.payload).to.include({ source: machine, segment: 'interval', distanceM: 250 });
      expect(call.records[0]!.payload.msgId).to.equal(call.records[0]!.msgId);
    }
    await until('markers cleared', async () => {
      const docs = await workouts()
        .find({ _id: { $in: ids } })
        .toArray();
      expect(docs.map((d) => d['pending'] as unknown)).to.deep.equal([[], []]);
    });

    // The gateway resends the batch (ack lost): stored already, so no handler runs again.
    const again = await gw.send('records', batch);
    expect(again.acked).to.have.members(ids);
    clock.advance(60_000);
    expect(await fixture.ingest.sweepStored()).to.equal(0);
    expect(seen).to.have.length(2);
  });

  it('retries a failed handler from the sweep, and after a crash from the next process', async () => {
    const first = await start(asGatewayId('gw-hooks-2'));
    let calls = 0;
    first.fixture.ingest.onStored(
      'workout',
      () => {
        calls += 1;
        return Promise.reject(new Error('downstream unavailable'));
      },
      { name: 'test-retry' },
    );
    const rec = machineRecords(machine);
    const record = rec.workout();
    await first.gw.send('records', { batchId: batchId(), records: [record] });
    await until('handler ran', () => expect(calls).to.equal(1));
    await until('failure counted', async () => {
      const doc = await workouts().findOne({ _id: record.payload.msgId });
      expect(doc?.['hookFailures']).to.deep.equal({ 'test-retry': 1 });
    });
    // Not due yet: the sweep leaves records younger than the retry delay alone.
    expect(await first.fixture.ingest.sweepStored()).to.equal(0);
    clock.advance(6_000);
    expect(await first.fixture.ingest.sweepStored()).to.equal(1);
    expect(calls).to.equal(2);

    // The process "crashes" with the record still pending; the next one registers the same name and gets it.
    const { fixture, gw } = started.pop()!;
    await gw.close();
    await fixture.stop();
    const second = await start(asGatewayId('gw-hooks-2'));
    const retried: { ids: string[]; ctx: StoredContext }[] = [];
    second.fixture.ingest.onStored(
      'workout',
      (records, ctx) => Promise.resolve(void retried.push({ ids: records.map((r) => r.msgId), ctx })),
      { name: 'test-retry' },
    );
    clock.advance(6_000);
    expect(await second.fixture.ingest.sweepStored()).to.equal(1);
    expect(retried).to.deep.equal([
      { ids: [record.payload.msgId], ctx: { branch, gateway: asGatewayId('gw-hooks-2'), retry: true } },
    ]);
    const doc = await workouts().findOne({ _id: record.payload.msgId });
    expect(doc?.['pending']).to.deep.equal([]);
    clock.advance(6_000);
    expect(await second.fixture.ingest.sweepStored()).to.equal(0);
  });

  it('the periodic sweep retries what this process left pending, without waiting for its full sweep', async () => {
    // Full sweeps (for what other nodes left) are an hour apart here: only the failure makes the next sweep query.
    const fixture = await startIngestFixture({
      mongo,
      redis: redis.client,
      clock,
      storedSweep: { everyMs: 50, retryAfterMs: 0, fullEveryMs: 3_600_000 },
    });
    const gw = await TestGateway.connect(fixture.url, branch, asGatewayId('gw-hooks-4'));
    started.push({ fixture, gw });
    let calls = 0;
    fixture.ingest.onStored(
      'workout',
      () => {
        calls += 1;
        clock.advance(1); // the sweep takes records older than now − retryAfterMs
        return calls === 1 ? Promise.reject(new Error('once')) : Promise.resolve();
      },
      { name: 'test-periodic' },
    );
    // Let the start-up sweep (a crash may have left records) pass first.
    await new Promise((resolve) => setTimeout(resolve, 200));
    const record = machineRecords(machine).workout();
    await gw.send('records', { batchId: batchId(), records: [record] });
    await until('retried by the periodic sweep', async () => {
      expect(calls).to.equal(2);
      expect((await workouts().findOne({ _id: record.payload.msgId }))?.['pending']).to.deep.equal([]);
    });
  });

  it('parks a record after too many failures instead of retrying it forever', async () => {
    const { fixture, gw } = await start(asGatewayId('gw-hooks-3'));
    let calls = 0;
    fixture.ingest.onStored(
      'workout',
      () => {
        calls += 1;
        return Promise.reject(new Error('poison'));
      },
      { name: 'test-poison' },
    );
    const record = machineRecords(machine).workout();
    await gw.send('records', { batchId: batchId(), records: [record] });
    await until('handler ran', () => expect(calls).to.equal(1));
    await until('failure counted', async () => {
      const doc = await workouts().findOne({ _id: record.payload.msgId });
      expect(doc?.['hookFailures']).to.deep.equal({ 'test-poison': 1 });
    });
    for (let i = 0; i < 12; i++) {
      clock.advance(6_000);
      await fixture.ingest.sweepStored();
    }
    expect(calls).to.equal(10); // the default maxAttempts
    const doc = await workouts().findOne({ _id: record.payload.msgId });
    expect(doc?.['pending']).to.deep.equal([]);
    expect(doc?.['failedHooks']).to.deep.equal(['test-poison']);
  });

  it('retries a run deferred with RetryLater without counting failures, in stored order', async () => {
    const { fixture, gw } = await start(asGatewayId('gw-hooks-4'));
    const runs: string[][] = [];
    let deferrals = 0;
    fixture.ingest.onStored(
      'workout',
      (records) => {
        runs.push(records.map((r) => r.msgId));
        // Longer than the failures after which a failing record is parked (10): waiting is no failure.
        if (deferrals++ < 12) return Promise.reject(new RetryLater('waits for another record'));
        return Promise.resolve();
      },
      { name: 'test-deferred' },
    );
    const first = machineRecords(machine, { ts: T0 });
    const earlier = [first.workout(), first.workout(), first.workout()];
    await gw.send('records', { batchId: batchId(), records: earlier });
    await until('first run', () => expect(runs).to.have.length(1));
    clock.advance(1_000);
    const later = [machineRecords(machine, { ts: T0 + 60_000 }).workout()];
    await gw.send('records', { batchId: batchId(), records: later });
    await until('second batch run', () => expect(runs).to.have.length(2));
    const ids = (records: { payload: { msgId: string } }[]) => records.map((r) => r.payload.msgId);
    for (let i = 0; i < 12; i++) {
      clock.advance(6_000);
      await fixture.ingest.sweepStored();
    }
    // Every sweep hands both batches over again, the older one first.
    expect(runs.at(-1)).to.deep.equal([...ids(earlier), ...ids(later)]);
    for (const id of [...ids(earlier), ...ids(later)]) {
      const doc = await workouts().findOne({ _id: id as never });
      expect(doc?.['pending']).to.deep.equal([]);
      expect(doc).to.not.have.property('hookFailures');
      expect(doc).to.not.have.property('failedHooks');
    }
  });
});
