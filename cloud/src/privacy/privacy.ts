/**
 * GDPR: a member's data export (Art. 15, 20) and erasure (Art. 17) — RELIABILITY P1.
 *
 * Erasure, in order:
 *   1. a tombstone keyed by the member's pseudonym, so records that arrive later (a gateway's offline queue) can be
 *      recognised and dropped instead of resurrecting the member (`isDeleted`);
 *   2. every login session and token revoked (auth);
 *   3. the registered deletion hooks (object storage, gateways' allow-lists …);
 *   4. the account deleted (auth);
 *   5. a sweep of every collection for documents keyed by or referring to the member (`_id`, `userId`,
 *      `memberId`), so no domain's data survives because it forgot to register a hook;
 *   6. a sweep of Redis for keys naming the member (rate-limit counters, session indexes …);
 *   7. the audit log pseudonymised: entries about the member keep what happened and when, with the pseudonym in
 *      place of id and email and without address or user agent, and one `member_data_erased` entry is appended.
 * A hook that fails leaves the deletion pending (the member's id sealed, never in clear) for `retryPending`.
 */
import type { Redis } from 'ioredis';
import { Types, type Connection } from 'mongoose';
import type { Clock } from '../../../tools/runtime/clock.ts';
import type { Logger } from '../../../tools/runtime/logger.ts';
import type { AuditLog } from '../audit/index.ts';
import { UnreadableField, type FieldCipher, type SealedValue } from '../crypto/field-cipher.ts';
import type { SealedCollection } from '../crypto/rotation.ts';
import type { PrivacyRegistry } from './registry.ts';

/** Collections the sweep leaves alone: the audit log is pseudonymised instead; these two hold pseudonyms only. */
export const TOMBSTONES = 'deleted_members';
export const DELETION_REQUESTS = 'deletion_requests';
const SWEPT_FIELDS = ['_id', 'userId', 'memberId'] as const;

/**
 * Pending deletions keep the member's id sealed (`sealed.userId`, bound to the request's pseudonym): the key
 * rotation job re-encrypts it with the rest, so retiring an old key never strands a deletion it cannot finish.
 */
export const PRIVACY_SEALED_COLLECTIONS: readonly SealedCollection[] = [
  { collection: DELETION_REQUESTS, userIdField: '_id' },
];

export interface PrivacyAuth {
  revokeAllSessions(userId: string, reason: string): Promise<unknown>;
  deleteAccount(userId: string): Promise<unknown>;
}

export interface PrivacyOptions {
  mongo: Connection;
  redis: Redis;
  /** The cloud's REDIS_KEY_PREFIX (the client adds it to commands, but SCAN patterns need it spelled out). */
  redisKeyPrefix: string;
  cipher: FieldCipher;
  audit: AuditLog;
  /** The audit log's collection name (pseudonymised in place). */
  auditCollection: string;
  auth: PrivacyAuth;
  registry: PrivacyRegistry;
  clock: Clock;
  log: Logger;
}

export interface DeletionOutcome {
  pseudonym: string;
  /** Hooks that failed and will be retried; empty when erasure is complete. */
  pendingHooks: string[];
  removed: { documents: Record<string, number>; redisKeys: number; auditEntriesPseudonymised: number };
}

export interface Privacy {
  exportUser(userId: string): Promise<Record<string, unknown>>;
  deleteUser(userId: string, request: { email: string | null; ip: string | null }): Promise<DeletionOutcome>;
  /** True once the member was deleted: later records about them must be dropped or anonymised. */
  isDeleted(userId: string): Promise<boolean>;
  /** Re-runs the hooks of pending deletions; returns how many completed. */
  retryPending(): Promise<{ completed: number; stillPending: number }>;
  pseudonym(userId: string): string;
}

interface DeletionRequest {
  _id: string;
  /** The member's id, sealed: needed by the hooks' retries, unreadable to anyone with the database alone. Removed
   * once the deletion is complete. */
  sealed?: { userId: SealedValue };
  pendingHooks: string[];
  requestedAt: Date;
  completedAt: Date | null;
}

/** Redis glob metacharacters in a value used inside a MATCH pattern. */
const globEscape = (s: string) => s.replace(/[*?[\]\\]/g, '\\$&');

/** Whether a member was erased: what ingest asks before it stores a record naming a member. */
export interface ErasureCheck {
  isDeleted(userId: string): Promise<boolean>;
}

