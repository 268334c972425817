/**
 * Strength machines (not covered by FTMS): a selectorised pin stack or a plate-loaded machine with a position
 * sensor on the moving arm. A session is 3–5 sets with rests. Each repetition is a lift (concentric), a short hold
 * at the top, a slower lowering (eccentric) and a pause at the bottom; the lift slows as the set goes on (fatigue),
 * which is what a velocity-based training sensor sees. Position follows a smoothstep over each phase, so velocity
 * peaks mid-range. Energy uses ~5 MET while lifting and ~2.5 MET resting.
 */
import type { StrengthMachineType } from '../../../protocol/messages/machine-type.ts';
import type { Rng } from '../random.ts';
import { clamp, restingBody, round, stepBody, type Athlete } from './body.ts';
import type { Body, MachineModel, MetaBody, Session, SessionStep } from './model.ts';

interface Exercise {
  readonly code: string;
  readonly label: string;
  /** Typical working load as a share of body mass. */
  readonly loadShare: number;
  readonly romCm: number;
}

const EXERCISES: Record<StrengthMachineType, readonly Exercise[]> = {
  selectorised: [
    { code: 'chest-press', label: 'Chest press', loadShare: 0.55, romCm: 42 },
    { code: 'lat-pulldown', label: 'Lat pulldown', loadShare: 0.65, romCm: 58 },
    { code: 'shoulder-press', label: 'Shoulder press', loadShare: 0.4, romCm: 45 },
    { code: 'seated-row', label: 'Seated row', loadShare: 0.6, romCm: 40 },
    { code: 'leg-extension', label: 'Leg extension', loadShare: 0.5, romCm: 35 },
    { code: 'leg-curl', label: 'Leg curl', loadShare: 0.4, romCm: 33 },
  ],
  'plate-loaded': [
    { code: 'leg-press', label: 'Leg press', loadShare: 1.6, romCm: 55 },
    { code: 'hack-squat', label: 'Hack squat', loadShare: 1.0, romCm: 60 },
    { code: 'incline-press', label: 'Incline press', loadShare: 0.7, romCm: 44 },
    { code: 'iso-row', label: 'Iso-lateral row', loadShare: 0.75, romCm: 42 },
  ],
};

const MAKES: Record<StrengthMachineType, readonly (readonly [string, string, string])[]> = {
  selectorised: [
    ['Technogym', 'Selection 900', '2.4.1'],
    ['Life Fitness', 'Insignia', '1.7.0'],
    ['Matrix', 'Ultra', '3.0.2'],
  ],
  'plate-loaded': [
    ['Hammer Strength', 'Plate-Loaded', '1.2.0'],
    ['Technogym', 'Pure Strength', '2.0.5'],
  ],
};

const SENSOR_FIELDS = ['phase', 'reps', 'romCm', 'positionCm', 'velocityMps', 'tempo', 'powerW', 'elapsedS'];

interface Rep {
  concentricS: number;
  holdS: number;
  eccentricS: number;
  pauseS: number;
  romCm: number;
}

/** Smoothstep position (0…1) and its derivative at share `x` of a phase. */
function smooth(x: number): { p: number; dp: number } {
  const t = clamp(x, 0, 1);
  return { p: t * t * (3 - 2 * t), dp: 6 * t * (1 - t) };
}

