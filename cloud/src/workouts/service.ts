/**
 * Workout data: one pipeline for every way a finished segment reaches the cloud — the MQTT `workout` records
 * (ingest's `onStored('workout')`), `POST /api/machines/workout-data` from HTTP equipment, and the intervals the
 * cloud infers from telemetry-only cardio machines (inference.ts):
 *
 * 1. validated by the protocol's `Workout` schema (a set, an interval or a block, by machine type);
 * 2. attached to the member linked to the machine at the segment's event time (link history, so a gateway's late
 *    backlog lands on whoever was linked then, not now) and to that link's gym session; a machine that stamped a
 *    `userId` itself with no link on record keeps it;
 * 3. checked against the machine's supported ranges from its latest `m/{machine}/meta`: values outside are kept and
 *    flagged (`flags`), never dropped or clamped;
 * 4. stored in `workout_segments` with `_id` = msgId (a duplicate is a no-op), then published to the member's
 *    `u/{user}/live/workout` as a `segment`.
 *
 * The member's workout records (`GET /api/workouts`) are the segments grouped by session and ordered by event time,
 * with totals computed on read: late data needs no re-aggregation.
 */
import type { Aedes } from 'aedes';
import type { Collection, Db } from 'mongodb';
import type { Clock } from '../../../tools/runtime/clock.ts';
import type { Logger } from '../../../tools/runtime/logger.ts';
import { TOPIC_POLICY, topics, validatePayload } from '../../../protocol/index.ts';
import type { MachineId, MachineMeta, UserId, UserLiveWorkout, Workout } from '../../../protocol/index.ts';
import type { RANGED_FIELDS } from '../../../protocol/messages/meta.ts';
import { isDuplicateKey } from '../db/mongo.ts';
import { RECORD_COLLECTIONS } from '../ingest/store.ts';
import { publishChecked } from '../machines/links.ts';

export const SEGMENTS_COLLECTION = 'workout_segments';

export type SegmentOrigin = 'mqtt' | 'http' | 'inferred';

/** A value outside the machine's supported range (from its meta). */
export interface RangeFlag {
  field: string;
  value: number;
  min: number;
  max: number;
}

export interface SegmentDoc {
  _id: string;
  machine: string;
  branch: string;
  userId: string | null;
  sessionId: string | null;
  linkId: string | null;
  segment: Workout['segment'];
  machineType: string;
  startedAt: Date;
  endedAt: Date;
  origin: SegmentOrigin;
  flags: RangeFlag[];
  /** The segment as published (envelope included). */
  workout: Workout;
  storedAt: Date;
}

export interface LinkHistoryReader {
  at(machine: string, atMs: number): Promise<{ _id: string; userId: string; sessionId: string } | undefined>;
  /** Marks activity on the machine's link (keeps it from the idle release). */
  touch?(branch: string, machine: string, atMs: number): Promise<void>;
}

export interface WorkoutsDeps {
  db: Db;
  aedes: Aedes;
  links: LinkHistoryReader;
  clock: Clock;
  log: Logger;
}

export type AcceptResult =
  { ok: true; stored: boolean; segment: SegmentView } | { ok: false; reason: 'invalid'; path?: string; issue?: string };

export interface SegmentView {
  id: string;
  machine: string;
  branch: string;
  sessionId: string | null;
  segment: Workout['segment'];
  machineType: string;
  startedAt: number;
  endedAt: number;
  origin: SegmentOrigin;
  flags: RangeFlag[];
  workout: Workout;
}

export interface WorkoutRecord {
  sessionId: string | null;
  branch: string;
  startedAt: number;
  endedAt: number;
  machines: string[];
  totals: {
    segments: number;
    activeS: number;
    energyKj: number;
    distanceM: number;
    reps: number;
    volumeKg: number;
  };
  flagged: number;
  segments: SegmentView[];
}

export interface Workouts {
  /** One segment from any origin; `branch` is where it was received (the topic's, or the machine identity's). */
  accept(input: unknown, ctx: { branch: string; origin: SegmentOrigin }): Promise<AcceptResult>;
  /** The member's workout records (segments grouped by session), newest first. */
  records(userId: string, query: { fromMs?: number; toMs?: number; limit?: number }): Promise<WorkoutRecord[]>;
  /** One of the member's records by session id; undefined if none (or not theirs). */
  record(userId: string, sessionId: string): Promise<WorkoutRecord | undefined>;
  /** The supported ranges of a machine from its newest stored meta (cached briefly). */
  rangesOf(machine: string): Promise<MachineMeta['ranges'] | undefined>;
}

