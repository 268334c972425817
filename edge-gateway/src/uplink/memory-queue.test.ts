import { expect } from 'chai';
import { asMachineId } from '../../../protocol/index.ts';
import type { UplinkRecord } from '../../../protocol/index.ts';
import { recordOf } from '../testing/fixtures.ts';
import { MemoryQueue } from './memory-queue.ts';
import { QueueFullError } from './queue.ts';
import { describeUplinkQueue } from './queue-contract.ts';

describeUplinkQueue('MemoryQueue', () =>
  Promise.resolve(new MemoryQueue({ capRecords: 10_000, capBytes: 16 * 1024 * 1024 })),
);

const m = asMachineId('m-01');
const T = Date.UTC(2026, 10, 26);
const tele = (seq: number): UplinkRecord => recordOf.telemetry(m, seq, T);
const workout = (seq: number): UplinkRecord => recordOf.workout(m, seq, T);

describe('MemoryQueue at capacity', () => {
  it('evicts the oldest telemetry first, then refuses records with QueueFullError and reports full', async () => {
    const queue = new MemoryQueue({ capRecords: 4, capBytes: 1024 * 1024 });
    const t0 = await queue.append(tele(0), T);
    await queue.append(tele(1), T);
    await queue.append(workout(2), T);
    await queue.append(workout(3), T);
    // Full: a new workout evicts the oldest sample, then the next one.
    await queue.append(workout(4), T);
    let held = await queue.peek('telemetry', { limit: 10 });
    expect(held.map((r) => r.seq)).to.not.include(t0);
    expect(queue.stats().lanes.telemetry.evicted).to.equal(1);
    await queue.append(workout(5), T);
    expect(queue.stats().lanes.telemetry).to.deep.include({ depth: 0, evicted: 2 });
    // Only records left: refused, nothing dropped silently.
    const sixth = workout(6);
    let refused: unknown;
    try {
      await queue.append(sixth, T);
    } catch (err) {
      refused = err;
    }
    expect(refused).to.be.instanceOf(QueueFullError);
    expect((refused as QueueFullError).lane).to.equal('records');
    expect(queue.stats()).to.deep.include({ depth: 4, full: true });
    held = await queue.peek('records', { limit: 10 });
    await queue.deleteBySeq([held[0]!.seq]);
    expect(queue.stats().full).to.equal(false);
    await queue.append(sixth, T); // its machine resends it
    expect(queue.stats().depth).to.equal(4);
  });

  it('after a refusal holds a machine’s later records back until the refused one comes again or it reconnects', async () => {
    const queue = new MemoryQueue({ capRecords: 1, capBytes: 1024 * 1024 });
    const [first, second, third] = [workout(1), workout(2), workout(3)];
    const s1 = await queue.append(first, T);
    const refused = await queue.append(second, T).then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(refused).to.be.instanceOf(QueueFullError);
    await queue.deleteBySeq([s1]); // room again
    const held = await queue.append(third, T).then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(String(held)).to.match(/resend it first/);
    await queue.append(second, T); // the resend clears the hold
    await queue.deleteBySeq((await queue.peek('records', { limit: 10 })).map((r) => r.seq));
    await queue.append(third, T);
    const again = await queue.append(workout(4), T).then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(again).to.be.instanceOf(QueueFullError);
    queue.releaseSource(m); // reconnected: not locked out
    await queue.deleteBySeq((await queue.peek('records', { limit: 10 })).map((r) => r.seq));
    await queue.append(workout(5), T);
  });

  it('bounds bytes as well as records', async () => {
    const one = Buffer.byteLength(JSON.stringify(workout(0)));
    const queue = new MemoryQueue({ capRecords: 1_000, capBytes: one * 2 + 10 });
    await queue.append(workout(1), T);
    await queue.append(workout(2), T);
    let refused = false;
    await queue.append(workout(3), T).catch((err: unknown) => {
      refused = err instanceof QueueFullError;
    });
    expect(refused).to.equal(true);
  });

  it('holds an append open through its test hook, and refuses use after close', async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const queue = new MemoryQueue({ capRecords: 10, capBytes: 1_000_000, beforeAppend: () => gate });
    let done = false;
    const pending = queue.append(workout(1), T).then(() => (done = true));
    await new Promise((r) => setTimeout(r, 20));
    expect(done).to.equal(false);
    expect(queue.stats().depth).to.equal(0);
    release();
    await pending;
    expect(queue.stats().depth).to.equal(1);
    await queue.close();
    expect(() => queue.stats()).to.not.throw();
    let closed = false;
    await queue.append(workout(2), T).catch(() => (closed = true));
    expect(closed).to.equal(true);
    expect(() => new MemoryQueue({ capRecords: 0, capBytes: 1 })).to.throw(RangeError);
  });
});
