/**
 * Where ingest writes in MongoDB, and how, so that every write is idempotent and a redelivered batch is a no-op:
 * - records (everything but telemetry): one collection per kind, `_id` = the record's msgId (the primary key is
 *   the unique msgId index), inserted in bulk, unordered; a duplicate-key error for a record means it is already
 *   durable, so it is acked like a fresh one. Outcomes are read per record from `writeErrors`, never from the counts
 *   (the stand-in reports a wrong `insertedCount` for unordered writes with duplicates);
 * - telemetry: bucket documents per machine and minute, each holding at most TELEMETRY_BUCKET_SAMPLES samples (one
 *   run of seqs of one boot, `bucketOf`) in a map keyed by `(bootId, seq)`: the map's keys are exactly the set of
 *   samples the bucket holds, and writing a sample sets its own key, so replays, out-of-order batches and two
 *   batches of one machine written in parallel store every sample exactly once. (A "highest seq per boot" mark
 *   would drop a lower seq that arrives after a higher one.) Per batch: one read of its buckets (which samples are
 *   held: the duplicates) and one bulk write of one update per bucket, filtered by `_id` alone: any other condition
 *   makes the stand-in scan the collection (measured: 0.5 ms per update at 500 buckets, 3–6 ms at 5,000). The cap
 *   keeps each update cheap: an update costs in proportion to the size of the document it changes (stand-in, 100
 *   updates of one sample each: 0.6 ms per update of a 10-sample bucket, 2.5 ms at 300, 7–8 ms at 900 — a whole
 *   minute at 16 Hz), so uncapped minute buckets made the write cost per sample grow with the rate.
 * - dead letters: refused records, `_id` = gateway + batchId + index (a batchId names one exact set of records,
 *   so a resent batch dead-letters nothing twice).
 *
 * The driver's collections are used directly (not mongoose models): the payloads were validated against the
 * protocol schemas already, and a 500-record batch should cost one round trip, not 500 casts.
 */
import { DUPLICATE_KEY } from '../db/mongo.ts';
import type { Collection, Db, Document } from 'mongodb';
import { MongoBulkWriteError, MongoServerError, type AnyBulkWriteOperation, type WriteError } from 'mongodb';
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

/** Telemetry buckets per machine and this many milliseconds of sample time. */
export const TELEMETRY_BUCKET_MS = 60_000;

/**
 * Most samples in one bucket: a machine-minute is split by runs of this many seqs of a boot (one bucket at up to
 * ~1 Hz, 16 at 16 Hz).
 */
export const TELEMETRY_BUCKET_SAMPLES = 64;

/** Longest raw excerpt kept in a dead letter, in characters. */
export const MAX_DEAD_LETTER_EXCERPT = 2_048;

const NAMESPACE_EXISTS = 48;

/**
 * Indexes real MongoDB needs for the reads and the retention job (the stand-in accepts and ignores non-unique ones,
 * ARCHITECTURE "The MongoDB-compatible server used here"). Uniqueness by msgId is the `_id` index.
 */
/** The onStored sweep's query (stored-hooks.ts): records still pending for a handler, oldest first. */
const PENDING_INDEX = { key: { pending: 1, ingestedAt: 1 }, name: 'pending_ingested' } as const;

