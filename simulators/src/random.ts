/**
 * Seeded randomness for the simulators: the same seed gives the same run (issue 8). Built on pure-rand's
 * xoroshiro128+; each machine draws from a generator of its own, seeded from the run seed and the machine id, so a
 * machine behaves the same whatever else the fleet holds and in whatever order its timers fire.
 *
 * Ids that must be unique across runs (msgId, bootId) are never drawn from here: two runs with one seed must not
 * write the same msgIds (the cloud would drop the second run's records as duplicates).
 */
import { uniformFloat64 } from 'pure-rand/distribution/uniformFloat64';
import { uniformInt } from 'pure-rand/distribution/uniformInt';
import { xoroshiro128plus } from 'pure-rand/generator/xoroshiro128plus';

export interface Rng {
  /** Uniform in [0, 1). */
  next(): number;
  /** Uniform in [min, max). */
  between(min: number, max: number): number;
  /** Uniform integer in [min, max], both included. */
  int(min: number, max: number): number;
  /** Normal with the given mean and standard deviation (Box–Muller). */
  normal(mean: number, sd: number): number;
  /** True with probability `p`. */
  chance(p: number): boolean;
  pick<T>(items: readonly T[]): T;
}

/** A generator for `seed` (any safe integer; only its low 32 bits count, as in pure-rand). */
export function createRng(seed: number): Rng {
  const generator = xoroshiro128plus(seed | 0);
  const next = () => uniformFloat64(generator);
  return {
    next,
    between: (min, max) => min + (max - min) * next(),
    int: (min, max) => uniformInt(generator, min, max),
    normal(mean, sd) {
      // 1 - u keeps the logarithm's argument in (0, 1].
      const u = 1 - next();
      const w = next();
      return mean + sd * Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * w);
    },
    chance: (p) => next() < p,
    pick(items) {
      if (items.length === 0) throw new RangeError('pick from an empty list');
      return items[uniformInt(generator, 0, items.length - 1)] as (typeof items)[number];
    },
  };
}

/** A 32-bit seed derived from the run seed and a name (FNV-1a over the name's and the seed's bytes). */
export function deriveSeed(seed: number, name: string): number {
  let hash = 0x811c9dc5;
  const feed = (byte: number) => {
    hash ^= byte & 0xff;
    hash = Math.imul(hash, 0x01000193);
  };
  for (let i = 0; i < name.length; i++) {
    const code = name.charCodeAt(i);
    feed(code);
    feed(code >>> 8);
  }
  for (let shift = 0; shift < 32; shift += 8) feed(seed >>> shift);
  // A final avalanche (murmur3 fmix32) so that seeds 1 and 2 give unrelated streams.
  hash ^= hash >>> 16;
  hash = Math.imul(hash, 0x85ebca6b);
  hash ^= hash >>> 13;
  hash = Math.imul(hash, 0xc2b2ae35);
  hash ^= hash >>> 16;
  return hash | 0;
}

/** A random seed for runs started without `--seed` (printed, so that the run can be replayed). */
export function randomSeed(): number {
  return Math.floor(Math.random() * 0x7fffffff);
}
