/**
 * Workout segments: what a machine publishes on `m/{machine}/workout` when a piece of work is finished — an
 * interval on a cardio machine, a set on a strength machine, a block on a functional station. Queued in the
 * records lane and never evicted: this is the member's history.
 *
 * Totals reuse the telemetry fields' bounds (`measure`), which are FTMS wire ranges, so a set with
 * `avgHeartRateBpm: 0` (no sensor contact) or zero reps still parses: refusing it would lose the member's set.
 * Plausibility against the machine's meta is flagged by the cloud, not refused here.
 */
import * as v from 'valibot';
import { envelopeEntries } from '../envelope.ts';
import { SessionId, UserId } from '../ids.ts';
import { Code, Timestamp, count } from '../scalars.ts';
import { CARDIO_MACHINE_TYPES, STRENGTH_MACHINE_TYPES } from './machine-type.ts';
import { Tempo, measure } from './telemetry.ts';

/** Longest segment accepted: a day. Anything longer is a clock or firmware fault. */
export const MAX_SEGMENT_MS = 24 * 60 * 60 * 1000;
/** Most per-repetition details in one set (the set's `reps` count may be higher). */
export const MAX_REP_DETAILS = 200;

const segmentEntries = {
  ...envelopeEntries,
  startedAt: v.pipe(Timestamp, v.description('When the segment started')),
  endedAt: v.pipe(Timestamp, v.description('When the segment ended')),
  userId: v.optional(v.pipe(UserId, v.description('The linked member, if the machine was linked (cmd/link)'))),
  sessionId: v.optional(v.pipe(SessionId, v.description('The member’s gym session, if linked'))),
  index: v.optional(count(10_000, 'Position of this segment within the linked session, from 0')),
  energyKj: measure('energyKj', 'Energy expended in this segment'),
  avgHeartRateBpm: measure('heartRateBpm', 'Average heart rate'),
  maxHeartRateBpm: measure('heartRateBpm', 'Highest heart rate'),
};

/** What an interval was meant to be (FTMS Training Status, coarsened). */
export const INTERVAL_INTENTS = ['warm-up', 'work', 'recovery', 'cool-down', 'free'] as const;

/** A finished interval on a cardio machine, with its totals and averages. */
export const WorkoutInterval = v.object({
  ...segmentEntries,
  segment: v.literal('interval'),
  machineType: v.pipe(v.picklist(CARDIO_MACHINE_TYPES), v.description('Cardio machine type')),
  intent: v.optional(v.pipe(v.picklist(INTERVAL_INTENTS), v.description('What the interval was'))),
  distanceM: measure('distanceM', 'Distance covered'),
  avgSpeedMps: measure('avgSpeedMps', 'Average speed'),
  maxSpeedMps: measure('speedMps', 'Highest speed'),
  avgPowerW: measure('avgPowerW', 'Average power'),
  maxPowerW: measure('powerW', 'Highest power'),
  avgInclinePct: measure('inclinePct', 'Average inclination'),
  elevationGainM: measure('elevationGainM', 'Elevation gained'),
  avgCadenceRpm: measure('avgCadenceRpm', 'Average cadence (indoor bike)'),
  strokes: measure('strokes', 'Strokes (rower)'),
  avgStrokeRateSpm: measure('avgStrokeRateSpm', 'Average stroke rate (rower)'),
  avgPaceSPer500m: measure('avgPaceSPer500m', 'Average pace per 500 m (rower)'),
  strides: measure('strides', 'Strides (cross trainer)'),
  avgPaceSPerKm: measure('avgPaceSPerKm', 'Average pace per km (treadmill)'),
});

/** One repetition of a set, as measured by the machine's position sensor: its range, its `Tempo`, its speed. */
export const RepDetail = v.object({
  romCm: measure('romCm', 'Range of motion'),
  ...Tempo.entries,
  peakVelocityMps: measure('velocityMps', 'Peak velocity while lifting'),
});
export type RepDetail = v.InferOutput<typeof RepDetail>;

/** A finished set on a strength machine. */
export const WorkoutSet = v.pipe(
  v.object({
    ...segmentEntries,
    segment: v.literal('set'),
    machineType: v.pipe(v.picklist(STRENGTH_MACHINE_TYPES), v.description('Strength machine type')),
    exercise: v.optional(v.pipe(Code, v.description('Exercise, e.g. chest-press'))),
    reps: count(1_000, 'Repetitions completed'),
    loadKg: measure('loadKg', 'Load moved (absent on plate-loaded machines without a load sensor)'),
    avgRomCm: measure('romCm', 'Average range of motion'),
    tempo: v.optional(v.pipe(Tempo, v.description('Average tempo of the repetitions'))),
    repDetails: v.optional(
      v.pipe(
        v.array(RepDetail),
        v.maxLength(MAX_REP_DETAILS),
        v.description('Per-repetition measurements, in order (at most 200)'),
      ),
    ),
  }),
  v.forward(
    v.partialCheck(
      [['reps'], ['repDetails']],
      (set) => set.repDetails === undefined || set.repDetails.length <= set.reps,
      'Invalid repDetails: more details than repetitions',
    ),
    ['repDetails'],
  ),
);

/** A finished block on a functional station (e.g. 3 rounds of 12 kettlebell swings). */
export const WorkoutBlock = v.object({
  ...segmentEntries,
  segment: v.literal('block'),
  machineType: v.pipe(v.literal('functional'), v.description('Functional station')),
  exercise: v.optional(v.pipe(Code, v.description('Exercise, e.g. kettlebell-swing'))),
  rounds: measure('rounds', 'Rounds completed'),
  reps: measure('reps', 'Repetitions completed, all rounds'),
  loadKg: measure('loadKg', 'Load used'),
  workS: v.optional(v.pipe(v.number(), v.minValue(0), v.maxValue(86_400), v.description('Time working, s'))),
  restS: v.optional(v.pipe(v.number(), v.minValue(0), v.maxValue(86_400), v.description('Time resting, s'))),
  avgPowerW: measure('avgPowerW', 'Average power'),
});

/** A finished workout segment, discriminated by `segment`. */
export const Workout = v.pipe(
  v.variant('segment', [WorkoutInterval, WorkoutSet, WorkoutBlock]),
  v.forward(
    v.partialCheck(
      [['startedAt'], ['endedAt']],
      (w) => w.endedAt >= w.startedAt && w.endedAt - w.startedAt <= MAX_SEGMENT_MS,
      'Invalid endedAt: before startedAt or more than 24 h after it',
    ),
    ['endedAt'],
  ),
  v.title('Workout'),
  v.description(
    'A finished workout segment: an interval (cardio), a set (strength) or a block (functional), with start and ' +
      'end time, the member if the machine was linked, and totals.',
  ),
);
export type Workout = v.InferOutput<typeof Workout>;
