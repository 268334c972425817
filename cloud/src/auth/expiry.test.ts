/**
 * Time-dependent rules, on a cloud with a manual clock (no fake timers: they would stall the MongoDB driver):
 * access-token expiry with its leeway, the refresh grace period's far side, and the lifetimes of mailed links.
 */
import { expect } from 'chai';
import { createManualClock, type ManualClock } from '../../../tools/runtime/clock.ts';
import { MAX_GRACE_USES } from './refresh-sessions.ts';
import {
  bearer,
  createTestAccount,
  postJson,
  startTestCloud,
  tokenFromEmail,
  type TestCloud,
} from '../../../test/helpers/accounts.ts';

const MINUTE = 60_000;

describe('token lifetimes (manual clock)', function () {
  this.timeout(30_000);
  let tc: TestCloud;
  let clock: ManualClock;

  before(async () => {
    clock = createManualClock(Date.now());
    tc = await startTestCloud({ dbPrefix: 'auth_expiry', clock });
  });
  after(() => tc?.stop());

  const me = (token: string) => fetch(`${tc.url}/api/auth/me`, { headers: bearer(token) });

  it('an access token lives 15 minutes, plus at most 30 s of leeway', async () => {
    const account = await createTestAccount(tc);
    clock.advance(15 * MINUTE + 20_000);
    expect((await me(account.accessToken)).status).to.equal(200);
    clock.advance(15_000);
    expect((await me(account.accessToken)).status).to.equal(401);
    // The refresh token still works and gives a fresh access token.
    const res = await postJson(
      tc,
      '/api/auth/refresh',
      { refreshToken: account.refreshToken },
      { 'User-Agent': 'nxg-test/1.0' },
    );
    expect(res.status).to.equal(200);
    const { accessToken } = (await res.json()) as { accessToken: string };
    expect((await me(accessToken)).status).to.equal(200);
  });

  it('stores refresh tokens for 7 days in Redis', async () => {
    const account = await createTestAccount(tc);
    const keys = await tc.redis.keys(`${tc.redisKeyPrefix}auth:fam:${account.sessionId}`);
    expect(keys).to.have.length(1);
    const ttl = await tc.redis.pttl(`auth:fam:${account.sessionId}`);
    expect(ttl).to.be.within(7 * 24 * 3600_000 - 60_000, 7 * 24 * 3600_000);
  });

  it('past the grace period, even the same device reusing its previous token revokes the family', async () => {
    const ua = { 'User-Agent': 'nxg-test/1.0' };
    const account = await createTestAccount(tc);
    const r2 = (await (await postJson(tc, '/api/auth/refresh', { refreshToken: account.refreshToken }, ua)).json()) as {
      refreshToken: string;
    };
    clock.advance(10_000);
    // Exactly at the edge (10 s): still inside.
    expect((await postJson(tc, '/api/auth/refresh', { refreshToken: account.refreshToken }, ua)).status).to.equal(200);
    clock.advance(1_000);
    expect((await postJson(tc, '/api/auth/refresh', { refreshToken: account.refreshToken }, ua)).status).to.equal(401);
    expect((await postJson(tc, '/api/auth/refresh', { refreshToken: r2.refreshToken }, ua)).status).to.equal(401);
    const reuse = await tc.mongo
      .collection('audit_log')
      .countDocuments({ action: 'refresh_reuse_detected', actor: account.userId });
    expect(reuse).to.equal(1);
  });

  it('a spent token may be retried within the grace period only a few times; then it is reuse', async () => {
    const ua = { 'User-Agent': 'nxg-test/1.0' };
    const account = await createTestAccount(tc);
    const refresh = (refreshToken: string) => postJson(tc, '/api/auth/refresh', { refreshToken }, ua);
    const r2 = (await (await refresh(account.refreshToken)).json()) as { refreshToken: string };
    for (let i = 0; i < MAX_GRACE_USES; i++) expect((await refresh(account.refreshToken)).status).to.equal(200);
    expect((await refresh(account.refreshToken)).status).to.equal(401);
    expect((await refresh(r2.refreshToken)).status, 'family revoked').to.equal(401);
  });

  it('ends a login session 30 days after the login, however often it was refreshed', async () => {
    const ua = { 'User-Agent': 'nxg-test/1.0' };
    const account = await createTestAccount(tc);
    let token = account.refreshToken;
    for (let day = 0; day < 6; day++) {
      clock.advance(5 * 24 * 60 * MINUTE); // within the 7-day refresh lifetime each time
      const res = await postJson(tc, '/api/auth/refresh', { refreshToken: token }, ua);
      expect(res.status, `day ${(day + 1) * 5}`).to.equal(200);
      token = ((await res.json()) as { refreshToken: string }).refreshToken;
    }
    clock.advance(1 * 24 * 60 * MINUTE); // day 31
    expect((await postJson(tc, '/api/auth/refresh', { refreshToken: token }, ua)).status).to.equal(401);
    expect(await tc.redis.exists(`auth:fam:${account.sessionId}`), 'session removed').to.equal(0);
  });

  it('a verification link expires after 48 hours', async () => {
    const pending = await createTestAccount(tc, { verified: false });
    const token = await tokenFromEmail(tc, pending.email, 'verify-email');
    clock.advance(48 * 60 * MINUTE + 1000);
    expect((await postJson(tc, '/api/auth/verify-email', { token })).status).to.equal(400);
  });

  it('a reset link expires after 30 minutes; a fresh one works', async () => {
    const account = await createTestAccount(tc);
    expect((await postJson(tc, '/api/auth/forgot', { email: account.email })).status).to.equal(202);
    const first = await tokenFromEmail(tc, account.email, 'reset-password');
    clock.advance(30 * MINUTE + 1000);
    const password = 'a brand new passphrase 42';
    expect((await postJson(tc, '/api/auth/reset', { token: first, password })).status).to.equal(400);

    const before = tc.mail.messages().length;
    expect((await postJson(tc, '/api/auth/forgot', { email: account.email })).status).to.equal(202);
    const second = await tc.mail.waitFor(
      (m) => m.to.includes(account.email) && /Reset/.test(m.subject) && tc.mail.messages().indexOf(m) >= before,
    );
    const token = new URLSearchParams(second.text.match(/#token=([A-Za-z0-9_-]+)/)![0].slice(1)).get('token')!;
    expect((await postJson(tc, '/api/auth/reset', { token, password })).status).to.equal(204);
    expect((await postJson(tc, '/api/auth/login', { email: account.email, password })).status).to.equal(200);
  });
});
