/**
 * Waitlists (Redis): members queue for a busy machine, see their position and an estimated wait, and are notified
 * when it frees up — with a held slot: for `holdMs` only the notified member may link (anyone else is refused
 * `machine-busy`); when the hold lapses unused, the next in line is notified.
 *
 * Keys: `wl:{branch}:{machine}` sorted set (member → join time in ms × 1000 + a per-machine counter, so members who
 * join in the same millisecond keep their order), `wlhold:{branch}:{machine}` the
 * held member (PX holdMs), `wl:index` the set of `{branch}|{machine}` with a queue (the sweep's work list).
 * Each served or abandoned wait is kept in MongoDB (`machine_waits`) for the wait-time figures.
 *
 * Estimated wait = (position − 1) × average link duration of the machine's recent links + what remains of the
 * current link's average duration (15 min when there is no history yet).
 */
import type { Aedes } from 'aedes';
import type { Redis } from 'ioredis';
import type { Collection, Db } from 'mongodb';
import type { Clock } from '../../../tools/runtime/clock.ts';
import type { Logger } from '../../../tools/runtime/logger.ts';
import { TOPIC_POLICY, newMsgId, topics } from '../../../protocol/index.ts';
import type { UserId, UserNotification } from '../../../protocol/index.ts';
import { LINK_HISTORY_COLLECTION, publishChecked, type LinkHistoryDoc, type LinkView } from './links.ts';

export const WAITS_COLLECTION = 'machine_waits';
const DEFAULT_USE_MS = 15 * 60_000;

export interface WaitDoc {
  _id: string;
  machine: string;
  branch: string;
  userId: string;
  joinedAt: Date;
  endedAt: Date;
  outcome: 'served' | 'left' | 'expired';
}

export interface WaitPosition {
  machine: string;
  branch: string;
  position: number;
  queueLength: number;
  estimatedWaitMs: number;
  /** Set when the machine is held for this member: link before it passes. */
  heldUntil?: number;
}

export interface Waitlists {
  join(branch: string, machine: string, userId: string): Promise<WaitPosition>;
  position(branch: string, machine: string, userId: string): Promise<WaitPosition | undefined>;
  leave(branch: string, machine: string, userId: string): Promise<boolean>;
  /** Whether this member may link now (no hold, or the hold is theirs). */
  mayLink(branch: string, machine: string, userId: string): Promise<boolean>;
  /** A link was made: the member's wait is served. */
  linked(link: LinkView): Promise<void>;
  /** The machine is free: hold it for the next in line and notify them (if nobody holds it already). */
  advance(branch: string, machine: string): Promise<string | undefined>;
  /** Advances every queued machine that is free and not held (lapsed holds); resolves with how many advanced. */
  sweep(isFree: (branch: string, machine: string) => Promise<boolean>): Promise<number>;
  averageUseMs(machine: string): Promise<number>;
  /** Takes the member off every waitlist (GDPR deletion); resolves with how many. */
  removeUser(userId: string): Promise<number>;
}

const queueKey = (b: string, m: string) => `wl:${b}:${m}`;
const holdKey = (b: string, m: string) => `wlhold:${b}:${m}`;
const heldAtKey = (b: string, m: string) => `wlheldat:${b}:${m}`;
const INDEX = 'wl:index';
const joinedMs = (score: string | null) => Math.floor(Number(score ?? 0) / 1000);

