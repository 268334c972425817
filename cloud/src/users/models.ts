/**
 * The members domain's collections. Every document carries the member's id (`_id` for one-per-member documents,
 * `userId` otherwise), so GDPR export and deletion (cloud/src/privacy) can find all of them by it. Health values
 * live under `sealed.<field>` as AES-256-GCM ciphertexts (cloud/src/crypto/field-cipher.ts), never in clear.
 */
import { Schema, type Connection, type Model, type Types } from 'mongoose';
import type { SealedValue } from '../crypto/field-cipher.ts';
import type { SealedCollection } from '../crypto/rotation.ts';

export const COLLECTIONS = {
  profiles: 'user_profiles',
  settings: 'user_settings',
  bodyProfiles: 'body_profiles',
  bodyEntries: 'body_metric_entries',
  activity: 'user_activity',
  devices: 'user_devices',
  feedback: 'user_feedback',
  memberships: 'branch_memberships',
} as const;

/** Collections holding sealed fields, for the key-rotation job. */
export const SEALED_COLLECTIONS: readonly SealedCollection[] = [
  { collection: COLLECTIONS.bodyProfiles, userIdField: '_id' },
  { collection: COLLECTIONS.bodyEntries, userIdField: 'userId' },
];

export type Sex = 'female' | 'male' | 'other' | 'unspecified';

export interface ProfileDoc {
  /** The account id. */
  _id: string;
  firstName: string | null;
  lastName: string | null;
  displayName: string | null;
  /** YYYY-MM-DD. */
  dateOfBirth: string | null;
  sex: Sex | null;
  /** E.164. */
  phone: string | null;
  avatarUrl: string | null;
  bio: string | null;
  createdAt: Date;
  updatedAt: Date;
}

export interface Preferences {
  units: 'metric' | 'imperial';
  language: string;
  timezone: string;
  notifications: {
    push: boolean;
    email: boolean;
    workoutReminders: boolean;
    achievements: boolean;
    socialActivity: boolean;
    marketing: boolean;
  };
}

export interface PrivacySettings {
  /** Who may see the profile card (name, avatar, bio). */
  profileVisibility: 'public' | 'members' | 'private';
  /** How the member appears on leaderboards. */
  leaderboards: 'visible' | 'anonymous' | 'hidden';
  /** Whether friends see finished workouts in their feed. */
  shareWorkouts: boolean;
  /** Whether others see that the member is at the gym now. */
  showPresence: boolean;
  allowFriendRequests: boolean;
}

export interface SettingsDoc {
  _id: string;
  preferences: Preferences;
  privacy: PrivacySettings;
  updatedAt: Date;
}

export type ActivityLevel = 'sedentary' | 'light' | 'moderate' | 'active' | 'very_active';
export type FitnessGoal = 'lose_weight' | 'maintain' | 'gain_muscle' | 'improve_endurance' | 'general_fitness';
export type DietPreference =
  'omnivore' | 'vegetarian' | 'vegan' | 'pescatarian' | 'keto' | 'paleo' | 'halal' | 'kosher' | 'other';

export interface Measurements {
  weightKg?: number;
  heightCm?: number;
  /** Computed: weight / height², one decimal. */
  bmi?: number;
  bodyFatPct?: number;
  muscleMassKg?: number;
  waistCm?: number;
  hipCm?: number;
  chestCm?: number;
  armCm?: number;
  thighCm?: number;
  neckCm?: number;
  restingHeartRateBpm?: number;
}

export interface MacroTargets {
  bmrKcal: number;
  tdeeKcal: number;
  kcal: number;
  proteinG: number;
  fatG: number;
  carbsG: number;
  method: 'mifflin-st-jeor';
  computedAt: Date;
}

