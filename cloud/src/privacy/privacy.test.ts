import { expect } from 'chai';
import type { Redis } from 'ioredis';
import {
  createTestAccount,
  postJson,
  startTestCloud,
  type TestAccount,
  type TestCloud,
} from '../../../test/helpers/accounts.ts';
import { call } from '../../../test/helpers/users-api.ts';
import { testFieldKeys } from '../../../test/helpers/users-api.ts';
import { createPrivacyRegistry } from './registry.ts';

type Json = Record<string, unknown>;

/** Every key under the prefix, with its value flattened to text (whatever the type). */
async function redisDump(redis: Redis, prefix: string): Promise<{ key: string; value: string }[]> {
  const out: { key: string; value: string }[] = [];
  let cursor = '0';
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 500);
    cursor = next;
    for (const full of keys) {
      const key = full.slice(prefix.length);
      const type = await redis.type(key);
      let value = '';
      if (type === 'string') value = (await redis.get(key)) ?? '';
      else if (type === 'hash') value = JSON.stringify(await redis.hgetall(key));
      else if (type === 'set') value = JSON.stringify(await redis.smembers(key));
      else if (type === 'zset') value = JSON.stringify(await redis.zrange(key, 0, -1));
      else if (type === 'list') value = JSON.stringify(await redis.lrange(key, 0, -1));
      out.push({ key, value });
    }
  } while (cursor !== '0');
  return out;
}

