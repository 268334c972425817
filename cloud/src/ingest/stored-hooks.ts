/**
 * `ingest.onStored(kind, handler)`: other domains react to newly stored uplink records (sessions reconcile offline
 * door scans, machines apply offline link decisions, workouts attach segments to members) — durably:
 *
 * - a record of a kind with handlers is inserted with `pending: [handler names]` in the same write as the record
 *   itself, so a crash between the write and the handler loses nothing;
 * - after the batch is acked, each handler gets the batch's newly stored records of its kind (never the
 *   duplicates of a redelivered batch: their insert failed, so nothing new is pending); success `$pull`s the
 *   handler's name from the records' `pending`;
 * - a sweep (every `sweepEveryMs`) hands records still pending for a handler after `retryAfterMs` to it again —
 *   after a handler failure, after a crash, or when too many runs were in flight to start one (backpressure never
 *   holds ingest). After `maxAttempts` failures a record is parked (`failedHooks`) and logged, not retried forever.
 *
 * A handler that cannot apply a record yet (it waits for another record, e.g. a machine link for the check-in it
 * followed) rejects with `RetryLater`: the run is retried by the sweep like a failed one, without counting as a
 * failure (no parking, logged at debug) — the handler bounds how long it waits. A retried run gets the batch's
 * records again in stored order (oldest batch first, event time within it), from the first one not done.
 *
 * Handlers therefore see a record at least once and, barring failures, exactly once; they must be idempotent with
 * respect to a retry of their own failed run. Several cloud nodes may sweep the same record at once only if one
 * node's run is slower than `retryAfterMs`; idempotent handlers make that harmless.
 */
import type { Collection, Db, Document } from 'mongodb';
import type { Clock } from '../../../tools/runtime/clock.ts';
import type { Logger } from '../../../tools/runtime/logger.ts';
import type { BatchId, BranchId, GatewayId, MsgId, RecordOf } from '../../../protocol/index.ts';
import { RECORD_COLLECTIONS, type RecordDocument, type StoredRecordKind } from './store.ts';

/** A newly stored record as handlers see it: the payload as published (msgId included) and where it came from. */
export interface StoredRecord<K extends StoredRecordKind = StoredRecordKind> {
  kind: K;
  msgId: MsgId;
  branch: BranchId;
  gateway: GatewayId;
  batchId: BatchId;
  ingestedAtMs: number;
  payload: RecordOf<K>['payload'];
}

/** Rejecting a run with this retries it later (the sweep) without counting a failure; the handler bounds it. */
export class RetryLater extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'RetryLater';
  }
}

export interface StoredContext {
  branch: BranchId;
  gateway: GatewayId;
  /** True when the sweep runs it again (after a failure, a crash or shed load). */
  retry: boolean;
}

export type StoredHandler<K extends StoredRecordKind = StoredRecordKind> = (
  records: StoredRecord<K>[],
  ctx: StoredContext,
) => Promise<void>;

export interface OnStoredOptions {
  /**
   * Stable name of the handler, kept in the records' `pending` marker: a restart must register the same handler
   * under the same name (default `{kind}:{n}`, n = registration order for that kind).
   */
  name?: string;
}

export interface StoredHooks {
  on<K extends StoredRecordKind>(kind: K, handler: StoredHandler<K>, options?: OnStoredOptions): void;
  /** The handler names a new record of this kind is marked pending for (empty: none). */
  pendingFor(kind: StoredRecordKind): readonly string[];
  /** Runs the handlers on freshly stored documents (detached; never rejects). */
  dispatch(kind: StoredRecordKind, docs: readonly RecordDocument[]): void;
  /** Retries what is still pending after `retryAfterMs`; resolves with how many records were handed over. */
  sweep(): Promise<number>;
  /** Stops the sweep and waits (bounded) for the runs in flight. */
  stop(timeoutMs?: number): Promise<void>;
}

