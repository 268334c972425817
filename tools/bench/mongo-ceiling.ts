/**
 * The database's own ceiling for the documents ingest writes, without MQTT, gateway or cloud in front:
 * - records: `insertMany` of 500 record documents (unordered, `_id` = msgId), shaped exactly as cloud ingest builds
 *   them (cloud/src/ingest/batch.ts: payload fields at the top level, branch, gateway, batchId, at, ingestedAt);
 * - telemetry: ingest's own bucket writer (cloud/src/ingest/store.ts `addTelemetry`: one read of the buckets, then
 *   one bulk write of one update per bucket, buckets per machine, minute and run of 64 seqs), 500 samples per call.
 * Payloads come from the simulator's machines, so sizes and shapes are those of the end-to-end run. Several
 * writers run at once, like ingest's INGEST_CONCURRENCY.
 */
import { randomUUID } from 'node:crypto';
import { MongoClient, type Db } from 'mongodb';
import hdr from 'hdr-histogram-js';
import { createEnvelopeStamper } from '../../protocol/envelope.ts';
import { asMachineId, type BranchId, type MachineId } from '../../protocol/ids.ts';
import type { Telemetry } from '../../protocol/messages/telemetry.ts';
import { createIngestStore, ensureIngestCollections, type RecordDocument } from '../../cloud/src/ingest/store.ts';
import { createSimMachine, toPayload } from '../../simulators/src/machine.ts';
import { machineIdAt, typeAt } from '../../simulators/src/machines/index.ts';

export interface CeilingOptions {
  readonly mongoUrl: string;
  readonly batch?: number;
  readonly concurrency?: number;
  readonly warmupMs: number;
  readonly durationMs: number;
  readonly onProgress?: (written: number, elapsedMs: number) => void;
}

export interface CeilingResult {
  readonly perSecond: number;
  readonly written: number;
  /** Duration of one write call (a batch of `batch`), ms. */
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly avgDocBytes: number;
}

/** Payloads from simulated machines over a simulated hour: records (not telemetry) and telemetry samples. */
export function samplePayloads(machines = 40, seconds = 3600) {
  const records: Record<string, unknown>[] = [];
  const telemetry: Record<string, unknown>[] = [];
  let now = Date.now() - seconds * 1000;
  const sims = Array.from({ length: machines }, (_, i) => {
    const id = machineIdAt(i);
    return {
      sim: createSimMachine({ id, type: typeAt(i), seed: 11, ordinal: i + 1, tickS: 1, nowMs: now }),
      stamper: createEnvelopeStamper({ source: asMachineId(id), now: () => now }),
    };
  });
  for (let t = 0; t < seconds; t++) {
    now += 1000;
    for (const { sim, stamper } of sims) {
      for (const out of sim.tick(now)) {
        const payload = toPayload(stamper, out.kind, out.body, 0);
        (out.kind === 'telemetry' ? telemetry : records).push(payload);
      }
    }
  }
  return { records, telemetry };
}

/** A record document as ingest writes it, for a payload, with a fresh msgId. */
function recordDocument(payload: Record<string, unknown>, batchId: string): RecordDocument {
  const { msgId: _old, ...fields } = payload;
  const ts = payload.ts as number;
  return {
    ...fields,
    _id: randomUUID() as RecordDocument['_id'],
    branch: 'bench' as BranchId,
    gateway: 'gw-bench' as RecordDocument['gateway'],
    batchId: batchId as RecordDocument['batchId'],
    at: new Date(ts),
    ingestedAt: new Date(),
  };
}

