/**
 * When does a published record become durable? The tracker learns every message the fleet publishes (msgId, kind,
 * source time) and polls MongoDB, where ingest writes them (cloud/src/ingest/store.ts), until it finds each one:
 * - records (meta, status, workout, event) by `_id` = msgId in their collection;
 * - telemetry samples by their key (`sampleKey`: `bootId:seq`) in their bucket (`bucketOf`: machine, minute and run of seqs),
 *   projecting only the keys not seen yet.
 * Latency = the time of the first poll that finds it − the record's `ts` (its event time at the machine; same host,
 * one clock), so it includes up to one poll interval of observation delay. At the end of a step every message the
 * gateway acknowledged (PUBACK ledger) is checked once more: one not in MongoDB is lost.
 */
import type { Db } from 'mongodb';
import hdr from 'hdr-histogram-js';
import {
  RECORD_COLLECTIONS,
  TELEMETRY_COLLECTION,
  bucketOf,
  sampleKey,
  type StoredRecordKind,
} from '../../cloud/src/ingest/store.ts';
import type { BranchId, MachineId } from '../../protocol/ids.ts';
import type { Telemetry } from '../../protocol/messages/telemetry.ts';
import type { PublishedMessage } from '../../simulators/src/fleet.ts';

interface PendingRecord {
  /** Source time; negative (−ts) for a message published during the warm-up, whose latency is not counted. */
  readonly ts: number;
  readonly collection: string;
}

/** Samples published into one bucket and not seen stored yet: key → source time (−ts during the warm-up). */
type OpenBucket = Map<string, number>;

export interface StepDurability {
  readonly published: number;
  readonly durable: number;
  /** Published and acknowledged by the gateway (PUBACK), but not found in MongoDB when the step ended. */
  readonly missing: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly maxMs: number;
  readonly recordsP99Ms: number;
  readonly telemetryP99Ms: number;
}

const histogram = () =>
  hdr.build({ lowestDiscernibleValue: 1, highestTrackableValue: 3_600_000_000, numberOfSignificantValueDigits: 3 });

export class DurabilityTracker {
  private readonly db: Db;
  private readonly branch: BranchId;
  private readonly pollMs: number;
  private readonly pending = new Map<string, PendingRecord>();
  private readonly openBuckets = new Map<string, OpenBucket>();
  private all = histogram();
  private records = histogram();
  private telemetry = histogram();
  private published = 0;
  private durable = 0;
  private timer: NodeJS.Timeout | undefined;
  private polling: Promise<void> | undefined;
  /** Telemetry keys published in the current step, per bucket, for the exact check. */
  private stepKeys = new Map<string, Set<string>>();
  private stepRecordIds = new Set<string>();

  constructor(db: Db, branch: BranchId, pollMs = 100) {
    this.db = db;
    this.branch = branch;
    this.pollMs = pollMs;
  }

  /**
   * While true, messages are tracked for durability but their latency is not counted: the first seconds of a step,
   * when every machine connects and sends its meta and status at once.
   */
  warmingUp = false;

  /** The fleet's onPublish hook. */
  readonly track = (message: PublishedMessage): void => {
    this.published += 1;
    if (message.kind === 'telemetry') {
      const sampleId = { bootId: message.bootId as Telemetry['bootId'], seq: message.seq, ts: message.ts };
      const { id } = bucketOf(this.branch, message.machine as MachineId, sampleId);
      const key = sampleKey(sampleId);
      let bucket = this.openBuckets.get(id);
      if (!bucket) this.openBuckets.set(id, (bucket = new Map<string, number>()));
      bucket.set(key, this.warmingUp ? -message.ts : message.ts);
      let keys = this.stepKeys.get(id);
      if (!keys) this.stepKeys.set(id, (keys = new Set()));
      keys.add(key);
      return;
    }
    const collection = RECORD_COLLECTIONS[message.kind as StoredRecordKind];
    this.pending.set(message.msgId, { ts: this.warmingUp ? -message.ts : message.ts, collection });
    this.stepRecordIds.add(message.msgId);
  };

  start(): void {
    const loop = () => {
      this.polling = this.poll()
        .catch(() => undefined)
        .finally(() => {
          if (this.timer !== undefined) this.timer = setTimeout(loop, this.pollMs);
        });
    };
    this.timer = setTimeout(loop, this.pollMs);
  }

  async stop(): Promise<void> {
    clearTimeout(this.timer);
    this.timer = undefined;
    await this.polling;
  }

  /** Nothing published is still unseen. */
  get settled(): boolean {
    return this.pending.size === 0 && this.openBuckets.size === 0;
  }

  get outstanding(): number {
    let n = this.pending.size;
    for (const bucket of this.openBuckets.values()) n += bucket.size;
    return n;
  }