export interface StoredHooksOptions {
  db: Db;
  log: Logger;
  clock: Clock;
  /** How often the sweep runs (default 5 s; 0 = never on its own, tests call sweep()). */
  sweepEveryMs?: number;
  /** How old (by ingestedAt, cloud clock) a pending record must be before the sweep retries it (default 5 s). */
  retryAfterMs?: number;
  /** Failures after which a record is parked for that handler (default 10). */
  maxAttempts?: number;
  /** Runs started on fresh records at once; beyond it records wait for the sweep (default 32). */
  maxInFlight?: number;
  /** Records per sweep query (default 500). */
  sweepBatch?: number;
  /**
   * The periodic sweep queries MongoDB only when this process may have left records pending (a failed run, a run
   * not started for lack of room, a full batch, its start after a crash) — and at least this often for what other
   * nodes left (default 60 s). The MongoDB-compatible stand-in has no secondary indexes: every query is a scan.
   */
  fullSweepEveryMs?: number;
}

interface Registered {
  kind: StoredRecordKind;
  name: string;
  handler: StoredHandler;
}

/** Fields ingest adds to a stored record; the rest is the payload as published. */
const DOC_FIELDS = new Set([
  '_id',
  'branch',
  'gateway',
  'batchId',
  'at',
  'ingestedAt',
  'gatewayReceivedAt',
  'pending',
  'hookFailures',
  'failedHooks',
]);

export function storedRecordOf<K extends StoredRecordKind>(kind: K, doc: RecordDocument): StoredRecord<K> {
  const payload: Record<string, unknown> = { msgId: doc._id };
  for (const [key, value] of Object.entries(doc)) if (!DOC_FIELDS.has(key)) payload[key] = value;
  return {
    kind,
    msgId: doc._id,
    branch: doc.branch,
    gateway: doc.gateway,
    batchId: doc.batchId,
    ingestedAtMs: doc.ingestedAt.getTime(),
    payload: payload as RecordOf<K>['payload'],
  };
}

