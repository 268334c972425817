/**
 * The members API's inputs and outputs, as valibot schemas: they validate requests (route.ts) and describe the
 * OpenAPI document. Bodies are strict: an unknown key is refused with 400 naming it; the account's own fields
 * (role, status, emailVerified …) are declared as never-allowed so that each one sent is named (mass assignment,
 * RELIABILITY c7).
 */
import * as v from 'valibot';
import { ID_PATTERN } from '../../../protocol/ids.ts';
import { EmailSchema } from '../accounts/email.ts';
import { PASSWORD_MAX_LENGTH } from '../accounts/password.ts';

// ---------------------------------------------------------------------------------------------------------------
// Building blocks

/** Fields a member can never set through these routes; each one sent is named in the 400. */
const notSettable = (name: string, by: string) => v.optional(v.never(`${name} cannot be set here: ${by}`));
export const ACCOUNT_FIELDS = {
  role: notSettable('role', 'roles are granted by administrators'),
  status: notSettable('status', 'the account status is managed by the service'),
  emailVerified: notSettable('emailVerified', 'verify the email address through the link sent to it'),
  email: notSettable('email', 'the email address is changed through the account routes'),
  password: notSettable('password', 'the password is changed through the account routes'),
  passwordHash: notSettable('passwordHash', 'never settable'),
  id: notSettable('id', 'ids are assigned by the service'),
  _id: notSettable('_id', 'ids are assigned by the service'),
  userId: notSettable('userId', 'the member is the caller'),
};

const range = (min: number, max: number, unit: string, what: string) =>
  v.pipe(
    v.number(`${what}: expected a number`),
    v.finite(`${what}: expected a finite number`),
    v.minValue(min, `${what}: at least ${min} ${unit}`),
    v.maxValue(max, `${what}: at most ${max} ${unit}`),
    v.description(`${what}, ${unit} (${min}–${max})`),
  );

/** Length as JSON Schema counts it (code points), not UTF-16 units: an emoji is one character in both. */
const codePoints = (s: string) => [...s].length;

/**
 * Free text, validated exactly as the OpenAPI document describes it (minLength/maxLength in code points, the same
 * pattern), so a fuzzer's schema-valid string is never refused and a schema-violating one never accepted.
 */
const text = (min: number, max: number, what: string, pattern?: { source: string; reason: string }) => {
  const regex = pattern ? new RegExp(pattern.source, 'u') : undefined;
  return v.pipe(
    v.string(`${what}: expected a string`),
    v.metadata({ minLength: min, maxLength: max, ...(pattern ? { pattern: pattern.source } : {}) }),
    v.check((s) => codePoints(s) >= min, `${what}: at least ${min} character${min === 1 ? '' : 's'}`),
    v.check((s) => codePoints(s) <= max, `${what}: at most ${max} characters`),
    v.check((s) => !regex || regex.test(s), `${what}: ${pattern?.reason ?? ''}`),
  );
};

/**
 * One line: no control characters, no bidirectional overrides or isolates (U+202A-202E, U+2066-2069: a name shown
 * to other members must not display reversed, "Trojan Source" style), not only spaces.
 */
const NOT_IN_LINE = '\\x00-\\x1f\\x7f\\u202a-\\u202e\\u2066-\\u2069';
const ONE_LINE = {
  source: `^[^${NOT_IN_LINE}]*[^\\s${NOT_IN_LINE}][^${NOT_IN_LINE}]*$`,
  reason: 'no control characters or direction overrides, and not only spaces',
};
/** Several lines: tabs and line breaks allowed, other control characters not. */
const MULTI_LINE = {
  source: '^[^\\x00-\\x08\\x0b\\x0c\\x0e-\\x1f\\x7f]*$',
  reason: 'no control characters other than tabs and line breaks',
};

/** A member-chosen label (name, condition, allergy, device model). */
const label = (max: number, what: string) => text(1, max, what, ONE_LINE);

/** Years 1900-2099, real month, day, hour and minute ranges (the calendar check follows). */
/**
 * A real calendar day, 1900–2099, in the pattern itself (not only in a check after it), so the OpenAPI document
 * says exactly what is accepted and a schema-valid date is never refused: days 1–28 of any month, 29–30 of any
 * month but February, 31 of the long months, and 29 February of leap years (1900 was not one, 2000 was).
 */
