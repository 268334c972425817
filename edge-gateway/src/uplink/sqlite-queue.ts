/**
 * The durable uplink queue: `UplinkQueue` on SQLite through Node 24's built-in `node:sqlite` (DatabaseSync; no
 * native addon, ARCHITECTURE.md "Runtime and toolchain").
 *
 * Sync policy (decided): WAL with `synchronous=FULL`. Every commit fsyncs the WAL, so a record whose append resolved
 * (and whose machine then got its PUBACK) survives a process kill and a power cut alike. NORMAL would be ~6× faster
 * at one row per transaction but may lose the last transactions on power loss, and a gateway is power-cycled
 * without warning; with group commit FULL has more than enough headroom (bench:gateway, docs/benchmarks.md). Both
 * PRAGMAs are read back at start-up and the queue refuses to open otherwise; so does a file failing
 * `PRAGMA quick_check`, and one another process holds (`locking_mode=EXCLUSIVE`: one gateway per queue file).
 *
 * Group commit: `append` only validates, reserves room and parks the row; the rows parked within `commitDelayMs`
 * (or as soon as `commitMaxRows` are parked) are written in one transaction, and each caller's promise resolves
 * only after that COMMIT returned. The intake awaits it inside `authorizePublish`, so the PUBACK follows the fsync.
 *
 * Table `uplink`: `seq` INTEGER PRIMARY KEY (the gateway's own sequence; the high-water mark is kept in `meta`, so a
 * seq is never reused even after the queue emptied), lane, kind, msg_id (unique: a machine's redelivery is stored
 * once), source, received_at (ms), bytes, json. Depth and bytes per lane are kept in memory (counted at open), the
 * oldest record per lane is read from the (lane, seq) index when it may have changed.
 *
 * Capacity: `capRecords` and `capBytes` (record JSON bytes). To make room the oldest telemetry is evicted (deleted in
 * the same transaction as the rows it makes room for); when only access and records are left, `append` rejects with
 * QueueFullError and `full` is raised. A storage error (SQLITE_FULL from `max_page_count`, ENOSPC, an I/O error)
 * takes the same path: telemetry is evicted to free pages and the commit tried once more; if it still fails, the
 * rows are refused (QueueFullError, `full`, `storageError`), nothing crashes, and a probe write once a second
 * clears the alarm by itself when space frees.
 */
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { DatabaseSync, type StatementSync } from 'node:sqlite';
import { LANES, RECORD_KIND_LANE } from '../../../protocol/index.ts';
import type { Lane, MsgId, RecordKind, SourceId, UplinkRecord } from '../../../protocol/index.ts';
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

/** Why the queue refuses new records. */
export type FullReason = 'capacity' | 'storage';

export interface SqliteQueueOptions {
  /** The database file (its directory is created); `:memory:` is refused (not durable). */
  readonly file: string;
  readonly capRecords: number;
  readonly capBytes: number;
  /** Longest a parked row waits for its transaction, ms (default 5). */
  readonly commitDelayMs?: number;
  /** Rows that start a commit at once (default 100). */
  readonly commitMaxRows?: number;
  /** Test hook: SQLite `max_page_count`, so the database raises SQLITE_FULL on its real error path. */
  readonly maxPageCount?: number;
  /** Called when the queue starts or stops refusing records (after the change took effect). */
  readonly onFullChange?: (full: boolean, reason: FullReason | undefined, detail: string) => void;
  /** Called after each successful commit with its row count (metrics). */
  readonly onCommit?: (rows: number) => void;
  /** Called with each storage error (the queue keeps going). */
  readonly onStorageError?: (err: Error) => void;
  /** How often a storage failure is probed for recovery, ms (default 1,000). */
  readonly probeIntervalMs?: number;
}

interface Parked {
  readonly seq: QueueSeq;
  readonly lane: Lane;
  readonly kind: RecordKind;
  readonly msgId: MsgId;
  readonly source: SourceId;
  readonly receivedAtMs: number;
  readonly json: string;
  readonly bytes: number;
  readonly resolve: (seq: QueueSeq) => void;
  readonly reject: (err: Error) => void;
}