export interface BodyProfileDoc {
  _id: string;
  /** measurements (current values), healthConditions, allergies: sealed. */
  sealed: Partial<Record<'measurements' | 'healthConditions' | 'allergies', SealedValue>>;
  measuredAt: Date | null;
  fitness: { activityLevel: ActivityLevel | null; goal: FitnessGoal | null; targetWeightKg: number | null };
  diet: { preference: DietPreference | null; mealsPerDay: number | null };
  macroTargets: MacroTargets | null;
  /** Bumped by every write: updates are compare-and-set on it, so concurrent PUTs never lose each other. */
  rev: number;
  updatedAt: Date;
}

export interface BodyEntryDoc {
  _id: Types.ObjectId;
  userId: string;
  measuredAt: Date;
  sealed: { measurements: SealedValue };
  createdAt: Date;
}

export interface ActivityDoc {
  /** `${userId}:${eventId}` when the app sent an eventId (idempotent retries), else random. */
  _id: string;
  userId: string;
  type: string;
  feature: string | null;
  at: Date;
  durationS: number | null;
  properties: Record<string, string | number | boolean> | null;
  receivedAt: Date;
}

export type Platform = 'ios' | 'android' | 'web';

export interface DeviceDoc {
  /** SHA-256 of platform + token: a token registers once, whoever registers it last owns it. */
  _id: string;
  userId: string;
  platform: Platform;
  token: string;
  appVersion: string | null;
  deviceModel: string | null;
  createdAt: Date;
  lastSeenAt: Date;
}

export interface FeedbackDoc {
  _id: Types.ObjectId;
  userId: string;
  category: 'bug' | 'idea' | 'praise' | 'complaint' | 'other';
  message: string;
  rating: number | null;
  appVersion: string | null;
  platform: Platform | null;
  createdAt: Date;
}

export interface MembershipDoc {
  /** `${userId}:${branchId}`: joining twice is one document. */
  _id: string;
  userId: string;
  branchId: string;
  /** When it became active (for a request: when it was asked for). */
  joinedAt: Date;
  /** Absent on documents written before statuses existed: active. */
  status?: 'requested' | 'active';
  /** End (exclusive); null/absent: open-ended. */
  validUntil?: Date | null;
  requestedAt?: Date | null;
  /** The staff/admin account that granted it (null: granted by the system, e.g. setup). */
  grantedBy?: string | null;
}

const Sealed = { type: Schema.Types.Mixed, default: undefined };
const options = { versionKey: false as const, strict: 'throw' as const };

const ProfileSchema = new Schema<ProfileDoc>(
  {
    _id: { type: String, required: true },
    firstName: { type: String, default: null },
    lastName: { type: String, default: null },
    displayName: { type: String, default: null },
    dateOfBirth: { type: String, default: null },
    sex: { type: String, default: null },
    phone: { type: String, default: null },
    avatarUrl: { type: String, default: null },
    bio: { type: String, default: null },
    createdAt: { type: Date, required: true },
    updatedAt: { type: Date, required: true },
  },
  { ...options, collection: COLLECTIONS.profiles },
);

const SettingsSchema = new Schema<SettingsDoc>(
  {
    _id: { type: String, required: true },
    preferences: { type: Schema.Types.Mixed, required: true },
    privacy: { type: Schema.Types.Mixed, required: true },
    updatedAt: { type: Date, required: true },
  },
  { ...options, collection: COLLECTIONS.settings },
);

const BodyProfileSchema = new Schema<BodyProfileDoc>(
  {
    _id: { type: String, required: true },
    sealed: { type: Schema.Types.Mixed, default: {} },
    measuredAt: { type: Date, default: null },
    fitness: { type: Schema.Types.Mixed, default: () => ({}) },
    diet: { type: Schema.Types.Mixed, default: () => ({}) },
    macroTargets: { type: Schema.Types.Mixed, default: null },
    rev: { type: Number, required: true },
    updatedAt: { type: Date, required: true },
  },
  { ...options, collection: COLLECTIONS.bodyProfiles, minimize: false },
);