const DATE_PART =
  String.raw`(?:(?:19|20)\d{2}-(?:(?:0[1-9]|1[0-2])-(?:0[1-9]|1\d|2[0-8])|(?:0[13-9]|1[0-2])-(?:29|30)|` +
  String.raw`(?:0[13578]|1[02])-31)|(?:19(?:0[48]|[2468][048]|[13579][26])|20(?:[02468][048]|[13579][26]))-02-29)`;
const TIMESTAMP = new RegExp(
  String.raw`^${DATE_PART}(T([01]\d|2[0-3]):[0-5]\d(:[0-5]\d(\.\d{1,3})?)?(Z|[+-]([01]\d|2[0-3]):[0-5]\d))?$`,
);
/** Runs even after the pattern failed (valibot goes on collecting issues): must not throw on garbage. */
const isCalendarDay = (ymd: string) => {
  const d = new Date(`${ymd}T00:00:00Z`);
  return !Number.isNaN(d.getTime()) && d.toISOString().startsWith(ymd);
};

/** An ISO 8601 date or date-time with offset → Date. */
export const Timestamp = v.pipe(
  v.string(),
  v.description('ISO 8601 date (YYYY-MM-DD, UTC midnight) or date-time with Z or an offset'),
  v.maxLength(35),
  v.regex(TIMESTAMP, 'expected an ISO 8601 date (1900-2099) or date-time with offset'),
  v.check((s) => isCalendarDay(s.slice(0, 10)), 'expected a real calendar date'),
  v.transform((s) => new Date(s.length === 10 ? `${s}T00:00:00Z` : s)),
);

/** YYYY-MM-DD of a real calendar day. */
const CalendarDate = v.pipe(
  v.string(),
  v.regex(new RegExp(`^${DATE_PART}$`), 'expected YYYY-MM-DD (1900-2099)'),
  v.check(isCalendarDay, 'expected a real calendar date'),
);

/** Page size: values above 100 are clamped to 100, never refused (RELIABILITY c9). */
export const Limit = (fallback: number) =>
  v.optional(
    v.pipe(
      v.string(),
      v.description(`Page size, 1 or more; default ${fallback}; values above 100 are clamped to 100.`),
      v.regex(/^[1-9]\d{0,6}$/, 'expected a positive integer'),
      v.transform(Number),
      v.transform((n) => Math.min(n, 100)),
    ),
    String(fallback),
  );

/**
 * Keyset cursors: pass back the previous page's nextCursor. Every value the pattern allows is a valid position
 * (the page after it), so a well-formed cursor is never refused.
 */
const cursor = (pattern: RegExp, shape: string) =>
  v.optional(
    v.pipe(
      v.string(),
      v.description(`The nextCursor of the previous page (${shape})`),
      v.regex(pattern, 'expected a cursor returned by a previous page'),
    ),
  );
/** History: `<epoch ms>-<entry id>`; negative before 1970 (measurements may be dated from 1900). */
export const HistoryCursor = cursor(/^-?\d{1,13}-[a-f0-9]{24}$/, 'epoch milliseconds, a dash, an entry id');
/** Admin search: the last account id of the previous page. */
export const AccountCursor = cursor(/^[a-f0-9]{24}$/, 'an account id');

export const BranchIdParam = v.strictObject({
  branchId: v.pipe(
    v.string(),
    v.maxLength(63),
    v.regex(ID_PATTERN, 'expected a branch id (^[a-z0-9][a-z0-9-]{0,62}$)'),
  ),
});

export const ObjectIdString = v.pipe(v.string(), v.regex(/^[a-f0-9]{24}$/, 'expected a 24-hex-digit id'));

// ---------------------------------------------------------------------------------------------------------------
// Profile

const SEX = ['female', 'male', 'other', 'unspecified'] as const;

/** Age bounds of a member: 13 (app stores' and GDPR Art. 8's lower bound) to 120. */
export const MIN_AGE_YEARS = 13;
export const MAX_AGE_YEARS = 120;

