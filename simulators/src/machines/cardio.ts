/**
 * The four FTMS cardio machines (treadmill, indoor bike, rower, cross trainer). A session is a plan of intervals
 * (warm-up, work and recovery pairs, cool-down, or one free interval); each machine's physics turns the interval's
 * targets into the quantities its FTMS characteristic reports, at FTMS resolution, in the SI units of
 * protocol/messages/telemetry.ts:
 * - treadmill: belt speed and incline ramp towards their set points; energy from the ACSM walking/running
 *   equations; power = m·g·v·grade;
 * - indoor bike: the rider holds a cadence against a resistance level, power ∝ resistance × cadence; virtual speed
 *   ∝ ∛power (air drag);
 * - rower: Concept2 relations, power = 2.80 / (pace per metre)³ and kcal/h = 4·W + resting;
 * - cross trainer: power ∝ resistance × step rate, one metre per step.
 * Heart rate and energy follow the work through body.ts.
 */
import type { CardioMachineType } from '../../../protocol/messages/machine-type.ts';
import type { TRAINING_STATUSES } from '../../../protocol/messages/telemetry.ts';
import type { INTERVAL_INTENTS } from '../../../protocol/messages/workout.ts';
import type { Rng } from '../random.ts';
import {
  approach,
  clamp,
  energyKjOf,
  metFromPower,
  quantize,
  restingBody,
  round,
  stepBody,
  type Athlete,
  type BodyState,
} from './body.ts';
import type { Body, MachineModel, MetaBody, Session, SessionStep } from './model.ts';

type Intent = (typeof INTERVAL_INTENTS)[number];
type TrainingStatus = (typeof TRAINING_STATUSES)[number];
/** Per intent: an effort level and a low/high rate the member picks from. */
type Triple = readonly [number, number, number];

const STATUS_OF_INTENT: Record<Intent, TrainingStatus> = {
  'warm-up': 'warming-up',
  work: 'high-intensity-interval',
  recovery: 'recovery-interval',
  'cool-down': 'cool-down',
  free: 'manual-mode',
};

/** Instantaneous quantities an interval averages (time-weighted) and takes the maximum of. */
interface Instant {
  speedMps?: number;
  powerW?: number;
  inclinePct?: number;
  cadenceRpm?: number;
  strokeRateSpm?: number;
  stepRateSpm?: number;
}
/** Running totals since the session began; an interval reports its difference. */
interface Counters {
  distanceM: number;
  strokes?: number;
  strides?: number;
  elevationGainM?: number;
}

interface Physics {
  /** Sets the targets of a new interval. */
  target(intent: Intent): void;
  /** Advances `dtS` seconds; returns the MET of the work. */
  step(dtS: number): number;
  instant(): Instant;
  counters(): Counters;
  /** FTMS fields of this instant (type-specific part), given the session's elapsed time. */
  fields(elapsedS: number): Body;
  /** Workout interval fields (type-specific part) from the interval's averages and differences. */
  totals(avg: Instant, max: Instant, delta: Counters, durationS: number): Body;
}

interface CardioSpec {
  readonly type: CardioMachineType;
  readonly prefix: string;
  readonly label: string;
  readonly makes: readonly (readonly [manufacturer: string, model: string, firmware: string])[];
  /** Type-specific telemetry fields (the common ones are added). */
  readonly fields: readonly string[];
  readonly ranges: MetaBody['ranges'];
  readonly physics: (athlete: Athlete, rng: Rng) => Physics;
  readonly idle: () => Body;
}

const COMMON_FIELDS = [
  'trainingStatus',
  'energyKj',
  'energyPerHourKj',
  'energyPerMinuteKj',
  'heartRateBpm',
  'metabolicEquivalent',
  'elapsedS',
  'remainingS',
];

const HEART_RATE_RANGE = { min: 40, max: 220, step: 1 };

