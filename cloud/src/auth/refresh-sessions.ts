/**
 * Login sessions and their refresh tokens, in Redis (shared by every API node).
 *
 * A login starts a *family* (the login session: device, address, times). Each refresh token is opaque (256 random
 * bits), stored only as its SHA-256, lives AUTH_REFRESH_TOKEN_TTL_S, and is rotated on every use: the used token is
 * marked rotated and a new one issued. A rotated token presented again means it was copied: the whole family is
 * revoked (RELIABILITY c4, ASVS 5 10.4.5) — except within a short grace period from the same device (same
 * User-Agent), which is a client that lost the response to its refresh on a bad network (RELIABILITY (d), FAPI #676):
 * it gets a fresh token, and the token it missed stays valid too (at most MAX_GRACE_USES times per token). A login
 * session also ends AUTH_SESSION_MAX_AGE_S after the login, however often it is refreshed (then: log in again).
 *
 * Keys (under the cloud's REDIS_KEY_PREFIX):
 *   auth:rt:{sha256}      hash  fam, uid, state (active|rotated), rotatedAt     — one per refresh token
 *   auth:fam:{familyId}   hash  uid, ua, ip, createdAt, lastUsedAt               — the login session
 *   auth:famtok:{familyId} set  token hashes of the family (to delete them with it)
 *   auth:ufam:{userId}    set   the user's family ids
 *   auth:revoked:{jti}    "1"   a logged-out access token, until its expiry
 * If Redis restarts empty, every refresh token answers 401 and members log in again (RELIABILITY C3).
 */
