/**
 * The worker thread of `WorkerSqliteQueue` (worker-queue.ts): owns the SqliteQueue, so its fsyncs (every commit, at
 * synchronous=FULL) block this thread, never the gateway's broker and uplink. Requests arrive as messages and are
 * answered with their result and the queue's figures after it; alarms and commits are posted as events.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { SqliteQueue, type SqliteQueueOptions } from './sqlite-queue.ts';
import type { WorkerEvent, WorkerRequest } from './worker-queue.ts';

type Init = Omit<SqliteQueueOptions, 'onFullChange' | 'onCommit' | 'onStorageError'>;

const port = parentPort;
if (port === null) throw new Error('sqlite-queue.worker.ts runs as a worker thread');
const post = (event: WorkerEvent) => port.postMessage(event);

let queue: SqliteQueue | undefined;
try {
  queue = new SqliteQueue({
    ...(workerData as Init),
    onFullChange: (full, reason, detail) =>
      post({ type: 'full', full, reason, detail, stats: queue?.stats() ?? undefined }),
    onCommit: (rows) => post({ type: 'commit', rows }),
    onStorageError: (err) => post({ type: 'storage-error', message: err.message }),
  });
  post({ type: 'ready', stats: queue.stats(), pragmas: queue.pragmas() });
} catch (err) {
  post({ type: 'failed', message: err instanceof Error ? err.message : String(err) });
}

async function dispatch(q: SqliteQueue, request: WorkerRequest): Promise<unknown> {
  switch (request.op) {
    case 'append':
      return q.append(request.record, request.receivedAtMs);
    case 'peek':
      return q.peek(request.lane, request.options);
    case 'get':
      return q.get(request.seqs);
    case 'deleteBySeq':
      return q.deleteBySeq(request.seqs);
    case 'deleteByMsgId':
      return q.deleteByMsgId(request.msgIds);
    case 'releaseSource':
      return q.releaseSource(request.source);
    case 'integrityCheck':
      return q.integrityCheck();
    case 'close':
      return q.close();
  }
}

port.on('message', (request: WorkerRequest) => {
  const q = queue;
  if (q === undefined) return;
  dispatch(q, request).then(
    (result) => post({ type: 'reply', id: request.id, ok: true, result, stats: q.stats() }),
    (err: unknown) => {
      const e = err instanceof Error ? err : new Error(String(err));
      post({
        type: 'reply',
        id: request.id,
        ok: false,
        error: { name: e.name, message: e.message, lane: (e as { lane?: string }).lane },
        stats: request.op === 'close' ? undefined : q.stats(),
      });
    },
  );
});
