/**
 * The uplink queue in memory: the first cut's implementation of `UplinkQueue`.
 *
 * It loses everything it holds when the gateway process crashes or is killed: records the machines already got a
 * PUBACK for are then gone. Unit tests only; the gateway runs the durable SqliteQueue (sqlite-queue.ts) behind the
 * same interface and the same contract suite (queue-contract.ts).
 *
 * Bounded like the durable one will be: a cap in records and in bytes. When full, the oldest telemetry samples are
 * evicted first (counted); when only access and records remain, a new record is refused with QueueFullError, so the
 * machine gets no PUBACK instead of a silent drop (RELIABILITY G9).
 */
import { LANES, RECORD_KIND_LANE } from '../../../protocol/index.ts';
import type { Lane, MsgId, SourceId, UplinkRecord } from '../../../protocol/index.ts';
import {
  QueueFullError,
  serialiseRecord,
  type PeekOptions,
  type QueueLaneStats,
  type QueueSeq,
  type QueueStats,
  type QueuedRecord,
  type UplinkQueue,
  checkRefusedSource,
} from './queue.ts';

export interface MemoryQueueOptions {
  /** Most records held (all lanes). */
  readonly capRecords: number;
  /** Most bytes of record JSON held (all lanes). */
  readonly capBytes: number;
  /**
   * Test hook: awaited inside `append` before the record is stored, so a test can hold an append open and show that
   * the machine's PUBACK waits for it.
   */
  readonly beforeAppend?: (record: UplinkRecord) => Promise<void> | void;
}

interface LaneState {
  // A Map iterates in insertion order, and seqs are appended in increasing order: the head is the oldest record.
  readonly records: Map<QueueSeq, QueuedRecord>;
  bytes: number;
  evicted: number;
  appended: number;
  appendedBytes: number;
  deleted: number;
}

export class MemoryQueue implements UplinkQueue {
  private readonly options: MemoryQueueOptions;
  private readonly lanes: Record<Lane, LaneState>;
  private readonly bySeq = new Map<QueueSeq, QueuedRecord>();
  private readonly byMsgId = new Map<MsgId, QueueSeq>();
  private lastSeq: QueueSeq = 0;
  private totalBytes = 0;
  private refusing = false;
  /** Sources whose record was refused, with its msgId: their later records wait for it (UplinkQueue.append). */
  private readonly refusedSources = new Map<SourceId, MsgId>();
  private closed = false;

  constructor(options: MemoryQueueOptions) {
    if (!(options.capRecords >= 1) || !(options.capBytes >= 1)) throw new RangeError('queue caps must be ≥ 1');
    this.options = options;
    this.lanes = {
      access: { records: new Map(), bytes: 0, evicted: 0, appended: 0, appendedBytes: 0, deleted: 0 },
      records: { records: new Map(), bytes: 0, evicted: 0, appended: 0, appendedBytes: 0, deleted: 0 },
      telemetry: { records: new Map(), bytes: 0, evicted: 0, appended: 0, appendedBytes: 0, deleted: 0 },
    };
  }

  async append(record: UplinkRecord, receivedAtMs: number): Promise<QueueSeq> {
    this.assertOpen();
    await this.options.beforeAppend?.(record);
    this.assertOpen();
    const msgId = record.payload.msgId;
    const already = this.byMsgId.get(msgId);
    if (already !== undefined) return already;
    const lane = RECORD_KIND_LANE[record.kind];
    const source = record.payload.source;
    checkRefusedSource(this.refusedSources, lane, source, msgId);
    const { json, bytes } = serialiseRecord(record);
    try {
      this.makeRoom(lane, bytes);
    } catch (err) {
      if (lane === 'records') this.refusedSources.set(source, msgId);
      throw err;
    }
    const seq = this.nextSeq();
    const queued: QueuedRecord = {
      seq,
      lane,
      kind: record.kind,
      msgId,
      source: record.payload.source,
      enqueuedAtMs: receivedAtMs,
      json,
      bytes,
    };
    const state = this.lanes[lane];
    state.records.set(seq, queued);
    state.bytes += bytes;
    state.appended += 1;
    state.appendedBytes += bytes;
    this.totalBytes += bytes;
    this.bySeq.set(seq, queued);
    this.byMsgId.set(msgId, seq);
    return seq;
  }

