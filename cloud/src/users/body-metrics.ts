/**
 * Body metrics: the current measurements, fitness profile and diet of a member, their history, and the macro
 * targets computed from them (macros.ts). Measurements, health conditions and allergies are sealed with the field
 * cipher before they reach MongoDB; the raw document holds ciphertexts only (RELIABILITY P2).
 *
 * A PUT with measurements appends a history entry; the current values follow the newest measurement, so a
 * back-dated entry fills in history without overwriting today's values.
 */
import { isDuplicateKey } from '../db/mongo.ts';
import { Types, trusted } from 'mongoose';
import { UnreadableField, type SealedValue } from '../crypto/field-cipher.ts';
import { AppError, Invalid } from '../http/errors.ts';
import type { UsersContext } from './context.ts';
import { bmiOf, macroTargets } from './macros.ts';
import { COLLECTIONS, type BodyProfileDoc, type MacroTargets, type Measurements } from './models.ts';
import type { ProfileService } from './profile.ts';
import { MEASUREMENT_KEYS, type BodyMetricsUpdate } from './schemas.ts';

/** How far ahead of the server's clock a measurement's time may be (clock skew of phones). */
const MAX_FUTURE_MS = 5 * 60_000;
const CAS_ATTEMPTS = 5;

export interface BodyMetricsView {
  measurements: Measurements;
  measuredAt: string | null;
  fitness: {
    activityLevel: BodyProfileDoc['fitness']['activityLevel'];
    goal: BodyProfileDoc['fitness']['goal'];
    targetWeightKg: number | null;
    healthConditions: string[];
  };
  diet: { preference: BodyProfileDoc['diet']['preference']; mealsPerDay: number | null; allergies: string[] };
  macroTargets: (Omit<MacroTargets, 'computedAt'> & { computedAt: string }) | null;
  updatedAt: string | null;
}

export interface HistoryPage {
  items: { id: string; measuredAt: string; measurements: Measurements }[];
  nextCursor: string | null;
}

export interface BodyMetricsService {
  get(userId: string): Promise<BodyMetricsView>;
  update(userId: string, input: BodyMetricsUpdate): Promise<BodyMetricsView>;
  history(userId: string, query: { from?: Date; to?: Date; limit: number; cursor?: string }): Promise<HistoryPage>;
  /** Recomputes the stored macro targets after the profile changed (date of birth, sex). */
  refreshTargets(userId: string): Promise<void>;
  /** Every stored value, decrypted (GDPR export). */
  exportAll(userId: string): Promise<{ current: BodyMetricsView; history: HistoryPage['items'] }>;
}

interface Opened {
  measurements: Measurements;
  healthConditions: string[];
  allergies: string[];
}

const dedupe = (items: readonly string[]) => [...new Set(items)];

