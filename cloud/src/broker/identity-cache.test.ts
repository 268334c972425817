/**
 * The identity cache in front of the identity store: hits cost no query, unknown ids are never kept, the size is
 * bounded, a revocation through any node reaches every node over Redis, and the TTL bounds a revocation the cache
 * never heard of. Real MongoDB stand-in and Redis; the two-node case runs two whole clouds (startCloud).
 */
import { expect } from 'chai';
import type { Connection } from 'mongoose';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import sinon from 'sinon';
import { createManualClock, systemClock } from '../../../tools/runtime/clock.ts';
import { startRedis } from '../../../tools/services/index.ts';
import { eventually } from '../../../test/helpers/eventually.ts';
import {
  connectMongoose,
  connectTestRedis,
  testServices,
  uniqueDbName,
  type TestRedis,
} from '../../../test/helpers/services.ts';
import { startCloud, type RunningCloud } from '../cloud.ts';
import { loadCloudConfig } from '../config.ts';
import { createIdentityStore, type IdentityRecord, type IdentityStore } from './identities.ts';
import {
  createCachedIdentityStore,
  createIdentityLru,
  publishIdentityInvalidation,
  type CachedIdentityStore,
  type IdentityCacheOptions,
} from './identity-cache.ts';
import { addObserver, revokeIdentity } from './provisioning.ts';
import { closed, connackCode, connectClient } from './testing.ts';

const silent = pino({ level: 'silent' });
const record = (id: string): IdentityRecord => ({
  id,
  role: 'observer',
  branches: ['b1'],
  secretHash: 'a'.repeat(64),
  createdAt: new Date(0),
  disabled: false,
});

describe('identity cache: LRU', () => {
  it('keeps at most maxEntries, dropping the least recently used first', () => {
    const lru = createIdentityLru({ maxEntries: 3, ttlMs: 60_000, clock: createManualClock() });
    for (const id of ['a', 'b', 'c']) lru.set(id, record(id));
    expect(lru.get('a')?.id).to.equal('a'); // a is now the most recently used
    lru.set('d', record('d'));
    expect(lru.size).to.equal(3);
    expect(lru.get('b')).to.equal(undefined);
    expect(['a', 'c', 'd'].map((id) => lru.get(id)?.id)).to.deep.equal(['a', 'c', 'd']);
  });

  it('answers an entry only until its TTL has passed since it was stored, and holds nothing when off', () => {
    const clock = createManualClock();
    const lru = createIdentityLru({ maxEntries: 10, ttlMs: 30_000, clock });
    lru.set('a', record('a'));
    clock.advance(29_999);
    expect(lru.get('a')?.id).to.equal('a'); // a hit does not extend the deadline
    clock.advance(1);
    expect(lru.get('a')).to.equal(undefined);
    expect(lru.size).to.equal(0);
    const off = createIdentityLru({ maxEntries: 0, ttlMs: 30_000, clock });
    off.set('a', record('a'));
    expect(off.size).to.equal(0);
  });
});

