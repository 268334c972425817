/**
 * The members of a branch, as one simulator process sees them: who is outside, who is in the gym between machines,
 * and the doors they tap through.
 *
 * A machine whose idle gap ends (machine.ts) asks the desk for a member (`take`): one already in the gym whose walk
 * to the machine is over, else a new arrival, who taps their card at an entrance first. A member done at a machine
 * (`release`) moves on to another one or, with probability 1 / `visitMachines`, walks out and taps at an exit. So
 * arrivals follow the machines' day curve, and visits last a few machines, as at a real gym.
 *
 * A tap is what a keyboard-wedge NFC reader does: the card's UID and a newline, appended to the reader's file (the
 * gateway reads it as a line reader, GATEWAY_QR_READERS). The gateway then decides — online with the cloud, or
 * offline from its allow-list — and the cloud opens or closes the member's session. A reader takes one member per
 * `doorGapMs` (people walk through one at a time; the gateway also drops a reader's scans past 2/s as a flood), so
 * at a peak members queue at the doors; the wait is reported.
 *
 * Members are split between processes: member n belongs to process (n - 1) mod processes. Which member arrives and
 * how long walks take are drawn from a generator seeded by (run seed, branch, process); which member a machine gets
 * also depends on the order machines ask in, which timer jitter can change.
 */
import { appendFile } from 'node:fs/promises';
import type { BranchDesk } from './provision.ts';
import { memberCardUid } from './provision.ts';
import { createRng, deriveSeed } from './random.ts';

export interface DeskMember {
  /** 1-based member number in the branch. */
  readonly n: number;
  /** Their card's UID (hex). */
  readonly uid: string;
}

export interface FrontDeskOptions {
  readonly desk: BranchDesk;
  readonly worker: number;
  readonly processes: number;
  readonly seed: number;
  /** Simulated seconds per real second: walks are simulated time. */
  readonly timeScale: number;
  /** Mean machines per visit (default 3). */
  readonly visitMachines?: number;
  /** Walk between the door and a machine, or two machines, in simulated seconds (default 30…120). */
  readonly walkS?: readonly [number, number];
  /**
   * Shortest walk in real time, ms (default 2,500): a new arrival reaches a machine only after the gateway has
   * decided their check-in (online: tens of ms; offline, after the 700 ms online deadline), or the link is refused.
   */
  readonly minWalkMs?: number;
  /** One tap per reader per this long, ms (default 700). */
  readonly doorGapMs?: number;
  /** Clock, ms (default performance.now). */
  readonly now?: () => number;
  /** How a tap reaches the reader (default: append `uid\n` to its file). */
  readonly tap?: (file: string, uid: string) => Promise<void>;
}

export interface DeskStats {
  readonly arrivals: number;
  readonly departures: number;
  /** Taps written at entrances and exits. */
  readonly checkInTaps: number;
  readonly checkOutTaps: number;
  readonly tapErrors: number;
  /** Sessions a machine started with no member free (every member of this process in the gym and busy). */
  readonly noMemberFree: number;
  /** Members in the gym now (checked in, not yet tapped out). */
  readonly inGym: number;
  /** Longest wait at a door, ms. */
  readonly doorWaitMaxMs: number;
}

/** Desk figures of several desks or processes: counts summed, the longest door wait kept. */
export function mergeDeskStats(all: readonly DeskStats[]): DeskStats {
  const sum = (pick: (d: DeskStats) => number) => all.reduce((total, d) => total + pick(d), 0);
  return {
    arrivals: sum((d) => d.arrivals),
    departures: sum((d) => d.departures),
    checkInTaps: sum((d) => d.checkInTaps),
    checkOutTaps: sum((d) => d.checkOutTaps),
    tapErrors: sum((d) => d.tapErrors),
    noMemberFree: sum((d) => d.noMemberFree),
    inGym: sum((d) => d.inGym),
    doorWaitMaxMs: Math.max(0, ...all.map((d) => d.doorWaitMaxMs)),
  };
}

export interface FrontDesk {
  readonly branch: string;
  /** A member for a session starting now, and in how many ms they are at the machine; undefined: nobody free. */
  take(): { member: DeskMember; readyInMs: number } | undefined;
  /** The member is done at a machine: on to the next one, or out through an exit. */
  release(member: DeskMember): void;
  stats(): DeskStats;
  /** Stops scheduling taps; resolves once the taps being written are written. */
  stop(): Promise<void>;
}

interface Waiting {
  readonly member: DeskMember;
  readonly readyAtMs: number;
}

/** Members in the gym between machines, looked through from the longest waiting on, at most this many per take. */
const LOOK_AHEAD = 64;

