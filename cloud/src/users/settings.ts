/**
 * Preferences (units, language, time zone, notifications) and privacy controls (what other members may see). One
 * document per member, created with defaults on first use; updates set only the keys sent, atomically. Other
 * domains (leaderboards, social) read privacy through `privacyOf` before showing a member to anyone else.
 */
import { isDuplicateKey } from '../db/mongo.ts';
import type { UsersContext } from './context.ts';
import type { Preferences, PrivacySettings, SettingsDoc } from './models.ts';
import type { PreferencesUpdate, PrivacyUpdate } from './schemas.ts';

export const DEFAULT_PREFERENCES: Preferences = {
  units: 'metric',
  language: 'en',
  timezone: 'UTC',
  notifications: {
    push: true,
    email: true,
    workoutReminders: true,
    achievements: true,
    socialActivity: true,
    // Opt-in only (GDPR Art. 7; ePrivacy): never on by default.
    marketing: false,
  },
};

/** Privacy by default (GDPR Art. 25): visible to fellow members, anonymous on leaderboards until changed. */
export const DEFAULT_PRIVACY: PrivacySettings = {
  profileVisibility: 'members',
  leaderboards: 'anonymous',
  shareWorkouts: false,
  showPresence: false,
  allowFriendRequests: true,
};

export interface SettingsService {
  preferences(userId: string): Promise<Preferences>;
  updatePreferences(userId: string, update: PreferencesUpdate): Promise<Preferences>;
  privacyOf(userId: string): Promise<PrivacySettings>;
  updatePrivacy(userId: string, update: PrivacyUpdate): Promise<PrivacySettings>;
}

/** Flattens `{ a: { b: 1 } }` under `prefix` to `{ 'prefix.a.b': 1 }`: a $set that leaves siblings alone. */
function paths(prefix: string, value: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [key, child] of Object.entries(value)) {
    if (child === undefined) continue;
    if (child !== null && typeof child === 'object' && !Array.isArray(child)) {
      Object.assign(out, paths(`${prefix}.${key}`, child as Record<string, unknown>));
    } else out[`${prefix}.${key}`] = child;
  }
  return out;
}

export function createSettingsService({ models, clock }: UsersContext): SettingsService {
  const { Settings } = models;

  async function read(userId: string): Promise<SettingsDoc> {
    const doc = await Settings.findById(userId).lean();
    if (doc) {
      // Keys added to the defaults after the document was written read as their default.
      return {
        ...doc,
        preferences: {
          ...DEFAULT_PREFERENCES,
          ...doc.preferences,
          notifications: { ...DEFAULT_PREFERENCES.notifications, ...doc.preferences.notifications },
        },
        privacy: { ...DEFAULT_PRIVACY, ...doc.privacy },
      };
    }
    return { _id: userId, preferences: DEFAULT_PREFERENCES, privacy: DEFAULT_PRIVACY, updatedAt: clock.now() };
  }

  async function write(userId: string, set: Record<string, unknown>): Promise<SettingsDoc> {
    // Create with defaults first (a duplicate means it exists), then set the paths: one atomic update each, so two
    // devices changing different switches at once both win.
    await Settings.updateOne(
      { _id: userId },
      { $setOnInsert: { preferences: DEFAULT_PREFERENCES, privacy: DEFAULT_PRIVACY, updatedAt: clock.now() } },
      { upsert: true },
    ).catch((err: unknown) => {
      if (!isDuplicateKey(err)) throw err;
    });
    if (Object.keys(set).length > 0)
      await Settings.updateOne({ _id: userId }, { $set: { ...set, updatedAt: clock.now() } });
    return read(userId);
  }

  return {
    preferences: async (userId) => (await read(userId)).preferences,
    updatePreferences: async (userId, update) => (await write(userId, paths('preferences', update))).preferences,
    privacyOf: async (userId) => (await read(userId)).privacy,
    updatePrivacy: async (userId, update) => (await write(userId, paths('privacy', update))).privacy,
  };
}