export function createStoredHooks(options: StoredHooksOptions): StoredHooks {
  const { db, log, clock } = options;
  const retryAfterMs = options.retryAfterMs ?? 5_000;
  const maxAttempts = options.maxAttempts ?? 10;
  const maxInFlight = options.maxInFlight ?? 32;
  const sweepBatch = options.sweepBatch ?? 500;
  const handlers = new Map<StoredRecordKind, Registered[]>();
  const inFlight = new Set<Promise<void>>();
  /** `{handler}\0{msgId}` of records a run holds right now: the sweep leaves them alone. */
  const busy = new Set<string>();
  let stopped = false;
  let sweeping: Promise<number> | undefined;
  /**
   * When this process last may have left records pending (a failure, a skipped run; at start: a crash may have),
   * undefined once a sweep ran late enough to see them (retryAfterMs after it). performance.now() times.
   */
  let dirtyAt: number | undefined = performance.now();
  const markDirty = () => {
    dirtyAt = performance.now();
  };
  let lastSweepAt = performance.now();
  const fullSweepEveryMs = options.fullSweepEveryMs ?? 60_000;

  const collection = (kind: StoredRecordKind): Collection<RecordDocument> =>
    db.collection<RecordDocument>(RECORD_COLLECTIONS[kind]);

  const track = (work: Promise<void>) => {
    inFlight.add(work);
    void work.finally(() => inFlight.delete(work));
  };

  /** One handler on one branch/gateway group of records; never rejects. */
  async function run(reg: Registered, docs: readonly RecordDocument[], retry: boolean): Promise<void> {
    const ids = docs.map((d) => d._id);
    const keys = ids.map((id) => `${reg.name}\0${id}`);
    for (const key of keys) busy.add(key);
    const first = docs[0]!;
    try {
      const records = docs.map((d) => storedRecordOf(reg.kind, d));
      await reg.handler(records, { branch: first.branch, gateway: first.gateway, retry });
      await collection(reg.kind).updateMany({ _id: { $in: ids } }, { $pull: { pending: reg.name } } as Document);
    } catch (err) {
      markDirty();
      if (err instanceof RetryLater) {
        log.debug({ handler: reg.name, records: ids.length, retry, reason: err.message }, 'stored records deferred');
        return;
      }
      log.warn(
        { handler: reg.name, records: ids.length, retry, err: { message: (err as Error).message } },
        'stored-record handler failed; the sweep retries it',
      );
      try {
        await collection(reg.kind).updateMany({ _id: { $in: ids } }, { $inc: { [`hookFailures.${reg.name}`]: 1 } });
      } catch {
        // MongoDB is away too: the records stay pending, the sweep finds them.
      }
    } finally {
      for (const key of keys) busy.delete(key);
    }
  }

  function groups(docs: readonly RecordDocument[]): RecordDocument[][] {
    const byOrigin = new Map<string, RecordDocument[]>();
    for (const doc of docs) {
      const key = `${doc.branch}\0${doc.gateway}`;
      const list = byOrigin.get(key) ?? [];
      list.push(doc);
      byOrigin.set(key, list);
    }
    return [...byOrigin.values()];
  }

  async function sweepOnce(): Promise<number> {
    lastSweepAt = performance.now();
    if (dirtyAt !== undefined && lastSweepAt - dirtyAt >= retryAfterMs) dirtyAt = undefined;
    let handed = 0;
    const cutoff = new Date(clock.nowMs() - retryAfterMs);
    for (const [kind, regs] of handlers) {
      for (const reg of regs) {
        if (stopped) return handed;
        const found = await collection(kind)
          .find({ pending: reg.name, ingestedAt: { $lt: cutoff } } as Document)
          // Stored order (a batch's records by event time): a retry does not reorder a gateway's decisions.
          .sort({ ingestedAt: 1, at: 1, _id: 1 })
          .limit(sweepBatch)
          .toArray();
        if (found.length >= sweepBatch) markDirty();
        const due: RecordDocument[] = [];
        const parked: MsgId[] = [];
        for (const doc of found) {
          if (busy.has(`${reg.name}\0${doc._id}`)) continue;
          const failures = (doc['hookFailures'] as Record<string, number> | undefined)?.[reg.name] ?? 0;
          if (failures >= maxAttempts) parked.push(doc._id);
          else due.push(doc);
        }
        if (parked.length > 0) {
          log.error(
            { handler: reg.name, kind, msgIds: parked.slice(0, 20), count: parked.length },
            'stored-record handler gave up',
          );
          await collection(kind).updateMany({ _id: { $in: parked } }, {
            $pull: { pending: reg.name },
            $addToSet: { failedHooks: reg.name },
          } as Document);
        }
        for (const group of groups(due)) {
          handed += group.length;
          await run(reg, group, true);
        }
      }
    }
    return handed;
  }

  const sweepEveryMs = options.sweepEveryMs ?? 5_000;
  const timer =
    sweepEveryMs > 0
      ? setInterval(() => {
          if (dirtyAt === undefined && performance.now() - lastSweepAt < fullSweepEveryMs) return;
          void hooks.sweep().catch((err: unknown) => {
            markDirty();
            log.warn({ err: { message: (err as Error).message } }, 'stored-record sweep failed');
          });
        }, sweepEveryMs)
      : undefined;
  timer?.unref();

  const hooks: StoredHooks = {
    on(kind, handler, opts = {}) {
      const regs = handlers.get(kind) ?? [];
      const name = opts.name ?? `${kind}:${regs.length}`;
      if (!/^[A-Za-z0-9:_-]{1,64}$/.test(name)) throw new Error(`onStored: invalid handler name ${name}`);
      for (const list of handlers.values()) {
        if (list.some((r) => r.name === name)) throw new Error(`onStored: handler ${name} registered twice`);
      }
      regs.push({ kind, name, handler: handler as unknown as StoredHandler });
      handlers.set(kind, regs);
    },
    pendingFor(kind) {
      return (handlers.get(kind) ?? []).map((r) => r.name);
    },
    dispatch(kind, docs) {
      const regs = handlers.get(kind);
      if (!regs || docs.length === 0 || stopped) return;
      // Over the limit the records simply stay pending: the sweep takes them, ingest is never held.
      if (inFlight.size >= maxInFlight) {
        markDirty();
        return;
      }
      for (const reg of regs) for (const group of groups(docs)) track(run(reg, group, false));
    },
    sweep() {
      // One sweep at a time; a caller arriving meanwhile shares the running one.
      sweeping ??= sweepOnce().finally(() => {
        sweeping = undefined;
      });
      return sweeping;
    },
    async stop(timeoutMs = 5_000) {
      stopped = true;
      if (timer) clearInterval(timer);
      let t: NodeJS.Timeout | undefined;
      await Promise.race([
        Promise.allSettled([...inFlight, ...(sweeping ? [sweeping] : [])]),
        new Promise((resolve) => {
          t = setTimeout(resolve, timeoutMs);
        }),
      ]);
      clearTimeout(t);
    },
  };
  return hooks;
}