const BodyEntrySchema = new Schema<BodyEntryDoc>(
  {
    userId: { type: String, required: true },
    measuredAt: { type: Date, required: true },
    sealed: { measurements: Sealed },
    createdAt: { type: Date, required: true },
  },
  { ...options, collection: COLLECTIONS.bodyEntries },
);
// History pages: newest first within a member (the stand-in ignores non-unique indexes; real MongoDB uses it).
BodyEntrySchema.index({ userId: 1, measuredAt: -1, _id: -1 });

const ActivitySchema = new Schema<ActivityDoc>(
  {
    _id: { type: String, required: true },
    userId: { type: String, required: true },
    type: { type: String, required: true },
    feature: { type: String, default: null },
    at: { type: Date, required: true },
    durationS: { type: Number, default: null },
    properties: { type: Schema.Types.Mixed, default: null },
    receivedAt: { type: Date, required: true },
  },
  { ...options, collection: COLLECTIONS.activity },
);
ActivitySchema.index({ userId: 1, at: -1 });

const DeviceSchema = new Schema<DeviceDoc>(
  {
    _id: { type: String, required: true },
    userId: { type: String, required: true, index: true },
    platform: { type: String, required: true },
    token: { type: String, required: true },
    appVersion: { type: String, default: null },
    deviceModel: { type: String, default: null },
    createdAt: { type: Date, required: true },
    lastSeenAt: { type: Date, required: true },
  },
  { ...options, collection: COLLECTIONS.devices },
);

const FeedbackSchema = new Schema<FeedbackDoc>(
  {
    userId: { type: String, required: true, index: true },
    category: { type: String, required: true },
    message: { type: String, required: true },
    rating: { type: Number, default: null },
    appVersion: { type: String, default: null },
    platform: { type: String, default: null },
    createdAt: { type: Date, required: true },
  },
  { ...options, collection: COLLECTIONS.feedback },
);

const MembershipSchema = new Schema<MembershipDoc>(
  {
    _id: { type: String, required: true },
    userId: { type: String, required: true, index: true },
    branchId: { type: String, required: true, index: true },
    joinedAt: { type: Date, required: true },
    status: { type: String, enum: ['requested', 'active'] },
    validUntil: { type: Date, default: null },
    requestedAt: { type: Date, default: null },
    grantedBy: { type: String, default: null },
  },
  { ...options, collection: COLLECTIONS.memberships },
);

export interface UserModels {
  Profile: Model<ProfileDoc>;
  Settings: Model<SettingsDoc>;
  BodyProfile: Model<BodyProfileDoc>;
  BodyEntry: Model<BodyEntryDoc>;
  Activity: Model<ActivityDoc>;
  Device: Model<DeviceDoc>;
  Feedback: Model<FeedbackDoc>;
  Membership: Model<MembershipDoc>;
}

function model<T>(mongo: Connection, name: string, schema: Schema<T>): Model<T> {
  return (mongo.models[name] as Model<T> | undefined) ?? mongo.model<T>(name, schema);
}

/** Defines the models and creates collections and indexes before traffic (the stand-in races implicit creates). */
export async function userModels(mongo: Connection): Promise<UserModels> {
  const models: UserModels = {
    Profile: model(mongo, 'UserProfile', ProfileSchema),
    Settings: model(mongo, 'UserSettings', SettingsSchema),
    BodyProfile: model(mongo, 'BodyProfile', BodyProfileSchema),
    BodyEntry: model(mongo, 'BodyMetricEntry', BodyEntrySchema),
    Activity: model(mongo, 'UserActivity', ActivitySchema),
    Device: model(mongo, 'UserDevice', DeviceSchema),
    Feedback: model(mongo, 'UserFeedback', FeedbackSchema),
    Membership: model(mongo, 'BranchMembership', MembershipSchema),
  };
  await Promise.all(Object.values(models).map((m: Model<unknown>) => m.init()));
  return models;
}
