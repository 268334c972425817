/**
 * The final look at what the run's gateways still hold once they have stopped: an acknowledged record that is not in
 * MongoDB but still in its gateway's durable queue (the SQLite file in its GATEWAY_DATA_DIR, docs/gateway.md) is
 * late, not lost — the gateway forwards it when it runs again. A record neither stored nor queued is lost.
 *
 * Read-only, after the gateway process has exited (it holds an exclusive lock while it runs).
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { MongoClient } from 'mongodb';
import { QUEUE_FILE } from '../../../edge-gateway/src/config.ts';
import { idsPresent, RECORD_COLLECTIONS, type PersistedCounts } from './persisted.ts';

export interface GatewayQueue {
  readonly gateway: string;
  readonly dataDir: string;
  /** Entries left, by lane. */
  readonly byLane: Readonly<Record<string, number>>;
  readonly msgIds: ReadonlySet<string>;
}

export function readGatewayQueue(gateway: string, dataDir: string): GatewayQueue {
  const file = path.join(dataDir, QUEUE_FILE);
  const msgIds = new Set<string>();
  const byLane: Record<string, number> = {};
  if (!existsSync(file)) return { gateway, dataDir, byLane, msgIds };
  const db = new DatabaseSync(file, { readOnly: true });
  try {
    for (const row of db.prepare('SELECT lane, msg_id FROM uplink').iterate() as Iterable<{
      lane: string;
      msg_id: string;
    }>) {
      byLane[row.lane] = (byLane[row.lane] ?? 0) + 1;
      if (row.lane !== 'telemetry') msgIds.add(row.msg_id);
    }
  } finally {
    db.close();
  }
  return { gateway, dataDir, byLane, msgIds };
}

/**
 * The records counted lost by the processes' read-back, looked at again now that the gateways have stopped: still
 * queued at a gateway → late; stored meanwhile (forwarded between the read-back and the stop) → stored; else lost.
 */
export async function settleLost(
  mongoUrl: string,
  persisted: PersistedCounts,
  queues: readonly GatewayQueue[],
): Promise<PersistedCounts> {
  const candidates = persisted.lostRecords ?? [];
  if (candidates.length === 0) return persisted;
  const queued = candidates.filter((r) => queues.some((q) => q.msgIds.has(r.msgId)));
  const rest = candidates.filter((r) => !queues.some((q) => q.msgIds.has(r.msgId)));
  const client = await MongoClient.connect(mongoUrl, { serverSelectionTimeoutMS: 10_000 });
  let storedLate = 0;
  try {
    const db = client.db();
    for (const [kind, collection] of Object.entries(RECORD_COLLECTIONS)) {
      const ids = rest.filter((r) => r.kind === kind).map((r) => r.msgId);
      if (ids.length > 0) storedLate += (await idsPresent(db, collection, ids)).size;
    }
  } finally {
    await client.close();
  }
  const lost = rest.length - storedLate;
  return {
    ...persisted,
    records: {
      ...persisted.records,
      persisted: persisted.records.persisted + storedLate,
      lost,
      queued: queued.length,
    },
    lostExamples: persisted.lostExamples.filter((id) => !queued.some((r) => r.msgId === id)),
  };
}
