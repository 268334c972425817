import { expect } from 'chai';
import sinon from 'sinon';
import { createFrontDesk, mergeDeskStats, type FrontDeskOptions } from './front-desk.ts';
import { memberCardUid } from './provision.ts';

describe('front desk (members at the doors)', () => {
  let clock: sinon.SinonFakeTimers;
  beforeEach(() => {
    clock = sinon.useFakeTimers({ now: 1_000_000, toFake: ['setTimeout', 'clearTimeout', 'Date', 'performance'] });
  });
  afterEach(() => clock.restore());

  const desk = (overrides: Partial<FrontDeskOptions> = {}) => {
    const taps: { file: string; uid: string; at: number }[] = [];
    const d = createFrontDesk({
      desk: { branch: 'b1', doorsIn: ['in-1', 'in-2'], doorsOut: ['out-1'], members: 10 },
      worker: 0,
      processes: 1,
      seed: 42,
      timeScale: 1,
      now: () => Date.now(),
      tap: (file, uid) => {
        taps.push({ file, uid, at: Date.now() });
        return Promise.resolve();
      },
      ...overrides,
    });
    return { d, taps };
  };

  it('a new arrival taps their card at an entrance first, and reaches the machine after the walk', async () => {
    const { d, taps } = desk({ walkS: [60, 60], minWalkMs: 0 });
    const taken = d.take()!;
    expect(taken.member.uid).to.equal(memberCardUid('b1', taken.member.n));
    expect(taken.readyInMs).to.equal(60_000); // the door is free: tap now, then a 60 s walk
    await clock.tickAsync(0);
    expect(taps).to.deep.equal([{ file: 'in-1', uid: taken.member.uid, at: 1_000_000 }]);
    expect(d.stats()).to.include({ arrivals: 1, checkInTaps: 1, inGym: 1 });
  });

  it('members queue at the doors: one tap per reader per doorGapMs, on the least busy reader', async () => {
    const { d, taps } = desk({ walkS: [0, 0], minWalkMs: 0, doorGapMs: 1_000 });
    const ready = Array.from({ length: 5 }, () => d.take()!.readyInMs);
    // Two entrances: 0, 0, then 1 s, 1 s, then 2 s.
    expect(ready).to.deep.equal([0, 0, 1_000, 1_000, 2_000]);
    await clock.tickAsync(2_000);
    expect(taps.map((t) => [t.file, t.at - 1_000_000])).to.deep.equal([
      ['in-1', 0],
      ['in-2', 0],
      ['in-1', 1_000],
      ['in-2', 1_000],
      ['in-1', 2_000],
    ]);
    expect(d.stats().doorWaitMaxMs).to.equal(2_000);
  });

  it('a member done at a machine goes to another one or leaves through an exit', async () => {
    const { d, taps } = desk({ walkS: [10, 10], minWalkMs: 0, visitMachines: 2 });
    const members = Array.from({ length: 10 }, () => d.take()!.member);
    expect(d.take()).to.equal(undefined); // all ten in the gym and busy
    expect(d.stats().noMemberFree).to.equal(1);
    for (const m of members) d.release(m);
    await clock.tickAsync(60_000);
    const s = d.stats();
    expect(s.departures).to.be.within(1, 9); // visitMachines 2: about half leave
    expect(s.checkOutTaps).to.equal(s.departures);
    expect(taps.filter((t) => t.file === 'out-1')).to.have.length(s.departures);
    expect(s.inGym).to.equal(10 - s.departures);
    // Those who stayed are ready for the next machine at once (their walk is over): no new arrival.
    const before = d.stats().arrivals;
    const next = d.take()!;
    expect(next.readyInMs).to.equal(0);
    expect(d.stats().arrivals).to.equal(before);
  });

  it('splits members between processes, and the same seed draws the same members', () => {
    const a = desk({ worker: 1, processes: 3 }).d;
    const b = desk({ worker: 1, processes: 3 }).d;
    const drawn = (d: typeof a) => Array.from({ length: 3 }, () => d.take()!.member.n);
    const first = drawn(a);
    expect(first).to.deep.equal(drawn(b));
    expect(first.every((n) => (n - 1) % 3 === 1)).to.equal(true);
    expect(a.take()).to.equal(undefined); // members 2, 5, 8 only
  });

  it('processes share the doors: their own doors when there are enough, else every door at a longer gap', () => {
    const doors = { branch: 'b1', doorsIn: ['in-1', 'in-2', 'in-3', 'in-4'], doorsOut: ['out-1'], members: 40 };
    const files = (worker: number, processes: number) => {
      const seen: string[] = [];
      const d = createFrontDesk({
        desk: doors,
        worker,
        processes,
        seed: 1,
        timeScale: 1,
        walkS: [0, 0],
        minWalkMs: 0,
        doorGapMs: 1_000,
        now: () => Date.now(),
        tap: (file) => {
          seen.push(file);
          return Promise.resolve();
        },
      });
      return { d, seen };
    };
    // Two processes, four entrances: process 1 taps at in-2 and in-4 only.
    const { d } = files(1, 2);
    expect(Array.from({ length: 4 }, () => d.take()!.readyInMs)).to.deep.equal([0, 0, 1_000, 1_000]);
    // Eight processes, four entrances: every door, at 2 s (8 / 4 × 1 s) per tap from this process.
    const many = files(0, 8).d;
    expect(Array.from({ length: 5 }, () => many.take()!.readyInMs)).to.deep.equal([0, 0, 0, 0, 2_000]);
  });

  it('stop cancels the taps not yet made', async () => {
    const { d, taps } = desk({ walkS: [0, 0], minWalkMs: 0, doorGapMs: 1_000 });
    for (let i = 0; i < 4; i++) d.take();
    await d.stop();
    await clock.tickAsync(5_000);
    expect(taps).to.have.length(0);
    expect(d.stats().checkInTaps).to.equal(0);
  });

  it('merges the figures of several desks', () => {
    const base = {
      arrivals: 1,
      departures: 1,
      checkInTaps: 1,
      checkOutTaps: 1,
      tapErrors: 0,
      noMemberFree: 0,
      inGym: 0,
      doorWaitMaxMs: 10,
    };
    expect(mergeDeskStats([base, { ...base, doorWaitMaxMs: 30, inGym: 2 }])).to.deep.equal({
      ...base,
      arrivals: 2,
      departures: 2,
      checkInTaps: 2,
      checkOutTaps: 2,
      inGym: 2,
      doorWaitMaxMs: 30,
    });
  });
});
