/**
 * The uplink queue: every record the gateway accepted, until the cloud says it is durable (or rejected it).
 *
 * Keyed by the gateway's own sequence, never by MQTT packet ids (RELIABILITY finding 2: MQTT.js's store is keyed by
 * the 16-bit packet id and silently lost 4,465 of 70,000 queued messages when the ids wrapped). The sequence is a
 * safe integer that only grows (2^53: 285 years at a million records a second), so it fits SQLite's 64-bit INTEGER
 * PRIMARY KEY of the durable implementation unchanged.
 *
 * Three lanes (protocol `LANES`: access, records, telemetry), each read in sequence order, which is append order, so
 * order per source holds within a lane. A record is stored as its JSON text, serialised once at append: its size is
 * what the batch limits count, and the batch is assembled from those texts without serialising again.
 *
 * Implementations: `SqliteQueue` (sqlite-queue.ts; durable), run by the gateway in a worker thread
 * (`WorkerSqliteQueue`, worker-queue.ts, so its fsyncs never stall the broker), and `MemoryQueue` (memory-queue.ts;
 * loses everything on a crash: unit tests only). All pass `describeUplinkQueue` (queue-contract.ts).
 */
import type { Lane, MsgId, RecordKind, SourceId, UplinkRecord } from '../../../protocol/index.ts';

/** The gateway's own sequence number of a queued record: a positive safe integer, increasing with every append. */
export type QueueSeq = number;

/** A record as the queue holds it. */
export interface QueuedRecord {
  readonly seq: QueueSeq;
  readonly lane: Lane;
  readonly kind: RecordKind;
  readonly msgId: MsgId;
  readonly source: SourceId;
  /** Gateway clock when the record was appended, ms. */
  readonly enqueuedAtMs: number;
  /** The record serialised as JSON (what a batch carries). */
  readonly json: string;
  /** UTF-8 bytes of `json`. */
  readonly bytes: number;
}

/** One lane's figures. */
export interface QueueLaneStats {
  /** Records waiting (in flight included: a record leaves the queue only when acked or rejected). */
  readonly depth: number;
  /** UTF-8 bytes of their JSON. */
  readonly bytes: number;
  /** When the oldest waiting record was appended (gateway clock, ms); undefined when the lane is empty. */
  readonly oldestEnqueuedAtMs: number | undefined;
  /** Records evicted since start to make room (telemetry only). */
  readonly evicted: number;
  /** Records appended since start (a redelivery stored once counts once): the intake rate's source. */
  readonly appended: number;
  /** Their bytes. */
  readonly appendedBytes: number;
  /** Records deleted since start because the cloud acked or rejected them: the drain rate's source. */
  readonly deleted: number;
}

export interface QueueStats {
  readonly lanes: Readonly<Record<Lane, QueueLaneStats>>;
  readonly depth: number;
  readonly bytes: number;
  /** At capacity for records that cannot be evicted: new records are refused (QueueFullError). */
  readonly full: boolean;
  readonly capRecords: number;
  readonly capBytes: number;
}

export interface PeekOptions {
  /** Only records with a larger seq (a lane cursor); default: from the head. */
  readonly afterSeq?: QueueSeq;
  /** Most records returned. */
  readonly limit: number;
}

export interface UplinkQueue {
  /**
   * Appends a record to the lane of its kind and resolves with its seq once it is stored as durably as this
   * implementation stores anything: only then may the machine get its PUBACK. A record whose msgId is still queued
   * (a machine's redelivery) is not stored twice: the seq it already has is returned. Rejects with QueueFullError
   * when there is no room even after evicting telemetry.
   *
   * Order per source (records lane): once a record of a source is refused (capacity or a failed commit), that
   * source's later records are refused too (QueueFullError) until the refused one is appended again or
   * `releaseSource` is called, so a machine's records are stored in its publish order even when several of its
   * PUBLISHes are in flight at once: its resend of the refused record can never land after a later one.
   */
  append(record: UplinkRecord, receivedAtMs: number): Promise<QueueSeq>;
  /**
   * The source's machine connected again: forget its refused record, what it sends now comes in its own order
   * (a machine that no longer has the refused record is not locked out).
   */
  releaseSource(source: SourceId): void;
  /** The first `limit` records of a lane after `afterSeq`, in seq order. */
  peek(lane: Lane, options: PeekOptions): Promise<readonly QueuedRecord[]>;
  /** The records with these seqs that are still queued, in the order asked (the forwarder's live path). */
  get(seqs: Iterable<QueueSeq>): Promise<readonly QueuedRecord[]>;
  /** Deletes records by seq (acked or rejected by the cloud); unknown seqs are ignored. Resolves with how many went. */
  deleteBySeq(seqs: Iterable<QueueSeq>): Promise<number>;
  /** Deletes records by msgId (an ack for a batch the forwarder no longer tracks); unknown ids are ignored. */
  deleteByMsgId(msgIds: Iterable<MsgId>): Promise<number>;
  /** Depth, bytes and oldest record per lane; cheap enough for every health request and metrics scrape. */
  stats(): QueueStats;
  close(): Promise<void>;
}

/** Thrown by `append` when the queue is at capacity and nothing may be evicted. */
export class QueueFullError extends Error {
  readonly lane: Lane;
  constructor(lane: Lane, detail: string) {
    super(`uplink queue full: ${detail}`);
    this.name = 'QueueFullError';
    this.lane = lane;
  }
}

/** The serialised form of a record and its size, as every implementation stores it. */
export function serialiseRecord(record: UplinkRecord): { json: string; bytes: number } {
  const json = JSON.stringify(record);
  return { json, bytes: Buffer.byteLength(json, 'utf8') };
}

/**
 * Per-machine order in the records lane: once a machine's record was refused (queue full), its later records are
 * refused until it resends that one; the resend, or a record of a machine with none refused, clears the mark.
 */
export function checkRefusedSource(
  refusedSources: Map<SourceId, MsgId>,
  lane: Lane,
  source: SourceId,
  msgId: MsgId,
): void {
  if (lane !== 'records') return;
  const waitingFor = refusedSources.get(source);
  if (waitingFor !== undefined && waitingFor !== msgId) {
    throw new QueueFullError(lane, `${source}: its earlier record ${waitingFor} was refused; resend it first`);
  }
  refusedSources.delete(source);
}