/** Which workout field is bounded by which supported range. Heart rate 0 means no contact: not a reading. */
const RANGE_OF: Record<string, (typeof RANGED_FIELDS)[number]> = {
  avgSpeedMps: 'speedMps',
  maxSpeedMps: 'speedMps',
  avgInclinePct: 'inclinePct',
  avgHeartRateBpm: 'heartRateBpm',
  maxHeartRateBpm: 'heartRateBpm',
  avgPowerW: 'powerW',
  maxPowerW: 'powerW',
  loadKg: 'loadKg',
};

export function rangeFlags(
  values: Record<string, unknown>,
  ranges: MachineMeta['ranges'] | undefined,
  mapping: Record<string, string> = RANGE_OF,
): RangeFlag[] {
  if (!ranges) return [];
  const flags: RangeFlag[] = [];
  for (const [field, rangeName] of Object.entries(mapping)) {
    const value = values[field];
    const range = (ranges as Record<string, { min: number; max: number } | undefined>)[rangeName];
    if (typeof value !== 'number' || !range) continue;
    if (rangeName === 'heartRateBpm' && value === 0) continue;
    if (value < range.min || value > range.max) flags.push({ field, value, min: range.min, max: range.max });
  }
  return flags;
}

export async function ensureWorkoutCollections(db: Db): Promise<void> {
  try {
    await db.createCollection(SEGMENTS_COLLECTION);
  } catch (err) {
    if ((err as { code?: number }).code !== 48) throw err;
  }
  const coll = db.collection(SEGMENTS_COLLECTION);
  await coll.createIndex({ userId: 1, startedAt: -1 }, { name: 'user_started' });
  await coll.createIndex({ machine: 1, startedAt: -1 }, { name: 'machine_started' });
}

const RANGES_TTL_MS = 60_000;