  private async poll(): Promise<void> {
    const now = Date.now();
    const byCollection = new Map<string, string[]>();
    for (const [msgId, record] of this.pending) {
      const ids = byCollection.get(record.collection) ?? [];
      ids.push(msgId);
      byCollection.set(record.collection, ids);
    }
    for (const [collection, ids] of byCollection) {
      for (let i = 0; i < ids.length; i += 2000) {
        const chunk = ids.slice(i, i + 2000);
        const found = await this.db
          .collection<{ _id: string }>(collection)
          .find({ _id: { $in: chunk } }, { projection: { _id: 1 } })
          .toArray();
        for (const { _id } of found) {
          const record = this.pending.get(_id);
          if (!record) continue;
          this.pending.delete(_id);
          this.observe(now, record.ts, 'record');
        }
      }
    }
    // One query per 100 buckets, projecting only the keys still awaited; at most 20,000 keys per poll, so a backlog
    // cannot turn a poll into a huge query (the probe must not become the database's load).
    const wanted = new Map<string, string[]>();
    let budget = 20_000;
    for (const [id, bucket] of this.openBuckets) {
      if (budget <= 0) break;
      const keys = [...bucket.keys()].slice(0, budget);
      budget -= keys.length;
      wanted.set(id, keys);
    }
    const held = await this.heldKeys(wanted);
    for (const [id, keys] of held) {
      const bucket = this.openBuckets.get(id)!;
      for (const key of keys) {
        this.observe(now, bucket.get(key)!, 'telemetry');
        bucket.delete(key);
      }
      if (bucket.size === 0) this.openBuckets.delete(id);
    }
  }

  /** Of the keys wanted per bucket id, those the buckets hold. */
  private async heldKeys(wanted: ReadonlyMap<string, readonly string[]>): Promise<Map<string, string[]>> {
    const held = new Map<string, string[]>();
    const ids = [...wanted.keys()];
    for (let i = 0; i < ids.length; i += 100) {
      const chunk = ids.slice(i, i + 100);
      const projection = Object.fromEntries(chunk.flatMap((id) => wanted.get(id)!.map((key) => [`samples.${key}`, 1])));
      const docs = await this.db
        .collection<{ _id: string; samples?: Record<string, unknown> }>(TELEMETRY_COLLECTION)
        .find({ _id: { $in: chunk } }, { projection })
        .toArray();
      for (const doc of docs) {
        const samples = doc.samples ?? {};
        held.set(
          doc._id,
          wanted.get(doc._id)!.filter((key) => Object.hasOwn(samples, key)),
        );
      }
    }
    return held;
  }

  private observe(now: number, ts: number, kind: 'record' | 'telemetry'): void {
    this.durable += 1;
    if (ts < 0) return; // published during the warm-up: checked, not timed
    const us = Math.max(1, Math.round((now - ts) * 1000));
    this.all.recordValue(us);
    (kind === 'record' ? this.records : this.telemetry).recordValue(us);
  }

  /** Waits until every published message was seen stored, or `timeoutMs` passed. */
  async drain(timeoutMs: number, onWait?: (outstanding: number) => void): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (!this.settled && Date.now() < deadline) {
      onWait?.(this.outstanding);
      await new Promise((resolve) => setTimeout(resolve, this.pollMs));
    }
    return this.settled;
  }

  /**
   * Ends a step: checks exactly which of the step's acknowledged messages are in MongoDB, returns the figures and
   * starts the next step's counters.
   */
  async endStep(acked: ReadonlySet<string>, ackedTelemetryKeys: ReadonlySet<string>): Promise<StepDurability> {
    let missing = 0;
    for (const msgId of this.stepRecordIds) if (acked.has(msgId) && this.pending.has(msgId)) missing += 1;
    for (const [id, keys] of this.stepKeys) {
      const acked = [...keys].filter((key) => ackedTelemetryKeys.has(key));
      for (let i = 0; i < acked.length; i += 5_000) {
        const chunk = acked.slice(i, i + 5_000);
        const held = await this.heldKeys(new Map([[id, chunk]]));
        missing += chunk.length - (held.get(id)?.length ?? 0);
      }
    }
    const result: StepDurability = {
      published: this.published,
      durable: this.durable,
      missing,
      p50Ms: this.all.totalCount ? this.all.getValueAtPercentile(50) / 1000 : 0,
      p99Ms: this.all.totalCount ? this.all.getValueAtPercentile(99) / 1000 : 0,
      maxMs: this.all.totalCount ? this.all.maxValue / 1000 : 0,
      recordsP99Ms: this.records.totalCount ? this.records.getValueAtPercentile(99) / 1000 : 0,
      telemetryP99Ms: this.telemetry.totalCount ? this.telemetry.getValueAtPercentile(99) / 1000 : 0,
    };
    this.all = histogram();
    this.records = histogram();
    this.telemetry = histogram();
    this.published = 0;
    this.durable = 0;
    this.stepKeys = new Map();
    this.stepRecordIds = new Set();
    return result;
  }
}