const INDEXES: Record<string, { key: Record<string, 1 | -1>; name: string }[]> = {
  machine_metas: [{ key: { branch: 1, source: 1, at: -1 }, name: 'branch_machine_at' }],
  machine_status_changes: [{ key: { branch: 1, source: 1, at: -1 }, name: 'branch_machine_at' }],
  workouts: [
    { key: { userId: 1, at: -1 }, name: 'user_at' },
    { key: { branch: 1, source: 1, at: -1 }, name: 'branch_machine_at' },
    PENDING_INDEX,
  ],
  machine_events: [
    { key: { branch: 1, source: 1, at: -1 }, name: 'branch_machine_at' },
    { key: { branch: 1, type: 1, at: -1 }, name: 'branch_type_at' },
  ],
  access_scans: [
    { key: { branch: 1, at: -1 }, name: 'branch_at' },
    { key: { userId: 1, at: -1 }, name: 'user_at' },
    PENDING_INDEX,
  ],
  offline_decisions: [{ key: { branch: 1, at: -1 }, name: 'branch_at' }, PENDING_INDEX],
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

/**
 * A bucket: a machine's samples of one minute and one run of TELEMETRY_BUCKET_SAMPLES seqs of a boot, with the set
 * of sample keys it holds. Read a machine's telemetry by `branch`, `machine` and `start`, never by `_id`.
 */
export interface TelemetryBucketDocument extends Document {
  /** `{branch}:{machine}:{start ms}:{bootId}:{⌊seq / TELEMETRY_BUCKET_SAMPLES⌋}` (`bucketOf`) */
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
  const inFlight: InFlight = new Map();
  return {
    db,
    insertRecords: (kind, docs) =>
      insertIdempotent(collection<RecordDocument>(RECORD_COLLECTIONS[kind]), docs, writeTimeoutMs),
    addTelemetry: (samples) =>
      addTelemetry(collection<TelemetryBucketDocument>(TELEMETRY_COLLECTION), samples, writeTimeoutMs, inFlight),
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

/** The bucket a sample belongs to: its machine, minute, boot and run of seqs. */
export function bucketOf(
  branch: BranchId,
  machine: MachineId,
  sample: Pick<Telemetry, 'ts' | 'bootId' | 'seq'>,
): { id: string; start: number } {
  const start = Math.floor(sample.ts / TELEMETRY_BUCKET_MS) * TELEMETRY_BUCKET_MS;
  const run = Math.floor(sample.seq / TELEMETRY_BUCKET_SAMPLES);
  return { id: `${branch}:${machine}:${start}:${sample.bootId}:${run}`, start };
}

/** The idempotency key of a sample within its machine: its boot and sequence number. */
export function sampleKey(sample: Pick<Telemetry, 'bootId' | 'seq'>): string {
  return `${sample.bootId}:${sample.seq}`;
}

type BucketGroup = { start: number; branch: BranchId; machine: MachineId; samples: Map<string, Telemetry> };

/**
 * Sample keys (`{bucket id} {key}`) being written by a call of this store right now, each with that call's end: a
 * call holding one of them waits for it first, so overlapping calls (a resend while the first delivery is still
 * being written) run one after the other and the later one's read sees what the earlier one stored.
 */
type InFlight = Map<string, Promise<void>>;

/**
 * Writes a batch's samples with two round trips whatever the number of buckets: one read of the buckets, projected to
 * the batch's keys (which samples are held already: the duplicates), then one unordered `bulkWrite` of one
 * `updateOne` per bucket (all the batch's samples of that bucket merged), filtered by `_id` alone (the stand-in
 * scans the whole collection for any other condition; real MongoDB uses the `_id` index either way), no documents
 * returned. Each sample is `$set` under its own key, so it is there exactly once whatever the order or number of
 * deliveries; a bucket whose samples are all held already is not written again. The counts are exact within one
 * process (`inFlight`); two cloud nodes writing one sample at the same moment may both count it as stored (a
 * metric only: the sample is still stored once).
 */
async function addTelemetry(
  coll: Collection<TelemetryBucketDocument>,
  samples: readonly TelemetrySample[],
  timeoutMS: number,
  inFlight: InFlight,
): Promise<{ stored: number; duplicate: number }> {
  // Group by bucket; a second sample with a key already in the group (same boot and seq) is a duplicate.
  const groups = new Map<string, BucketGroup>();
  let duplicate = 0;
  for (const s of samples) {
    const { id, start } = bucketOf(s.branch, s.machine, s.sample);
    let group = groups.get(id);
    if (!group) {
      group = { start, branch: s.branch, machine: s.machine, samples: new Map() };
      groups.set(id, group);
    }
    const key = sampleKey(s.sample);
    if (group.samples.has(key)) duplicate += 1;
    else group.samples.set(key, s.sample);
  }
  if (groups.size === 0) return { stored: 0, duplicate };

  const flightKeys: string[] = [];
  for (const [id, g] of groups) for (const key of g.samples.keys()) flightKeys.push(`${id} ${key}`);
  // Wait for the calls writing any of these samples; claim them all once none is (no await in between).
  for (;;) {
    const earlier = new Set<Promise<void>>();
    for (const flightKey of flightKeys) {
      const running = inFlight.get(flightKey);
      if (running) earlier.add(running);
    }
    if (earlier.size === 0) break;
    await Promise.allSettled(earlier);
  }
  let finish!: () => void;
  const finished = new Promise<void>((resolve) => (finish = resolve));
  for (const flightKey of flightKeys) inFlight.set(flightKey, finished);
  try {
    const projection: Record<string, 1> = {};
    for (const g of groups.values()) for (const key of g.samples.keys()) projection[`samples.${key}`] = 1;
    const before = await coll.find({ _id: { $in: [...groups.keys()] } }, { projection, timeoutMS }).toArray();
    const heldBy = new Map(before.map((doc) => [doc._id, doc.samples ?? {}]));
    let stored = 0;
    const ops: AnyBulkWriteOperation<TelemetryBucketDocument>[] = [];
    for (const [id, g] of groups) {
      const held = heldBy.get(id) ?? {};
      let missing = 0;
      for (const key of g.samples.keys()) if (!Object.hasOwn(held, key)) missing += 1;
      if (missing === 0) {
        duplicate += g.samples.size;
        continue;
      }
      stored += missing;
      duplicate += g.samples.size - missing;
      ops.push({ updateOne: { filter: { _id: id }, update: bucketUpdate(g), upsert: true } });
    }
    await bulkUpsert(coll, ops, timeoutMS);
    return { stored, duplicate };
  } finally {
    for (const flightKey of flightKeys) if (inFlight.get(flightKey) === finished) inFlight.delete(flightKey);
    finish();
  }
}

/** One bucket's update: every sample under its own key, the time range widened, the bucket's fields on insert. */
function bucketUpdate(g: BucketGroup) {
  const set: Record<string, Document> = {};
  let firstTs = Infinity;
  let lastTs = -Infinity;
  for (const [key, sample] of g.samples) {
    set[`samples.${key}`] = storedSample(sample);
    firstTs = Math.min(firstTs, sample.ts);
    lastTs = Math.max(lastTs, sample.ts);
  }
  return {
    $set: set,
    $min: { firstTs },
    $max: { lastTs },
    $setOnInsert: {
      branch: g.branch,
      machine: g.machine,
      start: new Date(g.start),
      end: new Date(g.start + TELEMETRY_BUCKET_MS),
    },
  };
}

/**
 * Runs the upserts in one unordered bulk write. Two writers creating one bucket at once: the loser's insert hits
 * the winner's `_id` (the stand-in reports it as a duplicate-key write error; real MongoDB retries it itself); the
 * bucket exists now, so those updates are sent again. Any other write error fails the whole batch (not acked).
 */
async function bulkUpsert(
  coll: Collection<TelemetryBucketDocument>,
  ops: AnyBulkWriteOperation<TelemetryBucketDocument>[],
  timeoutMS: number,
): Promise<void> {
  for (let attempt = 1; ops.length > 0; attempt++) {
    try {
      await coll.bulkWrite(ops, { ordered: false, timeoutMS });
      return;
    } catch (err) {
      if (attempt >= 3 || !(err instanceof MongoBulkWriteError) || err.writeErrors === undefined) throw err;
      if (err.writeConcernError) throw err;
      const reported: WriteError | readonly WriteError[] = err.writeErrors;
      const writeErrors: readonly WriteError[] = isWriteErrorList(reported) ? reported : [reported];
      if (writeErrors.length === 0 || !writeErrors.every((e) => e.code === DUPLICATE_KEY)) throw err;
      ops = writeErrors.map((e) => ops[e.index]!);
    }
  }
}

/** A sample as a bucket keeps it: the machine is the bucket's, so `source` is left out. */
function storedSample(sample: Telemetry): Document {
  const { source: _source, ...rest } = sample;
  return rest;
}