/** FTMS carries speed as uint16 0.01 km/h: the m/s a console reports. */
function ftmsSpeed(mps: number): number {
  return round(round(mps * 3.6, 2) / 3.6, 4);
}

// ---------------------------------------------------------------------------------------------------------------
// Treadmill

function treadmillPhysics(athlete: Athlete, rng: Rng): Physics {
  // The member's easy running speed, m/s (2.4–3.6 m/s ≈ 8.6–13 km/h).
  const runSpeed = clamp(2.2 + (athlete.maxMet - 8) * 0.12 + rng.normal(0, 0.15), 2.2, 4.4);
  let speed = 0;
  let incline = 0;
  let targetSpeed = 0;
  let targetIncline = 0;
  let distance = 0;
  let gain = 0;
  let power = 0;
  return {
    target(intent) {
      const hill = rng.chance(0.25);
      switch (intent) {
        case 'warm-up':
          targetSpeed = rng.between(1.3, 1.7);
          targetIncline = quantize(rng.between(0, 1.5), 0.5);
          break;
        case 'work':
          targetSpeed = hill ? rng.between(1.5, 1.8) : runSpeed * rng.between(1.05, 1.25);
          targetIncline = hill ? quantize(rng.between(8, 12), 0.5) : quantize(rng.between(0, 3), 0.5);
          break;
        case 'recovery':
          targetSpeed = rng.between(1.4, 1.9);
          targetIncline = quantize(rng.between(0, 1), 0.5);
          break;
        case 'cool-down':
          targetSpeed = rng.between(1.1, 1.4);
          targetIncline = 0;
          break;
        case 'free':
          targetSpeed = runSpeed * rng.between(0.85, 1);
          targetIncline = quantize(rng.between(0, 2), 0.5);
      }
      // The console steps speed in 0.1 km/h.
      targetSpeed = quantize(targetSpeed * 3.6, 0.1) / 3.6;
    },
    step(dtS) {
      // Belt acceleration ≈ 0.3 m/s², incline motor ≈ 0.5 %/s.
      speed = approach(speed, targetSpeed, 0.3 * dtS);
      incline = approach(incline, targetIncline, 0.5 * dtS);
      const grade = incline / 100;
      distance += speed * dtS;
      gain += speed * dtS * grade;
      power = athlete.massKg * 9.81 * speed * grade;
      const metresPerMin = speed * 60;
      const running = speed > 2.1;
      const vo2 = running
        ? 0.2 * metresPerMin + 0.9 * metresPerMin * grade + 3.5
        : 0.1 * metresPerMin + 1.8 * metresPerMin * grade + 3.5;
      return vo2 / 3.5;
    },
    instant: () => ({ speedMps: speed, inclinePct: incline, powerW: power }),
    counters: () => ({ distanceM: distance, elevationGainM: gain }),
    fields(elapsedS) {
      const avgSpeed = elapsedS > 0 ? distance / elapsedS : 0;
      return {
        speedMps: ftmsSpeed(speed),
        avgSpeedMps: ftmsSpeed(avgSpeed),
        distanceM: Math.floor(distance),
        inclinePct: quantize(incline, 0.1),
        rampAngleDeg: quantize((Math.atan(incline / 100) * 180) / Math.PI, 0.1),
        elevationGainM: quantize(gain, 0.1),
        elevationLossM: 0,
        ...(speed > 0.3 ? { paceSPerKm: Math.round(1000 / speed) } : {}),
        ...(avgSpeed > 0.3 ? { avgPaceSPerKm: Math.round(1000 / avgSpeed) } : {}),
        powerW: Math.round(power),
      };
    },
    totals(avg, max, delta, durationS) {
      const avgSpeed = durationS > 0 ? delta.distanceM / durationS : 0;
      return {
        distanceM: Math.floor(delta.distanceM),
        avgSpeedMps: ftmsSpeed(avgSpeed),
        maxSpeedMps: ftmsSpeed(max.speedMps ?? 0),
        avgInclinePct: quantize(avg.inclinePct ?? 0, 0.1),
        elevationGainM: quantize(delta.elevationGainM ?? 0, 0.1),
        ...(avgSpeed > 0.3 ? { avgPaceSPerKm: Math.round(1000 / avgSpeed) } : {}),
      };
    },
  };
}