const DateOfBirth = v.pipe(
  CalendarDate,
  v.description(`YYYY-MM-DD; the member must be ${MIN_AGE_YEARS}–${MAX_AGE_YEARS} years old`),
);

export const profileFields = {
  firstName: v.optional(v.nullable(label(80, 'firstName'))),
  lastName: v.optional(v.nullable(label(80, 'lastName'))),
  displayName: v.optional(v.nullable(label(40, 'displayName'))),
  dateOfBirth: v.optional(v.nullable(DateOfBirth)),
  sex: v.optional(v.nullable(v.picklist(SEX))),
  phone: v.optional(
    v.nullable(v.pipe(v.string(), v.regex(/^\+[1-9]\d{6,14}$/, 'expected E.164, e.g. +4915112345678'))),
  ),
  avatarUrl: v.optional(
    v.nullable(
      v.pipe(
        v.string(),
        v.maxLength(2048),
        v.url('expected a URL'),
        v.startsWith('https://', 'expected an https:// URL'),
      ),
    ),
  ),
  bio: v.optional(v.nullable(text(0, 500, 'bio', MULTI_LINE))),
};

/** PUT /api/users/profile: only the keys sent change; null clears a field. */
export const ProfileUpdate = v.strictObject({ ...profileFields, ...ACCOUNT_FIELDS });
export type ProfileUpdate = v.InferOutput<typeof ProfileUpdate>;

export const Profile = v.object({
  id: v.string(),
  email: v.nullable(v.string()),
  emailVerified: v.boolean(),
  role: v.string(),
  status: v.string(),
  firstName: v.nullable(v.string()),
  lastName: v.nullable(v.string()),
  displayName: v.nullable(v.string()),
  dateOfBirth: v.nullable(v.string()),
  sex: v.nullable(v.picklist(SEX)),
  phone: v.nullable(v.string()),
  avatarUrl: v.nullable(v.string()),
  bio: v.nullable(v.string()),
  createdAt: v.nullable(v.string()),
  updatedAt: v.nullable(v.string()),
});

/** POST /api/users/register: the account (auth's rules on email and password apply) and the profile at once. */
export const RegisterWithProfile = v.strictObject({
  email: EmailSchema,
  password: v.pipe(
    v.string('expected a string'),
    v.description('12 to 128 characters, not a commonly used password'),
    v.minLength(1, 'expected a password'),
    v.maxLength(PASSWORD_MAX_LENGTH * 4, `expected at most ${PASSWORD_MAX_LENGTH} characters`),
  ),
  ...profileFields,
  units: v.optional(v.picklist(['metric', 'imperial'])),
  role: ACCOUNT_FIELDS.role,
  status: ACCOUNT_FIELDS.status,
  emailVerified: ACCOUNT_FIELDS.emailVerified,
});
export type RegisterWithProfile = v.InferOutput<typeof RegisterWithProfile>;

/** The same answer whether or not the address already had an account (no enumeration, like /api/auth/register). */
export const RegisterAccepted = v.object({ status: v.literal('accepted'), message: v.string() });

// ---------------------------------------------------------------------------------------------------------------
// Body metrics

export const ACTIVITY_LEVELS = ['sedentary', 'light', 'moderate', 'active', 'very_active'] as const;
export const GOALS = ['lose_weight', 'maintain', 'gain_muscle', 'improve_endurance', 'general_fitness'] as const;
export const DIETS = [
  'omnivore',
  'vegetarian',
  'vegan',
  'pescatarian',
  'keto',
  'paleo',
  'halal',
  'kosher',
  'other',
] as const;

