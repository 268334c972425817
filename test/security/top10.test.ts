/**
 * RELIABILITY.md (c): the ten refusals, with the exact requests and statuses, against a real cloud (real MongoDB
 * stand-in, Redis, SMTP capture) and accounts made through the API: members A and B and an admin. Every refusal
 * must be application/problem+json with no stack trace; authentication refusals must leave an audit entry.
 * Checks that need a route that does not exist yet test what exists (noted in place).
 */
import { createHmac, generateKeyPairSync, createPublicKey, type JsonWebKey } from 'node:crypto';
import { request } from 'node:http';
import { expect } from 'chai';
import jwt from 'jsonwebtoken';
import { closed, connectClient } from '../../cloud/src/broker/testing.ts';
import {
  bearer,
  createTestAccount,
  postJson,
  startTestCloud,
  type TestAccount,
  type TestCloud,
} from '../helpers/accounts.ts';

const ALLOWED_ORIGIN = 'https://app.nxg.test';

const b64url = (value: unknown) =>
  Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)).toString('base64url');

/** A problem document, and nothing that looks like a stack trace or a source path. */
async function expectProblem(res: Response, status: number, what: string): Promise<Record<string, unknown>> {
  const text = await res.text();
  expect(res.status, `${what}: ${text.slice(0, 300)}`).to.equal(status);
  expect(res.headers.get('content-type'), what).to.match(/^application\/problem\+json/);
  expect(text, what).to.not.match(/\n\s+at |node_modules|\.ts:\d+|Error:/);
  const problem = JSON.parse(text) as Record<string, unknown>;
  expect(problem, what).to.include({ status });
  expect(problem.requestId, what).to.be.a('string');
  return problem;
}