// ---------------------------------------------------------------------------------------------------------------
// Indoor bike

function bikePhysics(athlete: Athlete, rng: Rng): Physics {
  // Functional threshold power ≈ 2.2–3.8 W/kg with aerobic capacity.
  const ftp = athlete.massKg * clamp(1.2 + athlete.maxMet * 0.13, 2, 4);
  const K = 0.14; // W per (resistance level × rpm)
  let cadence = 0;
  let targetCadence = 0;
  let resistance = 1;
  let power = 0;
  let distance = 0;
  let speed = 0;
  let cadenceSum = 0;
  let powerSum = 0;
  let elapsed = 0;
  return {
    target(intent) {
      const [share, rpmLow, rpmHigh] = (
        {
          'warm-up': [0.5, 78, 88],
          work: [rng.between(0.9, 1.2), 85, 102],
          recovery: [0.45, 75, 85],
          'cool-down': [0.4, 70, 80],
          free: [rng.between(0.6, 0.75), 80, 92],
        } satisfies Record<Intent, Triple>
      )[intent];
      targetCadence = rng.between(rpmLow, rpmHigh);
      resistance = clamp(Math.round((ftp * share) / (K * targetCadence)), 1, 24);
    },
    step(dtS) {
      cadence = clamp(approach(cadence, targetCadence, 8 * dtS) + rng.normal(0, 1.2), 0, 140);
      power = Math.max(0, K * resistance * cadence + rng.normal(0, 4));
      speed = power > 0 ? 1.55 * Math.cbrt(power) : 0;
      distance += speed * dtS;
      elapsed += dtS;
      cadenceSum += cadence * dtS;
      powerSum += power * dtS;
      return metFromPower(power, athlete);
    },
    instant: () => ({ speedMps: speed, powerW: power, cadenceRpm: cadence }),
    counters: () => ({ distanceM: distance }),
    fields(elapsedS) {
      return {
        speedMps: ftmsSpeed(speed),
        avgSpeedMps: ftmsSpeed(elapsedS > 0 ? distance / elapsedS : 0),
        cadenceRpm: quantize(cadence, 0.5),
        avgCadenceRpm: quantize(elapsed > 0 ? cadenceSum / elapsed : 0, 0.5),
        distanceM: Math.floor(distance),
        resistanceLevel: resistance,
        powerW: Math.round(power),
        avgPowerW: Math.round(elapsed > 0 ? powerSum / elapsed : 0),
      };
    },
    totals(avg, max, delta, durationS) {
      return {
        distanceM: Math.floor(delta.distanceM),
        avgSpeedMps: ftmsSpeed(durationS > 0 ? delta.distanceM / durationS : 0),
        maxSpeedMps: ftmsSpeed(max.speedMps ?? 0),
        avgPowerW: Math.round(avg.powerW ?? 0),
        maxPowerW: Math.round(max.powerW ?? 0),
        avgCadenceRpm: quantize(avg.cadenceRpm ?? 0, 0.5),
      };
    },
  };
}

// ---------------------------------------------------------------------------------------------------------------
// Rower

