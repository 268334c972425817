/**
 * A gym's day: how busy the floor is at each hour. Members arrive over the day with a morning and an evening peak
 * (the evening one the larger: the rush hour), so the share of machines in use follows this curve; a machine's
 * idle gap until its next member is drawn from it (machine.ts).
 *
 * The curve is a base load plus Gaussian bumps (morning peak, a broad daytime plateau, evening peak), in hours of the local day; `utilisationAt` maps it to the share
 * of machines in use, between `min` (a quiet night-time floor, for 24 h gyms) and `max` (the peak, when nearly every
 * machine is taken and members queue).
 */

export interface DayProfile {
  /** Share of machines in use at the quietest hour. */
  readonly min: number;
  /** Share of machines in use at the busiest hour. */
  readonly max: number;
  /** Morning and evening peaks: hour of day (0–24), width in hours (standard deviation), relative height. */
  readonly peaks: readonly { readonly hour: number; readonly widthH: number; readonly height: number }[];
}

export const DEFAULT_DAY: DayProfile = {
  min: 0.05,
  max: 0.9,
  peaks: [
    { hour: 7.25, widthH: 1.1, height: 0.65 },
    { hour: 13, widthH: 4, height: 0.45 },
    { hour: 18.25, widthH: 1.4, height: 1 },
  ],
};

/** Relative busyness (0…1, 1 at the highest peak) at `hour` of the day. */
export function busynessAt(profile: DayProfile, hour: number): number {
  const h = ((hour % 24) + 24) % 24;
  let sum = 0;
  for (const peak of profile.peaks) {
    // The distance around the clock, so a peak at 23:00 also raises 01:00.
    const d = Math.min(Math.abs(h - peak.hour), 24 - Math.abs(h - peak.hour));
    sum += peak.height * Math.exp(-(d * d) / (2 * peak.widthH * peak.widthH));
  }
  const top = Math.max(...profile.peaks.map((peak) => peak.height), Number.MIN_VALUE);
  return Math.min(1, sum / top);
}

/** Share of machines in use at `hour`. */
export function utilisationAt(profile: DayProfile, hour: number): number {
  return profile.min + (profile.max - profile.min) * busynessAt(profile, hour);
}

/**
 * Mean idle gap (s) between two sessions on one machine at `hour`, given the mean session length: a machine in use
 * a share u of the time, with sessions of mean length S, waits S·(1 − u)/u between them.
 */
export function meanIdleS(profile: DayProfile, hour: number, meanSessionS: number): number {
  const u = utilisationAt(profile, hour);
  return (meanSessionS * (1 - u)) / u;
}

/** The simulated clock: simulated time of day, advancing `timeScale` times as fast as real time. */
export interface SimClock {
  /** Hour of day (0–24, fractional) at the start of the run. */
  readonly startHour: number;
  readonly timeScale: number;
}

/** The simulated hour of day after `elapsedRealS` seconds of the run. */
export function hourAt(clock: SimClock, elapsedRealS: number): number {
  return (clock.startHour + (elapsedRealS * clock.timeScale) / 3600) % 24;
}