describe('security: the top 10 refusals (RELIABILITY c)', function () {
  this.timeout(60_000);
  let cloud: TestCloud;
  let a: TestAccount;
  let b: TestAccount;
  let admin: TestAccount;

  const get = (path: string, token?: string, headers: Record<string, string> = {}) =>
    fetch(`${cloud.url}${path}`, { headers: { ...(token ? { Authorization: `Bearer ${token}` } : {}), ...headers } });
  const audit = (filter: Record<string, unknown>) => cloud.mongo.collection('audit_log').find(filter).toArray();

  before(async () => {
    cloud = await startTestCloud({
      dbPrefix: 'top10',
      env: { CORS_ORIGINS: ALLOWED_ORIGIN, MQTT_TCP_PORT: '0', MQTT_TLS_PORT: '0' },
    });
    [a, b, admin] = await Promise.all([
      createTestAccount(cloud),
      createTestAccount(cloud),
      createTestAccount(cloud, { role: 'admin' }),
    ]);
  });
  after(() => cloud?.stop());

  describe('1. forged JWTs (alg none, HS256 with the public key, path-like and unknown kid)', () => {
    it('answers 401 to each, and audits the refusal', async () => {
      const real = jwt.decode(a.accessToken, { complete: true })!;
      const claims = {
        ...(real.payload as Record<string, unknown>),
        exp: Math.floor(Date.now() / 1000) + 600,
      };
      const typ = real.header.typ;
      const jwks = (await (await get('/.well-known/jwks.json')).json()) as { keys: (JsonWebKey & { kid: string })[] };
      const publicPem = createPublicKey({ key: jwks.keys[0]!, format: 'jwk' }).export({ type: 'spki', format: 'pem' });
      const hs256 = (header: Record<string, unknown>, secret: string | Buffer) => {
        const input = `${b64url(header)}.${b64url(claims)}`;
        return `${input}.${createHmac('sha256', secret).update(input).digest('base64url')}`;
      };
      const attackerKey = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
      const forged = {
        'alg none': `${b64url({ alg: 'none', typ: 'JWT' })}.${b64url(claims)}.`,
        'alg none, our typ and kid': `${b64url({ alg: 'none', typ, kid: real.header.kid })}.${b64url(claims)}.`,
        'HS256 keyed with the public key': hs256({ alg: 'HS256', typ, kid: real.header.kid }, String(publicPem)),
        'kid ../../../../dev/null (empty HMAC key)': hs256({ alg: 'HS256', typ, kid: '../../../../dev/null' }, ''),
        'unknown kid': jwt.sign(claims, attackerKey, {
          algorithm: 'ES256',
          header: { alg: 'ES256', typ, kid: 'k-attacker' },
        }),
        'our kid, signed by another key': jwt.sign(claims, attackerKey, {
          algorithm: 'ES256',
          header: { alg: 'ES256', typ, kid: real.header.kid },
        }),
      };
      for (const [what, token] of Object.entries(forged)) {
        const res = await get('/api/users/profile', token);
        await expectProblem(res, 401, what);
        expect(res.headers.get('www-authenticate'), what).to.match(/^Bearer/);
      }
      // Control: the unforged token passes, so the 401s above are about the forgeries.
      expect((await get('/api/users/profile', a.accessToken)).status).to.equal(200);
      const refusals = await audit({ action: 'token_refused', result: 'refused' });
      expect(refusals.length).to.be.at.least(Object.keys(forged).length);
    });
  });

  describe('2. expired, wrong audience, wrong token type', () => {
    it('answers 401 to a correctly signed token with exp = now-60, aud "other", or the refresh token as Bearer', async () => {
      const real = jwt.decode(a.accessToken, { complete: true })!;
      const claims = real.payload as Record<string, unknown>;
      const { kid, privateKey } = cloud.auth.keyring.signing;
      const sign = (payload: Record<string, unknown>) =>
        jwt.sign(payload, privateKey, { algorithm: 'ES256', header: { alg: 'ES256', typ: real.header.typ, kid } });
      const now = Math.floor(Date.now() / 1000);
      // Control: our own signing of valid claims is accepted.
      expect((await get('/api/users/profile', sign({ ...claims, iat: now, exp: now + 600 }))).status).to.equal(200);
      await expectProblem(
        await get('/api/users/profile', sign({ ...claims, iat: now - 1000, exp: now - 60 })),
        401,
        'expired',
      );
      await expectProblem(
        await get('/api/users/profile', sign({ ...claims, iat: now, exp: now + 600, aud: 'other' })),
        401,
        'aud other',
      );
      await expectProblem(await get('/api/users/profile', a.refreshToken), 401, 'refresh token as Bearer');
      const header = { ...real.header, typ: 'JWT' };
      await expectProblem(
        await get(
          '/api/users/profile',
          jwt.sign({ ...claims, iat: now, exp: now + 600 }, privateKey, { algorithm: 'ES256', header }),
        ),
        401,
        'typ JWT instead of the access-token type',
      );
    });
  });

  describe('3. revocation after logout', () => {
    it('answers 401 with the access token right after logout, and drops its MQTT-over-WebSocket connection', async () => {
      const d = await createTestAccount(cloud);
      expect((await get('/api/users/profile', d.accessToken)).status).to.equal(200);
      const app = await connectClient(`${cloud.url.replace('http:', 'ws:')}/mqtt`, {
        clientId: `u.${d.userId}.phone`,
        username: 'app',
        password: d.accessToken,
      });
      try {
        const dropped = closed(app);
        const logout = await fetch(`${cloud.url}/api/auth/logout`, { method: 'POST', headers: bearer(d.accessToken) });
        expect(logout.status).to.equal(204);
        const loggedOutAt = Date.now();
        await expectProblem(await get('/api/users/profile', d.accessToken), 401, 'after logout');
        // Target: disconnected ≤ 5 s after logout (EMQX disconnect_after_expire anchor); deadline 3× that.
        let timer: NodeJS.Timeout | undefined;
        await Promise.race([
          dropped,
          new Promise((_, reject) => {
            timer = setTimeout(() => reject(new Error('still connected 15 s after logout')), 15_000);
          }),
        ]).finally(() => clearTimeout(timer));
        expect(Date.now() - loggedOutAt).to.be.below(15_000);
      } finally {
        app.end(true);
      }
    });
  });

  describe('4. refresh-token reuse', () => {
    it('answers 401 to a reused R1, then to R2 (family revoked), and audits refresh_reuse_detected', async () => {
      const e = await createTestAccount(cloud, { userAgent: 'nxg-test/reuse' });
      const first = await postJson(cloud, '/api/auth/refresh', { refreshToken: e.refreshToken });
      expect(first.status).to.equal(200);
      const { refreshToken: r2 } = (await first.json()) as { refreshToken: string };
      // Past the same-device grace period (AUTH_REFRESH_REUSE_GRACE_S) a reuse is a theft signal: another device.
      const reuse = await postJson(
        cloud,
        '/api/auth/refresh',
        { refreshToken: e.refreshToken },
        { 'User-Agent': 'thief/1.0' },
      );
      await expectProblem(reuse, 401, 'reused R1');
      await expectProblem(await postJson(cloud, '/api/auth/refresh', { refreshToken: r2 }), 401, 'R2 after reuse');
      expect(await audit({ action: 'refresh_reuse_detected', actor: e.userId })).to.have.length.of.at.least(1);
    });
  });

  describe('5. brute force', () => {
    it('locks the account after 5 failures: the 6th (correct) attempt gets 429 with Retry-After, XFF or not', async () => {
      const c = await createTestAccount(cloud);
      const bodies: string[] = [];
      for (let i = 0; i < 5; i++) {
        const res = await postJson(cloud, '/api/auth/login', { email: c.email, password: 'wrong-password-123' });
        const problem = await expectProblem(res, 401, `failure ${i + 1}`);
        bodies.push(JSON.stringify({ ...problem, requestId: '', instance: '' }));
      }
      const sixth = await postJson(cloud, '/api/auth/login', { email: c.email, password: c.password });
      await expectProblem(sixth, 429, 'sixth, correct password');
      expect(Number(sixth.headers.get('retry-after'))).to.be.within(1, 900);
      const forwarded = await postJson(
        cloud,
        '/api/auth/login',
        { email: c.email, password: c.password },
        { 'X-Forwarded-For': '203.0.113.9' },
      );
      await expectProblem(forwarded, 429, 'sixth with X-Forwarded-For');
      expect(await audit({ action: 'login_failed', target: c.userId })).to.have.length.of.at.least(5);
      expect(await audit({ action: 'account_locked', target: c.userId })).to.have.length(1);
      expect(await audit({ action: 'login_locked', target: c.email })).to.have.length.of.at.least(1);
    });

    it('answers an unknown email exactly like a wrong password, in comparable time', async () => {
      const c = await createTestAccount(cloud);
      const attempt = async (email: string) => {
        const started = process.hrtime.bigint();
        const res = await postJson(cloud, '/api/auth/login', { email, password: 'wrong-password-123' });
        const ms = Number(process.hrtime.bigint() - started) / 1e6;
        const problem = await expectProblem(res, 401, email);
        return { ms, body: JSON.stringify({ ...problem, requestId: '', instance: '' }) };
      };
      const known: number[] = [];
      const unknown: number[] = [];
      for (let i = 0; i < 3; i++) {
        const k = await attempt(c.email);
        const u = await attempt(`nobody-${i}-${Date.now()}@nxg.test`);
        expect(u.body).to.equal(k.body);
        known.push(k.ms);
        unknown.push(u.ms);
      }
      const median = (xs: number[]) => xs.sort((x, y) => x - y)[1]!;
      // Both run one argon2 verify (~30 ms); a skipped hash would be an order of magnitude faster. The bound is
      // loose on purpose (timing on a shared 2-core machine), and still catches that.
      expect(median(unknown) / median(known)).to.be.within(1 / 3, 3);
    });
  });

  describe('6. BOLA and function-level authorization', () => {
    it("answers 404 to A revoking B's login session, and B's session survives", async () => {
      const res = await fetch(`${cloud.url}/api/users/sessions/${b.sessionId}`, {
        method: 'DELETE',
        headers: bearer(a.accessToken),
      });
      await expectProblem(res, 404, "A deletes B's session");
      expect((await get('/api/users/profile', b.accessToken)).status).to.equal(200);
      expect(await (await get('/api/users/sessions', b.accessToken)).text()).to.include(b.sessionId);
      // Gap: GET /api/sessions/{id} and GET /api/workouts/{id} are a later issue's routes.
    });

    it('answers 403 to a member on an admin route, and audits it', async () => {
      await expectProblem(await get('/api/admin/users', a.accessToken), 403, 'member on /api/admin/users');
      expect((await get('/api/admin/users', admin.accessToken)).status).to.equal(200);
      expect(await audit({ action: 'access_denied', actor: a.userId })).to.have.length.of.at.least(1);
    });
  });

  describe('7. mass assignment', () => {
    it('answers 400 naming role, status and emailVerified; the stored role stays member', async () => {
      const res = await fetch(`${cloud.url}/api/users/profile`, {
        method: 'PUT',
        headers: bearer(a.accessToken),
        body: JSON.stringify({ firstName: 'Eve', role: 'admin', status: 'active', emailVerified: true }),
      });
      const problem = await expectProblem(res, 400, 'mass assignment');
      const fields = (problem.errors as { field: string }[]).map((e) => e.field);
      expect(fields).to.include.members(['role', 'status', 'emailVerified']);
      const me = (await (await get('/api/auth/me', a.accessToken)).json()) as { role: string; firstName?: string };
      expect(me.role).to.equal('member');
      const profile = (await (await get('/api/users/profile', a.accessToken)).json()) as { firstName?: string | null };
      expect(profile.firstName).to.not.equal('Eve');
    });
  });

  describe('8. NoSQL operator injection', () => {
    it('answers 400 (415 for the form) and never 200', async () => {
      await expectProblem(
        await postJson(cloud, '/api/auth/login', { email: { $ne: null }, password: { $ne: null } }),
        400,
        'operators in a JSON login',
      );
      const form = await fetch(`${cloud.url}/api/auth/login`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
        body: 'email[$ne]=x&password[$ne]=x',
      });
      expect(form.status).to.be.oneOf([400, 415]);
      await expectProblem(form, form.status, 'form login');
      await expectProblem(await get('/api/admin/users?email[$regex]=.*', admin.accessToken), 400, 'query operator');
      await expectProblem(
        await postJson(cloud, '/api/auth/login', { email: a.email, password: a.password, $where: '1' }),
        400,
        '$where key',
      );
      const dotted = await fetch(`${cloud.url}/api/users/profile`, {
        method: 'PUT',
        headers: bearer(a.accessToken),
        body: JSON.stringify({ 'profile.role': 'admin' }),
      });
      await expectProblem(dotted, 400, 'dotted key');
    });
  });

  describe('9. unbounded bodies and queries', () => {
    it('answers 413 to a 2 MiB body', async () => {
      const huge = JSON.stringify({ email: 'x@nxg.test', password: 'p'.repeat(2 * 1024 * 1024) });
      await expectProblem(await postJson(cloud, '/api/auth/register', JSON.parse(huge)), 413, '2 MiB body');
    });

    it('answers a 100,000-deep body with 400/413 quickly, never 5xx', async () => {
      const deep = '['.repeat(100_000) + ']'.repeat(100_000);
      const started = Date.now();
      const res = await fetch(`${cloud.url}/api/auth/register`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: deep,
      });
      expect(res.status).to.be.oneOf([400, 413]);
      await expectProblem(res, res.status, 'deep body');
      // Target 100 ms; the deadline is 5× that (shared 2-core machine).
      expect(Date.now() - started).to.be.below(500);
    });

    it('answers 415 to text/plain on a JSON route', async () => {
      const res = await fetch(`${cloud.url}/api/auth/register`, {
        method: 'POST',
        headers: { 'Content-Type': 'text/plain' },
        body: 'hello',
      });
      await expectProblem(res, 415, 'text/plain');
    });

    it('answers 400 to limit=1000000 on the admin search, or clamps it to ≤ 100 as documented', async () => {
      const res = await get('/api/admin/users?limit=1000000', admin.accessToken);
      if (res.status === 400) {
        await expectProblem(res, 400, 'limit=1000000');
        return;
      }
      expect(res.status).to.equal(200);
      const page = (await res.json()) as { items: unknown[] };
      expect(page.items.length).to.be.at.most(100);
      // The clamp must be stated in the document, where a client reads the limit.
      const doc = (await (await get('/api/openapi.json')).json()) as { paths: Record<string, Record<string, unknown>> };
      expect(JSON.stringify(doc.paths['/api/v1/admin/users'])).to.match(/"maximum":100\b|clamped to 100/);
    });
  });

  describe('10. CORS from an unknown origin', () => {
    const preflight = (origin: string) =>
      new Promise<{ status: number; headers: Record<string, string | string[] | undefined> }>((resolve, reject) => {
        const req = request(
          `${cloud.url}/api/users/profile`,
          {
            method: 'OPTIONS',
            headers: {
              Origin: origin,
              'Access-Control-Request-Method': 'PUT',
              'Access-Control-Request-Headers': 'authorization',
            },
          },
          (res) => {
            res.resume();
            res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers }));
          },
        );
        req.on('error', reject);
        req.end();
      });

    it('gives an unknown origin no Access-Control-Allow-Origin; an allowed one an exact echo with Vary', async () => {
      const evil = await preflight('https://evil.example');
      expect(evil.status).to.be.oneOf([204, 403]);
      expect(evil.headers['access-control-allow-origin']).to.equal(undefined);
      expect(evil.headers['access-control-allow-credentials']).to.equal(undefined);
      const allowed = await preflight(ALLOWED_ORIGIN);
      expect(allowed.status).to.equal(204);
      expect(allowed.headers['access-control-allow-origin']).to.equal(ALLOWED_ORIGIN);
      expect(String(allowed.headers.vary)).to.match(/Origin/);
    });
  });
});
