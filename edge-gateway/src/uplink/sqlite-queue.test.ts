import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect } from 'chai';
import { asMachineId } from '../../../protocol/index.ts';
import type { UplinkRecord } from '../../../protocol/index.ts';
import { recordOf } from '../testing/fixtures.ts';
import { QueueFullError } from './queue.ts';
import { describeUplinkQueue } from './queue-contract.ts';
import { SqliteQueue, type FullReason } from './sqlite-queue.ts';
import { WorkerSqliteQueue } from './worker-queue.ts';

const here = path.dirname(fileURLToPath(import.meta.url));
const m = asMachineId('m-01');
const T = Date.UTC(2026, 10, 26);
const tele = (seq: number): UplinkRecord => recordOf.telemetry(m, seq, T);
const workout = (seq: number): UplinkRecord => recordOf.workout(m, seq, T);

let dir: string;
before(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'nxg-sqlite-queue-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});
let fileNo = 0;
const nextFile = () => path.join(dir, `q-${++fileNo}`, 'uplink-queue.sqlite');

describeUplinkQueue('SqliteQueue', () =>
  Promise.resolve(new SqliteQueue({ file: nextFile(), capRecords: 10_000, capBytes: 16 * 1024 * 1024 })),
);

describeUplinkQueue('SqliteQueue in its worker thread', () =>
  WorkerSqliteQueue.open({ file: nextFile(), capRecords: 10_000, capBytes: 16 * 1024 * 1024 }),
);

describe('SqliteQueue in its worker thread', () => {
  it('refuses to open what the queue refuses, and relays the alarm and the figures', async () => {
    const file = nextFile();
    const queue = await WorkerSqliteQueue.open({ file, capRecords: 1, capBytes: 1_000_000 });
    let refusedOpen: unknown;
    await WorkerSqliteQueue.open({ file: ':memory:', capRecords: 1, capBytes: 1 }).catch(
      (err: unknown) => (refusedOpen = err),
    );
    expect(String(refusedOpen)).to.match(/needs a file/);
    await queue.append(workout(1), T);
    expect(queue.stats().lanes.records.depth).to.equal(1);
    let refused: unknown;
    await queue.append(workout(2), T).catch((err: unknown) => (refused = err));
    expect(refused).to.be.instanceOf(QueueFullError);
    expect((refused as QueueFullError).lane).to.equal('records');
    expect(queue.stats().full).to.equal(true);
    expect(queue.refusal()).to.equal('capacity');
    await queue.close();
  });
});

describe('SqliteQueue durability', () => {
  it('runs WAL with synchronous=FULL, read back, and passes integrity_check', async () => {
    const queue = new SqliteQueue({ file: nextFile(), capRecords: 100, capBytes: 1_000_000 });
    expect(queue.pragmas()).to.deep.equal({ journalMode: 'wal', synchronous: 2, lockingMode: 'exclusive' });
    await queue.append(workout(1), T);
    expect(queue.integrityCheck()).to.equal('ok');
    await queue.close();
  });

  it('refuses a second process on the same file, and opens once the first is gone', async function () {
    this.timeout(20_000);
    const file = nextFile();
    const queue = new SqliteQueue({ file, capRecords: 100, capBytes: 1_000_000 });
    await queue.append(workout(1), T);
    // Another process (a worker thread has its own SQLite connection and lock, as a second gateway would).
    let refused: unknown;
    await WorkerSqliteQueue.open({ file, capRecords: 100, capBytes: 1_000_000 }).then(
      (q) => q.close(),
      (err: unknown) => (refused = err),
    );
    expect(String(refused)).to.match(/in use by another process/);
    await queue.close();
    const again = await WorkerSqliteQueue.open({ file, capRecords: 100, capBytes: 1_000_000 });
    expect(again.stats().depth).to.equal(1);
    await again.close();
  });

  it('commits appends in groups, resolving each only after its transaction', async () => {
    const file = nextFile();
    const queue = new SqliteQueue({ file, capRecords: 10_000, capBytes: 16 * 1024 * 1024, commitDelayMs: 50 });
    // What is in the file (peek reads the table; parked rows are not there yet).
    const reader = async () => (await queue.peek('telemetry', { limit: 100_000 })).length;
    const resolved: number[] = [];
    const pending = Array.from({ length: 30 }, (_, i) => queue.append(tele(i), T).then((s) => resolved.push(s)));
    await new Promise((r) => setTimeout(r, 5));
    // Parked, not written, nobody acknowledged yet; counted in the stats already (room is reserved).
    expect(resolved).to.have.length(0);
    expect(await reader()).to.equal(0);
    expect(queue.stats().depth).to.equal(30);
    await Promise.all(pending);
    expect(await reader()).to.equal(30);
    // commitMaxRows starts a commit at once.
    const many = Array.from({ length: 100 }, (_, i) => queue.append(tele(100 + i), T));
    expect(await reader()).to.equal(130);
    await Promise.all(many);
    await queue.close();
  });

  it('keeps everything across a restart, with seqs that keep growing even after the queue emptied', async () => {
    const file = nextFile();
    let queue = new SqliteQueue({ file, capRecords: 1_000, capBytes: 16 * 1024 * 1024 });
    const records = [workout(1), tele(2), workout(3)];
    const seqs: number[] = [];
    for (const r of records) seqs.push(await queue.append(r, T + seqs.length));
    await queue.close();
    queue = new SqliteQueue({ file, capRecords: 1_000, capBytes: 16 * 1024 * 1024 });
    const stats = queue.stats();
    expect(stats.depth).to.equal(3);
    expect(stats.lanes.records).to.deep.include({ depth: 2, oldestEnqueuedAtMs: T });
    const held = await queue.peek('records', { limit: 10 });
    expect(held.map((r) => JSON.parse(r.json) as unknown)).to.deep.equal([records[0], records[2]]);
    // A redelivery of a stored msgId after the restart is still stored once.
    expect(await queue.append(records[0]!, T)).to.equal(seqs[0]);
    await queue.deleteBySeq(seqs);
    await queue.close();
    queue = new SqliteQueue({ file, capRecords: 1_000, capBytes: 16 * 1024 * 1024 });
    expect(queue.stats().depth).to.equal(0);
    expect(await queue.append(workout(4), T)).to.be.greaterThan(seqs[2]!);
    expect(queue.integrityCheck()).to.equal('ok');
    await queue.close();
  });

  it('loses nothing acknowledged when the writing process is killed with SIGKILL', async function () {
    this.timeout(30_000);
    const file = nextFile();
    const child = spawn(process.execPath, [path.join(here, 'sqlite-queue.child.ts'), file], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const acked = new Set<string>();
    let buffer = '';
    let ready = false;
    const enough = new Promise<void>((resolve, reject) => {
      child.on('exit', (code, signal) => reject(new Error(`child ended early: ${code ?? signal}`)));
      child.stdout.setEncoding('utf8');
      child.stdout.on('data', (chunk: string) => {
        buffer += chunk;
        const lines = buffer.split('\n');
        buffer = lines.pop()!;
        for (const line of lines) {
          if (line === 'ready') ready = true;
          else if (line.length > 0) acked.add(line);
        }
        if (acked.size >= 3_000) resolve();
      });
    });
    await enough;
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGKILL');
    await exited;
    // Lines already in the pipe when it died are acks too.
    for (const line of buffer.split('\n')) if (line.length > 0 && line !== 'ready') acked.add(line);
    expect(ready).to.equal(true);
    const queue = new SqliteQueue({ file, capRecords: 10_000_000, capBytes: 4 * 1024 * 1024 * 1024 });
    expect(queue.integrityCheck()).to.equal('ok');
    const stored = new Set<string>();
    for (const lane of ['records', 'telemetry'] as const) {
      let after = 0;
      for (;;) {
        const page = await queue.peek(lane, { afterSeq: after, limit: 5_000 });
        if (page.length === 0) break;
        for (const r of page) stored.add(r.msgId);
        after = page[page.length - 1]!.seq;
      }
    }
    const lost = [...acked].filter((id) => !stored.has(id));
    console.log(`      acked ${acked.size}, stored ${stored.size}, lost ${lost.length}`);
    expect(lost).to.deep.equal([]);
    expect(queue.stats().depth).to.equal(stored.size);
    await queue.close();
  });

  it('refuses to open a file whose queue is damaged', async () => {
    const file = nextFile();
    const queue = new SqliteQueue({ file, capRecords: 100, capBytes: 1_000_000 });
    await queue.close();
    const { writeFile } = await import('node:fs/promises');
    await writeFile(file, Buffer.alloc(8192, 0x5a));
    expect(() => new SqliteQueue({ file, capRecords: 100, capBytes: 1_000_000 })).to.throw();
  });
});

describe('SqliteQueue at capacity', () => {
  it('evicts the oldest telemetry first, then refuses with QueueFullError and an alarm, and recovers', async () => {
    const changes: [boolean, FullReason | undefined][] = [];
    const queue = new SqliteQueue({
      file: nextFile(),
      capRecords: 4,
      capBytes: 1024 * 1024,
      onFullChange: (full, reason) => changes.push([full, reason]),
    });
    const t0 = await queue.append(tele(0), T);
    await queue.append(tele(1), T);
    await queue.append(workout(2), T);
    await queue.append(workout(3), T);
    await queue.append(workout(4), T);
    expect((await queue.peek('telemetry', { limit: 10 })).map((r) => r.seq)).to.not.include(t0);
    expect(queue.stats().lanes.telemetry).to.deep.include({ depth: 1, evicted: 1 });
    await queue.append(workout(5), T);
    expect(queue.stats().lanes.telemetry).to.deep.include({ depth: 0, evicted: 2 });
    const sixth = workout(6);
    let refused: unknown;
    await queue.append(sixth, T).catch((err: unknown) => (refused = err));
    expect(refused).to.be.instanceOf(QueueFullError);
    expect(queue.stats()).to.deep.include({ depth: 4, full: true });
    expect(changes).to.deep.equal([[true, 'capacity']]);
    const [head] = await queue.peek('records', { limit: 1 });
    await queue.deleteBySeq([head!.seq]);
    expect(queue.stats().full).to.equal(false);
    expect(changes).to.deep.equal([
      [true, 'capacity'],
      [false, undefined],
    ]);
    await queue.append(sixth, T); // its machine resends it
    expect(queue.stats().depth).to.equal(4);
    expect(queue.integrityCheck()).to.equal('ok');
    await queue.close();
  });

  it('evicts telemetry still parked for its commit when no stored telemetry is left', async () => {
    const queue = new SqliteQueue({ file: nextFile(), capRecords: 2, capBytes: 1024 * 1024, commitDelayMs: 50 });
    const a = queue.append(tele(0), T);
    const b = queue.append(workout(1), T);
    const c = queue.append(workout(2), T);
    await Promise.all([a, b, c]);
    expect(queue.stats().lanes.telemetry).to.deep.include({ depth: 0, evicted: 1 });
    expect((await queue.peek('records', { limit: 10 })).length).to.equal(2);
    await queue.close();
  });

  it('takes SQLITE_FULL (max_page_count) down the refuse-with-alarm path, evicting telemetry first, no crash', async () => {
    const changes: [boolean, FullReason | undefined][] = [];
    const errors: string[] = [];
    const file = nextFile();
    const queue = new SqliteQueue({
      file,
      capRecords: 1_000_000,
      capBytes: 1024 * 1024 * 1024,
      maxPageCount: 40,
      commitDelayMs: 1,
      probeIntervalMs: 50,
      onFullChange: (full, reason) => changes.push([full, reason]),
      onStorageError: (err) => errors.push(err.message),
    });
    // Telemetry first, then records until the page limit stops them.
    let telemetry = 0;
    for (let i = 0; i < 60; i++) {
      await queue.append(tele(i), T);
      telemetry += 1;
    }
    const stored: string[] = [];
    let refused: unknown;
    let refusedRecord: UplinkRecord | undefined;
    for (let i = 0; i < 2_000 && refused === undefined; i++) {
      const record = workout(1_000 + i);
      await queue.append(record, T).then(
        () => stored.push(record.payload.msgId),
        (err: unknown) => {
          refused = err;
          refusedRecord = record;
        },
      );
    }
    expect(refused, 'an append refused').to.be.instanceOf(QueueFullError);
    expect(errors.length).to.be.greaterThan(0);
    expect(errors[0]).to.match(/full/i);
    const stats = queue.stats();
    expect(stats.full).to.equal(true);
    expect(queue.refusal()?.reason).to.equal('storage');
    // Telemetry went first: every one of the 60 samples was evicted before a record was refused.
    expect(stats.lanes.telemetry).to.deep.include({ depth: 0, evicted: telemetry });
    const held = await queue.peek('records', { limit: 10_000 });
    expect(held.map((r) => r.msgId)).to.deep.equal(stored);
    expect(stats.lanes.records.depth).to.equal(stored.length);
    expect(queue.integrityCheck()).to.equal('ok');
    // The probe (every 50 ms here) keeps failing while nothing frees: the alarm holds, it does not flap.
    await new Promise((r) => setTimeout(r, 300));
    expect(queue.stats().full).to.equal(true);
    expect(changes).to.have.length(1);
    // Space frees (the cloud acked all but the last few): the probe clears the alarm by itself, appends work again.
    await queue.deleteBySeq(held.slice(0, held.length - 5).map((r) => r.seq));
    const deadline = Date.now() + 5_000;
    while (queue.stats().full && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    expect(queue.stats().full).to.equal(false);
    expect(changes).to.deep.equal([
      [true, 'storage'],
      [false, undefined],
    ]);
    // Order per source: the machine's later record is refused until it resends the refused one (G10's race).
    let early: unknown;
    const later = workout(9_999);
    await queue.append(later, T).catch((err: unknown) => (early = err));
    expect(early, 'a later record before the refused one is resent').to.be.instanceOf(QueueFullError);
    expect(String(early)).to.match(/resend it first/);
    await queue.append(refusedRecord!, T);
    await queue.append(later, T);
    const after = await queue.peek('records', { limit: 10_000 });
    expect(after.slice(-2).map((r) => r.msgId)).to.deep.equal([refusedRecord!.payload.msgId, later.payload.msgId]);
    await queue.close();
  });

  it('stores a machine’s records in its publish order when appends in flight at once meet a refusal', async () => {
    // Many PUBLISHes of one machine in flight together (Aedes authorizes a TCP chunk's packets concurrently), with
    // group commits of 3 rows in the worker: once one is refused, every later one of that machine is refused too,
    // even after room is made, until the refused one comes again; other machines are not held up.
    const other = asMachineId('m-02');
    const queue = await WorkerSqliteQueue.open({
      file: nextFile(),
      capRecords: 10,
      capBytes: 1024 * 1024,
      commitMaxRows: 3,
    });
    const mine = Array.from({ length: 21 }, (_, i) => workout(i));
    const first = await Promise.allSettled(mine.slice(0, 15).map((r) => queue.append(r, T)));
    const outcome = first.map((r) => r.status);
    expect(outcome.slice(0, 10).every((o) => o === 'fulfilled')).to.equal(true);
    expect(outcome.slice(10).every((o) => o === 'rejected')).to.equal(true);
    const held = await queue.peek('records', { limit: 100 });
    await queue.deleteBySeq(held.slice(0, 5).map((r) => r.seq)); // the cloud acked five: room for five
    // Later records of m-01 before its refused #10 came again: refused although there is room.
    const early = await Promise.allSettled([queue.append(mine[12]!, T), queue.append(mine[20]!, T)]);
    expect(early.map((r) => r.status)).to.deep.equal(['rejected', 'rejected']);
    await queue.append(recordOf.workout(other, 1, T), T); // another machine is not held up
    // The resend in order: #10, #11, … all stored, after #9.
    for (let i = 10; i < 14; i++) await queue.append(mine[i]!, T);
    const order = (await queue.peek('records', { limit: 100 }))
      .filter((r) => r.source === m)
      .map((r) => (JSON.parse(r.json) as { payload: { seq: number } }).payload.seq);
    expect(order).to.deep.equal([5, 6, 7, 8, 9, 10, 11, 12, 13]);
    await queue.close();
  });

  it('forgets a refused record when its machine connects again (releaseSource)', async () => {
    const queue = new SqliteQueue({ file: nextFile(), capRecords: 1, capBytes: 1024 * 1024 });
    const s1 = await queue.append(workout(1), T);
    let refused: unknown;
    await queue.append(workout(2), T).catch((err: unknown) => (refused = err));
    expect(refused).to.be.instanceOf(QueueFullError);
    await queue.deleteBySeq([s1]);
    let held: unknown;
    await queue.append(workout(3), T).catch((err: unknown) => (held = err));
    expect(held, 'held back until #2 is resent').to.be.instanceOf(QueueFullError);
    expect(queue.refusedSourceCount()).to.equal(1);
    queue.releaseSource(m); // reconnected without #2 (a machine that lost it): not locked out
    await queue.append(workout(3), T);
    expect(queue.refusedSourceCount()).to.equal(0);
    await queue.close();
  });
});