async function measure(
  options: CeilingOptions,
  write: (batchNo: number) => Promise<number>,
): Promise<{ written: number; perSecond: number; p50Ms: number; p99Ms: number }> {
  const concurrency = options.concurrency ?? 4;
  const calls = hdr.build({
    lowestDiscernibleValue: 1,
    highestTrackableValue: 60_000_000,
    numberOfSignificantValueDigits: 3,
  });
  let measuring = false;
  let running = true;
  let written = 0;
  let batchNo = 0;
  const worker = async () => {
    while (running) {
      const started = performance.now();
      const n = await write(batchNo++);
      if (measuring) {
        written += n;
        calls.recordValue(Math.max(1, Math.round((performance.now() - started) * 1000)));
      }
    }
  };
  const workers = Array.from({ length: concurrency }, worker);
  await new Promise((resolve) => setTimeout(resolve, options.warmupMs));
  measuring = true;
  const start = performance.now();
  const progress = setInterval(() => options.onProgress?.(written, performance.now() - start), 250);
  await new Promise((resolve) => setTimeout(resolve, options.durationMs));
  measuring = false;
  const elapsed = performance.now() - start;
  running = false;
  clearInterval(progress);
  await Promise.all(workers);
  return {
    written,
    perSecond: Math.round((written * 1000) / elapsed),
    p50Ms: calls.getValueAtPercentile(50) / 1000,
    p99Ms: calls.getValueAtPercentile(99) / 1000,
  };
}

async function withDb<T>(mongoUrl: string, run: (db: Db) => Promise<T>): Promise<T> {
  const client = new MongoClient(mongoUrl, { serverSelectionTimeoutMS: 10_000 });
  await client.connect();
  const db = client.db(`bench_${Date.now().toString(36)}`);
  try {
    return await run(db);
  } finally {
    await db.dropDatabase().catch(() => undefined);
    await client.close();
  }
}

/** insertMany of `batch` record documents, `concurrency` at a time. */
export async function recordInsertCeiling(
  options: CeilingOptions,
  records: readonly Record<string, unknown>[],
): Promise<CeilingResult> {
  const batch = options.batch ?? 500;
  const avgDocBytes = Math.round(
    records.slice(0, 500).reduce((sum, p) => sum + JSON.stringify(recordDocument(p, 'x')).length, 0) /
      Math.min(500, records.length),
  );
  return withDb(options.mongoUrl, async (db) => {
    await ensureIngestCollections(db);
    const workouts = db.collection<RecordDocument>('workouts');
    let cursor = 0;
    const result = await measure(options, async () => {
      const batchId = randomUUID();
      const docs = Array.from({ length: batch }, () => recordDocument(records[cursor++ % records.length]!, batchId));
      await workouts.insertMany(docs, { ordered: false });
      return docs.length;
    });
    return { ...result, avgDocBytes };
  });
}

/** ingest's telemetry bucket writer, `batch` samples per call, `concurrency` calls at a time. */
export async function telemetryWriteCeiling(
  options: CeilingOptions,
  telemetry: readonly Record<string, unknown>[],
): Promise<CeilingResult> {
  const batch = options.batch ?? 500;
  const avgDocBytes = Math.round(
    telemetry.slice(0, 500).reduce((sum, p) => sum + JSON.stringify(p).length, 0) / Math.min(500, telemetry.length),
  );
  return withDb(options.mongoUrl, async (db) => {
    await ensureIngestCollections(db);
    const store = createIngestStore(db, { writeTimeoutMs: 30_000 });
    // Samples keep their machine and order; each pass over the pool gets a new boot id so keys stay unique, and
    // times are moved to now so buckets fill as they would live (one machine-minute per bucket).
    let cursor = 0;
    let pass = 0;
    const offset = Date.now() - (telemetry[0]!.ts as number);
    const result = await measure(options, async () => {
      const samples = Array.from({ length: batch }, () => {
        const i = cursor++ % telemetry.length;
        if (i === 0) pass += 1;
        const payload = telemetry[i]!;
        const sample = {
          ...payload,
          bootId: `${payload.bootId as string}-${pass}`,
          ts: (payload.ts as number) + offset,
        };
        return { branch: 'bench' as BranchId, machine: payload.source as MachineId, sample: sample as Telemetry };
      });
      await store.addTelemetry(samples);
      return samples.length;
    });
    return { ...result, avgDocBytes };
  });
}
