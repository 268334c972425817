/**
 * The gateway's uplink queue: the durable SqliteQueue (sqlite-queue.ts) running in a worker thread.
 *
 * Why a thread: `node:sqlite` is synchronous, and at synchronous=FULL every commit waits for an fsync (measured here:
 * 3–15 ms on the VM's disk under load, more on an SD card). In the gateway's own thread each group commit would
 * stall the machines' broker, its keepalives and the uplink for that long, hundreds of times a second at a busy
 * branch's intake (bench:gateway: PUBACK p99 1.5 s that way). In the worker only the queue waits. Same semantics:
 * `append` resolves after the commit that holds the row; the queue's figures come back with every reply (and with
 * every alarm), so `stats()` stays synchronous and current.
 */
import { Worker } from 'node:worker_threads';
import type { Lane, MsgId, SourceId, UplinkRecord } from '../../../protocol/index.ts';
import {
  QueueFullError,
  type PeekOptions,
  type QueueSeq,
  type QueueStats,
  type QueuedRecord,
  type UplinkQueue,
} from './queue.ts';
import type { FullReason, SqliteQueueOptions } from './sqlite-queue.ts';

export type WorkerRequest = { readonly id: number } & (
  | { readonly op: 'append'; readonly record: UplinkRecord; readonly receivedAtMs: number }
  | { readonly op: 'peek'; readonly lane: Lane; readonly options: PeekOptions }
  | { readonly op: 'get'; readonly seqs: readonly QueueSeq[] }
  | { readonly op: 'deleteBySeq'; readonly seqs: readonly QueueSeq[] }
  | { readonly op: 'deleteByMsgId'; readonly msgIds: readonly MsgId[] }
  | { readonly op: 'releaseSource'; readonly source: SourceId }
  | { readonly op: 'integrityCheck' }
  | { readonly op: 'close' }
);

type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;

export type WorkerEvent =
  | {
      readonly type: 'ready';
      readonly stats: QueueStats;
      readonly pragmas: { journalMode: string; synchronous: number; lockingMode: string };
    }
  | { readonly type: 'failed'; readonly message: string }
  | {
      readonly type: 'reply';
      readonly id: number;
      readonly ok: boolean;
      readonly result?: unknown;
      readonly error?: { readonly name: string; readonly message: string; readonly lane: string | undefined };
      readonly stats: QueueStats | undefined;
    }
  | {
      readonly type: 'full';
      readonly full: boolean;
      readonly reason: FullReason | undefined;
      readonly detail: string;
      readonly stats: QueueStats | undefined;
    }
  | { readonly type: 'commit'; readonly rows: number }
  | { readonly type: 'storage-error'; readonly message: string };

export type WorkerQueueOptions = SqliteQueueOptions;

export class WorkerSqliteQueue implements UplinkQueue {
  readonly file: string;
  private readonly worker: Worker;
  private readonly options: WorkerQueueOptions;
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  private nextId = 1;
  private snapshot: QueueStats;
  private fullReason: FullReason | undefined;
  private closed = false;
  private failure: Error | undefined;
  readonly pragmas: { journalMode: string; synchronous: number; lockingMode: string };

  private constructor(worker: Worker, options: WorkerQueueOptions, ready: Extract<WorkerEvent, { type: 'ready' }>) {
    this.worker = worker;
    this.options = options;
    this.file = options.file;
    this.snapshot = ready.stats;
    this.pragmas = ready.pragmas;
    worker.on('message', (event: WorkerEvent) => this.onEvent(event));
    worker.on('error', (err: Error) => this.fail(err));
    worker.on('exit', (code) => {
      if (!this.closed) this.fail(new Error(`uplink queue worker exited (code ${code})`));
    });
  }

  /** Starts the worker and opens the queue in it; rejects as SqliteQueue's constructor would (PRAGMAs, damage). */
  static open(options: WorkerQueueOptions): Promise<WorkerSqliteQueue> {
    const { onFullChange: _f, onCommit: _c, onStorageError: _s, ...init } = options;
    const worker = new Worker(new URL('./sqlite-queue.worker.ts', import.meta.url), { workerData: init });
    return new Promise<WorkerSqliteQueue>((resolve, reject) => {
      const onError = (err: Error) => reject(err);
      worker.once('error', onError);
      worker.once('message', (event: WorkerEvent) => {
        worker.off('error', onError);
        if (event.type === 'ready') {
          resolve(new WorkerSqliteQueue(worker, options, event));
        } else {
          void worker.terminate();
          reject(new Error(event.type === 'failed' ? event.message : `unexpected ${event.type} from the queue worker`));
        }
      });
    });
  }