function strengthSession(
  type: StrengthMachineType,
  exercise: Exercise,
  stack: { min: number; max: number; step: number } | undefined,
  hasLoadSensor: boolean,
  athlete: Athlete,
  rng: Rng,
): Session {
  const sets = rng.int(3, 5);
  const body = restingBody(athlete);
  const baseLoad = athlete.massKg * exercise.loadShare * rng.between(0.75, 1.25);
  const load = stack
    ? clamp(Math.round(baseLoad / stack.step) * stack.step, stack.min, stack.max)
    : Math.max(20, Math.round(baseLoad / 5) * 5); // plates come in 2.5 kg pairs
  let setIndex = 0;
  let elapsedS = 0;
  let restLeftS = rng.between(5, 20); // adjusting the seat before the first set

  // The set in progress.
  let reps: Rep[] = [];
  let targetReps = 0;
  let repIndex = 0;
  let repClock = 0;
  let setStartedAt = 0;
  let setStartKcal = 0;
  let hrSum = 0;
  let hrMax = 0;
  let setDurationS = 0;
  let peakVelocities: number[] = [];

  const newRep = (n: number): Rep => {
    const fatigue = 1 + 0.045 * n + rng.normal(0, 0.03);
    return {
      concentricS: round(clamp(rng.normal(1.1, 0.12) * fatigue, 0.5, 4), 2),
      holdS: round(rng.between(0.1, 0.4), 2),
      eccentricS: round(clamp(rng.normal(2.3, 0.3), 1, 5), 2),
      pauseS: round(rng.between(0.2, 0.6), 2),
      romCm: round(clamp(rng.normal(exercise.romCm, 1.5), exercise.romCm * 0.7, exercise.romCm * 1.1), 1),
    };
  };

  const startSet = (nowMs: number) => {
    targetReps = clamp(rng.int(8, 12) - setIndex, 5, 15);
    reps = [newRep(0)];
    repIndex = 0;
    repClock = 0;
    setStartedAt = nowMs;
    setStartKcal = body.kcal;
    hrSum = 0;
    hrMax = 0;
    setDurationS = 0;
    peakVelocities = [];
  };

  const finishSet = (nowMs: number): Body => {
    const done = reps.slice(0, targetReps);
    const avg = (pick: (rep: Rep) => number) => done.reduce((sum, rep) => sum + pick(rep), 0) / done.length;
    return {
      segment: 'set',
      machineType: type,
      exercise: exercise.code,
      startedAt: setStartedAt,
      endedAt: Math.max(nowMs, setStartedAt),
      index: setIndex,
      reps: done.length,
      ...(hasLoadSensor ? { loadKg: load } : {}),
      avgRomCm: round(
        avg((rep) => rep.romCm),
        1,
      ),
      tempo: {
        concentricS: round(
          avg((rep) => rep.concentricS),
          2,
        ),
        eccentricS: round(
          avg((rep) => rep.eccentricS),
          2,
        ),
      },
      repDetails: done.map((rep, i) => ({
        romCm: rep.romCm,
        concentricS: rep.concentricS,
        eccentricS: rep.eccentricS,
        peakVelocityMps: round(peakVelocities[i] ?? (1.5 * rep.romCm) / 100 / rep.concentricS, 2),
      })),
      energyKj: round((body.kcal - setStartKcal) * 4.184, 1),
      avgHeartRateBpm: Math.round(hrSum / (setDurationS || 1)),
      maxHeartRateBpm: Math.round(hrMax),
    };
  };

  return {
    step(dtS, nowMs): SessionStep {
      elapsedS += dtS;
      const finished: Body[] = [];
      let sample: Body;
      if (restLeftS > 0) {
        restLeftS -= dtS;
        stepBody(body, athlete, 2.5, dtS, rng);
        if (restLeftS <= 0) startSet(nowMs);
        sample = { phase: 'rest', reps: 0, positionCm: 0, velocityMps: 0, powerW: 0 };
      } else {
        stepBody(body, athlete, 5, dtS, rng);
        setDurationS += dtS;
        hrSum += body.heartRateBpm * dtS;
        hrMax = Math.max(hrMax, body.heartRateBpm);
        repClock += dtS;
        let rep = reps[repIndex]!;
        let cycle = rep.concentricS + rep.holdS + rep.eccentricS + rep.pauseS;
        while (repClock >= cycle && repIndex < targetReps) {
          repClock -= cycle;
          repIndex += 1;
          reps.push(newRep(repIndex));
          rep = reps[repIndex]!;
          cycle = rep.concentricS + rep.holdS + rep.eccentricS + rep.pauseS;
        }
        if (repIndex >= targetReps) {
          finished.push(finishSet(nowMs));
          setIndex += 1;
          restLeftS = setIndex < sets ? rng.between(45, 120) : 0;
          sample = { phase: 'rest', reps: targetReps, positionCm: 0, velocityMps: 0, powerW: 0 };
        } else {
          const rom = rep.romCm / 100;
          let phase: 'concentric' | 'hold' | 'eccentric' | 'rest';
          let position: number;
          let velocity: number;
          const t = repClock;
          if (t < rep.concentricS) {
            const s = smooth(t / rep.concentricS);
            phase = 'concentric';
            position = rom * s.p;
            velocity = (rom * s.dp) / rep.concentricS;
            peakVelocities[repIndex] = Math.max(peakVelocities[repIndex] ?? 0, (1.5 * rom) / rep.concentricS);
          } else if (t < rep.concentricS + rep.holdS) {
            phase = 'hold';
            position = rom;
            velocity = 0;
          } else if (t < rep.concentricS + rep.holdS + rep.eccentricS) {
            const s = smooth((t - rep.concentricS - rep.holdS) / rep.eccentricS);
            phase = 'eccentric';
            position = rom * (1 - s.p);
            velocity = -(rom * s.dp) / rep.eccentricS;
          } else {
            phase = 'rest';
            position = 0;
            velocity = 0;
          }
          const last = reps[Math.max(0, repIndex - 1)]!;
          sample = {
            phase,
            reps: repIndex,
            ...(hasLoadSensor ? { loadKg: load } : {}),
            romCm: last.romCm,
            positionCm: round(position * 100, 1),
            velocityMps: round(velocity, 2),
            ...(repIndex > 0 ? { tempo: { concentricS: last.concentricS, eccentricS: last.eccentricS } } : {}),
            powerW: Math.max(0, Math.round((hasLoadSensor ? load : 0) * 9.81 * velocity)),
          };
        }
      }
      return {
        sample: { ...sample, elapsedS: Math.floor(elapsedS) },
        finished,
        done: setIndex >= sets,
      };
    },
  };
}

export const STRENGTH_PREFIXES: Record<StrengthMachineType, string> = { selectorised: 'sel', 'plate-loaded': 'plate' };

/** A strength machine model for one exercise (drawn from `rng`). */
export function strengthMachine(type: StrengthMachineType, ordinal: number, rng: Rng): MachineModel {
  const exercise = rng.pick(EXERCISES[type]);
  const [manufacturer, model, firmware] = rng.pick(MAKES[type]);
  // Selectorised stacks always know the pinned weight; plate-loaded machines only with a load cell.
  const hasLoadSensor = type === 'selectorised' || rng.chance(0.4);
  const stack = type === 'selectorised' ? { min: 5, max: rng.pick([80, 100, 120]), step: 5 } : undefined;
  const fields = hasLoadSensor ? [...SENSOR_FIELDS, 'loadKg'] : SENSOR_FIELDS;
  const meta: MetaBody = {
    type,
    manufacturer,
    model: `${model} ${exercise.label}`,
    firmware,
    serial: `${manufacturer.slice(0, 2).toUpperCase()}${rng.int(100_000, 999_999)}`,
    displayName: `${exercise.label} ${ordinal}`,
    fields,
    ...(stack ? { ranges: { loadKg: stack } } : {}),
    displayUnits: 'metric',
  };
  return {
    type,
    meta,
    idleSample: () => ({ phase: 'rest', reps: 0, positionCm: 0, velocityMps: 0 }),
    startSession: (athlete) => strengthSession(type, exercise, stack, hasLoadSensor, athlete, rng),
  };
}
