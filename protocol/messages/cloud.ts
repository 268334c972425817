/**
 * What the cloud publishes: its own availability, machine availability for apps and each user's live topics.
 * Apps never publish; these payloads are read-only views the cloud derives from ingested records.
 */
import * as v from 'valibot';
import { MinorVersion } from '../envelope.ts';
import { MachineId, MsgId, SessionId } from '../ids.ts';
import { Code, Timestamp, Version, label, multilineText, text } from '../scalars.ts';
import { MachineType } from './machine-type.ts';
import { MachineStatusValue } from './status.ts';
import { Telemetry } from './telemetry.ts';
import { Workout } from './workout.ts';

/** `sys/cloud/state`, retained: whether the cloud is up. Its last will sets `online: false`. */
export const CloudState = v.pipe(
  v.object({
    online: v.boolean(),
    since: v.pipe(Timestamp, v.description('When this state began (for the last will: when it was registered)')),
    v: v.optional(MinorVersion),
    version: v.optional(Version),
  }),
  v.title('CloudState'),
  v.description('Cloud availability; retained, and the last will sets it offline. `v` is the cloud’s protocol minor.'),
);
export type CloudState = v.InferOutput<typeof CloudState>;

/**
 * `b/{branch}/live/machines/{machine}`, retained: one machine's availability for the branch's apps. Holds no
 * member data: every app of the branch reads it.
 */
export const LiveMachine = v.pipe(
  v.object({
    machine: MachineId,
    type: v.optional(v.pipe(MachineType, v.description('Absent until the machine’s meta is known'))),
    displayName: v.optional(label(64, 'Name shown to members')),
    status: MachineStatusValue,
    since: v.pipe(Timestamp, v.description('When this status began')),
    ts: v.pipe(Timestamp, v.description('As of')),
  }),
  v.title('LiveMachine'),
  v.description('Machine availability for apps; `unknown` while its gateway is offline. No member data.'),
);
export type LiveMachine = v.InferOutput<typeof LiveMachine>;

/**
 * `u/{user}/live/workout`: the user's workout as it happens — samples from the machine they are linked to,
 * finished segments, and link changes. Contains health data: only that user may subscribe.
 */
export const UserLiveWorkout = v.pipe(
  v.variant('type', [
    v.object({ type: v.literal('sample'), machine: MachineId, ts: Timestamp, telemetry: Telemetry }),
    v.object({ type: v.literal('segment'), machine: MachineId, ts: Timestamp, workout: Workout }),
    v.object({
      type: v.literal('link'),
      machine: MachineId,
      ts: Timestamp,
      state: v.picklist(['linked', 'unlinked']),
      sessionId: v.optional(SessionId),
    }),
  ]),
  v.title('UserLiveWorkout'),
  v.description('A live sample, a finished segment or a link change, for the linked member only.'),
);
export type UserLiveWorkout = v.InferOutput<typeof UserLiveWorkout>;

/** `u/{user}/live/notification`: an in-app notification (the same one may also go out by push). */
export const UserNotification = v.pipe(
  v.object({
    id: v.pipe(MsgId, v.description('Notification id, globally unique like a msgId (for dedup against push)')),
    ts: Timestamp,
    category: v.pipe(Code, v.description('e.g. waitlist-ready, achievement, reminder')),
    title: v.pipe(text(120, 'Title'), v.minLength(1)),
    body: multilineText(1_000, 'Body text'),
    data: v.optional(
      v.pipe(
        v.record(v.pipe(v.string(), v.regex(/^[A-Za-z0-9_-]{1,32}$/)), v.pipe(v.string(), v.maxLength(256))),
        v.maxEntries(16),
        v.description('Deep-link parameters, string to string'),
      ),
    ),
  }),
  v.title('UserNotification'),
  v.description('An in-app notification for one user.'),
);
export type UserNotification = v.InferOutput<typeof UserNotification>;
