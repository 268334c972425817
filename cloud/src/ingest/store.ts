/**
 * Where ingest writes in MongoDB, and how, so that every write is idempotent and a redelivered batch is a no-op:
 * - records (everything but telemetry): one collection per kind, `_id` = the record's msgId (the primary key is
 *   the unique msgId index), inserted in bulk, unordered; a duplicate-key error for a record means it is already
 *   durable, so it is acked like a fresh one. Outcomes are read per record from `writeErrors`, never from the counts
 *   (the stand-in reports a wrong `insertedCount` for unordered writes with duplicates);
 * - telemetry: one bucket document per machine and minute, holding its samples in a map keyed by `(bootId, seq)`:
 *   the map's keys are exactly the set of samples the bucket holds, and writing a sample sets its own key, so
 *   replays, out-of-order batches and two batches of one machine written in parallel store every sample exactly
 *   once. (A "highest seq per boot" mark would drop a lower seq that arrives after a higher one.) One atomic
 *   update per bucket and batch, filtered by `_id` alone: any other condition makes the stand-in scan the
 *   collection (measured: 0.5 ms per update at 500 buckets, 3–6 ms at 5,000).
 * - dead letters: refused records, `_id` = gateway + batchId + index (a batchId names one exact set of records,
 *   so a resent batch dead-letters nothing twice).
 *
 * The driver's collections are used directly (not mongoose models): the payloads were validated against the
 * protocol schemas already, and a 500-record batch should cost one round trip, not 500 casts.
 */
import { DUPLICATE_KEY, isDuplicateKey } from '../db/mongo.ts';
import type { Collection, Db, Document } from 'mongodb';
import { MongoBulkWriteError, MongoServerError, type WriteError } from 'mongodb';
import type {
  BatchId,
  BranchId,
  GatewayId,
  Lane,
  MachineId,
  MsgId,
  RecordKind,
  Telemetry,
} from '../../../protocol/index.ts';

/** Records of each kind but telemetry go to their own collection. */
export const RECORD_COLLECTIONS = {
  meta: 'machine_metas',
  status: 'machine_status_changes',
  workout: 'workouts',
  event: 'machine_events',
  'access-scan': 'access_scans',
  'offline-decision': 'offline_decisions',
} as const satisfies Record<Exclude<RecordKind, 'telemetry'>, string>;

export type StoredRecordKind = keyof typeof RECORD_COLLECTIONS;

export const TELEMETRY_COLLECTION = 'telemetry_buckets';
export const DEAD_LETTER_COLLECTION = 'dead_letters';

/** One telemetry bucket per machine and this many milliseconds of sample time. */
export const TELEMETRY_BUCKET_MS = 60_000;

/** Longest raw excerpt kept in a dead letter, in characters. */
export const MAX_DEAD_LETTER_EXCERPT = 2_048;

const NAMESPACE_EXISTS = 48;

/**
 * Indexes real MongoDB needs for the reads and the retention job (the stand-in accepts and ignores non-unique ones,
 * ARCHITECTURE "The MongoDB-compatible server used here"). Uniqueness by msgId is the `_id` index.
 */
const INDEXES: Record<string, { key: Record<string, 1 | -1>; name: string }[]> = {
  machine_metas: [{ key: { branch: 1, source: 1, at: -1 }, name: 'branch_machine_at' }],
  machine_status_changes: [{ key: { branch: 1, source: 1, at: -1 }, name: 'branch_machine_at' }],
  workouts: [
    { key: { userId: 1, at: -1 }, name: 'user_at' },
    { key: { branch: 1, source: 1, at: -1 }, name: 'branch_machine_at' },
  ],
  machine_events: [
    { key: { branch: 1, source: 1, at: -1 }, name: 'branch_machine_at' },
    { key: { branch: 1, type: 1, at: -1 }, name: 'branch_type_at' },
  ],
  access_scans: [
    { key: { branch: 1, at: -1 }, name: 'branch_at' },
    { key: { userId: 1, at: -1 }, name: 'user_at' },
  ],
  offline_decisions: [{ key: { branch: 1, at: -1 }, name: 'branch_at' }],
  [TELEMETRY_COLLECTION]: [
    { key: { start: 1 }, name: 'start' },
    { key: { branch: 1, machine: 1, start: -1 }, name: 'branch_machine_start' },
  ],
  [DEAD_LETTER_COLLECTION]: [
    { key: { receivedAt: 1 }, name: 'received_at' },
    { key: { gateway: 1, receivedAt: -1 }, name: 'gateway_received_at' },
    { key: { reason: 1, receivedAt: -1 }, name: 'reason_received_at' },
  ],
};

/**
 * Creates every ingest collection and index before traffic: a collection created by a first insert can race an
 * explicit create on the stand-in. Idempotent; safe on every start and on several nodes.
 */