function rowerPhysics(athlete: Athlete, rng: Rng): Physics {
  // 2 km race pace per 500 m: ~2:30 for a beginner, ~1:40 for a trained rower.
  const racePace = clamp(150 - (athlete.maxMet - 8) * 5 + rng.normal(0, 4), 95, 170);
  const damper = rng.int(3, 6);
  let pace = 0; // s per 500 m; 0 = not rowing yet
  let targetPace = 0;
  let rate = 0;
  let targetRate = 0;
  let distance = 0;
  let strokes = 0;
  let power = 0;
  let rateSum = 0;
  let powerSum = 0;
  let elapsed = 0;
  return {
    target(intent) {
      const [factor, rateLow, rateHigh] = (
        {
          'warm-up': [1.18, 19, 22],
          work: [rng.between(0.97, 1.03), 26, 32],
          recovery: [1.25, 18, 20],
          'cool-down': [1.3, 17, 19],
          free: [rng.between(1.08, 1.14), 21, 24],
        } satisfies Record<Intent, Triple>
      )[intent];
      targetPace = racePace * factor;
      targetRate = rng.between(rateLow, rateHigh);
    },
    step(dtS) {
      pace = pace === 0 ? targetPace * 1.2 : approach(pace, targetPace, 3 * dtS) + rng.normal(0, 0.8);
      pace = clamp(pace, 80, 300);
      rate = clamp(approach(rate, targetRate, 4 * dtS) + rng.normal(0, 0.4), 0, 60);
      power = 2.8 / (pace / 500) ** 3;
      distance += (500 / pace) * dtS;
      strokes += (rate / 60) * dtS;
      elapsed += dtS;
      rateSum += rate * dtS;
      powerSum += power * dtS;
      const kcalPerHour = 4 * power + 3.94 * athlete.massKg;
      return kcalPerHour / athlete.massKg;
    },
    instant: () => ({ powerW: power, strokeRateSpm: rate }),
    counters: () => ({ distanceM: distance, strokes }),
    fields(elapsedS) {
      const avgPace = distance > 0 ? (500 * elapsedS) / distance : 0;
      return {
        strokeRateSpm: quantize(rate, 0.5),
        strokes: Math.floor(strokes),
        avgStrokeRateSpm: quantize(elapsed > 0 ? rateSum / elapsed : 0, 0.5),
        distanceM: Math.floor(distance),
        paceSPer500m: Math.round(pace),
        ...(avgPace > 0 ? { avgPaceSPer500m: Math.round(avgPace) } : {}),
        powerW: Math.round(power),
        avgPowerW: Math.round(elapsed > 0 ? powerSum / elapsed : 0),
        resistanceLevel: damper,
      };
    },
    totals(avg, max, delta, durationS) {
      return {
        distanceM: Math.floor(delta.distanceM),
        avgPowerW: Math.round(avg.powerW ?? 0),
        maxPowerW: Math.round(max.powerW ?? 0),
        strokes: Math.floor(delta.strokes ?? 0),
        avgStrokeRateSpm: quantize(avg.strokeRateSpm ?? 0, 0.5),
        ...(delta.distanceM > 0 ? { avgPaceSPer500m: round((500 * durationS) / delta.distanceM, 1) } : {}),
      };
    },
  };
}

// ---------------------------------------------------------------------------------------------------------------
// Cross trainer

