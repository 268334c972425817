/**
 * RELIABILITY (c) 1–3: forged, expired, mis-addressed and revoked access tokens are refused with 401, and the guard's
 * status/role rules, on a real cloud.
 */
import { createPrivateKey, createPublicKey, generateKeyPairSync, randomUUID } from 'node:crypto';
import { expect } from 'chai';
import jwt from 'jsonwebtoken';
import { pino } from 'pino';
import * as v from 'valibot';
import {
  bearer,
  createTestAccount,
  startTestCloud,
  type TestAccount,
  type TestCloud,
} from '../../../test/helpers/accounts.ts';
import { createApp } from '../http/app.ts';
import { REFUSALS_AUDITED_PER_MINUTE } from './audit-throttle.ts';
import { defineRoute } from '../http/route.ts';
import { listen, type HttpServer } from '../http/server.ts';
import { createMetrics } from '../metrics/metrics.ts';

const b64 = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');

describe('access-token refusals (RELIABILITY c1–c3)', function () {
  this.timeout(30_000);
  let tc: TestCloud;
  let member: TestAccount;
  let claims: { sub: string; sid: string; iss: string; aud: string; exp: number; iat: number; jti: string };

  before(async () => {
    tc = await startTestCloud({ dbPrefix: 'auth_tokens' });
    member = await createTestAccount(tc);
    const now = Math.floor(Date.now() / 1000);
    claims = {
      sub: member.userId,
      sid: member.sessionId,
      iss: 'nxg',
      aud: 'nxg-api',
      iat: now,
      exp: now + 600,
      jti: randomUUID(),
    };
  });
  after(() => tc?.stop());

  const me = (token: string) => fetch(`${tc.url}/api/auth/me`, { headers: { Authorization: `Bearer ${token}` } });
  const signed = (payload: object, header: object = {}) =>
    jwt.sign(payload, tc.auth.keyring.signing.privateKey, {
      algorithm: 'ES256',
      header: { alg: 'ES256', typ: 'at+jwt', kid: tc.auth.keyring.signing.kid, ...header },
    });

  async function expectRefused(token: string, reason: string) {
    const res = await me(token);
    expect(res.status, reason).to.equal(401);
    expect(res.headers.get('www-authenticate')).to.equal('Bearer');
    expect(res.headers.get('content-type')).to.match(/^application\/problem\+json/);
    const body = await res.text();
    expect(body).to.not.match(/at .*\.ts:\d+/); // no stack trace
    const entries = await tc.mongo
      .collection('audit_log')
      .find({ action: 'token_refused', 'details.reason': reason })
      .toArray();
    expect(entries.length, `audited as ${reason}`).to.be.greaterThan(0);
  }

  it('accepts a correctly signed token (the control case)', async () => {
    expect((await me(signed(claims))).status).to.equal(200);
    expect((await me(member.accessToken)).status).to.equal(200);
    const lower = await fetch(`${tc.url}/api/auth/me`, { headers: { Authorization: `bearer ${member.accessToken}` } });
    expect(lower.status, 'the scheme name is case-insensitive').to.equal(200);
  });

  it('refuses alg "none"', async () => {
    await expectRefused(`${b64({ alg: 'none', typ: 'JWT' })}.${b64(claims)}.`, 'wrong-algorithm');
  });

  it('refuses HS256 signed with the public key as the HMAC secret (CVE-2022-23541)', async () => {
    const publicPem = createPublicKey(tc.auth.keyring.signing.privateKey).export({ format: 'pem', type: 'spki' });
    const forged = jwt.sign(claims, publicPem, {
      algorithm: 'HS256',
      header: { alg: 'HS256', typ: 'at+jwt', kid: tc.auth.keyring.signing.kid },
    });
    await expectRefused(forged, 'wrong-algorithm');
  });

  it('refuses a path-like kid and an unknown kid', async () => {
    await expectRefused(signed(claims, { kid: '../../../../dev/null' }), 'unknown-key');
    await expectRefused(signed(claims, { kid: 'not-a-key-we-hold' }), 'unknown-key');
  });

  it('refuses a token signed by another key under our kid', async () => {
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const forged = jwt.sign(claims, privateKey, {
      algorithm: 'ES256',
      header: { alg: 'ES256', typ: 'at+jwt', kid: tc.auth.keyring.signing.kid },
    });
    await expectRefused(forged, 'bad-signature');
  });

  it('refuses an expired token (exp = now-60), accepting ≤ 30 s of clock skew', async () => {
    const now = Math.floor(Date.now() / 1000);
    await expectRefused(signed({ ...claims, iat: now - 1000, exp: now - 60 }), 'expired');
    expect((await me(signed({ ...claims, iat: now - 1000, exp: now - 20 }))).status, 'within the leeway').to.equal(200);
  });

  it('refuses a wrong audience and a wrong issuer', async () => {
    await expectRefused(signed({ ...claims, aud: 'other' }), 'wrong-audience');
    await expectRefused(signed({ ...claims, iss: 'someone-else' }), 'wrong-issuer');
  });

  it('refuses a JWT that is not an access token (typ) and claims of the wrong shape', async () => {
    await expectRefused(signed(claims, { typ: 'JWT' }), 'wrong-type');
    await expectRefused(signed({ ...claims, sub: { $ne: null } }), 'bad-claims');
  });

  it('refuses the refresh token presented as a bearer token, and garbage', async () => {
    await expectRefused(member.refreshToken, 'malformed');
    await expectRefused('a.b.c', 'malformed');
    const res = await fetch(`${tc.url}/api/auth/me`, { headers: { Authorization: `Basic ${member.accessToken}` } });
    expect(res.status).to.equal(401);
  });

  it('refuses a well-signed token whose session was revoked, and one of a deleted account', async () => {
    await expectRefused(signed({ ...claims, sid: 'A'.repeat(22) }), 'session-ended');
    const other = await createTestAccount(tc);
    const token = other.accessToken;
    await tc.auth.deleteAccount(other.userId);
    expect((await me(token)).status).to.equal(401);
  });

  it('accepts tokens of a retired key kept as verify-only (key rotation)', async () => {
    const { loadKeyring } = await import('./keyring.ts');
    const { mkdtemp, writeFile, rm } = await import('node:fs/promises');
    const os = await import('node:os');
    const path = await import('node:path');
    const dir = await mkdtemp(path.join(os.tmpdir(), 'nxg-rotation-'));
    try {
      const { privateKey: newKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
      const newFile = path.join(dir, 'new.pem');
      const oldFile = path.join(dir, 'old.pub.pem');
      await writeFile(newFile, newKey.export({ format: 'pem', type: 'pkcs8' }));
      await writeFile(
        oldFile,
        createPublicKey(tc.auth.keyring.signing.privateKey).export({ format: 'pem', type: 'spki' }),
      );
      const ring = await loadKeyring({
        signingKeyFile: newFile,
        verifyKeyFiles: [oldFile],
        devKeyDir: dir,
        allowDevKey: false,
        log: pino({ level: 'silent' }),
      });
      expect(ring.signing.kid).to.not.equal(tc.auth.keyring.signing.kid);
      expect(ring.verifyKey(tc.auth.keyring.signing.kid), 'old key still verifies').to.not.equal(undefined);
      expect(ring.jwks().keys.map((k) => k.kid)).to.deep.equal([ring.signing.kid, tc.auth.keyring.signing.kid]);
      expect(createPrivateKey(newKey.export({ format: 'pem', type: 'pkcs8' })).asymmetricKeyType).to.equal('ec');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('audits a flood of bad tokens from one address at a bounded rate (and still refuses every one)', async () => {
    const audited = () => tc.mongo.collection('audit_log').countDocuments({ action: 'token_refused' });
    const before = await audited();
    const statuses = await Promise.all(Array.from({ length: 60 }, () => me('a.b.c').then((res) => res.status)));
    expect(new Set(statuses)).to.deep.equal(new Set([401]));
    expect((await audited()) - before).to.be.at.most(REFUSALS_AUDITED_PER_MINUTE);
  });

  it('audits a flood of refused requests of a suspended account at a bounded rate (and refuses every one)', async () => {
    const suspended = await createTestAccount(tc, { status: 'suspended' });
    const statuses = await Promise.all(
      Array.from({ length: 60 }, () =>
        fetch(`${tc.url}/api/users/sessions`, { headers: { Authorization: `Bearer ${suspended.accessToken}` } }).then(
          (res) => res.status,
        ),
      ),
    );
    expect(new Set(statuses)).to.deep.equal(new Set([403]));
    const audited = await tc.mongo
      .collection('audit_log')
      .countDocuments({ action: 'access_denied', actor: suspended.userId });
    expect(audited).to.be.within(1, REFUSALS_AUDITED_PER_MINUTE);
  });

  describe('requireUser options on a route of another domain', () => {
    let http: HttpServer;
    let base: string;

    before(async () => {
      const ok = v.object({ userId: v.string() });
      const route = (path: string, options: Parameters<TestCloud['auth']['requireUser']>[0]) =>
        defineRoute({
          method: 'get',
          path,
          summary: path,
          tags: ['test'],
          security: [{ bearer: [] }],
          guards: [tc.auth.requireUser(options)],
          responses: { 200: { description: 'ok', schema: ok } },
          handler: (ctx) => ({ status: 200, body: { userId: ctx.state.user!.id } }),
        });
      const app = createApp({
        config: { corsOrigins: [], trustProxy: false, jsonLimitBytes: 1024 },
        log: pino({ level: 'silent' }),
        metrics: createMetrics({ defaultMetrics: false }),
        version: 'test',
        routes: [route('/api/test/verified', { verified: true }), route('/api/test/admin', { roles: ['admin'] })],
      });
      http = await listen(app, { host: '127.0.0.1', port: 0, requestTimeoutMs: 5000 });
      base = http.url;
    });
    after(() => http?.close(1000));

    it('lets a verified member through verified routes and keeps a pending one out with 403', async () => {
      const verified = await createTestAccount(tc);
      const pending = await createTestAccount(tc, { verified: false });
      expect((await fetch(`${base}/api/test/verified`, { headers: bearer(verified.accessToken) })).status).to.equal(
        200,
      );
      const res = await fetch(`${base}/api/test/verified`, { headers: bearer(pending.accessToken) });
      expect(res.status).to.equal(403);
      expect(((await res.json()) as { type: string }).type).to.equal('/problems/email-not-verified');
    });

    it('enforces roles, re-reading the account on each request (a promotion applies at once)', async () => {
      const account = await createTestAccount(tc);
      const res = await fetch(`${base}/api/test/admin`, { headers: bearer(account.accessToken) });
      expect(res.status).to.equal(403);
      const denied = await tc.mongo.collection('audit_log').findOne({ action: 'access_denied', actor: account.userId });
      expect(denied).to.include({ result: 'refused', target: 'GET /api/test/admin' });
      await tc.auth.accounts.setRole(account.userId, 'admin');
      const promoted = await fetch(`${base}/api/test/admin`, { headers: bearer(account.accessToken) });
      expect(promoted.status).to.equal(200);
      expect(await promoted.json()).to.deep.equal({ userId: account.userId });
      const admin = await createTestAccount(tc, { role: 'admin' });
      expect((await fetch(`${base}/api/test/admin`, { headers: bearer(admin.accessToken) })).status).to.equal(200);
    });
  });
});
