import { expect } from 'chai';
import type { Connection } from 'mongoose';
import { asBranchId, asMachineId, asMsgId, newBootId, newMsgId } from '../../../protocol/index.ts';
import type { BootId, Telemetry } from '../../../protocol/index.ts';
import { connectMongoose, uniqueDbName } from '../../../test/helpers/services.ts';
import {
  DEAD_LETTER_COLLECTION,
  RECORD_COLLECTIONS,
  TELEMETRY_BUCKET_MS,
  TELEMETRY_BUCKET_SAMPLES,
  TELEMETRY_COLLECTION,
  createIngestStore,
  ensureIngestCollections,
  type IngestStore,
  type RecordDocument,
  type TelemetryBucketDocument,
  type TelemetrySample,
} from './store.ts';

const branch = asBranchId('demo');
const machine = asMachineId('row-03');
const T0 = Date.UTC(2026, 10, 24, 19, 40, 0);

function sample(bootId: BootId, seq: number, ts = T0 + seq * 1000): TelemetrySample {
  const payload = {
    msgId: newMsgId(),
    source: machine,
    bootId,
    seq,
    ts,
    v: 0,
    type: 'rower',
    strokeRateSpm: 20 + (seq % 10),
  } as Telemetry;
  return { branch, machine, sample: payload };
}

