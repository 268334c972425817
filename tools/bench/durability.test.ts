import { expect } from 'chai';
import { MongoClient, type Db } from 'mongodb';
import { createIngestStore, ensureIngestCollections, type RecordDocument } from '../../cloud/src/ingest/store.ts';
import type { BranchId, MachineId } from '../../protocol/ids.ts';
import type { Telemetry } from '../../protocol/messages/telemetry.ts';
import type { PublishedMessage } from '../../simulators/src/fleet.ts';
import { testServices, uniqueDbName } from '../../test/helpers/services.ts';
import { DurabilityTracker } from './durability.ts';
import { cpuTimeMs, machineInfo } from './system.ts';

const BRANCH = 'bench' as BranchId;

describe('bench: durability tracker', function () {
  let client: MongoClient;
  let db: Db;

  before(async function () {
    client = new MongoClient(testServices().mongoUrl);
    await client.connect();
    db = client.db(uniqueDbName('bench_durability'));
    await ensureIngestCollections(db);
  });

  after(async function () {
    await db.dropDatabase();
    await client.close();
  });

  it('finds records and telemetry where ingest stores them, and names what is missing', async function () {
    const tracker = new DurabilityTracker(db, BRANCH, 20);
    const store = createIngestStore(db, { writeTimeoutMs: 5_000 });
    const ts = Date.now() - 100;
    const messages: PublishedMessage[] = [];
    for (let seq = 0; seq < 6; seq++) {
      messages.push({
        machine: 'row-001',
        kind: 'telemetry',
        qos: 1,
        msgId: `tm-row-001-${seq}-xxxxxxxx`,
        bootId: 'b1',
        seq,
        ts: ts + seq,
      });
    }
    messages.push({
      machine: 'row-001',
      kind: 'workout',
      qos: 1,
      msgId: 'wo-row-001-0000000001',
      bootId: 'b1',
      seq: 6,
      ts,
    });
    messages.push({
      machine: 'row-001',
      kind: 'workout',
      qos: 1,
      msgId: 'wo-row-001-0000000002',
      bootId: 'b1',
      seq: 7,
      ts,
    });
    messages.forEach(tracker.track);
    tracker.start();

    // Ingest stores 4 of 6 samples and one of the two workouts.
    await store.addTelemetry(
      messages.slice(0, 4).map((m) => ({
        branch: BRANCH,
        machine: 'row-001' as MachineId,
        sample: {
          msgId: m.msgId,
          source: 'row-001',
          bootId: 'b1',
          seq: m.seq,
          ts: m.ts,
          v: 0,
          type: 'rower',
        } as unknown as Telemetry,
      })),
    );
    const doc = {
      _id: 'wo-row-001-0000000001',
      branch: BRANCH,
      at: new Date(ts),
      ingestedAt: new Date(),
    } as unknown as RecordDocument;
    await store.insertRecords('workout', [doc]);

    expect(await tracker.drain(300)).to.equal(false);
    expect(tracker.outstanding).to.equal(3);
    await tracker.stop();
    const acked = new Set(messages.map((m) => m.msgId));
    const keys = new Set(messages.filter((m) => m.kind === 'telemetry').map((m) => `b1:${m.seq}`));
    const step = await tracker.endStep(acked, keys);
    expect(step).to.include({ published: 8, durable: 5, missing: 3 });
    expect(step.p99Ms).to.be.greaterThan(0);
  });

  it('reads the machine and CPU time of a process', function () {
    const info = machineInfo();
    expect(info.cores).to.be.at.least(1);
    expect(info.cpuModel).to.be.a('string').and.not.equal('');
    const before = cpuTimeMs(process.pid)!;
    const until = Date.now() + 60;
    while (Date.now() < until) Math.sqrt(Math.random());
    expect(cpuTimeMs(process.pid)!).to.be.greaterThan(before);
    expect(cpuTimeMs(2 ** 22 + 12345)).to.equal(undefined);
  });
});
