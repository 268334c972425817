import argon2 from 'argon2';
import { expect } from 'chai';
import { Types } from 'mongoose';
import sinon from 'sinon';
import {
  bearer,
  createTestAccount,
  postJson,
  startTestCloud,
  tokenFromEmail,
  TEST_APP_BASE_URL,
  type TestCloud,
} from '../../../test/helpers/accounts.ts';
import { ARGON2_OPTIONS } from '../accounts/password.ts';
import { linkIn } from '../mail/smtp-capture.ts';

interface Problem {
  type: string;
  status: number;
  detail: string;
  errors?: { in: string; field: string; reason: string }[];
}

interface Tokens {
  accessToken: string;
  refreshToken: string;
  sessionId: string;
  expiresIn: number;
  refreshExpiresIn: number;
  tokenType: string;
  user?: { id: string; email: string; role: string; status: string; emailVerified: boolean };
}

const UA = { 'User-Agent': 'nxg-test/1.0' };
let n = 0;
/** A JWT's header (0) or payload (1), decoded without verification. */
function jwtPart(token: string, index: 0 | 1): Record<string, unknown> {
  return JSON.parse(Buffer.from(token.split('.')[index]!, 'base64url').toString()) as Record<string, unknown>;
}

const newEmail = () => `auth-${process.pid}-${++n}-${Date.now()}@nxg.test`;
const strongPassword = () => `correct horse ${Math.random().toString(36).slice(2)} battery`;