describe('identity cache: cached store (MongoDB stand-in + Redis)', function () {
  let mongo: Connection;
  let redis: TestRedis;
  let base: IdentityStore;
  const open: CachedIdentityStore[] = [];
  const prefix = `test:${process.pid}:identity-cache:${Math.random().toString(36).slice(2)}:`;

  const cached = async (options: Partial<IdentityCacheOptions> = {}) => {
    const store = await createCachedIdentityStore({
      store: base,
      redis: redis.client,
      redisKeyPrefix: prefix,
      maxEntries: 100,
      ttlMs: 30_000,
      clock: systemClock,
      log: silent,
      ...options,
    });
    open.push(store);
    return store;
  };

  before(async function () {
    mongo = await connectMongoose(uniqueDbName('identity-cache'));
    redis = await connectTestRedis();
    base = createIdentityStore(mongo);
    for (let i = 0; i < 12; i++) await base.insert(record(`obs-${i}`));
  });
  after(async function () {
    await mongo.dropDatabase();
    await mongo.close();
    await redis.close();
  });
  afterEach(async function () {
    sinon.restore();
    await Promise.all(open.splice(0).map((store) => store.close()));
  });

  it('reads an identity from the store once, then from memory (a frozen copy shared by callers)', async function () {
    const store = await cached();
    const find = sinon.spy(base, 'find');
    const first = await store.find('obs-0');
    const second = await store.find('obs-0');
    expect(find.callCount).to.equal(1);
    expect(second).to.equal(first);
    expect(second).to.deep.include({ id: 'obs-0', role: 'observer', secretHash: 'a'.repeat(64), disabled: false });
    expect(Object.isFrozen(second)).to.equal(true);
    expect(store.isCached('obs-0')).to.equal(true);
  });

  it('never keeps unknown ids, and keeps at most maxEntries identities', async function () {
    const store = await cached({ maxEntries: 5 });
    const find = sinon.spy(base, 'find');
    for (let i = 0; i < 1000; i++) expect(await store.find(`nobody-${i}`)).to.equal(undefined);
    expect(store.cachedCount).to.equal(0);
    expect(await store.find('nobody-0')).to.equal(undefined);
    expect(find.callCount).to.equal(1001); // every unknown id is asked for again
    for (let i = 0; i < 12; i++) await store.find(`obs-${i}`);
    expect(store.cachedCount).to.equal(5);
  });

  it('a revocation through one node drops the identity there at once and on the other node over Redis', async function () {
    const nodeA = await cached();
    const nodeB = await cached();
    const otherDeployment = await cached({ redisKeyPrefix: `${prefix}other:` });
    await base.insert(record('obs-revoked'));
    for (const node of [nodeA, nodeB, otherDeployment])
      expect((await node.find('obs-revoked'))?.disabled).to.equal(false);
    expect(nodeB.isCached('obs-revoked')).to.equal(true);

    await revokeIdentity({ store: nodeA }, 'obs-revoked');
    expect(nodeA.isCached('obs-revoked')).to.equal(false);
    expect((await nodeA.find('obs-revoked'))?.disabled).to.equal(true);
    await eventually('node B drops the revoked identity', () => !nodeB.isCached('obs-revoked'), 5000, 20);
    expect((await nodeB.find('obs-revoked'))?.disabled).to.equal(true);
    // Another deployment (another REDIS_KEY_PREFIX) on the same Redis hears nothing of it.
    expect(otherDeployment.isCached('obs-revoked')).to.equal(true);
  });

  it('drops an identity when a process without a cache of its own publishes its invalidation', async function () {
    const node = await cached();
    await node.find('obs-1');
    expect(await publishIdentityInvalidation(redis.client, prefix, 'obs-1')).to.be.greaterThan(0);
    await eventually('the node drops obs-1', () => !node.isCached('obs-1'), 5000, 20);
  });

  it('bounds a revocation it never hears of by the TTL (backstop for a lost invalidation)', async function () {
    const clock = createManualClock();
    const node = await cached({ clock, ttlMs: 30_000 });
    await base.insert(record('obs-lost'));
    expect((await node.find('obs-lost'))?.disabled).to.equal(false);
    // Revoked straight in MongoDB: no invalidation is published (as `npm run hub -- revoke` without REDIS_URL).
    expect(await base.disable('obs-lost', new Date())).to.equal(true);
    clock.advance(29_000);
    expect((await node.find('obs-lost'))?.disabled, 'stale within the TTL').to.equal(false);
    clock.advance(1_000);
    expect((await node.find('obs-lost'))?.disabled, 'read again once the TTL is over').to.equal(true);
  });

  it('does not keep a lookup that was in flight when an invalidation arrived', async function () {
    const node = await cached();
    await base.insert(record('obs-race'));
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const original = base.find.bind(base);
    sinon.stub(base, 'find').callsFake(async (id) => {
      const found = await original(id);
      await gate; // the answer was read before the revocation, and arrives after it
      return found;
    });
    const lookup = node.find('obs-race');
    await new Promise((resolve) => setTimeout(resolve, 50));
    await revokeIdentity({ store: node }, 'obs-race');
    release();
    expect((await lookup)?.disabled).to.equal(false);
    expect(node.isCached('obs-race')).to.equal(false);
    sinon.restore();
    expect((await node.find('obs-race'))?.disabled).to.equal(true);
  });

  it('drops identities the periodic recheck finds no longer active', async function () {
    const node = await cached();
    await base.insert(record('obs-recheck'));
    await node.find('obs-recheck');
    await base.disable('obs-recheck', new Date());
    expect([...(await node.activeAmong(['obs-recheck', 'obs-2']))]).to.deep.equal(['obs-2']);
    expect(node.isCached('obs-recheck')).to.equal(false);
  });

  it('with MQTT_IDENTITY_CACHE_MAX 0, or once closed, every lookup reads the store', async function () {
    const off = await cached({ maxEntries: 0 });
    const find = sinon.spy(base, 'find');
    await off.find('obs-3');
    await off.find('obs-3');
    const node = await cached();
    await node.find('obs-3');
    await node.close();
    expect((await node.find('obs-3'))?.id).to.equal('obs-3');
    expect(find.callCount).to.equal(4);
    expect(off.cachedCount + node.cachedCount).to.equal(0);
  });
});