function crossTrainerPhysics(athlete: Athlete, rng: Rng): Physics {
  const K = 0.15; // W per (resistance level × steps/min)
  const strength = clamp(athlete.maxMet / 12.5, 0.7, 1.4);
  let rate = 0;
  let targetRate = 0;
  let resistance = 1;
  let power = 0;
  let distance = 0;
  let steps = 0;
  let direction: 'forward' | 'backward' = 'forward';
  let rateSum = 0;
  let powerSum = 0;
  let elapsed = 0;
  return {
    target(intent) {
      const [level, rateLow, rateHigh] = (
        {
          'warm-up': [4, 110, 122],
          work: [rng.between(10, 16), 140, 165],
          recovery: [4, 105, 115],
          'cool-down': [3, 100, 110],
          free: [rng.between(7, 10), 125, 138],
        } satisfies Record<Intent, Triple>
      )[intent];
      resistance = clamp(Math.round(level * strength), 1, 20);
      targetRate = rng.between(rateLow, rateHigh);
      direction = intent === 'recovery' && rng.chance(0.2) ? 'backward' : 'forward';
    },
    step(dtS) {
      rate = clamp(approach(rate, targetRate, 10 * dtS) + rng.normal(0, 1.5), 0, 220);
      power = Math.max(0, K * resistance * rate + rng.normal(0, 3));
      const speed = rate / 60; // one metre per step
      distance += speed * dtS;
      steps += (rate / 60) * dtS;
      elapsed += dtS;
      rateSum += rate * dtS;
      powerSum += power * dtS;
      return metFromPower(power, athlete);
    },
    instant: () => ({ speedMps: rate / 60, powerW: power, stepRateSpm: rate }),
    counters: () => ({ distanceM: distance, strides: steps / 2 }),
    fields(elapsedS) {
      return {
        speedMps: ftmsSpeed(rate / 60),
        avgSpeedMps: ftmsSpeed(elapsedS > 0 ? distance / elapsedS : 0),
        distanceM: Math.floor(distance),
        stepRateSpm: Math.round(rate),
        avgStepRateSpm: Math.round(elapsed > 0 ? rateSum / elapsed : 0),
        strides: Math.floor(steps / 2),
        resistanceLevel: resistance,
        powerW: Math.round(power),
        avgPowerW: Math.round(elapsed > 0 ? powerSum / elapsed : 0),
        direction,
      };
    },
    totals(avg, max, delta, durationS) {
      return {
        distanceM: Math.floor(delta.distanceM),
        avgSpeedMps: ftmsSpeed(durationS > 0 ? delta.distanceM / durationS : 0),
        maxSpeedMps: ftmsSpeed(max.speedMps ?? 0),
        avgPowerW: Math.round(avg.powerW ?? 0),
        maxPowerW: Math.round(max.powerW ?? 0),
        strides: Math.floor(delta.strides ?? 0),
      };
    },
  };
}

// ---------------------------------------------------------------------------------------------------------------

const SPECS: Record<CardioMachineType, CardioSpec> = {
  treadmill: {
    type: 'treadmill',
    prefix: 'tread',
    label: 'Treadmill',
    makes: [
      ['Technogym', 'Skillrun', '4.2.0'],
      ['Life Fitness', 'Integrity SL', '3.11.2'],
      ['Matrix', 'T75', '1.8.4'],
    ],
    fields: [
      'speedMps',
      'avgSpeedMps',
      'distanceM',
      'inclinePct',
      'rampAngleDeg',
      'elevationGainM',
      'elevationLossM',
      'paceSPerKm',
      'avgPaceSPerKm',
      'powerW',
    ],
    ranges: {
      speedMps: { min: 0.22, max: 5.56, step: 0.028 },
      inclinePct: { min: 0, max: 15, step: 0.5 },
      heartRateBpm: HEART_RATE_RANGE,
    },
    physics: treadmillPhysics,
    idle: () => ({ speedMps: 0, inclinePct: 0, powerW: 0 }),
  },
  'indoor-bike': {
    type: 'indoor-bike',
    prefix: 'bike',
    label: 'Bike',
    makes: [
      ['Wattbike', 'Atom', '2.6.1'],
      ['Keiser', 'M3i', '6.30'],
      ['Technogym', 'Skillbike', '1.9.3'],
    ],
    fields: [
      'speedMps',
      'avgSpeedMps',
      'cadenceRpm',
      'avgCadenceRpm',
      'distanceM',
      'resistanceLevel',
      'powerW',
      'avgPowerW',
    ],
    ranges: {
      resistanceLevel: { min: 1, max: 24, step: 1 },
      powerW: { min: 0, max: 1500, step: 1 },
      heartRateBpm: HEART_RATE_RANGE,
    },
    physics: bikePhysics,
    idle: () => ({ speedMps: 0, cadenceRpm: 0, powerW: 0 }),
  },
  rower: {
    type: 'rower',
    prefix: 'row',
    label: 'Rower',
    makes: [
      ['Concept2', 'RowErg PM5', '32.004'],
      ['WaterRower', 'S4', '2.1'],
    ],
    fields: [
      'strokeRateSpm',
      'strokes',
      'avgStrokeRateSpm',
      'distanceM',
      'paceSPer500m',
      'avgPaceSPer500m',
      'powerW',
      'avgPowerW',
      'resistanceLevel',
    ],
    ranges: {
      resistanceLevel: { min: 1, max: 10, step: 1 },
      powerW: { min: 0, max: 1000, step: 1 },
      heartRateBpm: HEART_RATE_RANGE,
    },
    physics: rowerPhysics,
    idle: () => ({ strokeRateSpm: 0, powerW: 0 }),
  },
  'cross-trainer': {
    type: 'cross-trainer',
    prefix: 'cross',
    label: 'Cross trainer',
    makes: [
      ['Precor', 'EFX 885', '5.0.2'],
      ['Life Fitness', 'Elevation X', '2.3.7'],
    ],
    fields: [
      'speedMps',
      'avgSpeedMps',
      'distanceM',
      'stepRateSpm',
      'avgStepRateSpm',
      'strides',
      'resistanceLevel',
      'powerW',
      'avgPowerW',
      'direction',
    ],
    ranges: {
      resistanceLevel: { min: 1, max: 20, step: 1 },
      powerW: { min: 0, max: 600, step: 1 },
      heartRateBpm: HEART_RATE_RANGE,
    },
    physics: crossTrainerPhysics,
    idle: () => ({ speedMps: 0, stepRateSpm: 0, powerW: 0 }),
  },
};

