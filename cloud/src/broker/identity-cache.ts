/**
 * An in-process cache in front of the identity store (identities.ts), so a CONNECT of a known identity costs no
 * MongoDB round trip. A CPU profile of a connect storm (200 CONNECTs in flight, docs/benchmarks.md "Broker") had the
 * identity queries' socket writes and driver work as the largest part of the broker's time: one query per CONNECT.
 *
 * What it holds: identity records (secret hash, role, branches, gateway, disabled/disabledAt) of identities that
 * exist, keyed by id, at most `maxEntries` of them (least recently used evicted first), each trusted for `ttlMs`
 * after it was read from the store. Unknown ids are never cached: an attacker trying names fills nothing, and a
 * cached entry always names a provisioned identity.
 *
 * Staying right when an identity changes:
 * - a change made through this store (`disable`: revocation, `insert`) drops the entry here and is published on
 *   Redis (`{REDIS_KEY_PREFIX}mqtt:identities:invalidate`, the id as message); every cloud node's cache drops it on
 *   receipt, so the next CONNECT of a revoked identity is refused on every node;
 * - while this node's subscription is not up, the cache is bypassed (every lookup reads the store), and it is
 *   emptied when the subscription comes back: invalidations published meanwhile were lost;
 * - a lookup that was in flight when an invalidation arrived is answered but not cached (it may predate the
 *   change);
 * - the periodic recheck of live connections (broker.ts, `activeAmong`) drops entries of identities no longer
 *   active;
 * - `npm run hub -- revoke` publishes the same invalidation when REDIS_URL is set (publishIdentityInvalidation);
 * - the TTL is the backstop for a change this store never hears of — a revocation straight in MongoDB (the hub
 *   without REDIS_URL, the simulator retiring its run's identities), a publish that failed: such an identity can
 *   still CONNECT for at most `ttlMs` after the change, and a live connection is dropped by the recheck
 *   (MQTT_IDENTITY_RECHECK_MS).
 * The secret check itself stays in auth.ts (SHA-256 of the presented secret, compared in constant time).
 */
import type { Redis } from 'ioredis';
import { Counter, type Registry } from 'prom-client';
import type { Clock } from '../../../tools/runtime/clock.ts';
import type { Logger } from '../../../tools/runtime/logger.ts';
import type { IdentityRecord, IdentityStore } from './identities.ts';

/** A bounded map with a deadline per entry: `get` answers only entries younger than the TTL. */
export interface IdentityLru {
  get(id: string): IdentityRecord | undefined;
  set(id: string, record: IdentityRecord): void;
  delete(id: string): void;
  clear(): void;
  readonly size: number;
}

export function createIdentityLru({
  maxEntries,
  ttlMs,
  clock,
}: {
  maxEntries: number;
  ttlMs: number;
  clock: Clock;
}): IdentityLru {
  // A Map iterates in insertion order: re-inserting on a hit keeps the least recently used first.
  const entries = new Map<string, { record: IdentityRecord; expiresAtMs: number }>();
  return {
    get(id) {
      const entry = entries.get(id);
      if (!entry) return undefined;
      entries.delete(id);
      if (clock.nowMs() >= entry.expiresAtMs) return undefined;
      entries.set(id, entry);
      return entry.record;
    },
    set(id, record) {
      if (maxEntries <= 0) return;
      entries.delete(id);
      entries.set(id, { record, expiresAtMs: clock.nowMs() + ttlMs });
      while (entries.size > maxEntries) entries.delete(entries.keys().next().value!);
    },
    delete(id) {
      entries.delete(id);
    },
    clear() {
      entries.clear();
    },
    get size() {
      return entries.size;
    },
  };
}

/** The Redis channel the nodes of one deployment invalidate on (pub/sub channels take no ioredis keyPrefix). */
export const invalidationChannel = (redisKeyPrefix: string): string => `${redisKeyPrefix}mqtt:identities:invalidate`;

/**
 * Tells every cloud node sharing this Redis to drop `id` from its identity cache; for a process that changes an
 * identity without a cached store of its own. Resolves with how many nodes were subscribed.
 */
export function publishIdentityInvalidation(redis: Redis, redisKeyPrefix: string, id: string): Promise<number> {
  return redis.publish(invalidationChannel(redisKeyPrefix), id);
}

export interface CachedIdentityStore extends IdentityStore {
  /** Drops `id` from this node's cache and tells the other nodes to drop it too. */
  invalidate(id: string): Promise<void>;
  /** Whether `id` is held now (and fresh); for tests and operators. */
  isCached(id: string): boolean;
  /** Identities held now. */
  readonly cachedCount: number;
  /** Ends the subscription; lookups go on, straight to the store. */
  close(): Promise<void>;
}