/** Physiological bounds: anything outside is a typo or a unit mix-up, refused with the bound in the message. */
export const measurementFields = {
  weightKg: v.optional(v.nullable(range(20, 400, 'kg', 'weightKg'))),
  heightCm: v.optional(v.nullable(range(50, 260, 'cm', 'heightCm'))),
  bodyFatPct: v.optional(v.nullable(range(2, 75, '%', 'bodyFatPct'))),
  muscleMassKg: v.optional(v.nullable(range(5, 200, 'kg', 'muscleMassKg'))),
  waistCm: v.optional(v.nullable(range(30, 250, 'cm', 'waistCm'))),
  hipCm: v.optional(v.nullable(range(40, 250, 'cm', 'hipCm'))),
  chestCm: v.optional(v.nullable(range(40, 250, 'cm', 'chestCm'))),
  armCm: v.optional(v.nullable(range(10, 100, 'cm', 'armCm'))),
  thighCm: v.optional(v.nullable(range(20, 150, 'cm', 'thighCm'))),
  neckCm: v.optional(v.nullable(range(20, 80, 'cm', 'neckCm'))),
  restingHeartRateBpm: v.optional(v.nullable(v.pipe(range(25, 220, 'bpm', 'restingHeartRateBpm'), v.integer()))),
};
export type MeasurementKey = keyof typeof measurementFields;
export const MEASUREMENT_KEYS = Object.keys(measurementFields) as MeasurementKey[];

const labels = (what: string) => v.pipe(v.array(label(100, what)), v.maxLength(30, `${what}: at most 30 entries`));

export const BodyMetricsUpdate = v.strictObject({
  measuredAt: v.optional(Timestamp),
  measurements: v.optional(
    v.strictObject({
      ...measurementFields,
      bmi: v.optional(v.never('bmi is computed from weightKg and heightCm')),
    }),
  ),
  fitness: v.optional(
    v.strictObject({
      activityLevel: v.optional(v.nullable(v.picklist(ACTIVITY_LEVELS))),
      goal: v.optional(v.nullable(v.picklist(GOALS))),
      targetWeightKg: v.optional(v.nullable(range(20, 400, 'kg', 'targetWeightKg'))),
      healthConditions: v.optional(labels('healthConditions')),
    }),
  ),
  diet: v.optional(
    v.strictObject({
      preference: v.optional(v.nullable(v.picklist(DIETS))),
      mealsPerDay: v.optional(v.nullable(v.pipe(v.number(), v.integer(), v.minValue(1), v.maxValue(10)))),
      allergies: v.optional(labels('allergies')),
    }),
  ),
  macroTargets: v.optional(v.never('macroTargets are computed from the body profile')),
  userId: ACCOUNT_FIELDS.userId,
});
export type BodyMetricsUpdate = v.InferOutput<typeof BodyMetricsUpdate>;

const MeasurementsOut = v.object(
  Object.fromEntries([...MEASUREMENT_KEYS, 'bmi'].map((key) => [key, v.optional(v.number())])) as Record<
    MeasurementKey | 'bmi',
    v.OptionalSchema<v.NumberSchema<undefined>, undefined>
  >,
);

const MacroTargetsOut = v.object({
  bmrKcal: v.number(),
  tdeeKcal: v.number(),
  kcal: v.number(),
  proteinG: v.number(),
  fatG: v.number(),
  carbsG: v.number(),
  method: v.literal('mifflin-st-jeor'),
  computedAt: v.string(),
});

export const BodyMetrics = v.object({
  measurements: MeasurementsOut,
  measuredAt: v.nullable(v.string()),
  fitness: v.object({
    activityLevel: v.nullable(v.picklist(ACTIVITY_LEVELS)),
    goal: v.nullable(v.picklist(GOALS)),
    targetWeightKg: v.nullable(v.number()),
    healthConditions: v.array(v.string()),
  }),
  diet: v.object({
    preference: v.nullable(v.picklist(DIETS)),
    mealsPerDay: v.nullable(v.number()),
    allergies: v.array(v.string()),
  }),
  macroTargets: v.nullable(MacroTargetsOut),
  updatedAt: v.nullable(v.string()),
});

export const HistoryQuery = v.strictObject({
  from: v.optional(Timestamp),
  to: v.optional(Timestamp),
  limit: Limit(50),
  cursor: HistoryCursor,
});

export const History = v.object({
  items: v.array(v.object({ id: v.string(), measuredAt: v.string(), measurements: MeasurementsOut })),
  nextCursor: v.nullable(v.string()),
});

// ---------------------------------------------------------------------------------------------------------------
// Preferences and privacy

/** The IANA zones this runtime knows (Intl), plus UTC. */
export const TIME_ZONES: readonly string[] = [...new Set(['UTC', ...Intl.supportedValuesOf('timeZone')])];