/** The id prefix of each cardio machine type (`tread-007`). */
export const CARDIO_PREFIXES: Record<CardioMachineType, string> = Object.fromEntries(
  Object.values(SPECS).map((spec) => [spec.type, spec.prefix]),
) as Record<CardioMachineType, string>;

interface PlannedInterval {
  readonly intent: Intent;
  readonly durationS: number;
}

function planSession(rng: Rng): PlannedInterval[] {
  if (rng.chance(0.3)) return [{ intent: 'free', durationS: rng.int(300, 900) }];
  const plan: PlannedInterval[] = [{ intent: 'warm-up', durationS: rng.int(60, 180) }];
  const pairs = rng.int(2, 4);
  for (let i = 0; i < pairs; i++) {
    plan.push({ intent: 'work', durationS: rng.int(60, 240) });
    plan.push({ intent: 'recovery', durationS: rng.int(30, 120) });
  }
  plan.push({ intent: 'cool-down', durationS: rng.int(60, 150) });
  return plan;
}

/** Time-weighted averages and maxima of an interval, and the counters when it began. */
class IntervalAccumulator {
  readonly sums: Record<string, number> = {};
  readonly max: Record<string, number> = {};
  durationS = 0;
  hrSum = 0;
  hrMax = 0;
  readonly startedAt: number;
  readonly startCounters: Counters;
  readonly startKcal: number;

  constructor(startedAt: number, counters: Counters, kcal: number) {
    this.startedAt = startedAt;
    this.startCounters = counters;
    this.startKcal = kcal;
  }

  add(instant: Instant, heartRate: number, dtS: number): void {
    this.durationS += dtS;
    for (const [key, value] of Object.entries(instant) as [string, number][]) {
      this.sums[key] = (this.sums[key] ?? 0) + value * dtS;
      this.max[key] = Math.max(this.max[key] ?? -Infinity, value);
    }
    this.hrSum += heartRate * dtS;
    this.hrMax = Math.max(this.hrMax, heartRate);
  }

  averages(): Instant {
    const d = this.durationS || 1;
    return Object.fromEntries(Object.entries(this.sums).map(([key, sum]) => [key, sum / d]));
  }
}