export function createWorkouts(deps: WorkoutsDeps): Workouts {
  const { db, aedes, links, clock, log } = deps;
  const segments: Collection<SegmentDoc> = db.collection<SegmentDoc>(SEGMENTS_COLLECTION);
  const metas = db.collection(RECORD_COLLECTIONS.meta);
  const rangesCache = new Map<string, { at: number; ranges: MachineMeta['ranges'] | undefined }>();

  const view = (d: SegmentDoc): SegmentView => ({
    id: d._id,
    machine: d.machine,
    branch: d.branch,
    sessionId: d.sessionId,
    segment: d.segment,
    machineType: d.machineType,
    startedAt: d.startedAt.getTime(),
    endedAt: d.endedAt.getTime(),
    origin: d.origin,
    flags: d.flags,
    workout: d.workout,
  });

  async function rangesOf(machine: string): Promise<MachineMeta['ranges'] | undefined> {
    const now = clock.nowMs();
    const cached = rangesCache.get(machine);
    if (cached && now - cached.at < RANGES_TTL_MS) return cached.ranges;
    const [meta] = await metas.find({ source: machine }).sort({ at: -1 }).limit(1).toArray();
    const ranges = (meta?.['ranges'] as MachineMeta['ranges'] | undefined) ?? undefined;
    rangesCache.set(machine, { at: now, ranges });
    return ranges;
  }

  function group(docs: readonly SegmentDoc[]): WorkoutRecord[] {
    const bySession = new Map<string, SegmentDoc[]>();
    for (const d of docs) {
      const key = d.sessionId ?? `none:${d.branch}:${d.startedAt.toISOString().slice(0, 10)}`;
      const list = bySession.get(key) ?? [];
      list.push(d);
      bySession.set(key, list);
    }
    const records: WorkoutRecord[] = [];
    for (const list of bySession.values()) {
      list.sort((a, b) => a.startedAt.getTime() - b.startedAt.getTime() || a._id.localeCompare(b._id));
      const totals = { segments: list.length, activeS: 0, energyKj: 0, distanceM: 0, reps: 0, volumeKg: 0 };
      let flagged = 0;
      for (const d of list) {
        const w = d.workout as Record<string, unknown>;
        totals.activeS += (d.endedAt.getTime() - d.startedAt.getTime()) / 1000;
        totals.energyKj += typeof w['energyKj'] === 'number' ? w['energyKj'] : 0;
        totals.distanceM += typeof w['distanceM'] === 'number' ? w['distanceM'] : 0;
        const reps = typeof w['reps'] === 'number' ? w['reps'] : 0;
        totals.reps += reps;
        if (d.segment === 'set' && typeof w['loadKg'] === 'number') totals.volumeKg += reps * w['loadKg'];
        if (d.flags.length > 0) flagged += 1;
      }
      const first = list[0]!;
      records.push({
        sessionId: first.sessionId,
        branch: first.branch,
        startedAt: first.startedAt.getTime(),
        endedAt: Math.max(...list.map((d) => d.endedAt.getTime())),
        machines: [...new Set(list.map((d) => d.machine))],
        totals: { ...totals, activeS: Math.round(totals.activeS), energyKj: round(totals.energyKj) },
        flagged,
        segments: list.map(view),
      });
    }
    return records.sort((a, b) => b.startedAt - a.startedAt);
  }

  return {
    rangesOf,
    async accept(input, { branch, origin }) {
      const checked = validatePayload('Workout', input);
      if (!checked.ok) {
        return {
          ok: false,
          reason: 'invalid',
          ...(checked.path === undefined ? {} : { path: checked.path }),
          ...(checked.issue === undefined ? {} : { issue: checked.issue }),
        };
      }
      const workout = checked.value;
      const machine = workout.source;
      // The member linked when the segment was done: its end is inside the link for anything finished while linked.
      const link = (await links.at(machine, workout.endedAt)) ?? (await links.at(machine, workout.startedAt));
      const userId = link?.userId ?? workout.userId ?? null;
      const sessionId = link?.sessionId ?? workout.sessionId ?? null;
      const flags = rangeFlags(workout, await rangesOf(machine));
      const doc: SegmentDoc = {
        _id: workout.msgId,
        machine,
        branch,
        userId,
        sessionId,
        linkId: link?._id ?? null,
        segment: workout.segment,
        machineType: workout.machineType,
        startedAt: new Date(workout.startedAt),
        endedAt: new Date(workout.endedAt),
        origin,
        flags,
        workout,
        storedAt: clock.now(),
      };
      try {
        await segments.insertOne(doc);
      } catch (err) {
        if (!isDuplicateKey(err)) throw err;
        const held = await segments.findOne({ _id: workout.msgId });
        return { ok: true, stored: false, segment: view(held ?? doc) };
      }
      if (flags.length > 0)
        log.info({ machine, msgId: workout.msgId, flags }, 'workout values outside the machine range');
      if (link) await links.touch?.(branch, machine, clock.nowMs()).catch(() => undefined);
      if (userId) {
        const event: UserLiveWorkout = { type: 'segment', machine: machine as MachineId, ts: clock.nowMs(), workout };
        await publishChecked(
          aedes,
          topics.userLive(userId as UserId, 'workout'),
          'UserLiveWorkout',
          event,
          TOPIC_POLICY['user-live'],
        ).catch((err: unknown) => {
          log.warn({ machine, err: { message: (err as Error).message } }, 'live segment not published');
        });
      }
      return { ok: true, stored: true, segment: view(doc) };
    },

    async records(userId, { fromMs, toMs, limit = 20 }) {
      const filter: Record<string, unknown> = { userId };
      if (fromMs !== undefined || toMs !== undefined) {
        filter['startedAt'] = {
          ...(fromMs === undefined ? {} : { $gte: new Date(fromMs) }),
          ...(toMs === undefined ? {} : { $lt: new Date(toMs) }),
        };
      }
      const docs = await segments
        .find(filter)
        .sort({ startedAt: -1 })
        .limit(Math.max(2_000, limit * 50))
        .toArray();
      return group(docs).slice(0, limit);
    },

    async record(userId, sessionId) {
      const docs = await segments.find({ userId, sessionId }).toArray();
      return docs.length === 0 ? undefined : group(docs)[0];
    },
  };
}

function round(n: number): number {
  return Math.round(n * 1000) / 1000;
}