export const PreferencesUpdate = v.strictObject({
  units: v.optional(v.picklist(['metric', 'imperial'])),
  language: v.optional(
    v.pipe(v.string(), v.regex(/^[a-z]{2,3}(-[A-Z]{2})?$/, 'expected a language tag like en or de-AT')),
  ),
  timezone: v.optional(v.picklist(TIME_ZONES, 'expected an IANA time zone such as Europe/Vienna (see the enum)')),
  notifications: v.optional(
    v.strictObject({
      push: v.optional(v.boolean()),
      email: v.optional(v.boolean()),
      workoutReminders: v.optional(v.boolean()),
      achievements: v.optional(v.boolean()),
      socialActivity: v.optional(v.boolean()),
      marketing: v.optional(v.boolean()),
    }),
  ),
});
export type PreferencesUpdate = v.InferOutput<typeof PreferencesUpdate>;

export const Preferences = v.object({
  units: v.picklist(['metric', 'imperial']),
  language: v.string(),
  timezone: v.string(),
  notifications: v.object({
    push: v.boolean(),
    email: v.boolean(),
    workoutReminders: v.boolean(),
    achievements: v.boolean(),
    socialActivity: v.boolean(),
    marketing: v.boolean(),
  }),
});

export const PrivacyUpdate = v.strictObject({
  profileVisibility: v.optional(v.picklist(['public', 'members', 'private'])),
  leaderboards: v.optional(v.picklist(['visible', 'anonymous', 'hidden'])),
  shareWorkouts: v.optional(v.boolean()),
  showPresence: v.optional(v.boolean()),
  allowFriendRequests: v.optional(v.boolean()),
});
export type PrivacyUpdate = v.InferOutput<typeof PrivacyUpdate>;

export const Privacy = v.object({
  profileVisibility: v.picklist(['public', 'members', 'private']),
  leaderboards: v.picklist(['visible', 'anonymous', 'hidden']),
  shareWorkouts: v.boolean(),
  showPresence: v.boolean(),
  allowFriendRequests: v.boolean(),
});

// ---------------------------------------------------------------------------------------------------------------
// Devices, feedback, activity

export const PLATFORMS = ['ios', 'android', 'web'] as const;

export const DeviceRegistration = v.strictObject({
  platform: v.picklist(PLATFORMS),
  token: v.pipe(
    v.string(),
    v.minLength(8),
    v.maxLength(4096),
    v.regex(/^[\x21-\x7e]+$/, 'expected a push token (printable ASCII, no spaces)'),
  ),
  appVersion: v.optional(v.pipe(v.string(), v.maxLength(40), v.regex(/^[\w.+-]+$/, 'expected a version like 1.4.2'))),
  deviceModel: v.optional(label(80, 'deviceModel')),
});
export type DeviceRegistration = v.InferOutput<typeof DeviceRegistration>;

export const Device = v.object({
  id: v.string(),
  platform: v.picklist(PLATFORMS),
  /** The token's last characters only: enough to recognise it, not to use it. */
  tokenHint: v.string(),
  appVersion: v.nullable(v.string()),
  deviceModel: v.nullable(v.string()),
  createdAt: v.string(),
  lastSeenAt: v.string(),
});

export const DeviceIdParam = v.strictObject({
  deviceId: v.pipe(v.string(), v.regex(/^[a-f0-9]{64}$/, 'expected a device id')),
});

export const FeedbackSubmission = v.strictObject({
  category: v.picklist(['bug', 'idea', 'praise', 'complaint', 'other']),
  message: text(1, 4000, 'message', {
    source:
      '^[^\\x00-\\x08\\x0b\\x0c\\x0e-\\x1f\\x7f]*[^\\s\\x00-\\x1f\\x7f][^\\x00-\\x08\\x0b\\x0c\\x0e-\\x1f\\x7f]*$',
    reason: 'not only spaces; no control characters other than tabs and line breaks',
  }),
  rating: v.optional(v.pipe(v.number(), v.integer(), v.minValue(1), v.maxValue(5))),
  appVersion: v.optional(v.pipe(v.string(), v.maxLength(40), v.regex(/^[\w.+-]+$/, 'expected a version like 1.4.2'))),
  platform: v.optional(v.picklist(PLATFORMS)),
});
export type FeedbackSubmission = v.InferOutput<typeof FeedbackSubmission>;

