/**
 * The person on the machine: body mass, resting and maximal heart rate and aerobic capacity, and how heart rate
 * and energy follow the work done. Shared by every machine model so that a member's figures stay consistent
 * across machine types.
 *
 * Energy uses the ACSM convention 1 MET = 3.5 ml O2/kg/min ≈ 1 kcal/kg/h; heart rate moves towards a target set by
 * the fraction of aerobic capacity in use, with the first-order response a chest strap shows (faster up than
 * down).
 */
import type { Rng } from '../random.ts';

export interface Athlete {
  readonly massKg: number;
  readonly restHr: number;
  readonly maxHr: number;
  /** Highest sustainable MET (aerobic capacity); 10 for an untrained adult, 16+ for a trained runner. */
  readonly maxMet: number;
}

export function drawAthlete(rng: Rng): Athlete {
  const age = rng.int(18, 65);
  return {
    massKg: round(clamp(rng.normal(76, 12), 48, 130), 1),
    restHr: Math.round(clamp(rng.normal(64, 7), 45, 85)),
    maxHr: Math.round(clamp(208 - 0.7 * age + rng.normal(0, 5), 160, 205)),
    maxMet: round(clamp(rng.normal(12.5, 2), 8, 18), 1),
  };
}

/** Heart rate, energy and their running averages during a session. */
export interface BodyState {
  heartRateBpm: number;
  /** Energy expended since the session began, kcal (metabolic). */
  kcal: number;
  /** Energy rate, kcal/h, of the last step. */
  kcalPerHour: number;
  met: number;
}

export function restingBody(athlete: Athlete): BodyState {
  return { heartRateBpm: athlete.restHr, kcal: 0, kcalPerHour: athlete.massKg, met: 1 };
}

/** Advances heart rate and energy by `dtS` seconds at `met` (metabolic equivalents). */
export function stepBody(body: BodyState, athlete: Athlete, met: number, dtS: number, rng: Rng): void {
  const effort = clamp((met - 1) / (athlete.maxMet - 1), 0, 1.1);
  const target = athlete.restHr + (athlete.maxHr - athlete.restHr) * (0.15 + 0.85 * effort);
  // Time constants: ~25 s rising, ~45 s recovering.
  const tau = target > body.heartRateBpm ? 25 : 45;
  body.heartRateBpm += (target - body.heartRateBpm) * (1 - Math.exp(-dtS / tau)) + rng.normal(0, 0.6);
  body.heartRateBpm = clamp(body.heartRateBpm, 35, athlete.maxHr + 3);
  body.met = met;
  body.kcalPerHour = met * athlete.massKg;
  body.kcal += (body.kcalPerHour * dtS) / 3600;
}

/** Mechanical work to metabolic energy at a gross efficiency of 24 % (cycling, rowing, ellipticals). */
export function metFromPower(powerW: number, athlete: Athlete): number {
  const kcalPerHour = (powerW / 0.24) * (3600 / 4184) + athlete.massKg; // + resting metabolism
  return kcalPerHour / athlete.massKg;
}

export function clamp(value: number, min: number, max: number): number {
  return Math.min(max, Math.max(min, value));
}

/** Rounds to `decimals` places. */
export function round(value: number, decimals = 0): number {
  const factor = 10 ** decimals;
  return Math.round(value * factor) / factor;
}

/** Rounds to a multiple of `step` (FTMS resolutions such as 0.5 rpm), without binary-fraction noise. */
export function quantize(value: number, step: number): number {
  const decimals = Math.max(0, Math.ceil(-Math.log10(step)) + 1);
  return round(Math.round(value / step) * step, decimals);
}

/** Moves `current` towards `target` by at most `maxDelta`. */
export function approach(current: number, target: number, maxDelta: number): number {
  if (Math.abs(target - current) <= maxDelta) return target;
  return current + Math.sign(target - current) * maxDelta;
}

/** FTMS sends total energy as integer kcal: the value a console reports, in kJ. */
export function energyKjOf(kcal: number): number {
  return round(Math.floor(kcal) * 4.184, 1);
}
