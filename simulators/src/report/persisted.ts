/**
 * What of a run reached MongoDB, read back through the documented data model (docs/ingest.md, "Data model") and
 * nothing of ingest's code:
 * - records (meta, status, workout, event): one document per record in their collection, `_id` = the record's msgId,
 *   the payload's envelope fields (`source`, `bootId`, `seq`) kept at the top level;
 * - telemetry: buckets in `telemetry_buckets` with the machine's `branch` and `machine` fields, each sample under
 *   the key `{bootId}:{seq}` of `samples` (how samples are split into buckets, and the bucket ids, are ingest's).
 *
 * Lost = acknowledged by the gateway (PUBACK) but not stored: what the hub promised and did not keep. A QoS 0
 * sample not stored is counted apart (QoS 0 may be dropped, TOPIC_POLICY). Duplicated = documents beyond the first
 * for one record (same boot and seq under two msgIds): the store's unique msgId makes a plain replay harmless, so
 * this catches a record stored twice under two ids.
 */
import type { Db, Document } from 'mongodb';
import type { MachineLedger } from '../fleet.ts';

/** Record kinds and their collections (docs/ingest.md). */
export const RECORD_COLLECTIONS = {
  meta: 'machine_metas',
  status: 'machine_status_changes',
  workout: 'workouts',
  event: 'machine_events',
} as const;
export const TELEMETRY_BUCKETS = 'telemetry_buckets';

export interface PersistedCounts {
  readonly records: {
    readonly sent: number;
    readonly acked: number;
    readonly persisted: number;
    /** Acknowledged, not stored. */
    readonly lost: number;
    /** Neither acknowledged nor stored (in flight when the run ended, or refused by a full queue). */
    readonly unacked: number;
    readonly duplicated: number;
    /**
     * Acknowledged, not stored, but still in a gateway's durable queue when the run ended (late, not lost): counted
     * by the coordinator once the gateways have stopped (run.ts); 0 until then.
     */
    readonly queued?: number;
  };
  readonly telemetry: {
    readonly sent: number;
    /** Acknowledged (telemetry at QoS 1 only). */
    readonly acked: number;
    readonly persisted: number;
    readonly lost: number;
    /** Not acknowledged (QoS 0, or unanswered) and not stored. */
    readonly notStored: number;
  };
  /** Bad payloads that carried a msgId, and how many of them were stored (must be 0). */
  readonly bad: { readonly withMsgId: number; readonly stored: number };
  /** Up to 10 msgIds (or sample keys) acknowledged and not stored, for a first look. */
  readonly lostExamples: readonly string[];
  /** The records acknowledged and not stored (at most MAX_LOST_LISTED), for the coordinator's final look. */
  readonly lostRecords?: readonly { readonly msgId: string; readonly kind: string }[];
}

export const MAX_LOST_LISTED = 200_000;

const CHUNK = 1_000;

export async function idsPresent(db: Db, collection: string, ids: readonly string[]): Promise<Set<string>> {
  const found = new Set<string>();
  for (let i = 0; i < ids.length; i += CHUNK) {
    const chunk = ids.slice(i, i + CHUNK);
    const docs = await db
      .collection<{ _id: string }>(collection)
      .find({ _id: { $in: chunk } }, { projection: { _id: 1 } })
      .toArray();
    for (const doc of docs) found.add(doc._id);
  }
  return found;
}

/** Documents of these boots beyond the first per (bootId, seq). */
async function duplicatesOf(db: Db, collection: string, bootIds: readonly string[]): Promise<number> {
  let extra = 0;
  for (let i = 0; i < bootIds.length; i += CHUNK) {
    const docs = await db
      .collection(collection)
      .find({ bootId: { $in: bootIds.slice(i, i + CHUNK) } }, { projection: { _id: 1, bootId: 1, seq: 1 } })
      .toArray();
    const keys = new Set<string>();
    for (const doc of docs) {
      const key = `${String(doc.bootId)}:${String(doc.seq)}`;
      if (keys.has(key)) extra += 1;
      keys.add(key);
    }
  }
  return extra;
}

