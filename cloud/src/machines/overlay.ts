/**
 * What the cloud knows about a machine beyond what the machine reports: the member linked to it and whether staff
 * took it out of order. Kept in Redis beside live state (one hash per machine) so that the hot paths — every
 * telemetry sample looking for the linked member, every availability publish — cost one HMGET:
 *
 * `mx:{branch}:{machine}` — hash: `userId`, `sessionId`, `linkId`, `linkedAt` (the link, mirrored from the
 * `machine_links` claim in MongoDB, which stays the truth: the reconciliation job rewrites the mirror), `act` (last
 * activity on the link, ms), `ooo` (1 while out of order, mirrored from `machine_service`).
 *
 * Apps see the overlaid status: `maintenance` while out of order, `in_use` while a member is linked to a machine
 * that reports itself `available`/`online`, the machine's own status otherwise.
 */
import type { Redis } from 'ioredis';
import type { BranchId, MachineStatusValue } from '../../../protocol/index.ts';
import type { Availability } from './live-state.ts';

export const overlayKey = (branch: string, machine: string) => `mx:${branch}:${machine}`;

export interface MachineOverlay {
  userId?: string;
  sessionId?: string;
  linkId?: string;
  linkedAt?: number;
  activityAt?: number;
  outOfOrder: boolean;
}

const FIELDS = ['userId', 'sessionId', 'linkId', 'linkedAt', 'act', 'ooo'] as const;

function parse(raw: (string | null)[]): MachineOverlay {
  const [userId, sessionId, linkId, linkedAt, act, ooo] = raw;
  return {
    ...(userId ? { userId } : {}),
    ...(sessionId ? { sessionId } : {}),
    ...(linkId ? { linkId } : {}),
    ...(linkedAt ? { linkedAt: Number(linkedAt) } : {}),
    ...(act ? { activityAt: Number(act) } : {}),
    outOfOrder: ooo === '1',
  };
}

/** The status apps see, given the machine's own and the overlay. */
export function overlaidStatus(own: MachineStatusValue, overlay: MachineOverlay | undefined): MachineStatusValue {
  if (!overlay) return own;
  if (overlay.outOfOrder) return 'maintenance';
  if (overlay.userId && (own === 'available' || own === 'online')) return 'in_use';
  return own;
}

export interface Overlays {
  get(branch: string, machine: string): Promise<MachineOverlay>;
  /** One round trip for many machines of a branch. */
  getMany(branch: string, machines: readonly string[]): Promise<Map<string, MachineOverlay>>;
  setLink(
    branch: string,
    machine: string,
    link: { userId: string; sessionId: string; linkId: string; linkedAt: number },
  ): Promise<void>;
  /** Removes the link mirror, only if it is still this link (a newer link is left alone). */
  clearLink(branch: string, machine: string, linkId?: string): Promise<void>;
  touch(branch: string, machine: string, atMs: number): Promise<void>;
  setOutOfOrder(branch: string, machine: string, outOfOrder: boolean): Promise<void>;
  /** Availability with the overlaid status (`since` kept: when the machine's own status began). */
  apply(branch: BranchId, availability: Availability): Promise<Availability>;
}

const CLEAR_LINK = `
if ARGV[1] ~= '' and redis.call('HGET', KEYS[1], 'linkId') ~= ARGV[1] then return 0 end
redis.call('HDEL', KEYS[1], 'userId', 'sessionId', 'linkId', 'linkedAt', 'act')
return 1
`;

export function createOverlays(redis: Redis): Overlays {
  const overlays: Overlays = {
    async get(branch, machine) {
      return parse(await redis.hmget(overlayKey(branch, machine), ...FIELDS));
    },
    async getMany(branch, machines) {
      const out = new Map<string, MachineOverlay>();
      if (machines.length === 0) return out;
      const pipeline = redis.pipeline();
      for (const m of machines) pipeline.hmget(overlayKey(branch, m), ...FIELDS);
      const results = (await pipeline.exec()) ?? [];
      machines.forEach((m, i) => {
        const [err, raw] = results[i] ?? [];
        if (err) throw err;
        out.set(m, parse(raw as (string | null)[]));
      });
      return out;
    },
    async setLink(branch, machine, link) {
      await redis.hset(overlayKey(branch, machine), {
        userId: link.userId,
        sessionId: link.sessionId,
        linkId: link.linkId,
        linkedAt: String(link.linkedAt),
        act: String(link.linkedAt),
      });
    },
    async clearLink(branch, machine, linkId) {
      await redis.eval(CLEAR_LINK, 1, overlayKey(branch, machine), linkId ?? '');
    },
    async touch(branch, machine, atMs) {
      await redis.hset(overlayKey(branch, machine), 'act', String(atMs));
    },
    async setOutOfOrder(branch, machine, outOfOrder) {
      if (outOfOrder) await redis.hset(overlayKey(branch, machine), 'ooo', '1');
      else await redis.hdel(overlayKey(branch, machine), 'ooo');
    },
    async apply(branch, availability) {
      const overlay = await overlays.get(branch, availability.machine);
      return { ...availability, status: overlaidStatus(availability.status, overlay) };
    },
  };
  return overlays;
}