export function createWaitlists({
  redis,
  db,
  aedes,
  clock,
  log,
  holdMs,
}: {
  redis: Redis;
  db: Db;
  aedes: Aedes;
  clock: Clock;
  log: Logger;
  holdMs: number;
}): Waitlists {
  const waits: Collection<WaitDoc> = db.collection<WaitDoc>(WAITS_COLLECTION);
  const history: Collection<LinkHistoryDoc> = db.collection<LinkHistoryDoc>(LINK_HISTORY_COLLECTION);

  async function averageUseMs(machine: string): Promise<number> {
    const recent = await history
      .find({ machine, endedAt: { $ne: null } })
      .sort({ startedAt: -1 })
      .limit(20)
      .toArray();
    const durations = recent.map((r) => r.endedAt!.getTime() - r.startedAt.getTime()).filter((d) => d > 0);
    return durations.length === 0 ? DEFAULT_USE_MS : durations.reduce((a, b) => a + b, 0) / durations.length;
  }

  async function record(
    branch: string,
    machine: string,
    userId: string,
    joinedAtMs: number,
    outcome: WaitDoc['outcome'],
  ) {
    await waits
      .insertOne({
        _id: `${branch}:${machine}:${userId}:${joinedAtMs}`,
        machine,
        branch,
        userId,
        joinedAt: new Date(joinedAtMs),
        endedAt: clock.now(),
        outcome,
      })
      .catch((err: unknown) => {
        if ((err as { code?: number }).code !== 11000) throw err;
      });
  }

  async function position(branch: string, machine: string, userId: string): Promise<WaitPosition | undefined> {
    const [rank, length, holder, holdTtl] = await Promise.all([
      redis.zrank(queueKey(branch, machine), userId),
      redis.zcard(queueKey(branch, machine)),
      redis.get(holdKey(branch, machine)),
      redis.pttl(holdKey(branch, machine)),
    ]);
    if (rank === null) return undefined;
    const now = clock.nowMs();
    if (holder === userId) {
      return {
        machine,
        branch,
        position: 1,
        queueLength: length,
        estimatedWaitMs: 0,
        heldUntil: now + Math.max(0, holdTtl),
      };
    }
    const avg = await averageUseMs(machine);
    const current = await history.findOne({ machine, endedAt: null });
    const remaining = current ? Math.max(0, avg - (now - current.startedAt.getTime())) : 0;
    const ahead = rank + (holder ? 1 : 0);
    return {
      machine,
      branch,
      position: rank + 1,
      queueLength: length,
      estimatedWaitMs: Math.round(remaining + Math.max(0, ahead - (current ? 0 : 1)) * avg),
    };
  }

  const waitlists: Waitlists = {
    averageUseMs,
    async join(branch, machine, userId) {
      if ((await redis.zscore(queueKey(branch, machine), userId)) === null) {
        const tick = (await redis.incr(`wlseq:${branch}:${machine}`)) % 1000;
        await redis.zadd(queueKey(branch, machine), 'NX', clock.nowMs() * 1000 + tick, userId);
      }
      await redis.sadd(INDEX, `${branch}|${machine}`);
      return (await position(branch, machine, userId))!;
    },
    position,
    async leave(branch, machine, userId) {
      const joinedAt = await redis.zscore(queueKey(branch, machine), userId);
      const removed = await redis.zrem(queueKey(branch, machine), userId);
      if (removed === 0) return false;
      if ((await redis.get(holdKey(branch, machine))) === userId) {
        await redis.del(holdKey(branch, machine));
        await waitlists.advance(branch, machine);
      }
      await record(branch, machine, userId, joinedMs(joinedAt), 'left');
      return true;
    },
    async mayLink(branch, machine, userId) {
      const holder = await redis.get(holdKey(branch, machine));
      return holder === null || holder === userId;
    },
    async linked({ branch, machine, userId }) {
      const joinedAt = await redis.zscore(queueKey(branch, machine), userId);
      if (joinedAt === null) return;
      await redis.zrem(queueKey(branch, machine), userId);
      if ((await redis.get(holdKey(branch, machine))) === userId) await redis.del(holdKey(branch, machine));
      await record(branch, machine, userId, joinedMs(joinedAt), 'served');
    },
    async advance(branch, machine) {
      if (await redis.exists(holdKey(branch, machine))) return undefined;
      // The previous holder's hold lapsed unused: they leave the queue.
      const lapsed = await redis.get(heldAtKey(branch, machine));
      if (lapsed) {
        const [user, joined] = lapsed.split('|');
        await redis.del(heldAtKey(branch, machine));
        if (user && (await redis.zrem(queueKey(branch, machine), user)) > 0) {
          await record(branch, machine, user, joinedMs(joined ?? '0'), 'expired');
        }
      }
      const [next, score] = await redis.zrange(queueKey(branch, machine), 0, 0, 'WITHSCORES');
      if (!next) {
        await redis.srem(INDEX, `${branch}|${machine}`);
        return undefined;
      }
      const set = await redis.set(holdKey(branch, machine), next, 'PX', holdMs, 'NX');
      if (set !== 'OK') return undefined;
      await redis.set(heldAtKey(branch, machine), `${next}|${score}`, 'PX', holdMs * 10);
      const notification: UserNotification = {
        id: newMsgId(),
        ts: clock.nowMs(),
        category: 'waitlist-ready',
        title: 'Your machine is free',
        body: `${machine} is held for you for ${Math.round(holdMs / 1000)} s: link to it to start.`,
        data: { machine, branch },
      };
      await publishChecked(
        aedes,
        topics.userLive(next as UserId, 'notification'),
        'UserNotification',
        notification,
        TOPIC_POLICY['user-live'],
      ).catch((err: unknown) => {
        log.warn({ machine, err: { message: (err as Error).message } }, 'waitlist notification not published');
      });
      log.info({ branch, machine }, 'waitlist: machine held for the next member');
      return next;
    },
    async removeUser(userId) {
      let removed = 0;
      for (const entry of await redis.smembers(INDEX)) {
        const [branch, machine] = entry.split('|') as [string, string];
        removed += await redis.zrem(queueKey(branch, machine), userId);
        if ((await redis.get(heldAtKey(branch, machine)))?.startsWith(`${userId}|`)) {
          await redis.del(heldAtKey(branch, machine));
        }
        if ((await redis.get(holdKey(branch, machine))) === userId) {
          await redis.del(holdKey(branch, machine));
          await waitlists.advance(branch, machine);
        }
      }
      return removed;
    },
    async sweep(isFree) {
      let advanced = 0;
      for (const entry of await redis.smembers(INDEX)) {
        const [branch, machine] = entry.split('|') as [string, string];
        if (await redis.exists(holdKey(branch, machine))) continue;
        if (!(await isFree(branch, machine))) continue;
        if (await waitlists.advance(branch, machine)) advanced += 1;
      }
      return advanced;
    },
  };
  return waitlists;
}