export async function ensureIngestCollections(db: Db): Promise<void> {
  for (const [name, indexes] of Object.entries(INDEXES)) {
    try {
      await db.createCollection(name);
    } catch (err) {
      if (!(err instanceof MongoServerError && err.code === NAMESPACE_EXISTS)) throw err;
    }
    for (const index of indexes) await db.collection(name).createIndex(index.key, { name: index.name });
  }
}

/** Where a record came from: the uplink topic and batch. */
export interface Provenance {
  branch: BranchId;
  gateway: GatewayId;
  batchId: BatchId;
}

/** A record document: the payload's fields at the top level, `_id` = msgId, event time as a Date in `at`. */
export interface RecordDocument extends Document {
  _id: MsgId;
  branch: BranchId;
  gateway: GatewayId;
  batchId: BatchId;
  /** `ts` as a Date, for range queries and retention. */
  at: Date;
  /** Cloud clock when stored. */
  ingestedAt: Date;
  /** Gateway clock when the record entered its queue (diagnostic, untrusted). */
  gatewayReceivedAt?: number;
}

export interface InsertOutcome {
  /** Newly stored. */
  stored: MsgId[];
  /** Already stored before (a redelivery): durable, acked like a fresh one. */
  duplicate: MsgId[];
  /** Refused by the database for another reason: neither acked nor rejected, so the gateway sends them again. */
  failed: MsgId[];
}

export interface IngestStore {
  readonly db: Db;
  /**
   * Inserts records of one kind; resolves with each record's outcome, rejects only when the write as a whole
   * failed (no server, timeout): then nothing may be acked.
   */
  insertRecords(kind: StoredRecordKind, docs: readonly RecordDocument[]): Promise<InsertOutcome>;
  /** Adds samples to their buckets, each at most once; resolves with how many were new. */
  addTelemetry(samples: readonly TelemetrySample[]): Promise<{ stored: number; duplicate: number }>;
  /** Stores dead letters; one already stored (a resent batch) is a no-op. */
  insertDeadLetters(docs: readonly DeadLetterDocument[]): Promise<void>;
}

export interface TelemetrySample {
  branch: BranchId;
  machine: MachineId;
  sample: Telemetry;
}

/** A bucket: a machine's samples of one minute, with the set of sample keys it holds. */
export interface TelemetryBucketDocument extends Document {
  /** `{branch}:{machine}:{start ms}` */
  _id: string;
  branch: BranchId;
  machine: MachineId;
  /** Bucket start (inclusive) and end (exclusive), by sample time. */
  start: Date;
  end: Date;
  /**
   * The samples as published (envelope included, `source` left out), each under its key `${bootId}:${seq}`: the
   * keys are exactly the set of samples the bucket holds. Sort the values by `ts` to read them in order.
   */
  samples: Record<string, Document>;
  firstTs: number;
  lastTs: number;
}

export interface DeadLetterDocument extends Document {
  /** `{gateway}:{batchId}:{index}` for a record, `{gateway}:{batchId}:batch` for a whole batch. */
  _id: string;
  branch: BranchId;
  gateway: GatewayId;
  lane: Lane;
  batchId: BatchId;
  /** Position in the batch; absent for a whole batch. */
  index?: number;
  msgId?: MsgId;
  kind?: string;
  reason: string;
  /** The failing field, e.g. `payload.speedMps`. */
  path?: string;
  /** The failing check, e.g. `max_value`. */
  issue?: string;
  /** At most MAX_DEAD_LETTER_EXCERPT characters of the input, credentials blanked. */
  raw: string;
  receivedAt: Date;
}

export function createIngestStore(db: Db, { writeTimeoutMs }: { writeTimeoutMs: number }): IngestStore {
  const collection = <T extends Document>(name: string) => db.collection<T>(name);
  return {
    db,
    insertRecords: (kind, docs) =>
      insertIdempotent(collection<RecordDocument>(RECORD_COLLECTIONS[kind]), docs, writeTimeoutMs),
    addTelemetry: (samples) =>
      addTelemetry(collection<TelemetryBucketDocument>(TELEMETRY_COLLECTION), samples, writeTimeoutMs),
    async insertDeadLetters(docs) {
      if (docs.length === 0) return;
      const outcome = await insertIdempotent(
        collection<DeadLetterDocument>(DEAD_LETTER_COLLECTION),
        docs,
        writeTimeoutMs,
      );
      if (outcome.failed.length > 0) throw new Error(`${outcome.failed.length} dead letters could not be stored`);
    },
  };
}

