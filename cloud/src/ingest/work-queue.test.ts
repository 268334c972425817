import { expect } from 'chai';
import sinon from 'sinon';
import { createWorkQueue } from './work-queue.ts';

/** A job that finishes when told to. */
function gate() {
  let open!: () => void;
  const opened = new Promise<void>((resolve) => {
    open = resolve;
  });
  return { open, opened };
}

describe('ingest work queue (bounded, per-lane order, never holds the broker for long)', () => {
  let clock: sinon.SinonFakeTimers | undefined;
  afterEach(() => clock?.restore());

  it('runs at most `concurrency` items at once, one at a time per key, in arrival order per key', async () => {
    const started: string[] = [];
    const gates = new Map<string, ReturnType<typeof gate>>();
    const queue = createWorkQueue<string>({
      concurrency: 2,
      maxQueued: 10,
      holdMs: 1_000,
      maxHeld: 4,
      work: async (item) => {
        started.push(item);
        const g = gate();
        gates.set(item, g);
        await g.opened;
      },
      onShed: () => expect.fail('nothing should be shed'),
    });
    const accepted: string[] = [];
    for (const [key, item] of [
      ['a', 'a1'],
      ['a', 'a2'],
      ['b', 'b1'],
      ['c', 'c1'],
    ] as const) {
      queue.offer(key, item, () => accepted.push(item));
    }
    expect(accepted, 'accepted at once while there is room').to.deep.equal(['a1', 'a2', 'b1', 'c1']);
    expect(started).to.deep.equal(['a1', 'b1']);
    expect({ running: queue.running, queued: queue.queued }).to.deep.equal({ running: 2, queued: 2 });
    gates.get('a1')!.open();
    await new Promise((resolve) => setImmediate(resolve));
    // a2 waited for a1 (same key); c1 was before it in line for a writer.
    expect(started).to.deep.equal(['a1', 'b1', 'c1']);
    gates.get('b1')!.open();
    await new Promise((resolve) => setImmediate(resolve));
    expect(started).to.deep.equal(['a1', 'b1', 'c1', 'a2']);
    gates.get('c1')!.open();
    gates.get('a2')!.open();
    await queue.close();
    expect({ running: queue.running, queued: queue.queued }).to.deep.equal({ running: 0, queued: 0 });
  });

  it('with priorities, a free writer takes the lowest-priority runnable key first (ties in arrival order)', async () => {
    const started: string[] = [];
    const gates = new Map<string, ReturnType<typeof gate>>();
    const queue = createWorkQueue<string>({
      concurrency: 1,
      maxQueued: 10,
      holdMs: 1_000,
      maxHeld: 4,
      priority: (key) => (key.endsWith('/access') ? 0 : key.endsWith('/records') ? 1 : 2),
      work: async (item) => {
        started.push(item);
        const g = gate();
        gates.set(item, g);
        await g.opened;
      },
      onShed: () => expect.fail('nothing should be shed'),
    });
    // Telemetry first takes the only writer; then a backlog of telemetry, records and access arrives.
    for (const [key, item] of [
      ['gw/telemetry/0', 't1'],
      ['gw/telemetry/1', 't2'],
      ['gw/records', 'r1'],
      ['gw2/telemetry/0', 't3'],
      ['gw/access', 'a1'],
      ['gw2/access', 'a2'],
      ['gw/records', 'r2'],
    ] as const)
      queue.offer(key, item, () => undefined);
    const finish = async (item: string) => {
      gates.get(item)!.open();
      await new Promise((resolve) => setImmediate(resolve));
    };
    for (const item of ['t1', 'a1', 'a2', 'r1', 'r2', 't2']) await finish(item);
    // Access in arrival order, then records (one lane: in order), then telemetry in arrival order.
    expect(started).to.deep.equal(['t1', 'a1', 'a2', 'r1', 'r2', 't2', 't3']);
    await finish('t3');
    await queue.close();
  });

  it('holds the sender while full, admits it when room is made, and sheds it after holdMs', async () => {
    clock = sinon.useFakeTimers();
    const shed: string[] = [];
    const first = gate();
    const queue = createWorkQueue<string>({
      concurrency: 1,
      maxQueued: 1,
      holdMs: 500,
      maxHeld: 4,
      work: async (item) => {
        if (item === 'x1') await first.opened;
      },
      onShed: (item) => shed.push(item),
    });
    const accepted: string[] = [];
    queue.offer('k', 'x1', () => accepted.push('x1')); // runs
    queue.offer('k', 'x2', () => accepted.push('x2')); // queued (the one place)
    queue.offer('k', 'x3', () => accepted.push('x3')); // full: held
    queue.offer('k', 'x4', () => accepted.push('x4')); // held behind x3
    expect(accepted).to.deep.equal(['x1', 'x2']);
    expect(queue.held).to.equal(2);
    first.open();
    await clock.tickAsync(0);
    // x1 done, x2 ran (and finished), x3 and x4 came in as room was made.
    expect(accepted).to.deep.equal(['x1', 'x2', 'x3', 'x4']);
    expect(shed).to.deep.equal([]);

    const blocker = gate();
    const stuck = createWorkQueue<string>({
      concurrency: 1,
      maxQueued: 1,
      holdMs: 500,
      maxHeld: 4,
      work: () => blocker.opened,
      onShed: (item) => shed.push(item),
    });
    stuck.offer('k', 'y1', () => undefined);
    stuck.offer('k', 'y2', () => undefined);
    let released = false;
    stuck.offer('k', 'y3', () => {
      released = true;
    });
    await clock.tickAsync(499);
    expect(released, 'still held').to.equal(false);
    await clock.tickAsync(1);
    expect(released, 'released after holdMs').to.equal(true);
    expect(shed).to.deep.equal(['y3']);
    blocker.open();
    await clock.tickAsync(0);
    await stuck.close();
  });

  it('sheds new and held items once closed, and finishes what it has', async () => {
    const done: string[] = [];
    const shed: string[] = [];
    const g = gate();
    const queue = createWorkQueue<string>({
      concurrency: 1,
      maxQueued: 1,
      holdMs: 10_000,
      maxHeld: 4,
      work: async (item) => {
        await g.opened;
        done.push(item);
      },
      onShed: (item) => shed.push(item),
    });
    queue.offer('k', 'a', () => undefined);
    queue.offer('k', 'b', () => undefined);
    let heldReleased = false;
    queue.offer('k', 'c', () => {
      heldReleased = true;
    });
    const closing = queue.close();
    expect(heldReleased).to.equal(true);
    queue.offer('k', 'd', () => undefined);
    g.open();
    await closing;
    expect(done).to.deep.equal(['a', 'b']);
    expect(shed).to.deep.equal(['c', 'd']);
  });

  it('holds at most maxHeld senders; the next is shed at once', () => {
    const shed: string[] = [];
    const never = new Promise<void>(() => undefined);
    const queue = createWorkQueue<string>({
      concurrency: 1,
      maxQueued: 1,
      holdMs: 60_000,
      maxHeld: 2,
      work: () => never,
      onShed: (item) => shed.push(item),
    });
    const accepted: string[] = [];
    for (const item of ['run', 'queued', 'held-1', 'held-2', 'over']) queue.offer('k', item, () => accepted.push(item));
    expect(accepted).to.deep.equal(['run', 'queued', 'over']);
    expect(shed).to.deep.equal(['over']);
    expect(queue.held).to.equal(2);
    void queue.close();
    expect(shed).to.deep.equal(['over', 'held-1', 'held-2']);
  });
});
