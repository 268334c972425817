/**
 * Intervals inferred from telemetry, for cardio machines that only stream samples (no finished-interval message):
 *
 * - only while a member is linked (there is nobody to attach an interval to otherwise), and only for machines that
 *   have never sent a workout segment of their own (`markPublisher`);
 * - an interval starts at the first moving sample (speed, cadence, stroke or step rate, or power above zero), and
 *   ends at the last moving sample once the machine has been still (or silent) for `pauseMs` — a pause — or when
 *   the link ends (unlink, idle release, machine offline: `close`);
 * - its totals are deltas of the machine's running counters (distance, energy, strokes, strides, elevation) between
 *   the first and last sample, and averages / maxima of the instantaneous values; then it goes through the same
 *   pipeline as a published segment (service.ts) with a msgId derived from machine and start, so closing twice
 *   stores it once.
 *
 * State per machine is held in Redis (`inf:{machine}`), so a restart resumes the open interval. Samples of one
 * machine are applied one at a time, in event-time order; a sample older than the newest applied is skipped (the
 * gateway sends the live snapshot and later the same sample from its queue).
 */
import { createHash } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { Logger } from '../../../tools/runtime/logger.ts';
import { CARDIO_MACHINE_TYPES } from '../../../protocol/index.ts';
import type { Telemetry } from '../../../protocol/index.ts';
import type { AcceptResult, SegmentOrigin } from './service.ts';

const CARDIO: ReadonlySet<string> = new Set(CARDIO_MACHINE_TYPES);
/** Running counters: the interval's value is last − first. */
const COUNTERS = ['distanceM', 'energyKj', 'strokes', 'strides', 'elevationGainM'] as const;
/** Instantaneous values: averaged over the interval's moving samples, with their maxima. */
const GAUGES = ['speedMps', 'powerW', 'cadenceRpm', 'strokeRateSpm', 'inclinePct', 'heartRateBpm'] as const;

interface OpenInterval {
  machineType: string;
  branch: string;
  startTs: number;
  lastMovingTs: number;
  lastTs: number;
  first: Record<string, number>;
  last: Record<string, number>;
  sums: Record<string, number>;
  counts: Record<string, number>;
  max: Record<string, number>;
}

interface MachineState {
  lastTs: number;
  open?: OpenInterval;
}

export interface InferenceDeps {
  redis: Redis;
  log: Logger;
  /** The pipeline (service.ts accept). */
  accept(input: unknown, ctx: { branch: string; origin: SegmentOrigin }): Promise<AcceptResult>;
  /** A still machine ends the interval after this long (default 10 s). */
  pauseMs?: number;
}

export interface Inference {
  /** Samples of linked machines, any order; applied per machine in event-time order. */
  samples(branch: string, samples: readonly Telemetry[]): Promise<void>;
  /** Closes the machine's open interval (link ended). */
  close(machine: string): Promise<void>;
  /** The machine publishes segments itself: never infer for it. */
  markPublisher(machine: string): Promise<void>;
  idle(): Promise<void>;
}

const stateKey = (machine: string) => `inf:${machine}`;
const PUBLISHERS = 'inf:publishers';
const STATE_TTL_S = 6 * 3600;

export function isMoving(sample: Record<string, unknown>): boolean {
  for (const f of ['speedMps', 'cadenceRpm', 'strokeRateSpm', 'stepRateSpm', 'powerW']) {
    const value = sample[f];
    if (typeof value === 'number' && value > 0) return true;
  }
  return false;
}

/** A msgId from machine and start: the same interval closed twice is one record. */
export function inferredMsgId(machine: string, startTs: number): string {
  return `inf-${createHash('sha256').update(`${machine}\0${startTs}`).digest('base64url').slice(0, 40)}`;
}

/** The interval as a protocol Workout (an `interval` segment). */
export function intervalOf(machine: string, open: OpenInterval): Record<string, unknown> {
  const out: Record<string, unknown> = {
    msgId: inferredMsgId(machine, open.startTs),
    source: machine,
    bootId: `inferred-${machine}`.slice(0, 64),
    seq: Math.floor(open.startTs / 1000),
    ts: open.lastMovingTs,
    v: 0,
    segment: 'interval',
    machineType: open.machineType,
    intent: 'free',
    startedAt: open.startTs,
    endedAt: open.lastMovingTs,
  };
  const delta = (f: string) => {
    const a = open.first[f];
    const b = open.last[f];
    return a === undefined || b === undefined || b < a ? undefined : b - a;
  };
  const avg = (f: string) => (open.counts[f] ? open.sums[f]! / open.counts[f] : undefined);
  const put = (key: string, value: number | undefined, integer = false) => {
    if (value !== undefined && Number.isFinite(value)) out[key] = integer ? Math.round(value) : round(value);
  };
  put('distanceM', delta('distanceM'));
  put('energyKj', delta('energyKj'));
  put('elevationGainM', delta('elevationGainM'));
  put('strokes', delta('strokes'), true);
  put('strides', delta('strides'), true);
  const durationS = (open.lastMovingTs - open.startTs) / 1000;
  const distance = delta('distanceM');
  put('avgSpeedMps', distance !== undefined && durationS > 0 ? distance / durationS : avg('speedMps'));
  put('maxSpeedMps', open.max['speedMps']);
  put('avgPowerW', avg('powerW'));
  put('maxPowerW', open.max['powerW']);
  put('avgCadenceRpm', avg('cadenceRpm'));
  put('avgStrokeRateSpm', avg('strokeRateSpm'));
  put('avgInclinePct', avg('inclinePct'));
  put('avgHeartRateBpm', avg('heartRateBpm'), true);
  put('maxHeartRateBpm', open.max['heartRateBpm'], true);
  return out;
}