export interface IdentityCacheOptions {
  /** The store of record. */
  store: IdentityStore;
  /** The cloud's Redis client: invalidations are published on it; the subscription uses a duplicate of it. */
  redis: Redis;
  /** REDIS_KEY_PREFIX: nodes of one deployment share it, other deployments on the same Redis do not. */
  redisKeyPrefix: string;
  /** Most identities held (LRU); 0 turns the cache off. */
  maxEntries: number;
  /** How long an entry is trusted: the longest a missed invalidation can keep a revoked identity connecting. */
  ttlMs: number;
  clock: Clock;
  log: Logger;
  /** Where `mqtt_identity_cache_lookups_total` is registered. */
  registry?: Registry;
}

export async function createCachedIdentityStore(options: IdentityCacheOptions): Promise<CachedIdentityStore> {
  const { store, redis, redisKeyPrefix, clock, log } = options;
  const lru = createIdentityLru({ maxEntries: options.maxEntries, ttlMs: options.ttlMs, clock });
  const channel = invalidationChannel(redisKeyPrefix);
  const lookups = options.registry
    ? new Counter({
        name: 'mqtt_identity_cache_lookups_total',
        help: 'Identity lookups (CONNECT authentication, machine heartbeats) by result: hit, miss, bypass (cache off or its invalidation channel down)',
        labelNames: ['result'] as const,
        registers: [options.registry],
      })
    : undefined;
  const hits = lookups?.labels('hit');
  const misses = lookups?.labels('miss');
  const bypasses = lookups?.labels('bypass');
  /** Bumped by every invalidation: a lookup that saw it change while in flight does not fill the cache. */
  let generation = 0;
  let closed = options.maxEntries <= 0;
  const forget = (id: string) => {
    generation += 1;
    lru.delete(id);
  };
  const forgetAll = () => {
    generation += 1;
    lru.clear();
  };

  let subscriber: Redis | undefined;
  /** True while the subscription is up: only then can the cache hear of changes, so only then is it used. */
  let listening = false;
  /** Set once the first SUBSCRIBE is through; ioredis renews it on every reconnect. */
  let subscribed = false;
  if (!closed) {
    subscriber = redis.duplicate({ connectionName: 'nxg-cloud-identity-cache', lazyConnect: true });
    const sub = subscriber;
    sub.on('message', (from: string, id: string) => {
      if (from === channel) forget(id);
    });
    sub.on('error', () => undefined); // the main client logs Redis trouble; here it only means "bypass"
    sub.on('close', () => {
      listening = false;
      forgetAll();
    });
    let subscribing: Promise<void> | undefined;
    const subscribe = () =>
      (subscribing ??= sub.subscribe(channel).then(
        () => {
          subscribed = true;
          forgetAll();
          listening = sub.status === 'ready';
        },
        (err: unknown) => {
          subscribing = undefined; // tried again at the next 'ready'
          log.warn({ err: { message: (err as Error).message } }, 'identity cache: subscription failed; bypassing');
        },
      ));
    // After a reconnect ioredis subscribes again by itself, before 'ready': what was published while the link was
    // down is lost, so start empty.
    sub.on('ready', () => {
      forgetAll();
      if (subscribed) listening = true;
      else void subscribe();
    });
    try {
      await sub.connect();
    } catch (err) {
      // Redis answered just before (startCloud): go on bypassing; ioredis keeps reconnecting, 'ready' subscribes.
      log.warn({ err: { message: (err as Error).message } }, 'identity cache: no invalidation channel yet');
    }
    await subscribe();
  }

  const publish = async (id: string) => {
    try {
      await redis.publish(channel, id);
    } catch (err) {
      // The other nodes learn of it within the TTL at the latest (and drop live connections at their recheck).
      log.warn({ id, err: { message: (err as Error).message } }, 'identity cache: invalidation not published');
    }
  };

  return {
    async find(id) {
      const key = String(id);
      if (closed || !listening) {
        bypasses?.inc();
        return store.find(key);
      }
      const cached = lru.get(key);
      if (cached) {
        hits?.inc();
        return cached;
      }
      misses?.inc();
      const seen = generation;
      const record = await store.find(key);
      // Unknown ids are not kept: the cache holds provisioned identities only.
      if (record && seen === generation && listening && !closed) lru.set(key, freeze(record));
      return record;
    },
    async insert(record) {
      await store.insert(record);
      forget(record.id);
    },
    list: (filter) => store.list(filter),
    async disable(id, at) {
      const found = await store.disable(id, at);
      forget(String(id));
      await publish(String(id));
      return found;
    },
    async activeAmong(ids) {
      const active = await store.activeAmong(ids);
      // The recheck's answer is fresher than the cache: identities no longer active leave it.
      for (const id of ids) if (!active.has(id)) forget(id);
      return active;
    },
    async invalidate(id) {
      forget(id);
      await publish(id);
    },
    isCached: (id) => !closed && listening && lru.get(id) !== undefined,
    get cachedCount() {
      return lru.size;
    },
    async close() {
      closed = true;
      listening = false;
      forgetAll();
      if (subscriber && subscriber.status !== 'end') {
        await subscriber.quit().catch(() => subscriber?.disconnect());
      }
    },
  };
}

/** Cached records are shared by every caller: frozen, so none can change another's view. */
function freeze(record: IdentityRecord): IdentityRecord {
  Object.freeze(record.branches);
  return Object.freeze(record);
}