  append(record: UplinkRecord, receivedAtMs: number): Promise<QueueSeq> {
    return this.call({ op: 'append', record, receivedAtMs }) as Promise<QueueSeq>;
  }

  /** Posted in order with the appends: the worker sees it after every append sent before it. */
  releaseSource(source: SourceId): void {
    this.call({ op: 'releaseSource', source }).catch(() => undefined);
  }

  peek(lane: Lane, options: PeekOptions): Promise<readonly QueuedRecord[]> {
    return this.call({ op: 'peek', lane, options }) as Promise<readonly QueuedRecord[]>;
  }

  get(seqs: Iterable<QueueSeq>): Promise<readonly QueuedRecord[]> {
    return this.call({ op: 'get', seqs: [...seqs] }) as Promise<readonly QueuedRecord[]>;
  }

  deleteBySeq(seqs: Iterable<QueueSeq>): Promise<number> {
    return this.call({ op: 'deleteBySeq', seqs: [...seqs] }) as Promise<number>;
  }

  deleteByMsgId(msgIds: Iterable<MsgId>): Promise<number> {
    return this.call({ op: 'deleteByMsgId', msgIds: [...msgIds] }) as Promise<number>;
  }

  /** `PRAGMA integrity_check` in the worker. */
  integrityCheck(): Promise<string> {
    return this.call({ op: 'integrityCheck' }) as Promise<string>;
  }

  /** The figures as of the last reply or alarm from the worker. */
  stats(): QueueStats {
    return this.failure === undefined ? this.snapshot : { ...this.snapshot, full: true };
  }

  /** Why the queue refuses records ('capacity', 'storage'); undefined while it accepts them. */
  refusal(): FullReason | undefined {
    return this.failure === undefined ? this.fullReason : 'storage';
  }

  async close(): Promise<void> {
    if (this.closed) return;
    try {
      if (this.failure === undefined) await this.call({ op: 'close' });
    } finally {
      this.closed = true;
      await this.worker.terminate();
    }
  }

  // ------------------------------------------------------------------------------------------------------------

  private call(request: DistributiveOmit<WorkerRequest, 'id'>): Promise<unknown> {
    if (this.failure !== undefined) return Promise.reject(this.failure);
    if (this.closed) return Promise.reject(new Error('uplink queue is closed'));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.worker.postMessage({ ...request, id });
    });
  }

  private onEvent(event: WorkerEvent): void {
    switch (event.type) {
      case 'reply': {
        if (event.stats !== undefined) this.snapshot = event.stats;
        const waiting = this.pending.get(event.id);
        if (waiting === undefined) return;
        this.pending.delete(event.id);
        if (event.ok) {
          waiting.resolve(event.result);
        } else {
          const e = event.error;
          waiting.reject(
            e?.name === 'QueueFullError'
              ? new QueueFullError((e.lane ?? 'records') as Lane, e.message.replace(/^uplink queue full: /, ''))
              : new Error(e?.message ?? 'uplink queue request failed'),
          );
        }
        return;
      }
      case 'full':
        if (event.stats !== undefined) this.snapshot = event.stats;
        this.fullReason = event.reason;
        this.options.onFullChange?.(event.full, event.reason, event.detail);
        return;
      case 'commit':
        this.options.onCommit?.(event.rows);
        return;
      case 'storage-error':
        this.options.onStorageError?.(new Error(event.message));
        return;
      default:
        return;
    }
  }

  /** The worker died: everything waiting fails, the queue refuses from now on (visible as full/storage). */
  private fail(err: Error): void {
    if (this.failure !== undefined) return;
    this.failure = new QueueFullError('records', `storage: the queue worker failed: ${err.message}`);
    for (const waiting of this.pending.values()) waiting.reject(this.failure);
    this.pending.clear();
    this.options.onFullChange?.(true, 'storage', this.failure.message);
  }
}