export function createInference(deps: InferenceDeps): Inference {
  const { redis, log } = deps;
  const pauseMs = deps.pauseMs ?? 10_000;
  const chains = new Map<string, Promise<void>>();
  const publishers = new Set<string>();

  const serial = (machine: string, work: () => Promise<void>): Promise<void> => {
    const next = (chains.get(machine) ?? Promise.resolve()).then(work).catch((err: unknown) => {
      log.warn({ machine, err: { message: (err as Error).message } }, 'interval inference failed');
    });
    chains.set(machine, next);
    void next.finally(() => {
      if (chains.get(machine) === next) chains.delete(machine);
    });
    return next;
  };

  const load = async (machine: string): Promise<MachineState> => {
    const raw = await redis.get(stateKey(machine));
    return raw ? (JSON.parse(raw) as MachineState) : { lastTs: 0 };
  };
  const save = (machine: string, state: MachineState) =>
    redis.set(stateKey(machine), JSON.stringify(state), 'EX', STATE_TTL_S);

  async function emit(machine: string, open: OpenInterval): Promise<void> {
    if (open.lastMovingTs <= open.startTs) return; // a single moving sample is no interval
    const result = await deps.accept(intervalOf(machine, open), { branch: open.branch, origin: 'inferred' });
    if (!result.ok) log.warn({ machine, path: result.path, issue: result.issue }, 'inferred interval refused');
  }

  function apply(state: MachineState, branch: string, s: Telemetry): OpenInterval | undefined {
    const sample = s as unknown as Record<string, unknown>;
    let closed: OpenInterval | undefined;
    state.lastTs = s.ts;
    const open = state.open;
    if (open && s.ts - open.lastTs > pauseMs) {
      // Silent for longer than a pause: the interval ended with its last moving sample.
      closed = open;
      state.open = undefined;
    }
    const moving = isMoving(sample);
    if (!state.open) {
      if (!moving) return closed;
      state.open = {
        machineType: s.type,
        branch,
        startTs: s.ts,
        lastMovingTs: s.ts,
        lastTs: s.ts,
        first: pick(sample, COUNTERS),
        last: pick(sample, COUNTERS),
        sums: {},
        counts: {},
        max: {},
      };
    }
    const current = state.open;
    current.lastTs = s.ts;
    if (moving) {
      current.lastMovingTs = s.ts;
      const counters = pick(sample, COUNTERS);
      for (const [f, value] of Object.entries(counters)) {
        current.first[f] ??= value;
        current.last[f] = value;
      }
      for (const f of GAUGES) {
        const value = sample[f];
        if (typeof value !== 'number' || (f === 'heartRateBpm' && value === 0)) continue;
        current.sums[f] = (current.sums[f] ?? 0) + value;
        current.counts[f] = (current.counts[f] ?? 0) + 1;
        current.max[f] = Math.max(current.max[f] ?? -Infinity, value);
      }
    } else if (s.ts - current.lastMovingTs >= pauseMs) {
      closed = current;
      state.open = undefined;
    }
    return closed;
  }

  return {
    async samples(branch, samples) {
      const byMachine = new Map<string, Telemetry[]>();
      for (const s of samples) {
        if (!CARDIO.has(s.type) || publishers.has(s.source)) continue;
        const list = byMachine.get(s.source) ?? [];
        list.push(s);
        byMachine.set(s.source, list);
      }
      await Promise.all(
        [...byMachine].map(([machine, list]) =>
          serial(machine, async () => {
            if (await redis.sismember(PUBLISHERS, machine)) {
              publishers.add(machine);
              return;
            }
            const state = await load(machine);
            const closed: OpenInterval[] = [];
            for (const s of list.sort((a, b) => a.ts - b.ts)) {
              if (s.ts <= state.lastTs) continue;
              const ended = apply(state, branch, s);
              if (ended) closed.push(ended);
            }
            await save(machine, state);
            for (const c of closed) await emit(machine, c);
          }),
        ),
      );
    },
    close(machine) {
      return serial(machine, async () => {
        const state = await load(machine);
        const open = state.open;
        if (!open) return;
        state.open = undefined;
        await save(machine, state);
        await emit(machine, open);
      });
    },
    async markPublisher(machine) {
      if (publishers.has(machine)) return;
      publishers.add(machine);
      await redis.sadd(PUBLISHERS, machine);
      await redis.del(stateKey(machine));
    },
    async idle() {
      while (chains.size > 0) await Promise.allSettled([...chains.values()]);
    },
  };
}

function pick(sample: Record<string, unknown>, fields: readonly string[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const f of fields) {
    const value = sample[f];
    if (typeof value === 'number') out[f] = value;
  }
  return out;
}

function round(n: number): number {
  return Math.round(n * 1000) / 1000;
}
