/**
 * The member's profile (names, date of birth, sex, phone, avatar, bio) beside the account auth owns. The member is
 * always the caller: no route takes a user id, so one member can never read or change another's profile.
 */
import { Types } from 'mongoose';
import { Invalid, NotFound } from '../http/errors.ts';
import type { UsersContext } from './context.ts';
import { ageYears } from './macros.ts';
import type { ProfileDoc } from './models.ts';
import { MAX_AGE_YEARS, MIN_AGE_YEARS, profileFields, type ProfileUpdate } from './schemas.ts';

export type ProfileFields = Omit<ProfileDoc, '_id' | 'createdAt' | 'updatedAt'>;
const PROFILE_KEYS = Object.keys(profileFields) as (keyof ProfileFields)[];

export interface ProfileView extends ProfileFields {
  id: string;
  email: string | null;
  emailVerified: boolean;
  role: string;
  status: string;
  createdAt: string | null;
  updatedAt: string | null;
}

const EMPTY: ProfileFields = {
  firstName: null,
  lastName: null,
  displayName: null,
  dateOfBirth: null,
  sex: null,
  phone: null,
  avatarUrl: null,
  bio: null,
};

export interface ProfileService {
  get(userId: string): Promise<ProfileView>;
  update(userId: string, update: ProfileUpdate): Promise<ProfileView>;
  /** Creates the profile of a new account (full-profile sign-up). */
  create(userId: string, fields: Partial<ProfileFields>): Promise<void>;
  /** The stored profile fields, or empty ones: for macro targets. */
  fields(userId: string): Promise<ProfileFields>;
}

export function createProfileService({ models, Account, clock }: UsersContext): ProfileService {
  const { Profile } = models;

  const checkAge = (dateOfBirth: string | null | undefined) => validateDateOfBirth(dateOfBirth, clock.now());

  async function view(userId: string): Promise<ProfileView> {
    if (!Types.ObjectId.isValid(userId)) throw new NotFound('no such account');
    const [account, profile] = await Promise.all([
      Account.findById(userId, { email: 1, role: 1, status: 1, emailVerified: 1 }).lean(),
      Profile.findById(userId).lean(),
    ]);
    if (!account) throw new NotFound('no such account');
    const fields: ProfileFields = { ...EMPTY };
    if (profile) for (const key of PROFILE_KEYS) (fields as Record<string, unknown>)[key] = profile[key] ?? null;
    return {
      id: userId,
      email: account.email,
      emailVerified: account.emailVerified,
      role: account.role,
      status: account.status,
      ...fields,
      createdAt: profile?.createdAt.toISOString() ?? null,
      updatedAt: profile?.updatedAt.toISOString() ?? null,
    };
  }

  function picked(update: Partial<ProfileFields>): Partial<ProfileFields> {
    const set: Record<string, unknown> = {};
    for (const key of PROFILE_KEYS) if (update[key] !== undefined) set[key] = update[key];
    return set;
  }

  return {
    get: (userId) => view(userId),

    async update(userId, update) {
      checkAge(update.dateOfBirth);
      const now = clock.now();
      await Profile.updateOne(
        { _id: userId },
        { $set: { ...picked(update), updatedAt: now }, $setOnInsert: { createdAt: now } },
        { upsert: true },
      );
      return view(userId);
    },

    async create(userId, fields) {
      checkAge(fields.dateOfBirth);
      const now = clock.now();
      await Profile.updateOne(
        { _id: userId },
        { $set: { ...EMPTY, ...picked(fields), updatedAt: now }, $setOnInsert: { createdAt: now } },
        { upsert: true },
      );
    },

    async fields(userId) {
      const profile = await Profile.findById(userId).lean();
      const fields: ProfileFields = { ...EMPTY };
      if (profile) for (const key of PROFILE_KEYS) (fields as Record<string, unknown>)[key] = profile[key] ?? null;
      return fields;
    },
  };
}

/** Age check for sign-up before the account exists (the same rule as update). */
export function validateDateOfBirth(dateOfBirth: string | null | undefined, now: Date): void {
  if (!dateOfBirth) return;
  const age = ageYears(dateOfBirth, now);
  if (age < MIN_AGE_YEARS || age > MAX_AGE_YEARS) {
    throw new Invalid([
      { in: 'body', field: 'dateOfBirth', reason: `members must be ${MIN_AGE_YEARS}–${MAX_AGE_YEARS} years old` },
    ]);
  }
}