export async function countPersisted(db: Db, ledgers: ReadonlyMap<string, MachineLedger>): Promise<PersistedCounts> {
  const lostExamples: string[] = [];
  // Records, by collection.
  const byKind = new Map<string, string[]>();
  let sent = 0;
  let acked = 0;
  for (const ledger of ledgers.values()) {
    ledger.sent.forEach((msgId, i) => {
      const kind = ledger.kinds[i]!;
      if (kind === 'telemetry') return;
      const list = byKind.get(kind) ?? [];
      list.push(msgId);
      byKind.set(kind, list);
      sent += 1;
      if (ledger.acked.has(msgId)) acked += 1;
    });
  }
  const stored = new Set<string>();
  for (const [kind, ids] of byKind) {
    for (const id of await idsPresent(db, RECORD_COLLECTIONS[kind as keyof typeof RECORD_COLLECTIONS], ids))
      stored.add(id);
  }
  let lost = 0;
  let unacked = 0;
  const lostRecords: { msgId: string; kind: string }[] = [];
  for (const ledger of ledgers.values()) {
    ledger.sent.forEach((msgId, i) => {
      if (stored.has(msgId)) return;
      if (ledger.acked.has(msgId)) {
        lost += 1;
        if (lostExamples.length < 10) lostExamples.push(msgId);
        if (lostRecords.length < MAX_LOST_LISTED) lostRecords.push({ msgId, kind: ledger.kinds[i]! });
      } else unacked += 1;
    });
  }
  const bootIds = [...new Set([...ledgers.values()].map((ledger) => ledger.bootId))];
  let duplicated = 0;
  for (const collection of Object.values(RECORD_COLLECTIONS)) duplicated += await duplicatesOf(db, collection, bootIds);

  // Telemetry: a machine's buckets are found by their documented `branch` and `machine` fields (docs/ingest.md),
  // not by rebuilding bucket ids, which are ingest's to choose (their size and key changed once already).
  let tSent = 0;
  let tAcked = 0;
  let tPersisted = 0;
  let tLost = 0;
  let tNotStored = 0;
  // One pass over the run's branches' buckets, not a query per machine: a MongoDB without the secondary index (the
  // stand-in ignores non-unique indexes) would scan the collection once per machine — minutes for 2,000 machines.
  const tracked = [...ledgers].filter(([, ledger]) => ledger.telemetry.seqs.length > 0);
  const held = new Map<string, Set<string>>();
  const branches = [...new Set(tracked.map(([, ledger]) => ledger.branch))];
  if (tracked.length > 0) {
    const cursor = db
      .collection<{ _id: string; branch?: string; machine?: string; samples?: Record<string, Document> }>(
        TELEMETRY_BUCKETS,
      )
      .find({ branch: { $in: branches } }, { projection: { branch: 1, machine: 1, samples: 1 } });
    for await (const doc of cursor) {
      if (typeof doc.machine !== 'string' || !ledgers.has(doc.machine)) continue;
      if (ledgers.get(doc.machine)!.branch !== doc.branch) continue;
      let keys = held.get(doc.machine);
      if (!keys) held.set(doc.machine, (keys = new Set()));
      for (const key of Object.keys(doc.samples ?? {})) keys.add(key);
    }
  }
  for (const [machine, ledger] of tracked) {
    const { seqs, acked: ackedSeqs } = ledger.telemetry;
    const keys = held.get(machine);
    for (const seq of seqs) {
      const key = `${ledger.bootId}:${seq}`;
      const wasAcked = ackedSeqs.has(seq);
      tSent += 1;
      if (wasAcked) tAcked += 1;
      if (keys?.has(key)) tPersisted += 1;
      else if (wasAcked) {
        tLost += 1;
        if (lostExamples.length < 10) lostExamples.push(`${ledger.branch}:${machine} ${key}`);
      } else tNotStored += 1;
    }
  }

  // Bad payloads: none may be stored, in any record collection.
  const badIds = [...ledgers.values()].flatMap((ledger) => ledger.bad);
  let badStored = 0;
  for (const collection of Object.values(RECORD_COLLECTIONS))
    badStored += (await idsPresent(db, collection, badIds)).size;

  return {
    records: { sent, acked, persisted: stored.size, lost, unacked, duplicated },
    telemetry: { sent: tSent, acked: tAcked, persisted: tPersisted, lost: tLost, notStored: tNotStored },
    bad: { withMsgId: badIds.length, stored: badStored },
    lostExamples,
    lostRecords,
  };
}