  releaseSource(source: SourceId): void {
    this.refusedSources.delete(source);
  }

  peek(lane: Lane, options: PeekOptions): Promise<readonly QueuedRecord[]> {
    this.assertOpen();
    const after = options.afterSeq ?? 0;
    const out: QueuedRecord[] = [];
    if (options.limit <= 0) return Promise.resolve(out);
    for (const [seq, queued] of this.lanes[lane].records) {
      if (seq <= after) continue;
      out.push(queued);
      if (out.length >= options.limit) break;
    }
    return Promise.resolve(out);
  }

  get(seqs: Iterable<QueueSeq>): Promise<readonly QueuedRecord[]> {
    this.assertOpen();
    const out: QueuedRecord[] = [];
    for (const seq of seqs) {
      const queued = this.bySeq.get(seq);
      if (queued !== undefined) out.push(queued);
    }
    return Promise.resolve(out);
  }

  deleteBySeq(seqs: Iterable<QueueSeq>): Promise<number> {
    this.assertOpen();
    let deleted = 0;
    for (const seq of seqs) {
      const queued = this.bySeq.get(seq);
      if (queued === undefined) continue;
      this.remove(queued);
      this.lanes[queued.lane].deleted += 1;
      deleted += 1;
    }
    return Promise.resolve(deleted);
  }

  deleteByMsgId(msgIds: Iterable<MsgId>): Promise<number> {
    const seqs: QueueSeq[] = [];
    for (const msgId of msgIds) {
      const seq = this.byMsgId.get(msgId);
      if (seq !== undefined) seqs.push(seq);
    }
    return this.deleteBySeq(seqs);
  }

  stats(): QueueStats {
    const lanes = Object.fromEntries(LANES.map((lane) => [lane, this.laneStats(lane)])) as Record<Lane, QueueLaneStats>;
    return {
      lanes,
      depth: this.bySeq.size,
      bytes: this.totalBytes,
      full: this.refusing,
      capRecords: this.options.capRecords,
      capBytes: this.options.capBytes,
    };
  }

  close(): Promise<void> {
    this.closed = true;
    return Promise.resolve();
  }

  private laneStats(lane: Lane): QueueLaneStats {
    const state = this.lanes[lane];
    const head = state.records.values().next();
    return {
      depth: state.records.size,
      bytes: state.bytes,
      oldestEnqueuedAtMs: head.done === true ? undefined : head.value.enqueuedAtMs,
      evicted: state.evicted,
      appended: state.appended,
      appendedBytes: state.appendedBytes,
      deleted: state.deleted,
    };
  }

  private fits(bytes: number): boolean {
    return this.bySeq.size + 1 <= this.options.capRecords && this.totalBytes + bytes <= this.options.capBytes;
  }

  /** Evicts the oldest telemetry until `bytes` more fit; refuses when only access and records are left. */
  private makeRoom(lane: Lane, bytes: number): void {
    const telemetry = this.lanes.telemetry;
    while (!this.fits(bytes)) {
      const oldest = telemetry.records.values().next();
      if (oldest.done === true) {
        this.refusing = true;
        throw new QueueFullError(
          lane,
          `${this.bySeq.size} records / ${this.totalBytes} bytes held (caps ${this.options.capRecords} / ${this.options.capBytes})`,
        );
      }
      this.remove(oldest.value);
      telemetry.evicted += 1;
    }
  }

  private remove(queued: QueuedRecord): void {
    const state = this.lanes[queued.lane];
    state.records.delete(queued.seq);
    state.bytes -= queued.bytes;
    this.totalBytes -= queued.bytes;
    this.bySeq.delete(queued.seq);
    this.byMsgId.delete(queued.msgId);
    this.refusing = false;
  }

  private nextSeq(): QueueSeq {
    if (this.lastSeq >= Number.MAX_SAFE_INTEGER) throw new RangeError('uplink queue sequence exhausted');
    this.lastSeq += 1;
    return this.lastSeq;
  }

  private assertOpen(): void {
    if (this.closed) throw new Error('uplink queue is closed');
  }
}