export function createBodyMetricsService(ctx: UsersContext, profiles: ProfileService): BodyMetricsService {
  const { models, cipher, clock, log, audit } = ctx;
  const { BodyProfile, BodyEntry } = models;

  /** Opens a sealed value; an unreadable one is logged and audited, then answered with 409 (never a 500). */
  function open<T>(sealed: SealedValue | undefined, collection: string, userId: string, field: string, empty: T): T {
    if (!sealed) return empty;
    try {
      return cipher.open<T>(sealed, { collection, userId, field });
    } catch (err) {
      if (err instanceof UnreadableField) {
        log.error({ collection, userId, field, kid: err.kid, reason: err.cause }, 'sealed field cannot be decrypted');
        audit
          .record({
            actor: null,
            action: 'sealed_field_unreadable',
            target: userId,
            result: 'failure',
            details: { collection, field, kid: err.kid ?? null },
          })
          .catch((auditErr: unknown) => log.warn({ err: auditErr }, 'audit entry not written'));
      }
      throw err;
    }
  }

  function openProfile(doc: BodyProfileDoc | null, userId: string): Opened {
    const sealed = doc?.sealed ?? {};
    const c = COLLECTIONS.bodyProfiles;
    return {
      measurements: open<Measurements>(sealed.measurements, c, userId, 'measurements', {}),
      healthConditions: open<string[]>(sealed.healthConditions, c, userId, 'healthConditions', []),
      allergies: open<string[]>(sealed.allergies, c, userId, 'allergies', []),
    };
  }

  function view(doc: BodyProfileDoc | null, opened: Opened): BodyMetricsView {
    return {
      measurements: opened.measurements,
      measuredAt: doc?.measuredAt?.toISOString() ?? null,
      fitness: {
        activityLevel: doc?.fitness.activityLevel ?? null,
        goal: doc?.fitness.goal ?? null,
        targetWeightKg: doc?.fitness.targetWeightKg ?? null,
        healthConditions: opened.healthConditions,
      },
      diet: {
        preference: doc?.diet.preference ?? null,
        mealsPerDay: doc?.diet.mealsPerDay ?? null,
        allergies: opened.allergies,
      },
      macroTargets: doc?.macroTargets
        ? { ...doc.macroTargets, computedAt: new Date(doc.macroTargets.computedAt).toISOString() }
        : null,
      updatedAt: doc?.updatedAt.toISOString() ?? null,
    };
  }

  function checkConsistency(m: Measurements, field: string): void {
    if (m.muscleMassKg !== undefined && m.weightKg !== undefined && m.muscleMassKg >= m.weightKg) {
      throw new Invalid([{ in: 'body', field, reason: 'muscleMassKg must be less than weightKg' }]);
    }
    if (m.bmi !== undefined && (m.bmi < 8 || m.bmi > 150)) {
      throw new Invalid([
        { in: 'body', field, reason: `weightKg and heightCm give a BMI of ${m.bmi}, which is not possible` },
      ]);
    }
  }

  /** Applies `given` (null clears) to `base`, then recomputes the BMI. */
  function merge(base: Measurements, given: Record<string, number | null | undefined>): Measurements {
    const out: Record<string, number> = {};
    for (const key of MEASUREMENT_KEYS) {
      const value = given[key] === undefined ? base[key] : given[key];
      if (value !== null && value !== undefined) out[key] = value;
    }
    const bmi = bmiOf(out.weightKg, out.heightCm);
    if (bmi !== undefined) out.bmi = bmi;
    return out;
  }

  async function update(userId: string, input: BodyMetricsUpdate): Promise<BodyMetricsView> {
    const now = clock.now();
    const measuredAt = input.measuredAt ?? now;
    if (measuredAt.getTime() > now.getTime() + MAX_FUTURE_MS) {
      throw new Invalid([{ in: 'body', field: 'measuredAt', reason: 'a measurement cannot be in the future' }]);
    }
    const given = input.measurements ?? {};
    const profile = await profiles.fields(userId);

    for (let attempt = 1; attempt <= CAS_ATTEMPTS; attempt += 1) {
      const doc = await BodyProfile.findById(userId).lean();
      const opened = openProfile(doc, userId);
      const isNewest = !doc?.measuredAt || measuredAt.getTime() >= doc.measuredAt.getTime();

      // The history entry: what was measured now, with a BMI from the height known (given or current).
      const entryValues = merge({}, given);
      if (entryValues.bmi === undefined && entryValues.weightKg !== undefined) {
        const bmi = bmiOf(entryValues.weightKg, opened.measurements.heightCm);
        if (bmi !== undefined) entryValues.bmi = bmi;
      }
      checkConsistency(entryValues, 'measurements');

      const current = input.measurements && isNewest ? merge(opened.measurements, given) : opened.measurements;
      checkConsistency(current, 'measurements');
      const fitness = {
        activityLevel: doc?.fitness.activityLevel ?? null,
        goal: doc?.fitness.goal ?? null,
        targetWeightKg: doc?.fitness.targetWeightKg ?? null,
      };
      const f = input.fitness;
      if (f?.activityLevel !== undefined) fitness.activityLevel = f.activityLevel;
      if (f?.goal !== undefined) fitness.goal = f.goal;
      if (f?.targetWeightKg !== undefined) fitness.targetWeightKg = f.targetWeightKg;
      const diet = { preference: doc?.diet.preference ?? null, mealsPerDay: doc?.diet.mealsPerDay ?? null };
      if (input.diet?.preference !== undefined) diet.preference = input.diet.preference;
      if (input.diet?.mealsPerDay !== undefined) diet.mealsPerDay = input.diet.mealsPerDay;
      const healthConditions = f?.healthConditions ? dedupe(f.healthConditions) : opened.healthConditions;
      const allergies = input.diet?.allergies ? dedupe(input.diet.allergies) : opened.allergies;

      const c = COLLECTIONS.bodyProfiles;
      const next: Omit<BodyProfileDoc, '_id'> = {
        sealed: {
          measurements: cipher.seal(current, { collection: c, userId, field: 'measurements' }),
          healthConditions: cipher.seal(healthConditions, { collection: c, userId, field: 'healthConditions' }),
          allergies: cipher.seal(allergies, { collection: c, userId, field: 'allergies' }),
        },
        measuredAt: input.measurements && isNewest ? measuredAt : (doc?.measuredAt ?? null),
        fitness,
        diet,
        macroTargets: macroTargets(
          {
            weightKg: current.weightKg,
            heightCm: current.heightCm,
            dateOfBirth: profile.dateOfBirth,
            sex: profile.sex,
            activityLevel: fitness.activityLevel,
            goal: fitness.goal,
          },
          now,
        ),
        rev: (doc?.rev ?? 0) + 1,
        updatedAt: now,
      };

      let written: boolean;
      if (doc) {
        const result = await BodyProfile.updateOne({ _id: userId, rev: doc.rev }, { $set: next });
        written = result.matchedCount === 1;
      } else {
        try {
          await BodyProfile.create({ _id: userId, ...next });
          written = true;
        } catch (err) {
          if (!isDuplicateKey(err)) throw err;
          written = false; // created by a concurrent request: read it and apply on top
        }
      }
      if (!written) continue;

      if (input.measurements && Object.keys(entryValues).length > 0) {
        const _id = new Types.ObjectId();
        await BodyEntry.create({
          _id,
          userId,
          measuredAt,
          sealed: {
            measurements: cipher.seal(entryValues, {
              collection: COLLECTIONS.bodyEntries,
              userId,
              field: 'measurements',
            }),
          },
          createdAt: now,
        });
      }
      return view({ _id: userId, ...next }, { measurements: current, healthConditions, allergies });
    }
    throw new AppError('write-conflict', 409, 'the body profile is being changed by another request; try again');
  }

  /** `<epoch ms>-<entry id>`: the position after the last entry of a page (schemas.ts HistoryCursor). */
  function encodeCursor(measuredAt: Date, id: Types.ObjectId): string {
    return `${measuredAt.getTime()}-${id.toHexString()}`;
  }

  function decodeCursor(cursor: string): { at: Date; id: Types.ObjectId } {
    const match = /^(-?\d{1,13})-([a-f0-9]{24})$/.exec(cursor);
    if (!match) {
      throw new Invalid([{ in: 'query', field: 'cursor', reason: 'expected a cursor returned by a previous page' }]);
    }
    return { at: new Date(Number(match[1])), id: new Types.ObjectId(match[2]) };
  }

  async function history(
    userId: string,
    query: { from?: Date; to?: Date; limit: number; cursor?: string },
  ): Promise<HistoryPage> {
    const range: Record<string, Date> = {};
    if (query.from) range.$gte = query.from;
    if (query.to) range.$lte = query.to;
    const and: Record<string, unknown>[] = [{ userId }];
    if (Object.keys(range).length > 0) and.push({ measuredAt: trusted(range) });
    if (query.cursor) {
      const { at, id } = decodeCursor(query.cursor);
      and.push({
        $or: [{ measuredAt: trusted({ $lt: at }) }, { measuredAt: at, _id: trusted({ $lt: id }) }],
      });
    }
    const docs = await BodyEntry.find({ $and: and })
      .sort({ measuredAt: -1, _id: -1 })
      .limit(query.limit + 1)
      .lean();
    const page = docs.slice(0, query.limit);
    const items = page.map((doc) => ({
      id: doc._id.toHexString(),
      measuredAt: doc.measuredAt.toISOString(),
      measurements: open<Measurements>(doc.sealed.measurements, COLLECTIONS.bodyEntries, userId, 'measurements', {}),
    }));
    const last = page.at(-1);
    return { items, nextCursor: docs.length > query.limit && last ? encodeCursor(last.measuredAt, last._id) : null };
  }

  return {
    async get(userId) {
      const doc = await BodyProfile.findById(userId).lean();
      return view(doc, openProfile(doc, userId));
    },
    update,
    history,
    async refreshTargets(userId) {
      const profile = await profiles.fields(userId);
      for (let attempt = 1; attempt <= CAS_ATTEMPTS; attempt += 1) {
        const doc = await BodyProfile.findById(userId).lean();
        if (!doc) return;
        const { measurements } = openProfile(doc, userId);
        const targets = macroTargets(
          {
            weightKg: measurements.weightKg,
            heightCm: measurements.heightCm,
            dateOfBirth: profile.dateOfBirth,
            sex: profile.sex,
            activityLevel: doc.fitness.activityLevel,
            goal: doc.fitness.goal,
          },
          clock.now(),
        );
        const result = await BodyProfile.updateOne(
          { _id: userId, rev: doc.rev },
          { $set: { macroTargets: targets, rev: doc.rev + 1, updatedAt: clock.now() } },
        );
        if (result.matchedCount === 1) return;
      }
      throw new AppError('write-conflict', 409, 'the body profile is being changed by another request; try again');
    },
    async exportAll(userId) {
      const doc = await BodyProfile.findById(userId).lean();
      const items: HistoryPage['items'] = [];
      let cursor: string | undefined;
      do {
        const page = await history(userId, { limit: 100, ...(cursor ? { cursor } : {}) });
        items.push(...page.items);
        cursor = page.nextCursor ?? undefined;
      } while (cursor);
      return { current: view(doc, openProfile(doc, userId)), history: items };
    },
  };
}