function delta(now: Counters, before: Counters): Counters {
  return {
    distanceM: now.distanceM - before.distanceM,
    ...(now.strokes === undefined ? {} : { strokes: now.strokes - (before.strokes ?? 0) }),
    ...(now.strides === undefined ? {} : { strides: now.strides - (before.strides ?? 0) }),
    ...(now.elevationGainM === undefined ? {} : { elevationGainM: now.elevationGainM - (before.elevationGainM ?? 0) }),
  };
}

function cardioSession(spec: CardioSpec, athlete: Athlete, rng: Rng, startedAt: number): Session {
  const physics = spec.physics(athlete, rng);
  const plan = planSession(rng);
  const totalS = plan.reduce((sum, interval) => sum + interval.durationS, 0);
  const body: BodyState = restingBody(athlete);
  let index = 0;
  let intervalS = 0;
  let elapsedS = 0;
  physics.target(plan[0]!.intent);
  let acc = new IntervalAccumulator(startedAt, physics.counters(), 0);

  return {
    step(dtS, nowMs): SessionStep {
      const met = physics.step(dtS);
      stepBody(body, athlete, met, dtS, rng);
      elapsedS += dtS;
      intervalS += dtS;
      acc.add(physics.instant(), body.heartRateBpm, dtS);
      const interval = plan[index]!;
      const sample: Body = {
        trainingStatus: STATUS_OF_INTENT[interval.intent],
        ...physics.fields(elapsedS),
        energyKj: energyKjOf(body.kcal),
        energyPerHourKj: round(Math.round(body.kcalPerHour) * 4.184, 1),
        energyPerMinuteKj: round(Math.round(body.kcalPerHour / 60) * 4.184, 1),
        heartRateBpm: Math.round(body.heartRateBpm),
        metabolicEquivalent: quantize(Math.min(body.met, 25.5), 0.1),
        elapsedS: Math.floor(elapsedS),
        remainingS: Math.max(0, Math.ceil(totalS - elapsedS)),
      };
      const finished: Body[] = [];
      if (intervalS >= interval.durationS) {
        finished.push({
          segment: 'interval',
          machineType: spec.type,
          intent: interval.intent,
          startedAt: acc.startedAt,
          endedAt: Math.max(nowMs, acc.startedAt),
          index,
          ...physics.totals(acc.averages(), acc.max, delta(physics.counters(), acc.startCounters), acc.durationS),
          energyKj: round((body.kcal - acc.startKcal) * 4.184, 1),
          avgHeartRateBpm: Math.round(acc.hrSum / (acc.durationS || 1)),
          maxHeartRateBpm: Math.round(acc.hrMax),
        });
        index += 1;
        intervalS = 0;
        if (index < plan.length) {
          physics.target(plan[index]!.intent);
          acc = new IntervalAccumulator(nowMs, physics.counters(), body.kcal);
        }
      }
      return { sample, finished, done: index >= plan.length };
    },
  };
}

/** A cardio machine model; `ordinal` numbers machines of a type for their display name. */
export function cardioMachine(type: CardioMachineType, ordinal: number, rng: Rng): MachineModel {
  const spec = SPECS[type];
  const [manufacturer, model, firmware] = rng.pick(spec.makes);
  const meta: MetaBody = {
    type,
    manufacturer,
    model,
    firmware,
    serial: `${manufacturer.slice(0, 2).toUpperCase()}${rng.int(100_000, 999_999)}`,
    displayName: `${spec.label} ${ordinal}`,
    fields: [...spec.fields, ...COMMON_FIELDS],
    ...(spec.ranges ? { ranges: spec.ranges } : {}),
    displayUnits: 'metric',
  };
  return {
    type,
    meta,
    idleSample: () => ({ trainingStatus: 'idle', ...spec.idle() }),
    startSession: (athlete, nowMs) => cardioSession(spec, athlete, rng, nowMs),
  };
}