import { createHash, randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { Clock } from '../../../tools/runtime/clock.ts';

export interface LoginSession {
  id: string;
  userId: string;
  userAgent: string;
  ip: string;
  createdAt: Date;
  lastUsedAt: Date;
}

export interface IssuedRefresh {
  refreshToken: string;
  sessionId: string;
  expiresInS: number;
}

export type RotateOutcome =
  | { kind: 'rotated'; userId: string; sessionId: string; refreshToken: string; grace: boolean }
  /** Unknown, expired, or its family was revoked. */
  | { kind: 'invalid' }
  /** A rotated token presented again outside the grace period: the family has been revoked. */
  | { kind: 'reuse'; userId: string; sessionId: string };

export interface RefreshSessions {
  start(input: { userId: string; userAgent: string; ip: string }): Promise<IssuedRefresh>;
  rotate(input: { refreshToken: string; userAgent: string; ip: string }): Promise<RotateOutcome>;
  /** The family a token belongs to, without using it (logout by refresh token). */
  familyOf(refreshToken: string): Promise<{ userId: string; sessionId: string } | undefined>;
  exists(sessionId: string): Promise<boolean>;
  list(userId: string): Promise<LoginSession[]>;
  /** Revokes one family; false when it does not exist or is someone else's. */
  revoke(sessionId: string, userId?: string): Promise<boolean>;
  /** Revokes every family of the user; returns how many. */
  revokeAll(userId: string): Promise<number>;
  /** Puts an access token's jti on the revocation list until its expiry (epoch seconds). */
  revokeAccessToken(jti: string, expiresAt: number): Promise<void>;
  /** One round trip for the guard: is the jti revoked, does the session still exist. */
  check(jti: string, sessionId: string): Promise<{ revoked: boolean; sessionAlive: boolean }>;
}

export interface RefreshSessionOptions {
  redis: Redis;
  clock: Clock;
  ttlS: number;
  reuseGraceS: number;
  /** Absolute lifetime of a login session, from the login. */
  maxAgeS: number;
}

/** How often one spent token may be presented again within the grace period before it counts as reuse. */
export const MAX_GRACE_USES = 3;

const TOKEN_SHAPE = /^[A-Za-z0-9_-]{43}$/;

export const sha256 = (value: string) => createHash('sha256').update(value).digest('hex');

const keys = {
  token: (hash: string) => `auth:rt:${hash}`,
  family: (id: string) => `auth:fam:${id}`,
  familyTokens: (id: string) => `auth:famtok:${id}`,
  userFamilies: (userId: string) => `auth:ufam:${userId}`,
  revoked: (jti: string) => `auth:revoked:${jti}`,
};

/**
 * Rotation, atomically (two API nodes may receive the same token at once: only one can rotate it).
 * KEYS: old token, family, family tokens, new token, user families.
 * ARGV: now ms, ttl ms, grace ms, user agent, ip, new token hash, session max age ms, max grace uses.
 * Returns {outcome, uid, fam}: outcome ok | grace | reuse | invalid.
 */
const ROTATE_LUA = `
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return {'invalid', '', ''} end
local uid = redis.call('HGET', KEYS[1], 'uid')
local fam = redis.call('HGET', KEYS[1], 'fam')
if redis.call('EXISTS', KEYS[2]) == 0 then return {'invalid', uid, fam} end
local now = tonumber(ARGV[1])
if now - tonumber(redis.call('HGET', KEYS[2], 'createdAt')) > tonumber(ARGV[7]) then return {'expired', uid, fam} end
local outcome = 'ok'
if state == 'rotated' then
  local rotatedAt = tonumber(redis.call('HGET', KEYS[1], 'rotatedAt'))
  if now - rotatedAt <= tonumber(ARGV[3]) and redis.call('HGET', KEYS[2], 'ua') == ARGV[4]
      and redis.call('HINCRBY', KEYS[1], 'graceUses', 1) <= tonumber(ARGV[8]) then
    outcome = 'grace'
  else
    return {'reuse', uid, fam}
  end
else
  redis.call('HSET', KEYS[1], 'state', 'rotated', 'rotatedAt', ARGV[1])
end
redis.call('HSET', KEYS[4], 'fam', fam, 'uid', uid, 'state', 'active')
redis.call('PEXPIRE', KEYS[4], ARGV[2])
redis.call('SADD', KEYS[3], ARGV[6])
redis.call('PEXPIRE', KEYS[3], ARGV[2])
redis.call('HSET', KEYS[2], 'lastUsedAt', ARGV[1], 'ip', ARGV[5])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
redis.call('PEXPIRE', KEYS[5], ARGV[2])
return {outcome, uid, fam}
`;

type RotateCommand = (
  k1: string,
  k2: string,
  k3: string,
  k4: string,
  k5: string,
  now: number,
  ttlMs: number,
  graceMs: number,
  ua: string,
  ip: string,
  newHash: string,
  maxAgeMs: number,
  maxGraceUses: number,
) => Promise<[string, string, string]>;

export function createRefreshSessions({
  redis,
  clock,
  ttlS,
  reuseGraceS,
  maxAgeS,
}: RefreshSessionOptions): RefreshSessions {
  if (!('nxgRotateRefresh' in redis)) redis.defineCommand('nxgRotateRefresh', { numberOfKeys: 5, lua: ROTATE_LUA });
  const rotateCommand = (redis as unknown as { nxgRotateRefresh: RotateCommand }).nxgRotateRefresh.bind(redis);
  const ttlMs = ttlS * 1000;
  const newToken = () => randomBytes(32).toString('base64url');

  async function revokeFamily(sessionId: string, userId: string | undefined): Promise<boolean> {
    const family = await redis.hgetall(keys.family(sessionId));
    const owner = family.uid;
    if (!owner || (userId !== undefined && owner !== userId)) return false;
    const tokenHashes = await redis.smembers(keys.familyTokens(sessionId));
    const tx = redis.multi();
    for (const hash of tokenHashes) tx.del(keys.token(hash));
    tx.del(keys.familyTokens(sessionId), keys.family(sessionId));
    tx.srem(keys.userFamilies(owner), sessionId);
    await tx.exec();
    return true;
  }

  return {
    async start({ userId, userAgent, ip }) {
      const sessionId = randomBytes(16).toString('base64url');
      const refreshToken = newToken();
      const hash = sha256(refreshToken);
      const now = String(clock.nowMs());
      await redis
        .multi()
        .hset(keys.family(sessionId), { uid: userId, ua: userAgent, ip, createdAt: now, lastUsedAt: now })
        .pexpire(keys.family(sessionId), ttlMs)
        .hset(keys.token(hash), { fam: sessionId, uid: userId, state: 'active' })
        .pexpire(keys.token(hash), ttlMs)
        .sadd(keys.familyTokens(sessionId), hash)
        .pexpire(keys.familyTokens(sessionId), ttlMs)
        .sadd(keys.userFamilies(userId), sessionId)
        .pexpire(keys.userFamilies(userId), ttlMs)
        .exec();
      return { refreshToken, sessionId, expiresInS: ttlS };
    },

    async rotate({ refreshToken, userAgent, ip }) {
      if (!TOKEN_SHAPE.test(refreshToken)) return { kind: 'invalid' };
      const oldHash = sha256(refreshToken);
      const [fam, storedUid] = await redis.hmget(keys.token(oldHash), 'fam', 'uid');
      if (!fam) return { kind: 'invalid' };
      const uid = storedUid ?? '';
      const next = newToken();
      const nextHash = sha256(next);
      const [outcome, userId, sessionId] = await rotateCommand(
        keys.token(oldHash),
        keys.family(fam),
        keys.familyTokens(fam),
        keys.token(nextHash),
        keys.userFamilies(uid),
        clock.nowMs(),
        ttlMs,
        reuseGraceS * 1000,
        userAgent,
        ip,
        nextHash,
        maxAgeS * 1000,
        MAX_GRACE_USES,
      );
      if (outcome === 'expired') {
        await revokeFamily(sessionId, undefined);
        return { kind: 'invalid' };
      }
      if (outcome === 'reuse') {
        await revokeFamily(sessionId, undefined);
        return { kind: 'reuse', userId, sessionId };
      }
      if (outcome !== 'ok' && outcome !== 'grace') return { kind: 'invalid' };
      return { kind: 'rotated', userId, sessionId, refreshToken: next, grace: outcome === 'grace' };
    },

    async familyOf(refreshToken) {
      if (!TOKEN_SHAPE.test(refreshToken)) return undefined;
      const [fam, uid] = await redis.hmget(keys.token(sha256(refreshToken)), 'fam', 'uid');
      return fam && uid ? { userId: uid, sessionId: fam } : undefined;
    },

    async exists(sessionId) {
      return (await redis.exists(keys.family(sessionId))) === 1;
    },

    async list(userId) {
      const ids = await redis.smembers(keys.userFamilies(userId));
      if (ids.length === 0) return [];
      const tx = redis.multi();
      for (const id of ids) tx.hgetall(keys.family(id));
      const results = (await tx.exec()) ?? [];
      const sessions: LoginSession[] = [];
      const gone: string[] = [];
      ids.forEach((id, i) => {
        const family = results[i]?.[1] as Record<string, string> | undefined;
        if (!family?.uid || family.uid !== userId) {
          gone.push(id); // expired since: tidy the index
          return;
        }
        sessions.push({
          id,
          userId,
          userAgent: family.ua ?? '',
          ip: family.ip ?? '',
          createdAt: new Date(Number(family.createdAt)),
          lastUsedAt: new Date(Number(family.lastUsedAt)),
        });
      });
      if (gone.length > 0) await redis.srem(keys.userFamilies(userId), ...gone);
      return sessions.sort((a, b) => b.lastUsedAt.getTime() - a.lastUsedAt.getTime());
    },

    revoke: (sessionId, userId) => revokeFamily(sessionId, userId),

    async revokeAll(userId) {
      const ids = await redis.smembers(keys.userFamilies(userId));
      let revoked = 0;
      for (const id of ids) {
        if (await revokeFamily(id, userId)) revoked += 1;
        else await redis.srem(keys.userFamilies(userId), id); // expired since: tidy the index
      }
      // Only the ids read above leave the index (revokeFamily removes each it revokes): deleting the whole set would
      // also drop a session started meanwhile, which would stay alive but unlisted, out of reach of "revoke all".
      return revoked;
    },

    async revokeAccessToken(jti, expiresAt) {
      const remainingMs = expiresAt * 1000 - clock.nowMs();
      // Kept 30 s past expiry: the guard accepts tokens that much past exp (clock leeway).
      await redis.set(keys.revoked(jti), '1', 'PX', Math.max(1000, remainingMs + 30_000));
    },

    async check(jti, sessionId) {
      const results = (await redis.multi().exists(keys.revoked(jti)).exists(keys.family(sessionId)).exec()) ?? [];
      const [revoked, alive] = results.map(([err, value]) => {
        if (err) throw err;
        return value === 1;
      });
      return { revoked: revoked ?? true, sessionAlive: alive ?? false };
    },
  };
}
