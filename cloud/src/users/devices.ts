/**
 * Push-notification device tokens, per platform. A token identifies an app installation, not a person: the id is
 * the SHA-256 of platform and token, so registering a token moves it to whoever registered it last (a phone that
 * changed hands, or two members logging in on one tablet) instead of notifying both.
 */
import { createHash } from 'node:crypto';
import { Conflict } from '../http/errors.ts';
import type { UsersContext } from './context.ts';
import type { DeviceDoc } from './models.ts';
import type { DeviceRegistration } from './schemas.ts';

/** A member's devices beyond this are refused: the oldest should be removed first. */
export const MAX_DEVICES_PER_MEMBER = 20;

export interface DeviceView {
  id: string;
  platform: DeviceDoc['platform'];
  tokenHint: string;
  appVersion: string | null;
  deviceModel: string | null;
  createdAt: string;
  lastSeenAt: string;
}

export interface DeviceService {
  register(userId: string, input: DeviceRegistration): Promise<{ device: DeviceView; created: boolean }>;
  list(userId: string): Promise<DeviceView[]>;
  /** Someone else's device is 'not-owner' (for the audit); the route answers 404 for it, like a missing one. */
  remove(userId: string, deviceId: string): Promise<'removed' | 'missing' | 'not-owner'>;
  /** Tokens to push to (for the notifications domain). */
  tokensOf(userId: string): Promise<{ platform: DeviceDoc['platform']; token: string }[]>;
}

export function deviceId(platform: string, token: string): string {
  return createHash('sha256').update(`${platform}\0${token}`).digest('hex');
}

function view(doc: DeviceDoc): DeviceView {
  return {
    id: doc._id,
    platform: doc.platform,
    tokenHint: `…${doc.token.slice(-6)}`,
    appVersion: doc.appVersion,
    deviceModel: doc.deviceModel,
    createdAt: doc.createdAt.toISOString(),
    lastSeenAt: doc.lastSeenAt.toISOString(),
  };
}

export function createDeviceService({ models, clock }: UsersContext): DeviceService {
  const { Device } = models;
  return {
    async register(userId, input) {
      const _id = deviceId(input.platform, input.token);
      const existing = await Device.findById(_id, { userId: 1 }).lean();
      if (existing?.userId !== userId && (await Device.countDocuments({ userId })) >= MAX_DEVICES_PER_MEMBER) {
        throw new Conflict('too-many-devices', `at most ${MAX_DEVICES_PER_MEMBER} devices; remove one first`);
      }
      const now = clock.now();
      const doc = await Device.findOneAndUpdate(
        { _id },
        {
          $set: {
            userId,
            platform: input.platform,
            token: input.token,
            appVersion: input.appVersion ?? null,
            deviceModel: input.deviceModel ?? null,
            lastSeenAt: now,
          },
          $setOnInsert: { createdAt: now },
        },
        { upsert: true, returnDocument: 'after' },
      ).lean();
      return { device: view(doc), created: !existing };
    },
    async list(userId) {
      const docs = await Device.find({ userId }).sort({ createdAt: 1 }).lean();
      return docs.map(view);
    },
    async remove(userId, id) {
      const result = await Device.deleteOne({ _id: id, userId });
      if (result.deletedCount === 1) return 'removed';
      return (await Device.exists({ _id: id })) ? 'not-owner' : 'missing';
    },
    async tokensOf(userId) {
      const docs = await Device.find({ userId }, { platform: 1, token: 1 }).lean();
      return docs.map((d) => ({ platform: d.platform, token: d.token }));
    },
  };
}