export function createFrontDesk(options: FrontDeskOptions): FrontDesk {
  const { desk } = options;
  const now = options.now ?? (() => performance.now());
  const rng = createRng(deriveSeed(options.seed, `${desk.branch}/desk/${options.worker}`));
  const leaveChance = 1 / Math.max(1, options.visitMachines ?? 3);
  const [walkMin, walkMax] = options.walkS ?? [30, 120];
  const minWalkMs = options.minWalkMs ?? 2_500;
  const doorGapMs = options.doorGapMs ?? 700;
  const tap = options.tap ?? ((file: string, uid: string) => appendFile(file, `${uid}\n`));
  const outside: number[] = [];
  for (let n = options.worker + 1; n <= desk.members; n += options.processes) outside.push(n);
  const between: Waiting[] = [];
  // Processes share the doors without talking to each other: with enough doors each takes its own (door i to process
  // i mod processes); with fewer, each uses every door at a proportionally longer gap. Either way a reader sees one
  // tap per doorGapMs at most (the gateway drops a reader's scans past 2/s as a flood).
  const doorsOf = (files: readonly string[]) => {
    if (files.length >= options.processes) return files.filter((_f, i) => i % options.processes === options.worker);
    return files;
  };
  const doorFiles = { in: doorsOf(desk.doorsIn), out: doorsOf(desk.doorsOut) };
  const gapOf = (files: readonly string[]) =>
    doorGapMs * (files.length >= options.processes ? 1 : Math.ceil(options.processes / files.length));
  const doorGaps = { in: gapOf(desk.doorsIn), out: gapOf(desk.doorsOut) };
  const doorsFree = {
    in: doorFiles.in.map(() => 0),
    out: doorFiles.out.map(() => 0),
  };
  const timers = new Set<NodeJS.Timeout>();
  const writing = new Set<Promise<void>>();
  let stopped = false;
  const counts = {
    arrivals: 0,
    departures: 0,
    checkInTaps: 0,
    checkOutTaps: 0,
    tapErrors: 0,
    noMemberFree: 0,
    inGym: 0,
    doorWaitMaxMs: 0,
  };

  const walkMs = () => Math.max(minWalkMs, (rng.between(walkMin, walkMax) * 1000) / options.timeScale);

  /** Queues the member at the least busy door of that direction; returns when (ms from now) they are through. */
  const throughDoor = (direction: 'in' | 'out', member: DeskMember, inMs: number): number => {
    const free = doorsFree[direction];
    const files = doorFiles[direction];
    let door = 0;
    for (let i = 1; i < free.length; i++) if (free[i]! < free[door]!) door = i;
    const arriveAt = now() + inMs;
    const tapAt = Math.max(arriveAt, free[door]!);
    free[door] = tapAt + doorGaps[direction];
    counts.doorWaitMaxMs = Math.max(counts.doorWaitMaxMs, Math.round(tapAt - arriveAt));
    const timer = setTimeout(
      () => {
        timers.delete(timer);
        if (stopped) return;
        if (direction === 'in') counts.checkInTaps += 1;
        else counts.checkOutTaps += 1;
        const written = tap(files[door]!, member.uid).catch(() => {
          counts.tapErrors += 1;
        });
        writing.add(written);
        void written.finally(() => writing.delete(written));
      },
      Math.max(0, tapAt - now()),
    );
    timers.add(timer);
    return tapAt - now();
  };

  return {
    branch: desk.branch,
    take() {
      const t = now();
      const look = Math.min(between.length, LOOK_AHEAD);
      for (let i = 0; i < look; i++) {
        if (between[i]!.readyAtMs <= t) return { member: between.splice(i, 1)[0]!.member, readyInMs: 0 };
      }
      if (outside.length > 0) {
        const index = rng.int(0, outside.length - 1);
        const n = outside[index]!;
        outside[index] = outside[outside.length - 1]!;
        outside.pop();
        const member = { n, uid: memberCardUid(desk.branch, n) };
        counts.arrivals += 1;
        counts.inGym += 1;
        const throughMs = throughDoor('in', member, 0);
        return { member, readyInMs: throughMs + walkMs() };
      }
      if (between.length > 0) {
        // Everyone is in: the one who will be ready first.
        let best = 0;
        for (let i = 1; i < between.length; i++) if (between[i]!.readyAtMs < between[best]!.readyAtMs) best = i;
        const next = between.splice(best, 1)[0]!;
        return { member: next.member, readyInMs: Math.max(0, next.readyAtMs - t) };
      }
      counts.noMemberFree += 1;
      return undefined;
    },
    release(member) {
      if (rng.chance(leaveChance)) {
        counts.departures += 1;
        const throughMs = throughDoor('out', member, walkMs());
        const timer = setTimeout(
          () => {
            timers.delete(timer);
            counts.inGym -= 1;
            outside.push(member.n);
          },
          Math.max(0, throughMs + doorGapMs),
        );
        timers.add(timer);
      } else {
        between.push({ member, readyAtMs: now() + walkMs() });
      }
    },
    stats: () => ({ ...counts }),
    async stop() {
      stopped = true;
      for (const timer of timers) clearTimeout(timer);
      timers.clear();
      await Promise.all([...writing]);
    },
  };
}