function shuffled<T>(items: readonly T[], seed: number): T[] {
  const out = [...items];
  let s = seed;
  for (let i = out.length - 1; i > 0; i--) {
    s = (s * 1103515245 + 12345) % 2 ** 31;
    const j = s % (i + 1);
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

describe('ingest store (real MongoDB-compatible server)', function () {
  let mongo: Connection;
  let store: IngestStore;

  before(async () => {
    mongo = await connectMongoose(uniqueDbName('ingest_store'));
    await ensureIngestCollections(mongo.db!);
    // Twice: a second node (or a restart) finds everything there already.
    await ensureIngestCollections(mongo.db!);
    store = createIngestStore(mongo.db!, { writeTimeoutMs: 5_000 });
  });
  after(async () => {
    await mongo.dropDatabase();
    await mongo.close();
  });

  const buckets = () => mongo.db!.collection<TelemetryBucketDocument>(TELEMETRY_COLLECTION);
  /** Samples held per minute, in minute order. */
  const perMinute = (docs: readonly TelemetryBucketDocument[]) => {
    const counts = new Map<number, number>();
    for (const d of docs) {
      expect(Object.keys(d.samples).length).to.be.at.most(TELEMETRY_BUCKET_SAMPLES);
      counts.set(d.start.getTime(), (counts.get(d.start.getTime()) ?? 0) + Object.keys(d.samples).length);
    }
    return [...counts].sort(([a], [b]) => a - b).map(([, n]) => n);
  };
  const heldKeys = async () => {
    const docs = await buckets().find({ machine }).toArray();
    // Each sample under its key, and the key is the sample's own boot and seq.
    for (const d of docs)
      for (const [key, s] of Object.entries(d.samples)) expect(key).to.equal(`${String(s.bootId)}:${String(s.seq)}`);
    return docs.flatMap((d) => Object.keys(d.samples)).sort();
  };

  beforeEach(async () => {
    await buckets().deleteMany({});
  });

  it('creates the collections and the unique and query indexes before traffic', async () => {
    const names = (await mongo.db!.listCollections().toArray()).map((c) => c.name);
    expect(names).to.include.members([
      ...Object.values(RECORD_COLLECTIONS),
      TELEMETRY_COLLECTION,
      DEAD_LETTER_COLLECTION,
    ]);
    const indexes = await buckets().indexes();
    expect(indexes.map((i) => i.name)).to.include.members(['start', 'branch_machine_start']);
  });

  it('stores a replayed telemetry batch once: the replay adds nothing', async () => {
    const boot = newBootId();
    const batch = Array.from({ length: 150 }, (_, i) => sample(boot, i));
    expect(await store.addTelemetry(batch)).to.deep.equal({ stored: 150, duplicate: 0 });
    expect(await store.addTelemetry(batch)).to.deep.equal({ stored: 0, duplicate: 150 });
    const docs = await buckets().find({ machine }).sort({ start: 1, firstTs: 1 }).toArray();
    // 150 samples at 1 Hz from a minute boundary: 60, 60 and 30 in the three minutes, in buckets of at most
    // TELEMETRY_BUCKET_SAMPLES consecutive seqs (0–59 | 60–63, 64–119 | 120–127, 128–149).
    expect(docs.map((d) => Object.keys(d.samples).length)).to.deep.equal([60, 4, 56, 8, 22]);
    expect(perMinute(docs)).to.deep.equal([60, 60, 30]);
    expect(docs[0]!.end.getTime() - docs[0]!.start.getTime()).to.equal(TELEMETRY_BUCKET_MS);
    expect(docs[0]!.firstTs).to.equal(T0);
    expect(docs[0]!.lastTs).to.equal(T0 + 59_000);
    expect(docs[2]!.firstTs).to.equal(T0 + 64_000);
    expect(docs[2]!.lastTs).to.equal(T0 + 119_000);
    const first = docs[0]!.samples[`${boot}:0`];
    expect(first).to.include({ seq: 0, ts: T0, bootId: boot, type: 'rower' });
    expect(first).to.not.have.property('source');
  });

  it('keeps a lower seq that arrives after a higher one (out-of-order batches lose nothing)', async () => {
    const boot = newBootId();
    const all = Array.from({ length: 40 }, (_, i) => sample(boot, i));
    // Newest first, then the older half, then a mix with replays.
    await store.addTelemetry(all.slice(20));
    await store.addTelemetry(all.slice(0, 20));
    const again = await store.addTelemetry(shuffled(all, 7).slice(0, 25));
    expect(again.stored).to.equal(0);
    expect(await heldKeys()).to.deep.equal(all.map((s) => `${boot}:${s.sample.seq}`).sort());
  });

  it('stores every sample exactly once when batches of one machine are written in parallel', async () => {
    const boot = newBootId();
    const all = Array.from({ length: 240 }, (_, i) => sample(boot, i, T0 + (i % 60) * 1000));
    // Eight overlapping batches, all in flight at once: each sample is in two of them.
    const batches = Array.from({ length: 8 }, (_, k) =>
      shuffled(
        all.filter((_, i) => i % 8 === k || (i + 1) % 8 === k),
        k + 1,
      ),
    );
    const results = await Promise.all(batches.map((b) => store.addTelemetry(b)));
    const stored = results.reduce((n, r) => n + r.stored, 0);
    const duplicate = results.reduce((n, r) => n + r.duplicate, 0);
    expect(stored).to.equal(240);
    expect(duplicate).to.equal(240);
    // All 240 samples fall into one minute: four buckets of at most TELEMETRY_BUCKET_SAMPLES hold them, each once.
    const docs = await buckets().find({ machine }).toArray();
    expect(perMinute(docs)).to.deep.equal([240]);
    expect(docs.map((d) => Object.keys(d.samples).length).sort((a, b) => b - a)).to.deep.equal([
      TELEMETRY_BUCKET_SAMPLES,
      TELEMETRY_BUCKET_SAMPLES,
      TELEMETRY_BUCKET_SAMPLES,
      240 - 3 * TELEMETRY_BUCKET_SAMPLES,
    ]);
    expect(await heldKeys()).to.deep.equal(all.map((s) => `${boot}:${s.sample.seq}`).sort());
  });

  it('tells a restarted machine (new boot, seq from 0 again) apart from a replay', async () => {
    const first = newBootId();
    const second = newBootId();
    await store.addTelemetry([sample(first, 0), sample(first, 1)]);
    const result = await store.addTelemetry([
      sample(second, 0, T0 + 5_000),
      sample(second, 1, T0 + 6_000),
      sample(first, 1),
    ]);
    expect(result).to.deep.equal({ stored: 2, duplicate: 1 });
    expect(await heldKeys()).to.have.length(4);
  });

  it('inserts records idempotently by msgId and reads each outcome from the write errors', async () => {
    const doc = (id: string): RecordDocument => ({
      _id: asMsgId(id),
      branch,
      gateway: 'gw-demo-1' as never,
      batchId: 'b-1' as never,
      at: new Date(T0),
      ingestedAt: new Date(T0),
      source: machine,
    });
    const a = newMsgId();
    const b = newMsgId();
    const c = newMsgId();
    expect(await store.insertRecords('workout', [doc(a)])).to.deep.equal({ stored: [a], duplicate: [], failed: [] });
    const outcome = await store.insertRecords('workout', [doc(a), doc(b), doc(c)]);
    expect(outcome).to.deep.equal({ stored: [b, c], duplicate: [a], failed: [] });
    expect(
      await mongo.db!.collection(RECORD_COLLECTIONS.workout).countDocuments({ _id: { $in: [a, b, c] } as never }),
    ).to.equal(3);
  });

  it('stores a dead letter once however often its batch is resent', async () => {
    const letter = {
      _id: 'gw-demo-1:b-9:0',
      branch,
      gateway: 'gw-demo-1' as never,
      lane: 'records' as const,
      batchId: 'b-9' as never,
      index: 0,
      reason: 'invalid',
      raw: '{}',
      receivedAt: new Date(T0),
    };
    await store.insertDeadLetters([letter]);
    await store.insertDeadLetters([letter]);
    expect(await mongo.db!.collection(DEAD_LETTER_COLLECTION).countDocuments({ _id: letter._id as never })).to.equal(1);
  });
});
