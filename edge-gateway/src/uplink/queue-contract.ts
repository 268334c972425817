/**
 * The contract every UplinkQueue implementation passes (CONVENTIONS: "an interface with a memory and a durable
 * implementation, both run through one contract suite"): memory-queue.test.ts and sqlite-queue.test.ts call
 * `describeUplinkQueue` with their own factory.
 */
import { expect } from 'chai';
import { asMachineId, asMsgId } from '../../../protocol/index.ts';
import type { UplinkRecord } from '../../../protocol/index.ts';
import { recordOf } from '../testing/fixtures.ts';
import type { UplinkQueue } from './queue.ts';

/** Builds a fresh, empty queue with room for at least 10,000 records and 16 MiB. */
export type QueueFactory = () => Promise<UplinkQueue>;

const m1 = asMachineId('m-01');
const m2 = asMachineId('m-02');
const T = Date.UTC(2026, 10, 26);

const tele = (seq: number, machine = m1): UplinkRecord => recordOf.telemetry(machine, seq, T);
const workout = (seq: number, machine = m1): UplinkRecord => recordOf.workout(machine, seq, T);
const status = (seq: number, machine = m1): UplinkRecord => recordOf.status(machine, seq, T);

export function describeUplinkQueue(name: string, build: QueueFactory): void {
  describe(`UplinkQueue contract: ${name}`, () => {
    let queue: UplinkQueue;
    beforeEach(async () => {
      queue = await build();
    });
    afterEach(async () => {
      await queue.close();
    });

    it('gives increasing seqs across lanes and routes each kind to its lane', async () => {
      const s1 = await queue.append(workout(0), T);
      const s2 = await queue.append(tele(1), T + 1);
      const s3 = await queue.append(status(2), T + 2);
      expect(s1).to.be.a('number');
      expect(s2).to.be.greaterThan(s1);
      expect(s3).to.be.greaterThan(s2);
      const records = await queue.peek('records', { limit: 10 });
      expect(records.map((r) => r.seq)).to.deep.equal([s1, s3]);
      expect(records.map((r) => r.kind)).to.deep.equal(['workout', 'status']);
      const telemetry = await queue.peek('telemetry', { limit: 10 });
      expect(telemetry.map((r) => r.seq)).to.deep.equal([s2]);
      expect(await queue.peek('access', { limit: 10 })).to.deep.equal([]);
    });

    it('keeps each record as its JSON with its size, msgId, source and enqueue time', async () => {
      const record = workout(7, m2);
      const seq = await queue.append(record, T + 5);
      const [held] = await queue.peek('records', { limit: 1 });
      expect(held).to.deep.include({ seq, lane: 'records', kind: 'workout', msgId: record.payload.msgId, source: m2 });
      expect(held!.enqueuedAtMs).to.equal(T + 5);
      expect(JSON.parse(held!.json)).to.deep.equal(record);
      expect(held!.bytes).to.equal(Buffer.byteLength(held!.json));
    });

    it('peeks in order after a cursor, within a limit', async () => {
      const seqs: number[] = [];
      for (let i = 0; i < 10; i++) seqs.push(await queue.append(tele(i), T));
      expect((await queue.peek('telemetry', { limit: 3 })).map((r) => r.seq)).to.deep.equal(seqs.slice(0, 3));
      expect((await queue.peek('telemetry', { afterSeq: seqs[4]!, limit: 3 })).map((r) => r.seq)).to.deep.equal(
        seqs.slice(5, 8),
      );
      expect(await queue.peek('telemetry', { afterSeq: seqs[9]!, limit: 3 })).to.deep.equal([]);
    });

    it('stores a redelivered msgId once and returns the seq it already has', async () => {
      const record = workout(1);
      const first = await queue.append(record, T);
      const again = await queue.append(record, T + 10);
      expect(again).to.equal(first);
      expect(queue.stats().depth).to.equal(1);
    });

    it('deletes by seq and by msgId, ignoring unknown ones, and reports how many went', async () => {
      const a = workout(1);
      const b = workout(2);
      const c = tele(3);
      const sa = await queue.append(a, T);
      await queue.append(b, T);
      const sc = await queue.append(c, T);
      expect(await queue.deleteBySeq([sa, 999_999])).to.equal(1);
      expect(await queue.deleteByMsgId([b.payload.msgId, asMsgId('0000000000000000-unknown')])).to.equal(1);
      expect((await queue.peek('records', { limit: 10 })).length).to.equal(0);
      expect((await queue.peek('telemetry', { limit: 10 })).map((r) => r.seq)).to.deep.equal([sc]);
      // A deleted record can be appended again (a machine resending after a gateway restart) under a new seq.
      expect(await queue.append(a, T)).to.be.greaterThan(sc);
    });

    it('gets still-queued records by seq, in the order asked', async () => {
      const s1 = await queue.append(workout(1), T);
      const s2 = await queue.append(tele(2), T);
      const s3 = await queue.append(status(3), T);
      await queue.deleteBySeq([s2]);
      const got = await queue.get([s3, s2, s1, 999_999]);
      expect(got.map((r) => r.seq)).to.deep.equal([s3, s1]);
      expect(got[0]!.kind).to.equal('status');
    });

    it('reports depth, bytes and the oldest record per lane', async () => {
      const empty = queue.stats();
      expect(empty.depth).to.equal(0);
      expect(empty.lanes.records).to.deep.include({ depth: 0, bytes: 0, oldestEnqueuedAtMs: undefined });
      const s1 = await queue.append(workout(1), T + 100);
      await queue.append(workout(2), T + 200);
      await queue.append(tele(3), T + 300);
      const held = await queue.peek('records', { limit: 10 });
      const stats = queue.stats();
      expect(stats.depth).to.equal(3);
      expect(stats.lanes.records.depth).to.equal(2);
      expect(stats.lanes.records.bytes).to.equal(held[0]!.bytes + held[1]!.bytes);
      expect(stats.lanes.records.oldestEnqueuedAtMs).to.equal(T + 100);
      expect(stats.lanes.telemetry.oldestEnqueuedAtMs).to.equal(T + 300);
      expect(stats.bytes).to.equal(stats.lanes.records.bytes + stats.lanes.telemetry.bytes);
      await queue.deleteBySeq([s1]);
      expect(queue.stats().lanes.records.oldestEnqueuedAtMs).to.equal(T + 200);
      expect(stats.full).to.equal(false);
    });

    it('keeps order per source within a lane across interleaved sources', async () => {
      for (let i = 0; i < 20; i++) await queue.append(workout(i, i % 2 === 0 ? m1 : m2), T);
      const held = await queue.peek('records', { limit: 100 });
      for (const machine of [m1, m2]) {
        const seqs = held
          .filter((r) => r.source === machine)
          .map((r) => (JSON.parse(r.json) as { payload: { seq: number } }).payload.seq);
        expect(seqs).to.deep.equal([...seqs].sort((x, y) => x - y));
      }
    });
  });
}