describe('authentication routes (real cloud, MongoDB, Redis, SMTP capture)', function () {
  this.timeout(30_000);
  let tc: TestCloud;

  before(async () => {
    tc = await startTestCloud({ dbPrefix: 'auth_routes' });
  });
  after(() => tc?.stop());

  const get = (path: string, token?: string) => fetch(`${tc.url}${path}`, { headers: token ? bearer(token) : {} });
  const login = (email: string, password: string, headers: Record<string, string> = UA) =>
    postJson(tc, '/api/auth/login', { email, password }, headers);
  const auditOf = (filter: Record<string, unknown>) => tc.mongo.collection('audit_log').find(filter).toArray();

  describe('POST /api/auth/register', () => {
    it('creates a pending account with an argon2id hash at the stated parameters and mails a verification link', async () => {
      const email = newEmail();
      const password = strongPassword();
      const res = await postJson(tc, '/api/auth/register', { email: email.toUpperCase(), password }, UA);
      expect(res.status).to.equal(202);
      expect(await res.json()).to.deep.equal({ status: 'accepted', message: 'check your email to continue' });

      const doc = await tc.mongo.collection('accounts').findOne({ email });
      expect(doc, 'stored under the normalised email').to.not.equal(null);
      expect(doc!.role).to.equal('member');
      expect(doc!.status).to.equal('pending_verification');
      expect(doc!.emailVerified).to.equal(false);
      // OWASP's minimum for argon2id: m = 19 MiB, t = 2, p = 1 (the PHC string lists them in its own order).
      const params = /^\$argon2id\$v=19\$([^$]+)\$/
        .exec(doc!.passwordHash as string)![1]!
        .split(',')
        .sort();
      expect(params).to.deep.equal(['m=19456', 'p=1', 't=2']);
      expect(JSON.stringify(doc)).to.not.include(password);

      const mail = await tc.mail.waitFor((m) => m.to.includes(email) && /Confirm/.test(m.subject));
      const link = linkIn(mail, `${TEST_APP_BASE_URL}/verify-email`);
      expect(link.hash).to.match(/^#token=[A-Za-z0-9_-]{43}$/);
      const stored = await tc.mongo.collection('account_tokens').findOne({ userId: String(doc!._id) });
      expect(stored!._id, 'only a hash of the token is stored').to.not.equal(link.hash.slice(7));
      expect(await auditOf({ action: 'register', actor: String(doc!._id), result: 'success' })).to.have.length(1);
    });

    it('answers an existing email exactly like a new one, creates nothing, and mails "you already have an account"', async () => {
      const account = await createTestAccount(tc);
      const res = await postJson(tc, '/api/auth/register', { email: account.email, password: strongPassword() }, UA);
      expect(res.status).to.equal(202);
      expect(await res.json()).to.deep.equal({ status: 'accepted', message: 'check your email to continue' });
      expect(await tc.mongo.collection('accounts').countDocuments({ email: account.email })).to.equal(1);
      const mail = await tc.mail.waitFor((m) => m.to.includes(account.email) && /already have/.test(m.subject));
      expect(mail.text).to.include(`${TEST_APP_BASE_URL}/forgot-password`);
      // The original password still works: nothing about the account changed.
      expect((await login(account.email, account.password)).status).to.equal(200);
    });

    it('refuses short, common and padded-common passwords with 400 naming the password field', async () => {
      for (const password of ['short', 'password1234', '123qweasdzxc', 'dragon123456789', 'aaaaaaaaaaaaaaaa']) {
        const res = await postJson(tc, '/api/auth/register', { email: newEmail(), password });
        expect(res.status, password).to.equal(400);
        const problem = (await res.json()) as Problem;
        expect(problem.errors![0]).to.include({ in: 'body', field: 'password' });
        expect(problem.errors![0]!.reason).to.not.include(password);
      }
    });

    it('refuses an invalid email, an extra field (mass assignment) and $-operators with 400', async () => {
      const bad = [
        { email: 'not-an-email', password: strongPassword() },
        { email: ` ${newEmail()}`, password: strongPassword() },
        { email: newEmail(), password: strongPassword(), role: 'admin' },
        { email: { $ne: null }, password: strongPassword() },
      ];
      for (const body of bad) {
        const res = await postJson(tc, '/api/auth/register', body);
        expect(res.status, JSON.stringify(body)).to.equal(400);
      }
    });
  });

  describe('email verification', () => {
    it('follows the link from the email: the account becomes active and verified, and the link works once', async () => {
      const email = newEmail();
      const password = strongPassword();
      expect((await postJson(tc, '/api/auth/register', { email, password }, UA)).status).to.equal(202);
      const token = await tokenFromEmail(tc, email, 'verify-email');

      const res = await postJson(tc, '/api/auth/verify-email', { token }, UA);
      expect(res.status).to.equal(200);
      expect(await res.json()).to.include({ email, status: 'active', emailVerified: true });
      const again = await postJson(tc, '/api/auth/verify-email', { token }, UA);
      expect(again.status).to.equal(400);
      expect(((await again.json()) as Problem).type).to.equal('/problems/invalid-token');
      expect(await tc.mongo.collection('account_tokens').countDocuments({ _id: token as never })).to.equal(0);
    });

    it('refuses an unknown token with 400', async () => {
      const res = await postJson(tc, '/api/auth/verify-email', { token: 'A'.repeat(43) });
      expect(res.status).to.equal(400);
    });

    it('lets a pending account log in and resend the email; a verified account gets no new one', async () => {
      const pending = await createTestAccount(tc, { verified: false });
      expect((await get('/api/users/sessions', pending.accessToken)).status).to.equal(200);
      await tc.mail.waitFor((m) => m.to.includes(pending.email)); // the registration email
      const before = tc.mail.messages().filter((m) => m.to.includes(pending.email)).length;
      const res = await fetch(`${tc.url}/api/auth/verify-email/resend`, {
        method: 'POST',
        headers: bearer(pending.accessToken),
      });
      expect(res.status).to.equal(202);
      await tc.mail.waitFor(
        (m) =>
          m.to.includes(pending.email) &&
          tc.mail.messages().filter((x) => x.to.includes(pending.email)).length > before,
      );
      const [first, latest] = tc.mail.messages().filter((m) => m.to.includes(pending.email));
      const tokenOf = (mail: typeof first) =>
        new URLSearchParams(linkIn(mail!, `${TEST_APP_BASE_URL}/verify-email`).hash.slice(1)).get('token')!;
      // The newest link works; the first one was replaced by it.
      expect((await postJson(tc, '/api/auth/verify-email', { token: tokenOf(first) })).status).to.equal(400);
      const verify = await postJson(tc, '/api/auth/verify-email', { token: tokenOf(latest) });
      expect(verify.status, await verify.text()).to.equal(200);

      const verified = await createTestAccount(tc);
      const count = tc.mail.messages().filter((m) => m.to.includes(verified.email)).length;
      const again = await fetch(`${tc.url}/api/auth/verify-email/resend`, {
        method: 'POST',
        headers: bearer(verified.accessToken),
      });
      expect(again.status).to.equal(202);
      await new Promise((r) => setTimeout(r, 200));
      expect(tc.mail.messages().filter((m) => m.to.includes(verified.email)).length).to.equal(count);
    });
  });

  describe('POST /api/auth/login', () => {
    it('logs in with a mixed-case email and returns tokens, the session and the account, uncacheable', async () => {
      const account = await createTestAccount(tc);
      const res = await login(account.email.toUpperCase(), account.password);
      expect(res.status).to.equal(200);
      expect(res.headers.get('cache-control')).to.equal('no-store');
      const body = (await res.json()) as Tokens;
      expect(body.tokenType).to.equal('Bearer');
      expect(body.expiresIn).to.equal(900);
      expect(body.refreshExpiresIn).to.equal(7 * 24 * 3600);
      expect(body.refreshToken).to.match(/^[A-Za-z0-9_-]{43}$/);
      expect(body.user).to.include({ id: account.userId, email: account.email, role: 'member', status: 'active' });
      const header = jwtPart(body.accessToken, 0);
      const payload = jwtPart(body.accessToken, 1);
      expect(header).to.include({ alg: 'ES256', typ: 'at+jwt' });
      expect(header.kid).to.equal(tc.auth.keyring.signing.kid);
      expect(payload).to.include({ sub: account.userId, sid: body.sessionId, iss: 'nxg', aud: 'nxg-api' });
      expect(Number(payload.exp) - Number(payload.iat)).to.equal(900);
    });

    it('answers a wrong password and an unknown email with the same 401 body', async () => {
      const account = await createTestAccount(tc);
      const wrong = await login(account.email, 'wrong password here');
      const unknown = await login(newEmail(), 'wrong password here');
      expect(wrong.status).to.equal(401);
      expect(unknown.status).to.equal(401);
      const strip = (p: Problem & { requestId?: string; instance?: string }) => ({ ...p, requestId: undefined });
      expect(strip((await wrong.json()) as Problem)).to.deep.equal(strip((await unknown.json()) as Problem));
      const failures = await auditOf({ action: 'login_failed' });
      expect(failures.map((f) => (f.details as { reason?: string } | undefined)?.reason)).to.include.members([
        'wrong-password',
        'unknown-email',
      ]);
    });

    it('refuses $-operators in the body with 400 and a form body with 415', async () => {
      const res = await postJson(tc, '/api/auth/login', { email: { $ne: null }, password: { $ne: null } });
      expect(res.status).to.equal(400);
      const form = await fetch(`${tc.url}/api/auth/login`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
        body: 'email[$ne]=x&password[$ne]=x',
      });
      expect(form.status).to.equal(415);
    });
  });

  describe('POST /api/auth/refresh', () => {
    it('rotates: the new pair works, the session is kept, and the used token is spent', async () => {
      const account = await createTestAccount(tc);
      const res = await postJson(tc, '/api/auth/refresh', { refreshToken: account.refreshToken }, UA);
      expect(res.status).to.equal(200);
      const next = (await res.json()) as Tokens;
      expect(next.sessionId).to.equal(account.sessionId);
      expect(next.refreshToken).to.not.equal(account.refreshToken);
      expect((await get('/api/auth/me', next.accessToken)).status).to.equal(200);
      const third = await postJson(tc, '/api/auth/refresh', { refreshToken: next.refreshToken }, UA);
      expect(third.status).to.equal(200);
      expect(await auditOf({ action: 'refresh', actor: account.userId })).to.have.length(2);
    });

    it('revokes the whole family when a rotated token is reused from another device (R1, then R2 → 401)', async () => {
      const account = await createTestAccount(tc);
      const r2 = (await (
        await postJson(tc, '/api/auth/refresh', { refreshToken: account.refreshToken }, UA)
      ).json()) as Tokens;
      const reuse = await postJson(
        tc,
        '/api/auth/refresh',
        { refreshToken: account.refreshToken },
        { 'User-Agent': 'attacker/1' },
      );
      expect(reuse.status).to.equal(401);
      expect(reuse.headers.get('www-authenticate')).to.equal('Bearer');
      const afterwards = await postJson(tc, '/api/auth/refresh', { refreshToken: r2.refreshToken }, UA);
      expect(afterwards.status).to.equal(401);
      expect((await get('/api/auth/me', r2.accessToken)).status, 'access tokens of the family too').to.equal(401);
      const entries = await auditOf({ action: 'refresh_reuse_detected', actor: account.userId });
      expect(entries).to.have.length(1);
      expect(entries[0]).to.include({ target: account.sessionId, result: 'refused' });
    });

    it('within the grace period, the same device may present its previous token again; both successors work', async () => {
      const account = await createTestAccount(tc);
      const r2 = (await (
        await postJson(tc, '/api/auth/refresh', { refreshToken: account.refreshToken }, UA)
      ).json()) as Tokens;
      const retry = await postJson(tc, '/api/auth/refresh', { refreshToken: account.refreshToken }, UA);
      expect(retry.status).to.equal(200);
      const r3 = (await retry.json()) as Tokens;
      expect(r3.sessionId).to.equal(account.sessionId);
      expect((await postJson(tc, '/api/auth/refresh', { refreshToken: r2.refreshToken }, UA)).status).to.equal(200);
      expect((await postJson(tc, '/api/auth/refresh', { refreshToken: r3.refreshToken }, UA)).status).to.equal(200);
      expect(await auditOf({ action: 'refresh', actor: account.userId, 'details.grace': true })).to.have.length(1);
    });

    it('refuses unknown and malformed tokens with 401, and an access token as refresh token', async () => {
      const account = await createTestAccount(tc);
      for (const refreshToken of ['x'.repeat(43), 'short', account.accessToken.slice(0, 200)]) {
        const res = await postJson(tc, '/api/auth/refresh', { refreshToken });
        expect(res.status, refreshToken).to.equal(401);
      }
    });
  });

  describe('POST /api/auth/logout', () => {
    it('revokes the access token at once (401 on the next request) and the refresh family', async () => {
      const account = await createTestAccount(tc);
      const res = await fetch(`${tc.url}/api/auth/logout`, { method: 'POST', headers: bearer(account.accessToken) });
      expect(res.status).to.equal(204);
      const started = Date.now();
      const after = await get('/api/auth/me', account.accessToken);
      expect(after.status).to.equal(401);
      expect(Date.now() - started).to.be.below(1000);
      expect((await postJson(tc, '/api/auth/refresh', { refreshToken: account.refreshToken })).status).to.equal(401);
      const jti = String(jwtPart(account.accessToken, 1).jti);
      const ttl = await tc.redis.pttl(`auth:revoked:${jti}`);
      expect(ttl, 'kept until the token expires').to.be.within(800_000, 931_000);
    });

    it('needs a token: 401 with WWW-Authenticate: Bearer as problem+json', async () => {
      const res = await fetch(`${tc.url}/api/auth/logout`, { method: 'POST' });
      expect(res.status).to.equal(401);
      expect(res.headers.get('www-authenticate')).to.equal('Bearer');
      expect(res.headers.get('content-type')).to.match(/^application\/problem\+json/);
    });
  });

  describe('login sessions', () => {
    it('lists my sessions with device info and marks the current one', async () => {
      const account = await createTestAccount(tc);
      const second = (await (
        await login(account.email, account.password, { 'User-Agent': 'NXG iOS 3.1' })
      ).json()) as Tokens;
      const res = await get('/api/users/sessions', second.accessToken);
      expect(res.status).to.equal(200);
      const { sessions } = (await res.json()) as {
        sessions: {
          id: string;
          userAgent: string;
          ip: string;
          current: boolean;
          createdAt: string;
          lastUsedAt: string;
        }[];
      };
      expect(sessions).to.have.length(2);
      expect(sessions.find((s) => s.current)).to.include({
        id: second.sessionId,
        userAgent: 'NXG iOS 3.1',
        ip: '127.0.0.1',
      });
      expect(sessions.find((s) => !s.current)).to.include({ id: account.sessionId, userAgent: 'nxg-test/1.0' });
    });

    it("revokes one session: that device is out at once, mine stays; another user's session is a 404", async () => {
      const a = await createTestAccount(tc);
      const b = await createTestAccount(tc);
      const a2 = (await (await login(a.email, a.password)).json()) as Tokens;

      const foreign = await fetch(`${tc.url}/api/users/sessions/${b.sessionId}`, {
        method: 'DELETE',
        headers: bearer(a.accessToken),
      });
      expect(foreign.status).to.equal(404);
      expect((await get('/api/auth/me', b.accessToken)).status, 'B unchanged').to.equal(200);

      const own = await fetch(`${tc.url}/api/users/sessions/${a2.sessionId}`, {
        method: 'DELETE',
        headers: bearer(a.accessToken),
      });
      expect(own.status).to.equal(204);
      expect((await get('/api/auth/me', a2.accessToken)).status).to.equal(401);
      expect((await postJson(tc, '/api/auth/refresh', { refreshToken: a2.refreshToken })).status).to.equal(401);
      expect((await get('/api/auth/me', a.accessToken)).status).to.equal(200);
    });

    it('revokes all sessions, this one included', async () => {
      const a = await createTestAccount(tc);
      const a2 = (await (await login(a.email, a.password)).json()) as Tokens;
      const res = await fetch(`${tc.url}/api/users/sessions`, { method: 'DELETE', headers: bearer(a.accessToken) });
      expect(res.status).to.equal(204);
      expect((await get('/api/auth/me', a.accessToken)).status).to.equal(401);
      expect((await get('/api/auth/me', a2.accessToken)).status).to.equal(401);
      expect((await postJson(tc, '/api/auth/refresh', { refreshToken: a2.refreshToken })).status).to.equal(401);
    });
  });

  describe('password reset', () => {
    it('follows the link from the email: new password works, old does not, every session is signed out', async () => {
      const account = await createTestAccount(tc);
      expect((await postJson(tc, '/api/auth/forgot', { email: account.email.toUpperCase() }, UA)).status).to.equal(202);
      const token = await tokenFromEmail(tc, account.email, 'reset-password');

      const weak = await postJson(tc, '/api/auth/reset', { token, password: 'password1234' });
      expect(weak.status, 'a refused password leaves the link usable').to.equal(400);

      const newPassword = strongPassword();
      const res = await postJson(tc, '/api/auth/reset', { token, password: newPassword }, UA);
      expect(res.status).to.equal(204);
      expect(
        (await postJson(tc, '/api/auth/reset', { token, password: strongPassword() })).status,
        'single use',
      ).to.equal(400);
      expect((await get('/api/auth/me', account.accessToken)).status).to.equal(401);
      expect((await postJson(tc, '/api/auth/refresh', { refreshToken: account.refreshToken })).status).to.equal(401);
      expect((await login(account.email, account.password)).status).to.equal(401);
      expect((await login(account.email, newPassword)).status).to.equal(200);
      await tc.mail.waitFor((m) => m.to.includes(account.email) && /password was changed/.test(m.subject));
    });

    it('a login that verified the old password just before a reset keeps no session (race)', async () => {
      const account = await createTestAccount(tc);
      expect((await postJson(tc, '/api/auth/forgot', { email: account.email }, UA)).status).to.equal(202);
      const token = await tokenFromEmail(tc, account.email, 'reset-password');
      const newPassword = strongPassword();
      const sessions = tc.auth.sessions;
      const start = sessions.start.bind(sessions);
      // Fault injection: the reset completes between the login's password verify and the start of its session.
      const stub = sinon.stub(sessions, 'start').callsFake(async (input) => {
        stub.restore();
        expect((await postJson(tc, '/api/auth/reset', { token, password: newPassword }, UA)).status).to.equal(204);
        return start(input);
      });
      try {
        expect((await login(account.email, account.password)).status, 'old password, raced').to.equal(401);
      } finally {
        stub.restore();
      }
      expect(await sessions.list(account.userId), 'no session outlives the reset').to.deep.equal([]);
      expect((await login(account.email, account.password)).status).to.equal(401);
      expect((await login(account.email, newPassword)).status).to.equal(200);
      expect(
        await auditOf({ action: 'login_failed', target: account.userId, 'details.reason': 'password-changed' }),
      ).to.have.length(1);
    });

    it('upgrades a hash made with weaker parameters at login, keeping the password', async () => {
      const account = await createTestAccount(tc);
      const weaker = await argon2.hash(account.password, { ...ARGON2_OPTIONS, timeCost: 1 });
      const accounts = tc.mongo.collection('accounts');
      const _id = new Types.ObjectId(account.userId);
      await accounts.updateOne({ _id }, { $set: { passwordHash: weaker } });
      expect((await login(account.email, account.password)).status).to.equal(200);
      const upgraded = (await accounts.findOne({ _id }))!.passwordHash as string;
      expect(upgraded).to.not.equal(weaker).and.to.include('m=19456,t=2,p=1');
      expect((await login(account.email, account.password)).status).to.equal(200);
    });

    it('answers known and unknown addresses before any per-account work is done (no enumeration by timing)', async () => {
      const account = await createTestAccount(tc);
      const unknown = newEmail();
      let release = () => {};
      const gate = new Promise<void>((resolve) => (release = resolve));
      const audit = tc.auth.audit;
      const record = audit.record.bind(audit);
      // The audit entry is the last of a request's work (after the limiter, the token and the mail): held back
      // here, a request that waited for its work would not be answered.
      const stub = sinon.stub(audit, 'record').callsFake(async (entry) => {
        if (entry.action === 'password_reset_requested') await gate;
        return record(entry);
      });
      try {
        for (const email of [account.email, unknown]) {
          let timer: NodeJS.Timeout | undefined;
          const answer = await Promise.race([
            postJson(tc, '/api/auth/forgot', { email }, UA),
            new Promise<'no answer'>((resolve) => (timer = setTimeout(() => resolve('no answer'), 5000))),
          ]);
          clearTimeout(timer);
          expect(answer === 'no answer' ? answer : answer.status, email).to.equal(202);
        }
      } finally {
        stub.restore();
        release();
      }
      // The work is done all the same, once released.
      await tokenFromEmail(tc, account.email, 'reset-password');
      const audited = { action: 'password_reset_requested', target: { $in: [account.userId, unknown] } };
      const deadline = Date.now() + 10_000;
      while ((await auditOf(audited)).length < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      expect((await auditOf(audited)).map((e) => e.result as string).sort()).to.deep.equal(['failure', 'success']);
    });

    it('answers an unknown email with the same 202 and sends nothing', async () => {
      const email = newEmail();
      const res = await postJson(tc, '/api/auth/forgot', { email });
      expect(res.status).to.equal(202);
      expect(((await res.json()) as { message: string }).message).to.include('if this address has an account');
      await new Promise((r) => setTimeout(r, 200));
      expect(tc.mail.messages().filter((m) => m.to.includes(email))).to.have.length(0);
    });
  });

  describe("verifyAccessToken (for the broker's WebSocket logins)", () => {
    it('returns who a live token belongs to, and nothing for a forged, suspended or logged-out one', async () => {
      const account = await createTestAccount(tc);
      const access = await tc.auth.verifyAccessToken(account.accessToken);
      expect(access).to.include({ userId: account.userId, sessionId: account.sessionId, role: 'member' });
      expect(access!.expiresAtMs).to.be.within(Date.now() + 800_000, Date.now() + 901_000);
      expect(await tc.auth.verifyAccessToken('not.a.token')).to.equal(undefined);
      await tc.auth.accounts.setStatus(account.userId, 'suspended', 'test');
      expect(await tc.auth.verifyAccessToken(account.accessToken)).to.equal(undefined);
      await tc.auth.accounts.setStatus(account.userId, 'active');
      await fetch(`${tc.url}/api/auth/logout`, { method: 'POST', headers: bearer(account.accessToken) });
      expect(await tc.auth.verifyAccessToken(account.accessToken)).to.equal(undefined);
    });
  });

  describe('mail limits', () => {
    it('sends at most 5 verification emails an hour per account, still answering 202', async () => {
      const pending = await createTestAccount(tc, { verified: false });
      await tc.mail.waitFor((m) => m.to.includes(pending.email)); // the registration email
      const resend = () =>
        fetch(`${tc.url}/api/auth/verify-email/resend`, { method: 'POST', headers: bearer(pending.accessToken) });
      for (let i = 0; i < 6; i++) expect((await resend()).status).to.equal(202);
      await tc.mail.waitFor(
        (m) =>
          m.to.includes(pending.email) && tc.mail.messages().filter((x) => x.to.includes(pending.email)).length >= 6,
      );
      await new Promise((r) => setTimeout(r, 200));
      // The registration email and 5 resends.
      expect(tc.mail.messages().filter((m) => m.to.includes(pending.email))).to.have.length(6);
      expect(await auditOf({ action: 'email_verify_resend', actor: pending.userId, result: 'refused' })).to.have.length(
        1,
      );
    });
  });

  describe('account status and roles', () => {
    it('a suspended account can read why on /api/auth/me and nothing else', async () => {
      const account = await createTestAccount(tc, { status: 'suspended', suspendedReason: 'unpaid membership' });
      const me = await get('/api/auth/me', account.accessToken);
      expect(me.status).to.equal(200);
      expect(await me.json()).to.include({ status: 'suspended', suspendedReason: 'unpaid membership' });
      const other = await get('/api/users/sessions', account.accessToken);
      expect(other.status).to.equal(403);
      expect(((await other.json()) as Problem).type).to.equal('/problems/account-suspended');
    });

    it('applies a suspension at the next request, without a new token', async () => {
      const account = await createTestAccount(tc);
      expect((await get('/api/users/sessions', account.accessToken)).status).to.equal(200);
      await tc.auth.accounts.setStatus(account.userId, 'suspended', 'abuse report');
      expect((await get('/api/users/sessions', account.accessToken)).status).to.equal(403);
      await tc.auth.accounts.setStatus(account.userId, 'active');
      expect((await get('/api/users/sessions', account.accessToken)).status).to.equal(200);
    });
  });

  describe('JWKS', () => {
    it('publishes the signing key at /api/auth/jwks and /.well-known/jwks.json; it verifies our tokens', async () => {
      const { createPublicKey, verify } = await import('node:crypto');
      const account = await createTestAccount(tc);
      for (const path of ['/api/auth/jwks', '/.well-known/jwks.json']) {
        const res = await get(path);
        expect(res.status).to.equal(200);
        const { keys } = (await res.json()) as { keys: Record<string, string>[] };
        const [head, payload, signature] = account.accessToken.split('.') as [string, string, string];
        const kid = String(jwtPart(account.accessToken, 0).kid);
        const jwk = keys.find((k) => k.kid === kid)!;
        expect(jwk).to.include({ kty: 'EC', crv: 'P-256', alg: 'ES256', use: 'sig' });
        expect(jwk.d, 'no private part').to.equal(undefined);
        const key = createPublicKey({ key: jwk, format: 'jwk' });
        const ok = verify(
          'sha256',
          Buffer.from(`${head}.${payload}`),
          { key, dsaEncoding: 'ieee-p1363' },
          Buffer.from(signature, 'base64url'),
        );
        expect(ok).to.equal(true);
      }
    });
  });

  describe('deleteAccount (credential side of GDPR deletion)', () => {
    it('removes the account, its tokens, sessions and Redis keys; its tokens stop working', async () => {
      const account = await createTestAccount(tc);
      const second = (await (await login(account.email, account.password)).json()) as Tokens;
      expect(await tc.auth.deleteAccount(account.userId, { ip: '127.0.0.1' })).to.equal(true);

      expect((await get('/api/auth/me', account.accessToken)).status).to.equal(401);
      expect((await get('/api/auth/me', second.accessToken)).status).to.equal(401);
      expect((await postJson(tc, '/api/auth/refresh', { refreshToken: second.refreshToken })).status).to.equal(401);
      expect(
        await tc.mongo.collection('accounts').countDocuments({ _id: new Types.ObjectId(account.userId) }),
      ).to.equal(0);
      expect(await tc.mongo.collection('account_tokens').countDocuments({ userId: account.userId })).to.equal(0);

      // No Redis key of ours names or holds the user any more.
      const keys: string[] = [];
      let cursor = '0';
      do {
        const [next, batch] = await tc.redis.scan(cursor, 'MATCH', `${tc.redisKeyPrefix}*`, 'COUNT', 500);
        cursor = next;
        keys.push(...batch);
      } while (cursor !== '0');
      for (const key of keys) {
        expect(key).to.not.include(account.userId);
        expect(key).to.not.include(account.email);
        const bare = key.slice(tc.redisKeyPrefix.length);
        if ((await tc.redis.type(bare)) === 'hash') {
          expect(Object.values(await tc.redis.hgetall(bare))).to.not.include(account.userId);
        }
      }
      expect(await tc.auth.deleteAccount(account.userId)).to.equal(false);
      expect((await login(account.email, account.password)).status).to.equal(401);
    });
  });

  describe('audit log', () => {
    it('records actor, action, target, ip and result, and never a password or token', async () => {
      const account = await createTestAccount(tc);
      await login(account.email, 'a wrong password!');
      const entries = await auditOf({ $or: [{ actor: account.userId }, { target: account.userId }] });
      const actions = entries.map((e) => String(e.action));
      expect(actions).to.include.members(['register', 'email_verify', 'login', 'login_failed']);
      for (const entry of entries) {
        expect(entry).to.have.property('at').that.is.instanceOf(Date);
        expect(entry.ip).to.equal('127.0.0.1');
        expect(['success', 'failure', 'refused']).to.include(entry.result);
      }
      const all = JSON.stringify(await auditOf({}));
      expect(all).to.not.include(account.password);
      expect(all).to.not.include(account.refreshToken);
      expect(all).to.not.include(account.accessToken);
    });
  });

  describe('API versioning', () => {
    it('answers on /api/v1/auth/… as on the /api/auth/… alias', async () => {
      const account = await createTestAccount(tc);
      const res = await fetch(`${tc.url}/api/v1/auth/me`, { headers: bearer(account.accessToken) });
      expect(res.status).to.equal(200);
      expect((await postJson(tc, '/api/v1/auth/refresh', { refreshToken: account.refreshToken }, UA)).status).to.equal(
        200,
      );
    });
  });

  describe('OpenAPI', () => {
    it('documents every auth and session route', async () => {
      const doc = (await (await get('/api/openapi.json')).json()) as { paths: Record<string, Record<string, unknown>> };
      const paths = Object.keys(doc.paths).join(' ');
      for (const p of [
        'auth/register',
        'auth/login',
        'auth/refresh',
        'auth/logout',
        'auth/me',
        'auth/verify-email',
        'auth/verify-email/resend',
        'auth/forgot',
        'auth/reset',
        'auth/jwks',
        'users/sessions',
      ]) {
        expect(paths).to.include(p);
      }
      const loginOp = Object.entries(doc.paths).find(([path]) => path.endsWith('/auth/login'))![1].post as {
        responses: Record<string, { content?: Record<string, unknown>; headers?: Record<string, unknown> }>;
      };
      expect(loginOp.responses['429']!.content).to.have.property('application/problem+json');
      expect(loginOp.responses['429']!.headers).to.have.property('Retry-After');
      expect(Object.keys(loginOp.responses)).to.include.members(['200', '400', '401', '429', '503']);
    });
  });
});