describe('identity cache: Redis down', function () {
  this.timeout(30_000);

  it('reads the store while its invalidation channel is down, and starts empty once it is back', async function () {
    const mongo = await connectMongoose(uniqueDbName('identity-cache-down'));
    const base = createIdentityStore(mongo);
    await base.insert(record('obs-down'));
    // A Redis of its own, stopped and started again on the same port.
    let redisServer = await startRedis();
    const port = Number(new URL(redisServer.url).port);
    const client = new Redis(redisServer.url, {
      lazyConnect: true,
      enableOfflineQueue: false,
      maxRetriesPerRequest: 1,
    });
    client.on('error', () => undefined);
    await client.connect();
    const node = await createCachedIdentityStore({
      store: base,
      redis: client,
      redisKeyPrefix: 'down:',
      maxEntries: 100,
      ttlMs: 60_000,
      clock: systemClock,
      log: silent,
    });
    try {
      await node.find('obs-down');
      expect(node.isCached('obs-down')).to.equal(true);
      await redisServer.stop();
      await eventually('the cache notices its channel is gone', () => !node.isCached('obs-down'), 10_000, 50);
      const find = sinon.spy(base, 'find');
      expect((await node.find('obs-down'))?.id).to.equal('obs-down');
      expect((await node.find('obs-down'))?.id).to.equal('obs-down');
      expect(find.callCount, 'no invalidation can reach it: every lookup reads the store').to.equal(2);
      expect(node.cachedCount).to.equal(0);
      // A revocation published meanwhile is lost; the store has it, and the cache was bypassed.
      expect(await base.disable('obs-down', new Date())).to.equal(true);
      redisServer = await startRedis({ port });
      await eventually(
        'the cache is used again once resubscribed',
        async () => (await node.find('obs-down')) !== undefined && node.isCached('obs-down'),
        15_000,
        100,
      );
      expect((await node.find('obs-down'))?.disabled).to.equal(true);
    } finally {
      sinon.restore();
      await node.close();
      client.disconnect();
      await redisServer.stop();
      await mongo.dropDatabase();
      await mongo.close();
    }
  });
});

describe('identity cache: two cloud nodes (startCloud) sharing MongoDB and Redis', function () {
  this.timeout(60_000);
  let nodeA: RunningCloud;
  let nodeB: RunningCloud;
  let secret: string;

  before(async function () {
    const { mongoUrl, redisUrl } = testServices();
    const env = {
      MONGO_URL: `${mongoUrl}/${uniqueDbName('identity-cache-nodes')}`,
      REDIS_URL: redisUrl,
      // One deployment: both nodes share the prefix, as they share the database.
      REDIS_KEY_PREFIX: `test:${process.pid}:identity-cache-nodes:`,
      HTTP_PORT: '0',
      MQTT_TCP_PORT: '0',
      MQTT_TLS_PORT: '0',
      MQTT_CONNECT_LIMIT_PER_IP: '0',
      MQTT_IDENTITY_RECHECK_MS: '1000',
      SHUTDOWN_GRACE_MS: '2000',
    };
    const start = () => startCloud({ config: loadCloudConfig(env), log: silent, clock: systemClock });
    nodeA = await start();
    nodeB = await start();
    secret = (await addObserver({ store: nodeA.identities }, { id: 'ops', branches: ['demo'] })).secret;
  });
  after(async function () {
    await nodeB?.stop();
    await nodeA?.mongo.dropDatabase().catch(() => undefined);
    await nodeA?.stop();
  });

  it('refuses a revoked identity at its next CONNECT on both nodes and drops its live connections', async function () {
    const creds = (clientId: string) => ({ username: 'ops', password: secret, clientId });
    // Both nodes have the identity cached from a CONNECT, and node B holds a live connection.
    expect(await connackCode(nodeA.broker.tcp.url, creds('ops.a'))).to.equal(0);
    expect(await connackCode(nodeB.broker.tcp.url, creds('ops.b'))).to.equal(0);
    expect(nodeA.identities.isCached('ops') && nodeB.identities.isCached('ops')).to.equal(true);
    const live = await connectClient(nodeB.broker.tcp.url, creds('ops.live'));

    await revokeIdentity({ store: nodeA.identities }, 'ops');
    expect(await connackCode(nodeA.broker.tcp.url, creds('ops.a'))).to.equal(5);
    await eventually('node B hears of the revocation', () => !nodeB.identities.isCached('ops'), 5000, 20);
    expect(await connackCode(nodeB.broker.tcp.url, creds('ops.b'))).to.equal(5);
    // The live connection on node B goes at its recheck (MQTT_IDENTITY_RECHECK_MS).
    await closed(live);
  });
});