async function insertIdempotent<T extends { _id: string }>(
  coll: Collection<T>,
  docs: readonly T[],
  timeoutMS: number,
): Promise<InsertOutcome> {
  const ids = docs.map((doc) => doc._id);
  const outcome: InsertOutcome = { stored: [], duplicate: [], failed: [] };
  if (docs.length === 0) return outcome;
  const errorCodes = new Map<number, number | undefined>();
  try {
    // The driver adds nothing to these documents (they carry their _id), so the caller's objects stay as given.
    await coll.insertMany(docs as never, { ordered: false, timeoutMS });
  } catch (err) {
    if (!(err instanceof MongoBulkWriteError) || err.writeErrors === undefined) throw err;
    const reported: WriteError | readonly WriteError[] = err.writeErrors;
    const writeErrors: readonly WriteError[] = isWriteErrorList(reported) ? reported : [reported];
    // A bulk error without per-document errors (e.g. a write concern failure) says nothing about any record.
    if (writeErrors.length === 0 || err.writeConcernError) throw err;
    for (const writeError of writeErrors) errorCodes.set(writeError.index, writeError.code);
  }
  ids.forEach((id, index) => {
    if (!errorCodes.has(index)) outcome.stored.push(id as MsgId);
    else if (errorCodes.get(index) === DUPLICATE_KEY) outcome.duplicate.push(id as MsgId);
    else outcome.failed.push(id as MsgId);
  });
  return outcome;
}

function isWriteErrorList(value: WriteError | readonly WriteError[]): value is readonly WriteError[] {
  return Array.isArray(value);
}

/** The bucket a sample belongs to. */
export function bucketOf(branch: BranchId, machine: MachineId, ts: number): { id: string; start: number } {
  const start = Math.floor(ts / TELEMETRY_BUCKET_MS) * TELEMETRY_BUCKET_MS;
  return { id: `${branch}:${machine}:${start}`, start };
}

/** The idempotency key of a sample within its machine: its boot and sequence number. */
export function sampleKey(sample: Pick<Telemetry, 'bootId' | 'seq'>): string {
  return `${sample.bootId}:${sample.seq}`;
}

async function addTelemetry(
  coll: Collection<TelemetryBucketDocument>,
  samples: readonly TelemetrySample[],
  timeoutMS: number,
): Promise<{ stored: number; duplicate: number }> {
  // Group by bucket; a second sample with a key already in the group (same boot and seq) is a duplicate.
  const groups = new Map<
    string,
    { start: number; branch: BranchId; machine: MachineId; samples: Map<string, Telemetry> }
  >();
  let duplicate = 0;
  for (const s of samples) {
    const { id, start } = bucketOf(s.branch, s.machine, s.sample.ts);
    let group = groups.get(id);
    if (!group) {
      group = { start, branch: s.branch, machine: s.machine, samples: new Map() };
      groups.set(id, group);
    }
    const key = sampleKey(s.sample);
    if (group.samples.has(key)) duplicate += 1;
    else group.samples.set(key, s.sample);
  }
  let stored = 0;
  await Promise.all(
    [...groups].map(async ([id, g]) => {
      const held = await upsertBucket(coll, id, g.start, g.branch, g.machine, g.samples, timeoutMS);
      stored += g.samples.size - held;
      duplicate += held;
    }),
  );
  return { stored, duplicate };
}

/**
 * One atomic update of one bucket, filtered by `_id` alone (the stand-in scans the whole collection for any other
 * condition; real MongoDB uses the `_id` index either way). Each sample is `$set` under its own key, so it is there
 * exactly once whatever the order or number of deliveries; the previous image, projected to those keys, says
 * which were held already. Returns how many were.
 */
async function upsertBucket(
  coll: Collection<TelemetryBucketDocument>,
  id: string,
  start: number,
  branch: BranchId,
  machine: MachineId,
  samples: ReadonlyMap<string, Telemetry>,
  timeoutMS: number,
): Promise<number> {
  const set: Record<string, Document> = {};
  const projection: Record<string, 1> = {};
  let firstTs = Infinity;
  let lastTs = -Infinity;
  for (const [key, sample] of samples) {
    set[`samples.${key}`] = storedSample(sample);
    projection[`samples.${key}`] = 1;
    firstTs = Math.min(firstTs, sample.ts);
    lastTs = Math.max(lastTs, sample.ts);
  }
  const update = {
    $set: set,
    $min: { firstTs },
    $max: { lastTs },
    $setOnInsert: { branch, machine, start: new Date(start), end: new Date(start + TELEMETRY_BUCKET_MS) },
  };
  for (let attempt = 1; ; attempt++) {
    try {
      const before = await coll.findOneAndUpdate({ _id: id }, update, {
        upsert: true,
        returnDocument: 'before',
        projection,
        timeoutMS,
      });
      const held = (before as { samples?: Record<string, unknown> } | null)?.samples;
      return held ? [...samples.keys()].filter((key) => Object.hasOwn(held, key)).length : 0;
    } catch (err) {
      // Two writers creating one bucket at once: the loser's insert hits the winner's _id; the bucket exists now,
      // so the same update applies to it (real MongoDB retries this itself).
      if (attempt >= 3 || !(err instanceof MongoServerError && isDuplicateKey(err))) throw err;
    }
  }
}

/** A sample as a bucket keeps it: the machine is the bucket's, so `source` is left out. */
function storedSample(sample: Telemetry): Document {
  const { source: _source, ...rest } = sample;
  return rest;
}