/**
 * The tombstone lookup on its own, so parts built before the users domain (ingest) can refuse to resurrect an
 * erased member from records a gateway buffered offline.
 */
export function createErasureCheck({ mongo, cipher }: { mongo: Connection; cipher: FieldCipher }): ErasureCheck {
  return {
    async isDeleted(userId) {
      const tombstones = mongo.db!.collection(TOMBSTONES);
      return (await tombstones.countDocuments({ _id: cipher.pseudonym(userId) } as never)) > 0;
    },
  };
}

export function createPrivacy(options: PrivacyOptions): Privacy {
  const { mongo, redis, redisKeyPrefix, cipher, audit, auditCollection, auth, registry, clock, log } = options;
  const db = () => mongo.db!;
  const erasure = createErasureCheck({ mongo, cipher });
  const sealContext = (pseudonym: string) => ({ collection: DELETION_REQUESTS, userId: pseudonym, field: 'userId' });

  async function runHooks(userId: string, pseudonym: string, names: readonly string[]): Promise<string[]> {
    const failed: string[] = [];
    for (const name of names) {
      const hook = registry.deletionHooks().get(name);
      if (!hook) continue;
      try {
        await hook(userId, { pseudonym, log: log.child({ hook: name }) });
      } catch (err) {
        failed.push(name);
        log.error(
          { hook: name, pseudonym, err: { name: (err as Error).name, message: (err as Error).message } },
          'deletion hook failed',
        );
      }
    }
    return failed;
  }

  async function sweepMongo(userId: string): Promise<Record<string, number>> {
    const skip = new Set([auditCollection, TOMBSTONES, DELETION_REQUESTS]);
    const removed: Record<string, number> = {};
    const ids: unknown[] = [userId];
    if (/^[a-f0-9]{24}$/.test(userId)) {
      ids.push(new Types.ObjectId(userId));
    }
    const collections = await db().listCollections({}, { nameOnly: true }).toArray();
    for (const { name } of collections) {
      if (skip.has(name) || name.startsWith('system.')) continue;
      const filter = { $or: SWEPT_FIELDS.map((field) => ({ [field]: { $in: ids } })) };
      const { deletedCount } = await db().collection(name).deleteMany(filter);
      if (deletedCount > 0) removed[name] = deletedCount;
    }
    return removed;
  }

  async function sweepRedis(userId: string, email: string | null): Promise<number> {
    const patterns = [userId, ...(email ? [email] : [])].map((s) => `${globEscape(redisKeyPrefix)}*${globEscape(s)}*`);
    let removed = 0;
    for (const match of patterns) {
      let cursor = '0';
      do {
        const [next, keys] = await redis.scan(cursor, 'MATCH', match, 'COUNT', 500);
        cursor = next;
        // The client prepends the prefix to DEL's arguments but SCAN returns full names: strip it.
        if (keys.length > 0) removed += await redis.del(...keys.map((key) => key.slice(redisKeyPrefix.length)));
      } while (cursor !== '0');
    }
    return removed;
  }

  async function pseudonymiseAudit(userId: string, email: string | null, pseudonym: string): Promise<number> {
    // The audit log is append-only for everyone else (its model refuses updates); erasure is the one change the
    // law requires of it, done here on the collection: what happened and when stays (security record, GDPR
    // Art. 17(3)); who (id, email), from where (address) and with what (user agent) goes.
    const audits = db().collection(auditCollection);
    const subjects = [userId, ...(email ? [email] : [])];
    for (const field of ['actor', 'target', 'details.userId', 'details.email'] as const) {
      await audits.updateMany({ [field]: { $in: subjects } }, { $set: { [field]: pseudonym } });
    }
    const { modifiedCount } = await audits.updateMany(
      { $or: [{ actor: pseudonym }, { target: pseudonym }] },
      { $set: { ip: null }, $unset: { 'details.userAgent': '', 'details.ip': '' } },
    );
    return modifiedCount;
  }

  async function exportUser(userId: string): Promise<Record<string, unknown>> {
    const out: Record<string, unknown> = {
      format: 'nxg-member-export-v1',
      userId,
      exportedAt: clock.now().toISOString(),
    };
    for (const [name, section] of registry.exportSections()) out[name] = await section(userId);
    const audits = await db()
      .collection(auditCollection)
      .find({ $or: [{ actor: userId }, { target: userId }] } as never, { projection: { _id: 0 } })
      .sort({ at: 1 })
      .toArray();
    // Entries about the member that someone else caused (an administrator's action, someone trying the member's
    // password) name that person, their address and their browser: personal data of theirs, not the member's
    // (GDPR Art. 15(4)). What happened, when and with what result stays.
    out.auditEntries = audits.map((entry) => {
      if (entry.actor === userId) return entry;
      const { userAgent: _ua, ip: _ip, ...details } = (entry.details ?? {}) as Record<string, unknown>;
      return { ...entry, actor: null, ip: null, ...(entry.details ? { details } : {}) };
    });
    return out;
  }

  return {
    pseudonym: (userId) => cipher.pseudonym(userId),
    exportUser,

    isDeleted: (userId) => erasure.isDeleted(userId),

    async deleteUser(userId, { email }) {
      const pseudonym = cipher.pseudonym(userId);
      const now = clock.now();
      await db()
        .collection(TOMBSTONES)
        .updateOne({ _id: pseudonym } as never, { $setOnInsert: { deletedAt: now } }, { upsert: true });
      await db()
        .collection<DeletionRequest>(DELETION_REQUESTS)
        .updateOne(
          { _id: pseudonym },
          {
            $set: {
              sealed: { userId: cipher.seal(userId, sealContext(pseudonym)) },
              pendingHooks: [...registry.deletionHooks().keys()],
              requestedAt: now,
              completedAt: null,
            },
          },
          { upsert: true },
        );
      await auth.revokeAllSessions(userId, 'account_deleted');
      const failed = await runHooks(userId, pseudonym, [...registry.deletionHooks().keys()]);
      await auth.deleteAccount(userId);
      const documents = await sweepMongo(userId);
      const redisKeys = await sweepRedis(userId, email);
      const auditEntriesPseudonymised = await pseudonymiseAudit(userId, email, pseudonym);
      await audit.record({
        actor: pseudonym,
        action: 'member_data_erased',
        target: pseudonym,
        ip: null,
        result: failed.length === 0 ? 'success' : 'failure',
        details: { pendingHooks: failed, collections: Object.keys(documents) },
      });
      // A request that passed its guard just before the revocation may have written since the first sweep.
      for (const [name, count] of Object.entries(await sweepMongo(userId))) {
        documents[name] = (documents[name] ?? 0) + count;
      }
      await db()
        .collection<DeletionRequest>(DELETION_REQUESTS)
        .updateOne(
          { _id: pseudonym },
          failed.length === 0
            ? { $set: { pendingHooks: [], completedAt: clock.now() }, $unset: { sealed: '' } }
            : { $set: { pendingHooks: failed } },
        );
      log.info({ pseudonym, pendingHooks: failed, documents, redisKeys }, 'member deleted');
      return { pseudonym, pendingHooks: failed, removed: { documents, redisKeys, auditEntriesPseudonymised } };
    },

    async retryPending() {
      const requests = db().collection<DeletionRequest>(DELETION_REQUESTS);
      const pending = await requests.find({ completedAt: null }).toArray();
      let completed = 0;
      for (const request of pending) {
        if (!request.sealed?.userId) continue;
        let userId: string;
        try {
          userId = cipher.open<string>(request.sealed.userId, sealContext(request._id));
        } catch (err) {
          if (!(err instanceof UnreadableField)) throw err;
          // One request sealed under a key no longer configured must not stop every other deletion.
          log.error({ pseudonym: request._id, kid: err.kid }, 'pending deletion cannot be opened; left pending');
          continue;
        }
        const failed = await runHooks(userId, request._id, request.pendingHooks);
        // Anything written for the member while the hooks were failing goes too.
        await sweepMongo(userId);
        await sweepRedis(userId, null);
        if (failed.length === 0) {
          completed += 1;
          await requests.updateOne(
            { _id: request._id },
            { $set: { pendingHooks: [], completedAt: clock.now() }, $unset: { sealed: '' } },
          );
          await audit.record({
            actor: null,
            action: 'account_deletion_completed',
            target: request._id,
            result: 'success',
          });
        } else {
          await requests.updateOne({ _id: request._id }, { $set: { pendingHooks: failed } });
        }
      }
      return { completed, stillPending: pending.length - completed };
    },
  };
}