export const Feedback = v.object({
  id: v.string(),
  category: v.string(),
  message: v.string(),
  rating: v.nullable(v.number()),
  appVersion: v.nullable(v.string()),
  platform: v.nullable(v.string()),
  createdAt: v.string(),
});

const ActivityEvent = v.strictObject({
  eventId: v.optional(
    v.pipe(
      v.string(),
      v.regex(/^[A-Za-z0-9_-]{8,64}$/, 'expected 8-64 of A-Z a-z 0-9 _ -'),
      v.description('Client-generated id; a retried event with the same id is stored once'),
    ),
  ),
  type: v.pipe(v.string(), v.regex(/^[a-z][a-z0-9_]{1,47}$/, 'expected snake_case, e.g. feature_used')),
  feature: v.optional(v.pipe(v.string(), v.regex(/^[a-z][a-z0-9_.-]{0,63}$/, 'expected a feature key'))),
  at: v.optional(Timestamp),
  durationS: v.optional(v.pipe(v.number(), v.minValue(0), v.maxValue(86_400))),
  properties: v.optional(
    v.pipe(
      v.record(
        v.pipe(v.string(), v.regex(/^[A-Za-z][A-Za-z0-9_]{0,39}$/, 'expected a property name')),
        v.union([v.pipe(v.string(), v.maxLength(200)), v.pipe(v.number(), v.finite()), v.boolean()]),
      ),
      v.check((p) => Object.keys(p).length <= 20, 'at most 20 properties'),
    ),
  ),
});

export const ActivityBatch = v.strictObject({
  events: v.pipe(v.array(ActivityEvent), v.minLength(1), v.maxLength(100, 'at most 100 events per request')),
});
export type ActivityBatch = v.InferOutput<typeof ActivityBatch>;

export const ActivityAccepted = v.object({ accepted: v.number(), duplicates: v.number() });

export const SummaryQuery = v.strictObject({
  period: v.optional(v.picklist(['daily', 'weekly', 'monthly']), 'daily'),
  from: v.optional(Timestamp),
  to: v.optional(Timestamp),
});

export const ActivitySummary = v.object({
  period: v.picklist(['daily', 'weekly', 'monthly']),
  from: v.string(),
  to: v.string(),
  timezone: v.literal('UTC'),
  buckets: v.array(
    v.object({
      start: v.string(),
      events: v.number(),
      activeDays: v.number(),
      durationS: v.number(),
      byType: v.record(v.string(), v.number()),
    }),
  ),
  totals: v.object({ events: v.number(), activeDays: v.number(), durationS: v.number() }),
});

// ---------------------------------------------------------------------------------------------------------------
// Administration

const ROLE = ['member', 'staff', 'admin'] as const;
const STATUS = ['pending_verification', 'active', 'suspended'] as const;

export const AdminUserQuery = v.strictObject({
  email: v.optional(
    v.pipe(
      text(1, 254, 'email'),
      v.description('Case-insensitive prefix of the email address (plain text; no patterns)'),
    ),
  ),
  role: v.optional(v.picklist(ROLE)),
  status: v.optional(v.picklist(STATUS)),
  branch: v.optional(BranchIdParam.entries.branchId),
  limit: Limit(25),
  cursor: AccountCursor,
});
export type AdminUserQuery = v.InferOutput<typeof AdminUserQuery>;

export const AdminUser = v.object({
  id: v.string(),
  email: v.string(),
  role: v.picklist(ROLE),
  status: v.picklist(STATUS),
  emailVerified: v.boolean(),
  suspendedReason: v.nullable(v.string()),
  firstName: v.nullable(v.string()),
  lastName: v.nullable(v.string()),
  branches: v.array(v.string()),
  createdAt: v.string(),
});

export const AdminUserPage = v.object({ items: v.array(AdminUser), nextCursor: v.nullable(v.string()) });

export const UserIdParam = v.strictObject({ userId: ObjectIdString });

export const StatusChange = v.strictObject({
  reason: text(3, 500, 'reason', ONE_LINE),
});