describe('GDPR export and deletion (P1; real cloud, MongoDB-compatible server, Redis)', function () {
  this.timeout(60_000);
  let tc: TestCloud;
  const hookCalls: { userId: string; pseudonym: string }[] = [];
  let failNextHook = false;
  const api = <T = Json>(method: string, path: string, token?: string, body?: unknown) =>
    call<T>(tc.url, method, path, token, body);

  before(async () => {
    tc = await startTestCloud({ dbPrefix: 'privacy', env: testFieldKeys().env });
    // Stands in for a later part (object storage): its own collection, erased by its hook.
    tc.users.privacy.registerDeletionHook('test.objectStore', async (userId, { pseudonym }) => {
      hookCalls.push({ userId, pseudonym });
      if (failNextHook) {
        failNextHook = false;
        throw new Error('object store unreachable');
      }
      await tc.mongo.collection('test_objects').deleteMany({ owner: userId });
    });
  });
  after(() => tc?.stop());

  /** A member with data in every collection, two login sessions and Redis keys. */
  async function memberWithEverything(): Promise<TestAccount & { secondRefresh: string }> {
    const m = await createTestAccount(tc);
    const second = (await (
      await postJson(tc, '/api/auth/login', { email: m.email, password: m.password }, { 'User-Agent': 'tablet/2.0' })
    ).json()) as Json;
    const ok = async (method: string, path: string, body?: unknown) => {
      const res = await api(method, path, m.accessToken, body);
      expect(res.status, `${method} ${path}: ${JSON.stringify(res.body)}`).to.be.below(300);
    };
    await ok('PUT', '/api/users/profile', {
      firstName: 'Zed',
      lastName: 'Erasure',
      dateOfBirth: '1980-05-05',
      sex: 'male',
    });
    await ok('PUT', '/api/users/body-metrics', {
      measurements: { weightKg: 91.5, heightCm: 183 },
      fitness: { healthConditions: ['MARKER-erase-me'], goal: 'maintain' },
      diet: { allergies: ['lactose'] },
    });
    await ok('PUT', '/api/users/body-metrics', { measuredAt: '2026-01-01T08:00:00Z', measurements: { weightKg: 95 } });
    await ok('PUT', '/api/users/preferences', { units: 'imperial' });
    await ok('PUT', '/api/users/privacy', { leaderboards: 'visible' });
    await ok('POST', '/api/users/devices', { platform: 'android', token: `token-${m.userId}` });
    await ok('POST', '/api/users/feedback', { category: 'praise', message: 'great gym' });
    await ok('POST', '/api/users/activity', { events: [{ type: 'app_open' }, { type: 'feature_used', feature: 'x' }] });
    await tc.users.services.memberships.join(m.userId, 'demo'); // granted by the gym (staff/admin)
    await tc.mongo.collection('test_objects').insertOne({ owner: m.userId, key: `avatars/${m.userId}.png` });
    return { ...m, secondRefresh: second.refreshToken as string };
  }

  it('exports every kind of the member’s data, health values decrypted, no password hash', async () => {
    const m = await memberWithEverything();
    // An entry about the member written by someone else (an administrator, from their own address and browser).
    await tc.auth.audit.record({
      actor: '0123456789abcdef01234567',
      action: 'account_suspended',
      target: m.userId,
      ip: '198.51.100.77',
      result: 'success',
      details: { reason: 'test', userAgent: 'admin-console/1.0' },
    });
    const res = await api<Json>('GET', '/api/users/export', m.accessToken);
    expect(res.status).to.equal(200);
    expect(res.headers.get('content-disposition')).to.match(/^attachment; filename="nxg-export-/);
    expect(res.headers.get('cache-control')).to.equal('no-store');
    const e = res.body;
    expect(e).to.include({ format: 'nxg-member-export-v1', userId: m.userId });
    expect(e.account).to.include({ _id: m.userId, email: m.email, role: 'member' });
    expect(JSON.stringify(e)).to.not.match(/passwordHash|argon2/);
    expect(e.profile).to.include({ firstName: 'Zed', lastName: 'Erasure', dateOfBirth: '1980-05-05' });
    expect(e.preferences).to.include({ units: 'imperial' });
    expect(e.privacy).to.include({ leaderboards: 'visible' });
    const body = e.bodyMetrics as { current: Json; history: Json[] };
    expect(body.current.fitness).to.deep.include({ healthConditions: ['MARKER-erase-me'] });
    expect(body.current.measurements).to.include({ weightKg: 91.5 });
    expect(body.history.map((h) => (h.measurements as Json).weightKg)).to.deep.equal([91.5, 95]);
    expect(e.activity).to.have.length(2);
    expect(e.devices).to.have.length(1);
    expect((e.devices as Json[])[0]).to.include({ token: `token-${m.userId}` });
    expect(e.feedback).to.have.length(1);
    expect(e.branchMemberships).to.deep.equal([
      {
        branchId: 'demo',
        status: 'active',
        joinedAt: (e.branchMemberships as Json[])[0]!.joinedAt,
        requestedAt: null,
        validUntil: null,
      },
    ]);
    expect(e.loginSessions).to.have.length(2);
    expect((e.auditEntries as Json[]).map((a) => a.action)).to.include('login');
    const own = (e.auditEntries as Json[]).find((a) => a.action === 'login')!;
    expect(own).to.include({ actor: m.userId, ip: '127.0.0.1' });
    // Other people's identifiers are theirs, not the member's (GDPR Art. 15(4)): who, from where, with what go.
    const byOther = (e.auditEntries as Json[]).find((a) => a.action === 'account_suspended')!;
    expect(byOther).to.include({ actor: null, target: m.userId, ip: null });
    expect(byOther.details).to.deep.equal({ reason: 'test' });
    expect(JSON.stringify(e)).to.not.include('198.51.100.77').and.not.include('0123456789abcdef01234567');

    // Completeness: every document of any collection that carries the member's id is in some section.
    const exported = JSON.stringify(e);
    for (const { name } of await tc.mongo.db!.listCollections().toArray()) {
      if (['audit_log', 'test_objects'].includes(name)) continue;
      const docs = await tc.mongo.db!.collection(name).find({}).toArray();
      for (const doc of docs.filter((d) => JSON.stringify(d).includes(m.userId))) {
        if (name === 'accounts' || name === 'user_profiles' || name === 'user_settings' || name === 'body_profiles')
          continue;
        const id = String(doc._id);
        expect(exported.includes(id) || name === 'branch_memberships', `${name} ${id} exported`).to.equal(true);
      }
    }
  });

  it('DELETE /api/users/account erases the member everywhere but a pseudonymised audit, revokes tokens, runs hooks', async () => {
    const m = await memberWithEverything();
    const other = await memberWithEverything();
    hookCalls.length = 0;

    const res = await api('DELETE', '/api/users/account', m.accessToken);
    expect(res.status).to.equal(204);
    const pseudonym = tc.users.privacy.pseudonym(m.userId);
    expect(hookCalls).to.deep.equal([{ userId: m.userId, pseudonym }]);

    // MongoDB: no document in any collection mentions the member's id or email — except the audit log's pseudonym.
    for (const { name } of await tc.mongo.db!.listCollections().toArray()) {
      const docs = await tc.mongo.db!.collection(name).find({}).toArray();
      const mentions = docs.filter((d) => {
        const text = JSON.stringify(d);
        return text.includes(m.userId) || text.includes(m.email);
      });
      expect(mentions, `${name} still mentions the member`).to.deep.equal([]);
      for (const field of ['userId', '_id', 'actor', 'target', 'owner']) {
        expect(await tc.mongo.db!.collection(name).countDocuments({ [field]: m.userId }), `${name}.${field}`).to.equal(
          0,
        );
      }
    }
    const audit = await tc.mongo
      .collection<{ action: string; actor: string; target: string; ip: string | null; details?: Json }>('audit_log')
      .find({ $or: [{ actor: pseudonym }, { target: pseudonym }] })
      .toArray();
    expect(audit.map((entry) => entry.action)).to.include.members([
      'member_data_erased',
      'account_deleted',
      'login',
      'register',
    ]);
    expect(audit.find((entry) => entry.action === 'member_data_erased')).to.include({
      actor: pseudonym,
      target: pseudonym,
      result: 'success',
    });
    // Pseudonymised means no address or user agent either.
    expect(audit.filter((entry) => entry.ip !== null || entry.details?.userAgent !== undefined)).to.deep.equal([]);

    // Redis: no key names the member, no value holds their id.
    const keys = await redisDump(tc.redis, tc.redisKeyPrefix);
    const left = keys.filter(({ key, value }) => `${key} ${value}`.includes(m.userId) || key.includes(m.email));
    expect(left).to.deep.equal([]);

    // Tokens: refresh (both sessions) and access answer 401.
    for (const refreshToken of [m.refreshToken, m.secondRefresh]) {
      expect((await postJson(tc, '/api/auth/refresh', { refreshToken })).status).to.equal(401);
    }
    expect((await api('GET', '/api/users/profile', m.accessToken)).status).to.equal(401);
    expect((await postJson(tc, '/api/auth/login', { email: m.email, password: m.password })).status).to.equal(401);

    // Tombstoned: a record that arrives later (a gateway's offline queue) is recognised and not resurrected.
    expect(await tc.users.privacy.isDeleted(m.userId)).to.equal(true);
    expect(await tc.users.privacy.isDeleted(other.userId)).to.equal(false);

    // The other member is untouched.
    expect((await api<Json>('GET', '/api/users/profile', other.accessToken)).body).to.include({ firstName: 'Zed' });
    expect((await api<Json>('GET', '/api/users/export', other.accessToken)).body.devices).to.have.length(1);
    expect(await tc.mongo.collection('test_objects').countDocuments({ owner: other.userId })).to.equal(1);
  });

  it('keeps a deletion pending (202) while a hook fails, without the id in clear, and completes it on retry', async () => {
    const m = await memberWithEverything();
    hookCalls.length = 0;
    failNextHook = true;
    const res = await api<Json>('DELETE', '/api/users/account', m.accessToken);
    expect(res.status).to.equal(202);
    expect(res.body).to.deep.equal({ status: 'pending', pendingHooks: ['test.objectStore'] });
    // Everything else is gone already; the object store still holds the member's object.
    expect((await api('GET', '/api/users/profile', m.accessToken)).status).to.equal(401);
    expect(await tc.mongo.collection('user_profiles').countDocuments({ _id: m.userId as never })).to.equal(0);
    expect(await tc.mongo.collection('test_objects').countDocuments({ owner: m.userId })).to.equal(1);
    const pending = await tc.mongo.collection('deletion_requests').find({ completedAt: null }).toArray();
    expect(pending).to.have.length(1);
    expect(JSON.stringify(pending)).to.not.include(m.userId);

    // Another request, sealed with a key this cloud no longer has: reported and left, never blocking the others.
    const stranded = {
      _id: 'f'.repeat(64),
      sealed: { userId: { v: 1, kid: 'retired', iv: 'AAAAAAAAAAAAAAAA', ct: 'AA==', tag: 'A'.repeat(22) + '==' } },
      pendingHooks: ['test.objectStore'],
      requestedAt: new Date(),
      completedAt: null,
    };
    await tc.mongo.collection('deletion_requests').insertOne(stranded as never);
    expect(await tc.users.privacy.retryPending()).to.deep.equal({ completed: 1, stillPending: 1 });
    await tc.mongo.collection('deletion_requests').deleteOne({ _id: stranded._id as never });
    expect(hookCalls.map((c) => c.userId)).to.deep.equal([m.userId, m.userId]);
    expect(await tc.mongo.collection('test_objects').countDocuments({ owner: m.userId })).to.equal(0);
    const done = await tc.mongo.collection('deletion_requests').findOne({ _id: pending[0]!._id });
    expect(done).to.not.have.property('sealed');
    expect(done!.completedAt).to.be.instanceOf(Date);
    expect(await tc.users.privacy.retryPending()).to.deep.equal({ completed: 0, stillPending: 0 });
  });

  it('lets the address sign up again as a new member, with none of the old data', async () => {
    const m = await memberWithEverything();
    expect((await api('DELETE', '/api/users/account', m.accessToken)).status).to.equal(204);
    // Unverified: the capture still holds the first verification email to this address.
    const again = await createTestAccount(tc, { email: m.email, verified: false });
    expect(again.userId).to.not.equal(m.userId);
    const profile = await api<Json>('GET', '/api/users/profile', again.accessToken);
    expect(profile.body).to.include({ firstName: null, email: m.email });
    expect((await api<Json>('GET', '/api/users/body-metrics', again.accessToken)).body.measurements).to.deep.equal({});
    expect(await tc.users.privacy.isDeleted(again.userId)).to.equal(false);
  });

  it('refuses a second hook or export section with the same name, and names outside the pattern', () => {
    const registry = createPrivacyRegistry();
    registry.registerDeletionHook('storage', () => Promise.resolve());
    expect(() => registry.registerDeletionHook('storage', () => Promise.resolve())).to.throw(/already registered/);
    expect(() => registry.registerExportSection('Bad Name', () => Promise.resolve())).to.throw(/expected/);
    expect([...registry.deletionHooks().keys()]).to.deep.equal(['storage']);
  });
});
