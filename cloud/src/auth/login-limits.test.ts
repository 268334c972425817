/**
 * RELIABILITY (c) 5 and C3: failed-login limits before any hashing, X-Forwarded-For ignored without a trusted proxy,
 * no enumeration, and login failing closed (503 within a second) while Redis is down.
 */
import { expect } from 'chai';
import { startRedis, type RedisService } from '../../../tools/services/index.ts';
import { createTestAccount, postJson, startTestCloud, type TestCloud } from '../../../test/helpers/accounts.ts';

interface Problem {
  type: string;
  status: number;
  detail: string;
}

let n = 0;
const unknownEmail = () => `nobody-${process.pid}-${++n}@nxg.test`;

describe('login limits (RELIABILITY c5, C3)', function () {
  this.timeout(30_000);

  describe('per account and per address', () => {
    let tc: TestCloud;
    before(async () => {
      tc = await startTestCloud({ dbPrefix: 'auth_limits', env: { AUTH_LOGIN_IP_FAILURES: '12' } });
    });
    after(() => tc?.stop());

    const login = (email: string, password: string, headers: Record<string, string> = {}) =>
      postJson(tc, '/api/auth/login', { email, password }, headers);

    it('5 failures → 401 each; the 6th, with the right password, → 429 with Retry-After; forged X-Forwarded-For too', async () => {
      const account = await createTestAccount(tc);
      for (let i = 0; i < 5; i++)
        expect((await login(account.email, 'wrong password!!')).status, `attempt ${i + 1}`).to.equal(401);
      const sixth = await login(account.email, account.password);
      expect(sixth.status).to.equal(429);
      const retryAfter = Number(sixth.headers.get('retry-after'));
      expect(retryAfter).to.be.within(1, 900);
      expect(((await sixth.json()) as Problem).type).to.equal('/problems/too-many-requests');
      const forged = await login(account.email, account.password, { 'X-Forwarded-For': '203.0.113.9' });
      expect(forged.status, 'XFF is not trusted without TRUST_PROXY').to.equal(429);
      const locked = await tc.mongo
        .collection('audit_log')
        .find({ action: 'account_locked', target: account.userId })
        .toArray();
      expect(locked).to.have.length(1);
      expect(
        await tc.mongo.collection('audit_log').countDocuments({ action: 'login_locked', target: account.email }),
      ).to.equal(2);
      expect(await tc.redis.keys(`${tc.redisKeyPrefix}*${account.email}*`), 'limiter keys name no email').to.deep.equal(
        [],
      );
      await tc.auth.deleteAccount(account.userId); // also clears its limiter key
      expect(await tc.redis.keys(`${tc.redisKeyPrefix}auth:login:acct*`)).to.deep.equal([]);
    });

    it('locks unknown emails the same way (a lockout tells nothing about existence)', async () => {
      const email = unknownEmail();
      for (let i = 0; i < 5; i++) expect((await login(email, 'wrong password!!')).status).to.equal(401);
      expect((await login(email, 'wrong password!!')).status).to.equal(429);
    });

    it('answers an unknown email like a wrong password, in body and (roughly) in time: argon2 runs for both', async () => {
      const accounts = [await createTestAccount(tc), await createTestAccount(tc)];
      const statuses = new Set<number>();
      const timed = async (email: string) => {
        const started = performance.now();
        statuses.add((await login(email, 'wrong password!!')).status);
        return performance.now() - started;
      };
      await timed(unknownEmail()); // warm-up
      // Interleaved, so load from other processes on this machine falls on both alike.
      const wrong: number[] = [];
      const unknown: number[] = [];
      for (let i = 0; i < 8; i++) {
        await tc.redis.del('auth:login:ip:127.0.0.1'); // this address's budget is small here
        wrong.push(await timed(accounts[i % 2]!.email));
        unknown.push(await timed(unknownEmail()));
      }
      expect([...statuses]).to.deep.equal([401]);
      const median = (samples: number[]) => [...samples].sort((a, b) => a - b)[samples.length / 2]!;
      // Both include one argon2 verify (≈ 30 ms); without the dummy verify, unknown would take a few ms.
      const [w, u] = [median(wrong), median(unknown)];
      expect(u / w, `unknown ${u.toFixed(1)} ms vs wrong ${w.toFixed(1)} ms`).to.be.within(0.5, 2);
      for (const account of accounts) await tc.auth.deleteAccount(account.userId);
      await tc.redis.del('auth:login:ip:127.0.0.1');
    });

    it('spends the per-address budget on failures only: successful logins do not count', async () => {
      await tc.redis.del('auth:login:ip:127.0.0.1');
      const account = await createTestAccount(tc);
      for (let i = 0; i < 15; i++) expect((await login(account.email, account.password)).status).to.equal(200);
      // 12 failures across different emails from one address, then that address is limited for everyone.
      for (let i = 0; i < 12; i++) expect((await login(unknownEmail(), 'wrong password!!')).status).to.equal(401);
      const limited = await login(account.email, account.password, { 'X-Forwarded-For': '198.51.100.7' });
      expect(limited.status).to.equal(429);
      expect(Number(limited.headers.get('retry-after'))).to.be.within(1, 900);
      await tc.redis.del('auth:login:ip:127.0.0.1');
      expect((await login(account.email, account.password)).status).to.equal(200);
    });
  });

  describe('behind a trusted proxy', () => {
    let tc: TestCloud;
    before(async () => {
      tc = await startTestCloud({ dbPrefix: 'auth_proxy', env: { TRUST_PROXY: 'true', AUTH_LOGIN_IP_FAILURES: '3' } });
    });
    after(() => tc?.stop());

    it('counts failures per client address from X-Forwarded-For, and records it', async () => {
      const account = await createTestAccount(tc);
      const from = (ip: string, password: string) =>
        postJson(tc, '/api/auth/login', { email: account.email, password }, { 'X-Forwarded-For': ip });
      for (let i = 0; i < 3; i++) expect((await from('203.0.113.1', 'wrong password!!')).status).to.equal(401);
      expect((await from('203.0.113.1', account.password)).status).to.equal(429);
      // Another member behind another address is not affected.
      expect((await from('203.0.113.2', account.password)).status).to.equal(200);
      const entry = await tc.mongo.collection('audit_log').findOne({ action: 'login_failed', target: account.userId });
      expect(entry!.ip).to.equal('203.0.113.1');
    });
  });

  describe('IPv6 clients behind a trusted proxy', () => {
    let tc: TestCloud;
    before(async () => {
      tc = await startTestCloud({ dbPrefix: 'auth_proxy6', env: { TRUST_PROXY: 'true', AUTH_LOGIN_IP_FAILURES: '3' } });
    });
    after(() => tc?.stop());

    it('counts an IPv6 client by its /64: rotating addresses within it does not buy more attempts', async () => {
      const account = await createTestAccount(tc);
      const from = (ip: string, password: string) =>
        postJson(tc, '/api/auth/login', { email: account.email, password }, { 'X-Forwarded-For': ip });
      // One client, three addresses of its /64 (privacy addresses change all the time).
      for (const ip of ['2001:db8:1:2::1', '2001:db8:1:2:aaaa::2', '2001:DB8:1:2:ffff:ffff:ffff:3']) {
        expect((await from(ip, 'wrong password!!')).status, ip).to.equal(401);
      }
      expect((await from('2001:db8:1:2::4', account.password)).status, 'same /64').to.equal(429);
      expect((await from('2001:db8:1:3::1', account.password)).status, 'another /64').to.equal(200);
      // An IPv4-mapped address is the IPv4 address it maps.
      for (let i = 0; i < 3; i++) expect((await from('::ffff:203.0.113.5', 'wrong password!!')).status).to.equal(401);
      expect((await from('203.0.113.5', account.password)).status).to.equal(429);
    });
  });

  describe('Redis down', () => {
    let redis: RedisService;
    let tc: TestCloud;
    before(async () => {
      redis = await startRedis();
      tc = await startTestCloud({ dbPrefix: 'auth_redis_down', env: { REDIS_URL: redis.url } });
    });
    after(async () => {
      await tc?.stop();
      await redis?.stop();
    });

    it('fails closed: login answers 503 within a second, and works again once Redis is back', async () => {
      const account = await createTestAccount(tc);
      const port = redis.port;
      await redis.stop();
      const started = performance.now();
      const res = await postJson(tc, '/api/auth/login', { email: account.email, password: account.password });
      const ms = performance.now() - started;
      expect(res.status).to.equal(503);
      expect(ms, `${ms.toFixed(0)} ms`).to.be.below(1000);
      expect(res.headers.get('retry-after')).to.match(/^\d+$/);
      expect(((await res.json()) as Problem).type).to.equal('/problems/service-unavailable');
      // Protected routes too: the revocation list cannot be checked.
      const me = await fetch(`${tc.url}/api/auth/me`, { headers: { Authorization: `Bearer ${account.accessToken}` } });
      expect(me.status).to.equal(503);

      redis = await startRedis({ port });
      const deadline = Date.now() + 10_000;
      while (tc.redis.status !== 'ready' && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      const again = await postJson(tc, '/api/auth/login', { email: account.email, password: account.password });
      expect(again.status).to.equal(200);
      // Redis restarted empty: the old refresh token is gone (documented: members log in again).
      expect((await postJson(tc, '/api/auth/refresh', { refreshToken: account.refreshToken })).status).to.equal(401);
    });
  });
});