interface LaneCount {
  depth: number;
  bytes: number;
  evicted: number;
  appended: number;
  appendedBytes: number;
  deleted: number;
  /** Oldest enqueue time in the database, re-read when `oldestDirty`. */
  oldestMs: number | undefined;
  oldestDirty: boolean;
}

interface Row {
  seq: number;
  lane: string;
  kind: string;
  msg_id: string;
  source: string;
  received_at: number;
  bytes: number;
  json: string;
}

/** SQLite primary result codes for a full or failing store. */
const SQLITE_BUSY = 5;
const SQLITE_IOERR = 10;
const SQLITE_FULL = 13;
const EVICT_PAGE = 256;
/** Bytes the recovery probe writes (and frees again): about a group commit of rows. */
const PROBE_BYTES = 16 * 1024;

/** Whether an error from node:sqlite means the store cannot take more (disk full, page limit, I/O). */
export function isStorageError(err: unknown): boolean {
  const e = err as { errcode?: unknown; code?: unknown; message?: unknown } | undefined;
  if (typeof e?.errcode === 'number') {
    const primary = e.errcode & 0xff;
    return primary === SQLITE_FULL || primary === SQLITE_IOERR;
  }
  return e?.code === 'ENOSPC' || (typeof e?.message === 'string' && /disk is full|ENOSPC/i.test(e.message));
}

export class SqliteQueue implements UplinkQueue {
  readonly file: string;
  private readonly options: SqliteQueueOptions;
  private readonly db: DatabaseSync;
  private readonly st: {
    insert: StatementSync;
    saveSeq: StatementSync;
    bySeq: StatementSync;
    byMsgId: StatementSync;
    deleteSeq: StatementSync;
    deleteMsgId: StatementSync;
    peek: StatementSync;
    oldest: StatementSync;
    victims: StatementSync;
    probeIn: StatementSync;
    probeOut: StatementSync;
  };
  private readonly counts: Record<Lane, LaneCount>;
  private parked: Parked[] = [];
  private readonly parkedByMsgId = new Map<MsgId, Promise<QueueSeq>>();
  /** Sources whose record was refused, with the first refused msgId: their later records wait for it (`append`). */
  private readonly refusedSources = new Map<SourceId, MsgId>();
  /** Telemetry chosen for eviction, deleted with the next commit: seq → bytes (already off the counts). */
  private readonly toEvict = new Map<QueueSeq, number>();
  private evictAfter: QueueSeq = 0;
  private lastSeq: QueueSeq;
  private timer: NodeJS.Timeout | undefined;
  private probeTimer: NodeJS.Timeout | undefined;
  private fullReason: FullReason | undefined;
  private lastStorageError: string | undefined;
  private closed = false;

  /** Opens (or creates) the queue; throws when the PRAGMAs cannot be set as required or the file is damaged. */
  constructor(options: SqliteQueueOptions) {
    if (!(options.capRecords >= 1) || !(options.capBytes >= 1)) throw new RangeError('queue caps must be ≥ 1');
    if (options.file === ':memory:' || options.file === '') throw new RangeError('the durable queue needs a file');
    this.options = options;
    this.file = options.file;
    mkdirSync(path.dirname(options.file), { recursive: true });
    const db = new DatabaseSync(options.file);
    this.db = db;
    try {
      // One process per queue file: the exclusive lock is taken now and held until close (the OS drops it when the
      // process dies, kill -9 included). A second gateway on the same GATEWAY_DATA_DIR fails here, clearly, instead
      // of both handing out the same seqs.
      try {
        db.exec('PRAGMA busy_timeout = 2000');
        db.exec('PRAGMA locking_mode = EXCLUSIVE');
        db.exec('PRAGMA journal_mode = WAL');
        db.exec('PRAGMA synchronous = FULL');
        db.exec('BEGIN EXCLUSIVE');
        db.exec('COMMIT');
      } catch (err) {
        const e = err as { errcode?: number; message?: string };
        if ((typeof e.errcode === 'number' && (e.errcode & 0xff) === SQLITE_BUSY) || /locked/i.test(e.message ?? '')) {
          throw new Error(
            `uplink queue ${options.file} is in use by another process (one gateway per GATEWAY_DATA_DIR): ${e.message ?? ''}`,
            { cause: err },
          );
        }
        throw err;
      }
      if (options.maxPageCount !== undefined) db.exec(`PRAGMA max_page_count = ${Math.floor(options.maxPageCount)}`);
      assertPragmas(db);
      const check = db.prepare('PRAGMA quick_check').all() as { quick_check: string }[];
      if (check.length !== 1 || check[0]!.quick_check !== 'ok') {
        throw new Error(`uplink queue ${options.file} is damaged: ${check.map((c) => c.quick_check).join('; ')}`);
      }
      db.exec(`
        CREATE TABLE IF NOT EXISTS uplink (
          seq INTEGER PRIMARY KEY,
          lane TEXT NOT NULL,
          kind TEXT NOT NULL,
          msg_id TEXT NOT NULL,
          source TEXT NOT NULL,
          received_at INTEGER NOT NULL,
          bytes INTEGER NOT NULL,
          json TEXT NOT NULL
        ) STRICT;
        CREATE INDEX IF NOT EXISTS uplink_lane_seq ON uplink (lane, seq);
        CREATE UNIQUE INDEX IF NOT EXISTS uplink_msg_id ON uplink (msg_id);
        CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) STRICT;
        CREATE TABLE IF NOT EXISTS probe (b BLOB) STRICT;
      `);
      const columns = 'seq, lane, kind, msg_id, source, received_at, bytes, json';
      this.st = {
        insert: db.prepare(
          'INSERT INTO uplink (seq, lane, kind, msg_id, source, received_at, bytes, json) VALUES (?, ?, ?, ?, ?, ?, ?, ?)',
        ),
        saveSeq: db.prepare(
          "INSERT INTO meta (key, value) VALUES ('last_seq', ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        ),
        bySeq: db.prepare(`SELECT ${columns} FROM uplink WHERE seq = ?`),
        byMsgId: db.prepare('SELECT seq FROM uplink WHERE msg_id = ?'),
        deleteSeq: db.prepare('DELETE FROM uplink WHERE seq = ? RETURNING lane, bytes'),
        deleteMsgId: db.prepare('DELETE FROM uplink WHERE msg_id = ? RETURNING seq, lane, bytes'),
        peek: db.prepare(`SELECT ${columns} FROM uplink WHERE lane = ? AND seq > ? ORDER BY seq LIMIT ?`),
        oldest: db.prepare('SELECT received_at FROM uplink WHERE lane = ? ORDER BY seq LIMIT 1'),
        probeIn: db.prepare('INSERT INTO probe (b) VALUES (zeroblob(?))'),
        probeOut: db.prepare('DELETE FROM probe'),
        victims: db.prepare(
          "SELECT seq, bytes FROM uplink WHERE lane = 'telemetry' AND seq > ? ORDER BY seq LIMIT " + EVICT_PAGE,
        ),
      };
      const blank = (): LaneCount => ({
        depth: 0,
        bytes: 0,
        evicted: 0,
        appended: 0,
        appendedBytes: 0,
        deleted: 0,
        oldestMs: undefined,
        oldestDirty: true,
      });
      this.counts = { access: blank(), records: blank(), telemetry: blank() };
      const perLane = db
        .prepare('SELECT lane, count(*) AS n, coalesce(sum(bytes), 0) AS b FROM uplink GROUP BY lane')
        .all() as { lane: string; n: number; b: number }[];
      for (const { lane, n, b } of perLane) {
        if (!(LANES as readonly string[]).includes(lane)) throw new Error(`uplink queue holds an unknown lane ${lane}`);
        this.counts[lane as Lane].depth = n;
        this.counts[lane as Lane].bytes = b;
      }
      const maxRow = db.prepare('SELECT coalesce(max(seq), 0) AS s FROM uplink').get() as { s: number };
      const saved = db.prepare("SELECT value FROM meta WHERE key = 'last_seq'").get() as { value: number } | undefined;
      this.lastSeq = Math.max(maxRow.s, saved?.value ?? 0);
    } catch (err) {
      db.close();
      throw err;
    }
  }

  /** The PRAGMAs the queue runs with, as read back from SQLite. */
  pragmas(): { journalMode: string; synchronous: number; lockingMode: string } {
    return readPragmas(this.db);
  }

  /** `PRAGMA integrity_check`: 'ok' or the problems found. */
  integrityCheck(): string {
    const rows = this.db.prepare('PRAGMA integrity_check').all() as { integrity_check: string }[];
    return rows.map((r) => r.integrity_check).join('; ');
  }

  /** Why the queue refuses records, and the last storage error; undefined while it accepts them. */
  refusal(): { reason: FullReason; detail: string | undefined } | undefined {
    return this.fullReason === undefined ? undefined : { reason: this.fullReason, detail: this.lastStorageError };
  }

  append(record: UplinkRecord, receivedAtMs: number): Promise<QueueSeq> {
    try {
      this.assertOpen();
      const msgId = record.payload.msgId;
      const parked = this.parkedByMsgId.get(msgId);
      if (parked !== undefined) return parked;
      const stored = this.st.byMsgId.get(msgId) as { seq: number } | undefined;
      if (stored !== undefined && !this.toEvict.has(stored.seq)) return Promise.resolve(stored.seq);
      const lane = RECORD_KIND_LANE[record.kind];
      const source = record.payload.source;
      checkRefusedSource(this.refusedSources, lane, source, msgId);
      const { json, bytes } = serialiseRecord(record);
      try {
        this.makeRoom(lane, bytes);
      } catch (err) {
        this.refused(lane, source, msgId);
        throw err;
      }
      if (this.lastSeq >= Number.MAX_SAFE_INTEGER) throw new RangeError('uplink queue sequence exhausted');
      this.lastSeq += 1;
      const seq = this.lastSeq;
      const count = this.counts[lane];
      count.depth += 1;
      count.bytes += bytes;
      const promise = new Promise<QueueSeq>((resolve, reject) => {
        this.parked.push({
          seq,
          lane,
          kind: record.kind,
          msgId,
          source,
          receivedAtMs,
          json,
          bytes,
          resolve,
          reject,
        });
      });
      this.parkedByMsgId.set(msgId, promise);
      this.schedule();
      return promise;
    } catch (err) {
      return Promise.reject(err instanceof Error ? err : new Error(String(err)));
    }
  }

  peek(lane: Lane, options: PeekOptions): Promise<readonly QueuedRecord[]> {
    try {
      this.assertOpen();
      if (options.limit <= 0) return Promise.resolve([]);
      const rows = this.st.peek.all(lane, options.afterSeq ?? 0, Math.floor(options.limit)) as unknown as Row[];
      return Promise.resolve(rows.map(toQueued));
    } catch (err) {
      return Promise.reject(err instanceof Error ? err : new Error(String(err)));
    }
  }

  get(seqs: Iterable<QueueSeq>): Promise<readonly QueuedRecord[]> {
    try {
      this.assertOpen();
      const out: QueuedRecord[] = [];
      for (const seq of seqs) {
        const row = this.st.bySeq.get(seq) as Row | undefined;
        if (row !== undefined && !this.toEvict.has(row.seq)) out.push(toQueued(row));
      }
      return Promise.resolve(out);
    } catch (err) {
      return Promise.reject(err instanceof Error ? err : new Error(String(err)));
    }
  }

  deleteBySeq(seqs: Iterable<QueueSeq>): Promise<number> {
    try {
      this.assertOpen();
      const list = [...seqs];
      if (list.length === 0) return Promise.resolve(0);
      const gone: { lane: Lane; bytes: number; evicted: boolean }[] = [];
      this.transaction(() => {
        for (const seq of list) {
          const row = this.st.deleteSeq.get(seq) as { lane: Lane; bytes: number } | undefined;
          if (row !== undefined) gone.push({ ...row, evicted: this.toEvict.has(seq) });
        }
      });
      for (const seq of list) this.toEvict.delete(seq);
      return Promise.resolve(this.settleDeleted(gone));
    } catch (err) {
      return Promise.reject(err instanceof Error ? err : new Error(String(err)));
    }
  }

  deleteByMsgId(msgIds: Iterable<MsgId>): Promise<number> {
    try {
      this.assertOpen();
      const list = [...msgIds];
      if (list.length === 0) return Promise.resolve(0);
      const gone: { lane: Lane; bytes: number; evicted: boolean }[] = [];
      const seqs: QueueSeq[] = [];
      this.transaction(() => {
        for (const msgId of list) {
          const row = this.st.deleteMsgId.get(msgId) as { seq: number; lane: Lane; bytes: number } | undefined;
          if (row === undefined) continue;
          gone.push({ lane: row.lane, bytes: row.bytes, evicted: this.toEvict.has(row.seq) });
          seqs.push(row.seq);
        }
      });
      for (const seq of seqs) this.toEvict.delete(seq);
      return Promise.resolve(this.settleDeleted(gone));
    } catch (err) {
      return Promise.reject(err instanceof Error ? err : new Error(String(err)));
    }
  }

  stats(): QueueStats {
    const lanes = Object.fromEntries(LANES.map((lane) => [lane, this.laneStats(lane)])) as Record<Lane, QueueLaneStats>;
    let depth = 0;
    let bytes = 0;
    for (const lane of LANES) {
      depth += this.counts[lane].depth;
      bytes += this.counts[lane].bytes;
    }
    return {
      lanes,
      depth,
      bytes,
      full: this.fullReason !== undefined,
      capRecords: this.options.capRecords,
      capBytes: this.options.capBytes,
    };
  }

  /**
   * Forgets that a record of `source` was refused (its machine connected again: what it resends now comes in its
   * own order). See `UplinkQueue.releaseSource`.
   */
  releaseSource(source: SourceId): void {
    this.refusedSources.delete(source);
  }

  /** Sources whose later records are refused until their refused record comes again (tests, health). */
  refusedSourceCount(): number {
    return this.refusedSources.size;
  }

  /** Writes what is parked now (tests, shutdown). */
  flush(): void {
    if (this.timer !== undefined) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    this.commitParked();
  }

  close(): Promise<void> {
    if (this.closed) return Promise.resolve();
    this.flush();
    this.closed = true;
    clearTimeout(this.probeTimer);
    try {
      this.db.exec('PRAGMA wal_checkpoint(TRUNCATE)');
    } catch {
      // A full disk may refuse the checkpoint; the WAL is replayed at the next open.
    }
    this.db.close();
    return Promise.resolve();
  }

  // ------------------------------------------------------------------------------------------------------------

  private laneStats(lane: Lane): QueueLaneStats {
    const count = this.counts[lane];
    if (count.oldestDirty && !this.closed) {
      const row = this.st.oldest.get(lane) as { received_at: number } | undefined;
      count.oldestMs = row?.received_at;
      count.oldestDirty = false;
    }
    let oldest = count.oldestMs;
    if (oldest === undefined) oldest = this.parked.find((p) => p.lane === lane)?.receivedAtMs;
    return {
      depth: count.depth,
      bytes: count.bytes,
      oldestEnqueuedAtMs: oldest,
      evicted: count.evicted,
      appended: count.appended,
      appendedBytes: count.appendedBytes,
      deleted: count.deleted,
    };
  }

  private totals(): { depth: number; bytes: number } {
    let depth = 0;
    let bytes = 0;
    for (const lane of LANES) {
      depth += this.counts[lane].depth;
      bytes += this.counts[lane].bytes;
    }
    return { depth, bytes };
  }

  private fits(bytes: number): boolean {
    const t = this.totals();
    return t.depth + 1 <= this.options.capRecords && t.bytes + bytes <= this.options.capBytes;
  }

  /** Chooses the oldest telemetry for eviction until `bytes` more fit; refuses when none is left. */
  private makeRoom(lane: Lane, bytes: number): void {
    // While the store fails (fullReason 'storage') rows are still parked: their commit is the retry that clears it.
    while (!this.fits(bytes)) {
      if (!this.evictOne()) {
        const t = this.totals();
        const detail = `${t.depth} records / ${t.bytes} bytes held (caps ${this.options.capRecords} / ${this.options.capBytes})`;
        this.setFull('capacity', detail);
        throw new QueueFullError(lane, detail);
      }
    }
  }

  /** Evicts the oldest telemetry record not yet chosen (stored first, then parked); false when there is none. */
  private evictOne(): boolean {
    const telemetry = this.counts.telemetry;
    const victim = this.st.victims.get(this.evictAfter) as { seq: number; bytes: number } | undefined;
    if (victim !== undefined) {
      this.evictAfter = victim.seq;
      this.toEvict.set(victim.seq, victim.bytes);
      telemetry.depth -= 1;
      telemetry.bytes -= victim.bytes;
      telemetry.evicted += 1;
      telemetry.oldestDirty = true;
      return true;
    }
    const index = this.parked.findIndex((p) => p.lane === 'telemetry');
    if (index < 0) return false;
    // Accepted moments ago and not yet written: it is evicted before it reaches the disk.
    const [p] = this.parked.splice(index, 1);
    this.parkedByMsgId.delete(p!.msgId);
    telemetry.depth -= 1;
    telemetry.bytes -= p!.bytes;
    telemetry.evicted += 1;
    p!.resolve(p!.seq);
    return true;
  }

  /** A record of the records lane was refused: its source's later records are refused until it comes again. */
  private refused(lane: Lane, source: SourceId, msgId: MsgId): void {
    if (lane === 'records' && !this.refusedSources.has(source)) this.refusedSources.set(source, msgId);
  }

  private schedule(): void {
    if (this.parked.length >= (this.options.commitMaxRows ?? 100)) {
      this.flush();
      return;
    }
    if (this.timer === undefined) {
      this.timer = setTimeout(() => {
        this.timer = undefined;
        this.commitParked();
      }, this.options.commitDelayMs ?? 5);
    }
  }

  /** One transaction: the parked rows, the telemetry evicted for them, the seq high-water mark. */
  private commitParked(): void {
    if (this.closed) return;
    const rows = this.parked;
    if (rows.length === 0 && this.toEvict.size === 0) return;
    this.parked = [];
    const write = () => {
      this.transaction(() => {
        for (const seq of this.toEvict.keys()) this.st.deleteSeq.run(seq);
        for (const r of rows)
          this.st.insert.run(r.seq, r.lane, r.kind, r.msgId, r.source, r.receivedAtMs, r.bytes, r.json);
        this.st.saveSeq.run(this.lastSeq);
      });
    };
    try {
      try {
        write();
      } catch (err) {
        if (!isStorageError(err) || !this.freeStorage(rows)) throw err;
        write(); // telemetry evicted to free pages: once more
      }
    } catch (err) {
      for (const r of rows) {
        this.parkedByMsgId.delete(r.msgId);
        const count = this.counts[r.lane];
        count.depth -= 1;
        count.bytes -= r.bytes;
        this.refused(r.lane, r.source, r.msgId); // rows are in seq order: the first of a source is kept
      }
      const error = err instanceof Error ? err : new Error(String(err));
      if (isStorageError(err)) {
        this.lastStorageError = error.message;
        this.options.onStorageError?.(error);
        this.setFull('storage', error.message);
        for (const r of rows) r.reject(new QueueFullError(r.lane, `storage: ${error.message}`));
      } else {
        for (const r of rows) r.reject(error);
      }
      return;
    }
    this.toEvict.clear();
    for (const r of rows) {
      this.parkedByMsgId.delete(r.msgId);
      const count = this.counts[r.lane];
      count.appended += 1;
      count.appendedBytes += r.bytes;
      if (count.oldestMs === undefined) count.oldestDirty = true;
    }
    if (this.fullReason === 'storage') this.clearFull('a commit succeeded');
    this.options.onCommit?.(rows.length);
    for (const r of rows) r.resolve(r.seq);
  }

  /**
   * After a storage error: deletes the oldest stored telemetry (a page of it) in its own transaction so the retry
   * has pages to use. False when there is no telemetry left or even the delete failed.
   */
  private freeStorage(rows: readonly Parked[]): boolean {
    const telemetry = this.counts.telemetry;
    const victims = this.db
      .prepare("SELECT seq, bytes FROM uplink WHERE lane = 'telemetry' ORDER BY seq LIMIT ?")
      .all(Math.max(EVICT_PAGE, rows.length * 2)) as { seq: number; bytes: number }[];
    const fresh = victims.filter((v) => !this.toEvict.has(v.seq));
    if (fresh.length === 0) return false;
    try {
      this.transaction(() => {
        for (const v of fresh) this.st.deleteSeq.run(v.seq);
      });
    } catch {
      return false;
    }
    for (const v of fresh) {
      telemetry.depth -= 1;
      telemetry.bytes -= v.bytes;
      telemetry.evicted += 1;
      this.evictAfter = Math.max(this.evictAfter, v.seq);
    }
    telemetry.oldestDirty = true;
    return true;
  }

  private settleDeleted(gone: readonly { lane: Lane; bytes: number; evicted: boolean }[]): number {
    for (const g of gone) {
      const count = this.counts[g.lane];
      count.oldestDirty = true;
      if (g.evicted) continue; // already off the counts when it was chosen
      count.deleted += 1;
      count.depth -= 1;
      count.bytes -= g.bytes;
    }
    if (gone.length > 0 && this.fullReason === 'capacity') this.clearFull('records left the queue');
    return gone.length;
  }

  private transaction(body: () => void): void {
    this.db.exec('BEGIN IMMEDIATE');
    try {
      body();
      this.db.exec('COMMIT');
    } catch (err) {
      if (this.db.isTransaction) {
        try {
          this.db.exec('ROLLBACK');
        } catch {
          // SQLite may have rolled back already (SQLITE_FULL inside a transaction can do that).
        }
      }
      throw err;
    }
  }

  private setFull(reason: FullReason, detail: string): void {
    const changed = this.fullReason !== reason;
    this.fullReason = reason;
    if (reason === 'storage') this.startProbe();
    if (changed) this.options.onFullChange?.(true, reason, detail);
  }

  private clearFull(detail: string): void {
    if (this.fullReason === undefined) return;
    this.fullReason = undefined;
    this.lastStorageError = undefined;
    clearTimeout(this.probeTimer);
    this.probeTimer = undefined;
    this.options.onFullChange?.(false, undefined, detail);
  }

  /**
   * While the store fails, a probe write once a second: 16 KiB more pages and WAL than now, written and freed in one
   * committed transaction (so it needs the room a group of rows would). The alarm clears by itself when it succeeds.
   */
  private startProbe(): void {
    if (this.probeTimer !== undefined || this.closed) return;
    const probe = () => {
      this.probeTimer = undefined;
      if (this.closed || this.fullReason !== 'storage') return;
      try {
        this.transaction(() => {
          this.st.probeIn.run(PROBE_BYTES);
          this.st.probeOut.run();
        });
        this.clearFull('the store accepts writes again');
      } catch (err) {
        this.lastStorageError = err instanceof Error ? err.message : String(err);
        this.probeTimer = setTimeout(probe, this.options.probeIntervalMs ?? 1_000);
        this.probeTimer.unref();
      }
    };
    this.probeTimer = setTimeout(probe, this.options.probeIntervalMs ?? 1_000);
    this.probeTimer.unref();
  }

  private assertOpen(): void {
    if (this.closed) throw new Error('uplink queue is closed');
  }
}

function toQueued(row: Row): QueuedRecord {
  return {
    seq: row.seq,
    lane: row.lane as Lane,
    kind: row.kind as RecordKind,
    msgId: row.msg_id as MsgId,
    source: row.source as SourceId,
    enqueuedAtMs: row.received_at,
    json: row.json,
    bytes: row.bytes,
  };
}

function readPragmas(db: DatabaseSync): { journalMode: string; synchronous: number; lockingMode: string } {
  const journal = db.prepare('PRAGMA journal_mode').get() as { journal_mode: string };
  const sync = db.prepare('PRAGMA synchronous').get() as { synchronous: number };
  const locking = db.prepare('PRAGMA locking_mode').get() as { locking_mode: string };
  return { journalMode: journal.journal_mode, synchronous: sync.synchronous, lockingMode: locking.locking_mode };
}

/** The sync policy, read back: WAL and synchronous = 2 (FULL); anything else refuses to start. */
function assertPragmas(db: DatabaseSync): void {
  const { journalMode, synchronous, lockingMode } = readPragmas(db);
  if (journalMode.toLowerCase() !== 'wal' || synchronous !== 2 || lockingMode.toLowerCase() !== 'exclusive') {
    throw new Error(
      `uplink queue: expected journal_mode=wal, synchronous=2 (FULL) and locking_mode=exclusive, read back ` +
        `journal_mode=${journalMode} synchronous=${synchronous} locking_mode=${lockingMode}`,
    );
  }
}
