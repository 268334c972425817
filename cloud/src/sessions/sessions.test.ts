/**
 * Gym sessions against the real cloud (HTTP API, MQTT gateway requests, ingest of offline scans, agenda jobs) on the
 * run's MongoDB stand-in and Redis. Time is a manual clock handed to the cloud: the jobs run through agenda and read
 * it (never sinon's fake timers, which stall the MongoDB driver and agenda).
 *
 * Accounts are not what is under test here: one is made through the HTTP API (register, verify, login — the way
 * members make them), the others directly through the accounts store and the cloud's own login sessions and
 * signing key, with an access token signed at the injected clock's now for each call. No argon2 per account: the
 * suite runs in seconds instead of most of a minute.
 */
import { randomBytes } from 'node:crypto';
import { expect } from 'chai';
import sinon from 'sinon';
import type { MqttClient } from 'mqtt';
import { createManualClock } from '../../../tools/runtime/clock.ts';
import { bearer, createTestAccount, startTestCloud, type TestCloud } from '../../../test/helpers/accounts.ts';
import { createAccountStore, type AccountStore } from '../accounts/store.ts';
import { createAccessTokens, type AccessTokens } from '../auth/access-tokens.ts';
import type { Role } from '../http/state.ts';
import { eventually } from '../../../test/helpers/eventually.ts';
import { testServices } from '../../../test/helpers/services.ts';
import {
  PROTOCOL_MINOR,
  asBranchId,
  asGatewayId,
  newBatchId,
  newBootId,
  newMsgId,
  topics,
  type RequestResponse,
} from '../../../protocol/index.ts';
import { addGateway } from '../broker/provisioning.ts';
import { createIdentityStore } from '../broker/identities.ts';
import { connectClient, gatewayRequest } from '../broker/testing.ts';
import { WEEKDAYS } from '../branches/hours.ts';
import type { SessionEnded, SessionView } from './index.ts';
import { SESSION_COLLECTIONS } from './model.ts';

const HOUR = 3_600_000;
const MIN = 60_000;
/** Monday 2 March 2026, 10:00 in Berlin (UTC+1). */
const T0 = Date.UTC(2026, 2, 2, 9, 0);
const GYM_A = 'gym-a';
const GYM_B = 'gym-b';
const GYM_C = 'gym-c';
/** Where nobody is staff: the desk staff member trains there as a member. */
const GYM_D = 'gym-d';
const open6to22 = Object.fromEntries(WEEKDAYS.map((d) => [d, [{ open: '06:00', close: '22:00' }]])) as never;

describe('gym sessions', function () {
  this.timeout(60_000);
  const clock = createManualClock(T0);
  let tc: TestCloud;
  let gw: MqttClient;
  const ended: SessionEnded[] = [];
  let uidCounter = 0;
  let store: AccountStore;
  let accessTokens: AccessTokens;
  /** Made through the HTTP API, staff of gym-a later in a test. */
  let deskStaff: TestAccount;

  /** A verified, active account with a login session (what the route guard checks). */
  interface TestAccount {
    userId: string;
    sessionId: string;
  }

  async function account(role: Role = 'member'): Promise<TestAccount> {
    const email = `sessions-${randomBytes(6).toString('hex')}@nxg.test`;
    // Nobody logs in with it: any string the store takes will do (no argon2 hash needed).
    const created = await store.insert({ email, passwordHash: 'not-a-login-password' });
    if (!created) throw new Error('account not created');
    await store.markEmailVerified(created.id);
    if (role !== 'member') await store.setRole(created.id, role);
    const login = await tc.auth.sessions.start({ userId: created.id, userAgent: 'nxg-test/1.0', ip: '127.0.0.1' });
    return { userId: created.id, sessionId: login.sessionId };
  }

  async function api(account: TestAccount, method: 'GET' | 'POST', path: string, body?: unknown) {
    // Signed now by the injected clock: the clock jumps days between tests, and tokens live an hour.
    const token = accessTokens.issue({ userId: account.userId, sessionId: account.sessionId }).token;
    const res = await fetch(`${tc.url}${path}`, {
      method,
      headers: bearer(token),
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    const text = await res.text();
    return { status: res.status, body: (text ? JSON.parse(text) : undefined) as Record<string, unknown> };
  }

  const qr = (account: TestAccount) => ({ kind: 'qr' as const, token: tc.access.issueQrToken(account.userId).token });

  async function member(branches: string[] = [GYM_A]): Promise<TestAccount & { uid: string }> {
    const made = await account();
    for (const b of branches) await tc.users.services.memberships.join(made.userId, b);
    const uid = (0x04a1b200 + ++uidCounter).toString(16).padStart(8, '0');
    await tc.access.cards.enrol({ userId: made.userId, uid, by: 'test' });
    return { ...made, uid };
  }

  /** A door request from the test gateway; resolves with its answer. */
  async function door(name: 'check-in' | 'check-out', uid: string): Promise<RequestResponse> {
    return gatewayRequest(gw, topics.gatewayRequest(asBranchId(GYM_A), asGatewayId('gw-door'), name), {
      reqId: newMsgId(),
      ts: clock.nowMs(),
      reader: 'door-1',
      credential: { kind: 'nfc', uid },
    });
  }

  const sessionsOf = (userId: string) =>
    tc.mongo.collection(SESSION_COLLECTIONS.sessions).find({ userId }).sort({ startedAt: 1 }).toArray();
  const claimOf = (userId: string) => tc.mongo.collection(SESSION_COLLECTIONS.claims).findOne({ _id: userId as never });

  before(async () => {
    tc = await startTestCloud({
      clock,
      dbPrefix: 'sessions',
      env: {
        JOBS_POLL_INTERVAL_MS: '200',
        SESSION_JOBS_LOCK_SECONDS: '1',
        AUTH_ACCESS_TOKEN_TTL_S: '3600',
        // A loaded test machine must not turn a slow decision into a timeout answer: the 1 s target is asserted
        // with a 3× margin below, and the dispatcher's own deadline is tested in broker/gateway-requests.test.ts.
        GATEWAY_REQUEST_DEADLINE_MS: '2500',
      },
    });
    // The one account made the members' way; its token names the issuer and audience the cloud signs with.
    const viaHttp = await createTestAccount(tc, { role: 'staff' });
    deskStaff = viaHttp;
    const claims = JSON.parse(Buffer.from(viaHttp.accessToken.split('.')[1]!, 'base64url').toString()) as {
      iss: string;
      aud: string;
    };
    accessTokens = createAccessTokens({
      keyring: tc.auth.keyring,
      issuer: claims.iss,
      audience: claims.aud,
      ttlS: 3600,
      clock,
    });
    store = await createAccountStore(tc.mongo, clock);
    tc.sessions.onEnded((event) => {
      ended.push(event);
    });
    for (const id of [GYM_A, GYM_B, GYM_C, GYM_D]) {
      await tc.branches.create('test-admin', id, { name: id, timeZone: 'Europe/Berlin', openingHours: open6to22 });
    }
    const { secret } = await addGateway({ store: createIdentityStore(tc.mongo) }, { id: 'gw-door', branch: GYM_A });
    gw = await connectClient(tc.broker.tcp.url, { username: 'gw-door', password: secret, clientId: 'gw-door' });
    await gw.subscribeAsync(`nxg/v1/b/${GYM_A}/gw/gw-door/req/+/res`, { qos: 1 });
  });

  after(async () => {
    await gw?.endAsync();
    await tc?.stop();
  });

  describe('check-in and check-out', () => {
    it('opens exactly one session when two API starts and two door requests race, and 409s the rest', async () => {
      const a = await member();
      const [http1, http2, door1, door2] = await Promise.all([
        api(a, 'POST', '/api/sessions/start', { branchId: GYM_A, credential: qr(a) }),
        api(a, 'POST', '/api/sessions/start', { branchId: GYM_A, credential: qr(a) }),
        door('check-in', a.uid),
        door('check-in', a.uid),
      ]);
      const allowed = [
        http1.status === 201,
        http2.status === 201,
        door1.ok && door1.decision.decision === 'allow',
        door2.ok && door2.decision.decision === 'allow',
      ];
      expect(allowed.filter(Boolean), JSON.stringify([http1, http2, door1, door2])).to.have.length(1);
      for (const r of [http1, http2].filter((r) => r.status !== 201)) {
        expect(r.status).to.equal(409);
        expect(r.body.type).to.equal('/problems/already-checked-in');
      }
      for (const d of [door1, door2]) {
        if (d.ok && d.decision.decision === 'deny') expect(d.decision.reason).to.equal('already-checked-in');
      }
      const stored = await sessionsOf(a.userId);
      expect(stored).to.have.length(1);
      expect(stored[0]!.status).to.equal('active');
      expect((await claimOf(a.userId))?.sessionId).to.equal(stored[0]!._id);

      clock.advance(25 * MIN);
      await tc.sessions.recordMachineUse(String(stored[0]!._id), 'bike-1');
      const end = await api(a, 'POST', '/api/sessions/end', {});
      expect(end.status).to.equal(200);
      const session = end.body.session as SessionView;
      expect(session).to.include({ status: 'ended', durationMs: 25 * MIN, endReason: 'member' });
      expect(session.machinesUsed).to.deep.equal(['bike-1']);
      expect(await claimOf(a.userId)).to.equal(null);
      expect((await api(a, 'GET', '/api/sessions/current')).body).to.deep.equal({ session: null });
      expect((await api(a, 'POST', '/api/sessions/end', {})).status).to.equal(404);
      await eventually(
        'ended event',
        () => ended.some((e) => e.sessionId === session.id && e.reason === 'member'),
        5000,
      );
    });

    it('opens exactly one session when ten check-ins race on two cloud nodes sharing MongoDB and Redis', async () => {
      const m = await member();
      const db = tc.mongo.db!.databaseName;
      const { mongoUrl } = testServices();
      const second = await startTestCloud({
        clock,
        env: {
          MONGO_URL: `${mongoUrl}/${db}`,
          REDIS_KEY_PREFIX: tc.redisKeyPrefix,
          JOBS_POLL_INTERVAL_MS: '200',
          SESSION_JOBS_LOCK_SECONDS: '1',
        },
      });
      try {
        const credential = { kind: 'nfc' as const, uid: m.uid };
        const results = await Promise.all(
          Array.from({ length: 10 }, (_, i) =>
            (i % 2 === 0 ? tc : second).sessions.checkIn({ credential, branchId: GYM_A, via: { origin: 'app' } }),
          ),
        );
        expect(results.filter((r) => r.ok)).to.have.length(1);
        expect(results.filter((r) => !r.ok).map((r) => !r.ok && r.reason)).to.deep.equal(
          Array(9).fill('already-checked-in'),
        );
        expect(await sessionsOf(m.userId)).to.have.length(1);
        // Either node ends it; the other then finds nothing open.
        expect((await second.sessions.checkOut({ userId: m.userId, via: { origin: 'app' } })).ok).to.equal(true);
        expect((await tc.sessions.checkOut({ userId: m.userId, via: { origin: 'app' } })).ok).to.equal(false);
      } finally {
        await second.stop();
      }
    });

    it('refuses another member’s credential, a branch without membership, and check-in after closing time', async () => {
      const a = await member();
      const b = await member();
      const other = await api(a, 'POST', '/api/sessions/start', { branchId: GYM_A, credential: qr(b) });
      expect(other.status).to.equal(403);
      expect(other.body.type).to.equal('/problems/credential-of-another-member');
      const notMember = await api(a, 'POST', '/api/sessions/start', { branchId: GYM_B, credential: qr(a) });
      expect(notMember.status).to.equal(403);
      expect(notMember.body.type).to.equal('/problems/membership-inactive');
      const unknown = await api(a, 'POST', '/api/sessions/start', { branchId: 'gym-x', credential: qr(a) });
      expect(unknown.status).to.equal(404);
      expect(await sessionsOf(a.userId)).to.have.length(0);
      expect(await sessionsOf(b.userId)).to.have.length(0);
    });

    it('lets staff of the branch check a member in at the desk with the member’s card, and nobody else', async () => {
      const m = await member();
      const desk = deskStaff;
      await tc.branches.staff.assign('test-admin', desk.userId, GYM_B);
      const elsewhere = await api(desk, 'POST', '/api/sessions/start', {
        branchId: GYM_A,
        credential: { kind: 'nfc', uid: m.uid },
      });
      expect(elsewhere.status).to.equal(403);
      expect(elsewhere.body.type).to.equal('/problems/credential-of-another-member');
      // Where they are not staff, staff are members like everyone: their own credential opens their own session.
      await tc.users.services.memberships.join(desk.userId, GYM_D);
      const training = await api(desk, 'POST', '/api/sessions/start', { branchId: GYM_D, credential: qr(desk) });
      expect(training.status, JSON.stringify(training.body)).to.equal(201);
      expect(training.body.session).to.include({ userId: desk.userId, branchId: GYM_D });
      expect((await api(desk, 'POST', '/api/sessions/end', {})).status).to.equal(200);
      await tc.branches.staff.assign('test-admin', desk.userId, GYM_A);
      const started = await api(desk, 'POST', '/api/sessions/start', {
        branchId: GYM_A,
        credential: { kind: 'nfc', uid: m.uid },
      });
      expect(started.status).to.equal(201);
      expect(started.body.session).to.include({ userId: m.userId, branchId: GYM_A, origin: 'app' });
      expect((await api(m, 'GET', '/api/sessions/current')).body.session).to.include({ userId: m.userId });
      expect((await api(desk, 'GET', '/api/sessions/current')).body).to.deep.equal({ session: null });
      await tc.sessions.checkOut({ userId: m.userId, via: { origin: 'app' } });
    });

    it('answers a door check-in and check-out over MQTT within a second (3× margin), from the same service', async () => {
      const m = await member();
      const started = performance.now();
      const inAnswer = await door('check-in', m.uid);
      expect(performance.now() - started).to.be.below(3000);
      expect(inAnswer.ok).to.equal(true);
      if (!inAnswer.ok || inAnswer.decision.decision !== 'allow') throw new Error(JSON.stringify(inAnswer));
      expect(inAnswer.decision.userId).to.equal(m.userId);
      const current = await api(m, 'GET', '/api/sessions/current');
      expect((current.body.session as SessionView).id).to.equal(inAnswer.decision.sessionId);
      expect((current.body.session as SessionView).origin).to.equal('gateway');

      clock.advance(40 * MIN);
      const outStarted = performance.now();
      const outAnswer = await door('check-out', m.uid);
      expect(performance.now() - outStarted).to.be.below(3000);
      expect(outAnswer).to.deep.include({ ok: true });
      const [session] = await sessionsOf(m.userId);
      expect(session).to.include({ status: 'ended', durationMs: 40 * MIN, endReason: 'check-out' });
      const again = await door('check-out', m.uid);
      expect(again.ok && again.decision).to.deep.include({ decision: 'deny', reason: 'not-checked-in' });
      const unknownCard = await door('check-in', 'deadbeef');
      expect(unknownCard.ok && unknownCard.decision).to.deep.include({
        decision: 'deny',
        reason: 'unknown-credential',
      });
    });
  });

  describe('history and isolation', () => {
    it('pages a member’s history newest first with date and branch filters and usage figures', async () => {
      const c = await member([GYM_A, GYM_B]);
      const ids: string[] = [];
      const startedAt: number[] = [];
      for (let i = 0; i < 5; i++) {
        const branchId = i % 2 === 0 ? GYM_A : GYM_B;
        const r = await tc.sessions.checkIn({ credential: qr(c), branchId, via: { origin: 'app' } });
        if (!r.ok) throw new Error(r.reason);
        ids.push(r.session.id);
        startedAt.push(clock.nowMs());
        clock.advance((i + 1) * 10 * MIN);
        expect((await tc.sessions.checkOut({ userId: c.userId, via: { origin: 'app' } })).ok).to.equal(true);
        clock.advance(5 * MIN);
      }
      const seen: string[] = [];
      let cursor: string | null = null;
      let pages = 0;
      do {
        const query: string = `/api/sessions/history?limit=2${cursor ? `&cursor=${cursor}` : ''}`;
        const page = await api(c, 'GET', query);
        expect(page.status).to.equal(200);
        seen.push(...(page.body.items as SessionView[]).map((s) => s.id));
        cursor = page.body.nextCursor as string | null;
        pages++;
        expect(page.body.usage).to.deep.equal({
          visits: 5,
          totalDurationMs: 150 * MIN,
          averageDurationMs: 30 * MIN,
          machinesUsed: 0,
          conflicts: 0,
        });
      } while (cursor);
      expect(pages).to.equal(3);
      expect(seen).to.deep.equal([...ids].reverse());

      const inB = await api(c, 'GET', `/api/sessions/history?branchId=${GYM_B}`);
      expect((inB.body.items as SessionView[]).map((s) => s.id)).to.deep.equal([ids[3], ids[1]]);
      expect(inB.body.usage).to.include({ visits: 2, totalDurationMs: 60 * MIN });
      const from = new Date(startedAt[1]!).toISOString();
      const to = new Date(startedAt[3]!).toISOString();
      const ranged = await api(c, 'GET', `/api/sessions/history?from=${from}&to=${to}`);
      expect((ranged.body.items as SessionView[]).map((s) => s.id)).to.deep.equal([ids[2], ids[1]]);
      const bad = await api(c, 'GET', '/api/sessions/history?cursor=not-a-cursor!');
      expect(bad.status).to.equal(400);
    });

    it('never shows a member another member’s session (404 like a missing one)', async () => {
      const a = await member();
      const b = await member();
      const r = await tc.sessions.checkIn({ credential: qr(a), branchId: GYM_A, via: { origin: 'app' } });
      if (!r.ok) throw new Error(r.reason);
      expect((await api(a, 'GET', `/api/sessions/${r.session.id}`)).status).to.equal(200);
      const foreign = await api(b, 'GET', `/api/sessions/${r.session.id}`);
      expect(foreign.status).to.equal(404);
      expect((await api(b, 'GET', `/api/sessions/no-such-session`)).status).to.equal(404);
      expect((await api(b, 'GET', '/api/sessions/history')).body.items).to.deep.equal([]);
      expect((await api(b, 'GET', '/api/sessions/current')).body).to.deep.equal({ session: null });
      // b cannot end a's session either: there is nothing open of b's to end.
      expect((await api(b, 'POST', '/api/sessions/end', { sessionId: r.session.id })).status).to.equal(404);
      expect((await sessionsOf(a.userId))[0]!.status).to.equal('active');
      await tc.sessions.checkOut({ userId: a.userId, via: { origin: 'app' } });
    });
  });

  describe('jobs (agenda, injected clock)', () => {
    it('ends a session after 4 hours (auto-timeout) and at the branch’s closing time (branch-closed)', async () => {
      // 10:00 local: the 4-hour limit comes first. 19:00 local: closing at 22:00 comes first.
      clock.set(Date.UTC(2026, 2, 3, 9, 0));
      const early = await member();
      const r1 = await tc.sessions.checkIn({ credential: qr(early), branchId: GYM_A, via: { origin: 'app' } });
      if (!r1.ok) throw new Error(r1.reason);
      expect(r1.session.autoEndReason).to.equal('auto-timeout');
      clock.advance(3 * HOUR + 59 * MIN);
      await tc.sessions.runJobNow('autoEnd');
      expect((await sessionsOf(early.userId))[0]!.status).to.equal('active');
      const notices: { category: string; data: Record<string, string> }[] = [];
      await new Promise<void>((resolve) =>
        tc.broker.aedes.subscribe(
          `nxg/v1/u/${early.userId}/live/notification`,
          (packet, done) => {
            notices.push(JSON.parse(packet.payload.toString()) as (typeof notices)[number]);
            done();
          },
          resolve,
        ),
      );
      clock.advance(2 * MIN);
      await tc.sessions.runJobNow('autoEnd');
      const [s1] = await sessionsOf(early.userId);
      expect(s1).to.include({ status: 'ended', endReason: 'auto-timeout', durationMs: 4 * HOUR });
      expect(await claimOf(early.userId)).to.equal(null);
      await eventually('auto-timeout event', () => ended.find((e) => e.sessionId === r1.session.id), 5000);
      expect(ended.find((e) => e.sessionId === r1.session.id)).to.include({ reason: 'auto-timeout', branch: GYM_A });
      await eventually('in-app notice', () => notices.length === 1, 5000);
      expect(notices[0]).to.deep.include({ category: 'session-ended' });
      expect(notices[0]!.data).to.include({ sessionId: r1.session.id, reason: 'auto-timeout' });

      clock.set(Date.UTC(2026, 2, 3, 18, 0)); // 19:00 local
      const late = await member();
      const r2 = await tc.sessions.checkIn({ credential: qr(late), branchId: GYM_A, via: { origin: 'app' } });
      if (!r2.ok) throw new Error(r2.reason);
      expect(r2.session).to.include({ autoEndReason: 'branch-closed', autoEndAt: '2026-03-03T21:00:00.000Z' });
      clock.set(Date.UTC(2026, 2, 3, 21, 30));
      await tc.sessions.runJobNow('autoEnd');
      const [s2] = await sessionsOf(late.userId);
      expect(s2).to.include({ status: 'ended', endReason: 'branch-closed', durationMs: 3 * HOUR });
      await eventually('branch-closed event', () => ended.find((e) => e.sessionId === r2.session.id), 5000);
      const afterHours = await api(late, 'POST', '/api/sessions/start', { branchId: GYM_A, credential: qr(late) });
      expect(afterHours.status).to.equal(403);
      expect(afterHours.body.type).to.equal('/problems/outside-opening-hours');
    });

    it('sets the closing-time end in the branch’s zone across DST and past midnight', async () => {
      const night = Object.fromEntries(WEEKDAYS.map((d) => [d, [{ open: '18:00', close: '02:00' }]])) as never;
      await tc.branches.create('test-admin', 'gym-night', {
        name: 'night',
        timeZone: 'Europe/Berlin',
        openingHours: night,
      });
      // Saturday 28 March 2026, 23:00 local (UTC+1) is 22:00 UTC. Berlin moves to UTC+2 that night at 02:00 local —
      // the closing time itself: the branch closes at 01:00 UTC, three real hours later (not four, not two).
      clock.set(Date.UTC(2026, 2, 28, 22, 0));
      const m = await member(['gym-night']);
      const r = await tc.sessions.checkIn({ credential: qr(m), branchId: 'gym-night', via: { origin: 'app' } });
      if (!r.ok) throw new Error(r.reason);
      expect(r.session).to.include({ autoEndReason: 'branch-closed', autoEndAt: '2026-03-29T01:00:00.000Z' });
      clock.set(Date.UTC(2026, 2, 29, 1, 5)); // 03:05 local, past midnight: closed
      await tc.sessions.runJobNow('autoEnd');
      expect((await sessionsOf(m.userId))[0]).to.include({
        status: 'ended',
        endReason: 'branch-closed',
        durationMs: 3 * HOUR,
      });
      const closed = await api(m, 'POST', '/api/sessions/start', { branchId: 'gym-night', credential: qr(m) });
      expect(closed.body.type).to.equal('/problems/outside-opening-hours');
    });

    it('clears a claim left by a crash (no session behind it), so the member can check in again', async () => {
      clock.set(Date.UTC(2026, 2, 4, 9, 0));
      const m = await member();
      await tc.mongo
        .collection(SESSION_COLLECTIONS.claims)
        .insertOne({ _id: m.userId as never, sessionId: 'lost-in-crash', branchId: GYM_A, createdAt: clock.now() });
      // Young: it may be a check-in between its two writes, so it still blocks.
      const blocked = await tc.sessions.checkIn({ credential: qr(m), branchId: GYM_A, via: { origin: 'app' } });
      expect(blocked).to.deep.include({ ok: false, reason: 'already-checked-in' });
      clock.advance(2 * MIN);
      await tc.sessions.runJobNow('claims');
      expect(await claimOf(m.userId)).to.equal(null);
      const start = await api(m, 'POST', '/api/sessions/start', { branchId: GYM_A, credential: qr(m) });
      expect(start.status).to.equal(201);
    });
  });

  describe('crashes and stalls between the two writes (no transactions)', () => {
    afterEach(() => sinon.restore());

    it('lets the member in at once when a crash left the claim of a session that had already ended', async () => {
      clock.set(Date.UTC(2026, 2, 4, 10, 0));
      const m = await member();
      const r = await tc.sessions.checkIn({ credential: qr(m), branchId: GYM_A, via: { origin: 'app' } });
      if (!r.ok) throw new Error(r.reason);
      // The end was written, the claim's deletion was not (the node died in between).
      await tc.mongo
        .collection(SESSION_COLLECTIONS.sessions)
        .updateOne({ _id: r.session.id as never }, { $set: { status: 'ended', endedAt: clock.now(), durationMs: 0 } });
      expect((await api(m, 'GET', '/api/sessions/current')).body).to.deep.equal({ session: null });
      const again = await api(m, 'POST', '/api/sessions/start', { branchId: GYM_A, credential: qr(m) });
      expect(again.status, JSON.stringify(again.body)).to.equal(201);
      expect((await claimOf(m.userId))?.sessionId).to.equal((again.body.session as SessionView).id);
      await tc.sessions.checkOut({ userId: m.userId, via: { origin: 'app' } });
    });

    it('refuses a check-in whose claim was taken over while it stalled, and closes its session as superseded', async () => {
      clock.set(Date.UTC(2026, 2, 4, 11, 0));
      const m = await member();
      const Session = tc.mongo.models.GymSession!;
      const create = Session.create.bind(Session);
      // Fault injection: the check-in stalls after its claim, past the grace period; the claim is then taken for a
      // crash's leftover and another check-in of the member holds it.
      sinon.stub(Session, 'create').callsFake((async (...args: Parameters<typeof create>) => {
        await tc.mongo
          .collection(SESSION_COLLECTIONS.claims)
          .updateOne({ _id: m.userId as never }, { $set: { sessionId: 'the-other-check-in' } });
        return create(...args);
      }) as never);
      const r = await tc.sessions.checkIn({ credential: qr(m), branchId: GYM_A, via: { origin: 'app' } });
      sinon.restore();
      expect(r).to.deep.include({ ok: false, reason: 'already-checked-in' });
      const [stalled] = await sessionsOf(m.userId);
      expect(stalled).to.include({ status: 'ended', endReason: 'superseded' });
      expect((await claimOf(m.userId))?.sessionId).to.equal('the-other-check-in');
    });
  });

  describe('offline door decisions (access scans through ingest)', () => {
    let seq = 0;
    const bootId = newBootId();
    const scan = (action: 'check-in' | 'check-out', m: TestAccount & { uid: string }, ts: number) => ({
      kind: 'access-scan',
      payload: {
        msgId: newMsgId(),
        source: 'gw-door',
        bootId,
        seq: ++seq,
        ts,
        v: PROTOCOL_MINOR,
        reader: 'door-1',
        action,
        credential: { kind: 'nfc', uid: m.uid },
        decision: 'allow',
        decidedBy: 'offline',
        userId: m.userId,
      },
    });
    const send = async (records: unknown[]) => {
      const batchId = newBatchId();
      const acked = new Promise<{ acked: string[] }>((resolve) => {
        const onAck = (topic: string, payload: Buffer) => {
          const ack = JSON.parse(payload.toString()) as { batchId: string; acked: string[] };
          if (ack.batchId !== batchId) return;
          gw.off('message', onAck);
          resolve(ack);
        };
        gw.on('message', onAck);
      });
      await gw.publishAsync(
        topics.gatewayUplink(asBranchId(GYM_A), asGatewayId('gw-door'), 'access'),
        JSON.stringify({ batchId, sentAt: clock.nowMs(), records }),
        { qos: 1 },
      );
      return acked;
    };

    /** The scan as ingest hands it to sessions once stored. */
    const stored = (record: ReturnType<typeof scan>) => ({
      msgId: record.payload.msgId,
      branch: GYM_A,
      gateway: 'gw-door',
      payload: record.payload as never,
    });

    before(async () => {
      await gw.subscribeAsync(topics.gatewayAck(asBranchId(GYM_A), asGatewayId('gw-door')), { qos: 1 });
    });

    it('opens and closes sessions by event time and records a check-in during an open session as a conflict', async () => {
      clock.set(Date.UTC(2026, 2, 5, 12, 0));
      const offline = await member();
      const busy = await member();
      const online = await tc.sessions.checkIn({ credential: qr(busy), branchId: GYM_A, via: { origin: 'app' } });
      if (!online.ok) throw new Error(online.reason);
      const t1 = Date.UTC(2026, 2, 5, 10, 0);
      const t2 = Date.UTC(2026, 2, 5, 11, 15);
      const first = scan('check-in', offline, t1);
      const ack = await send([
        first,
        scan('check-out', offline, t2),
        // The online check-in decided again offline (its answer came too late): the same visit, nothing recorded.
        scan('check-in', busy, clock.nowMs() - 5_000),
        scan('check-in', busy, clock.nowMs() + MIN),
      ]);
      expect(ack.acked).to.have.length(4);

      const [visit] = await eventually(
        'offline visit closed',
        async () => {
          const docs = await sessionsOf(offline.userId);
          return docs[0]?.status === 'ended' ? docs : undefined;
        },
        10_000,
      );
      expect(visit).to.include({ status: 'ended', durationMs: 75 * MIN, endReason: 'check-out' });
      expect((visit!.startedAt as Date).getTime()).to.equal(t1);
      expect(visit!.startedVia).to.include({ origin: 'offline', gateway: 'gw-door' });
      const conflicts = await eventually(
        'conflict recorded',
        async () => {
          const docs = (await sessionsOf(busy.userId)).filter((d) => d.status === 'conflict');
          return docs.length > 0 ? docs : undefined;
        },
        10_000,
      );
      expect(conflicts).to.have.length(1);
      expect(await sessionsOf(busy.userId)).to.have.length(2); // the active one and the conflict
      expect(conflicts[0]!.conflictWith).to.equal(online.session.id);
      expect((await claimOf(busy.userId))?.sessionId).to.equal(online.session.id);

      const history = await api(busy, 'GET', '/api/sessions/history');
      expect((history.body.items as SessionView[]).map((s) => s.status)).to.deep.equal(['conflict', 'active']);
      expect(history.body.usage).to.include({ visits: 1, conflicts: 1 });
      const offlineHistory = await api(offline, 'GET', '/api/sessions/history');
      expect((offlineHistory.body.items as SessionView[])[0]).to.include({ origin: 'offline', durationMs: 75 * MIN });

      // A resent record (same msgId) is acked again and changes nothing.
      await send([first]);
      expect(await sessionsOf(offline.userId)).to.have.length(1);
    });
    it('places late scans by event time: superseded, ended by its auto-end, a late check-out correcting an end', async () => {
      clock.set(Date.UTC(2026, 2, 6, 15, 0));
      const m = await member();
      // A session opened online at 14:00 (UTC); an offline check-in at 12:00 arrives later, without a check-out.
      clock.set(Date.UTC(2026, 2, 6, 14, 0));
      const online = await tc.sessions.checkIn({ credential: qr(m), branchId: GYM_A, via: { origin: 'app' } });
      if (!online.ok) throw new Error(online.reason);
      clock.set(Date.UTC(2026, 2, 6, 15, 0));
      const early = stored(scan('check-in', m, Date.UTC(2026, 2, 6, 12, 0)));
      await tc.sessions.reconcileScans([early]);
      await tc.sessions.reconcileScans([early]); // a retried run: nothing more
      let docs = await sessionsOf(m.userId);
      expect(docs.map((d): unknown[] => [d.status, d.endReason, d.durationMs])).to.deep.equal([
        ['ended', 'superseded', 2 * HOUR],
        ['active', undefined, undefined],
      ]);
      // It left at 12:40 after all: the check-out arriving now corrects that visit's end.
      await tc.sessions.reconcileScans([stored(scan('check-out', m, Date.UTC(2026, 2, 6, 12, 40)))]);
      docs = await sessionsOf(m.userId);
      expect(docs[0]).to.include({ status: 'ended', endReason: 'check-out', durationMs: 40 * MIN });
      expect(docs[1]!.status).to.equal('active');
      await tc.sessions.checkOut({ userId: m.userId, via: { origin: 'app' } });

      // A check-in from yesterday morning whose 4 hours are long over: recorded as ended then, no claim taken.
      await tc.sessions.reconcileScans([stored(scan('check-in', m, Date.UTC(2026, 2, 5, 7, 0)))]);
      docs = await sessionsOf(m.userId);
      expect(docs[0]).to.include({ status: 'ended', endReason: 'auto-timeout', durationMs: 4 * HOUR });
      expect(await claimOf(m.userId)).to.equal(null);
    });

    it('applies a check-out that arrives before its check-in (a retried batch) to that visit, once', async () => {
      clock.set(Date.UTC(2026, 2, 7, 12, 0));
      const m = await member();
      const checkIn = stored(scan('check-in', m, Date.UTC(2026, 2, 7, 10, 0)));
      const checkOut = stored(scan('check-out', m, Date.UTC(2026, 2, 7, 11, 30)));
      await tc.sessions.reconcileScans([checkOut]);
      await tc.sessions.reconcileScans([checkOut]); // retried: still only held once
      expect(await sessionsOf(m.userId)).to.have.length(0);
      await tc.sessions.reconcileScans([checkIn]);
      const docs = await sessionsOf(m.userId);
      expect(docs).to.have.length(1);
      expect(docs[0]).to.include({ status: 'ended', endReason: 'check-out', durationMs: 90 * MIN });
      // Not left open (that would refuse the member's next check-in with already-checked-in for hours).
      expect(await claimOf(m.userId)).to.equal(null);
      const pending = tc.mongo.collection(SESSION_COLLECTIONS.pendingCheckOuts);
      expect(await pending.countDocuments({ userId: m.userId })).to.equal(0);
      // Both retried once more: nothing changes, and no check-out is held for a later visit.
      await tc.sessions.reconcileScans([checkOut, checkIn]);
      expect(await sessionsOf(m.userId)).to.have.length(1);
      expect(await pending.countDocuments({ userId: m.userId })).to.equal(0);
      const start = await api(m, 'POST', '/api/sessions/start', { branchId: GYM_A, credential: qr(m) });
      expect(start.status, JSON.stringify(start.body)).to.equal(201);
      await tc.sessions.checkOut({ userId: m.userId, via: { origin: 'app' } });
    });

    it('places a second visit stored before the first visit’s check-out as a visit, not a conflict', async () => {
      clock.set(Date.UTC(2026, 2, 11, 11, 30));
      const m = await member();
      const a1In = scan('check-in', m, Date.UTC(2026, 2, 11, 8, 0));
      const a1Out = scan('check-out', m, Date.UTC(2026, 2, 11, 9, 0));
      const a2In = scan('check-in', m, Date.UTC(2026, 2, 11, 10, 0));
      const applied = (n: number, status: string) =>
        eventually(
          `${n} sessions, the last ${status}`,
          async () => {
            const docs = await sessionsOf(m.userId);
            return docs.length === n && docs.at(-1)?.status === status ? docs : undefined;
          },
          10_000,
        );
      // Stored (and reconciled) in three batches in the order A1-in, A2-in, A1-out.
      await send([a1In]);
      await applied(1, 'active');
      await send([a2In]);
      await applied(2, 'conflict'); // A1 is still open as far as the cloud knows
      await send([a1Out]);
      const docs = await eventually(
        'the second visit placed again',
        async () => {
          const d = await sessionsOf(m.userId);
          return d[1]?.status === 'active' ? d : undefined;
        },
        10_000,
      );
      expect(docs.map((d): unknown[] => [d.status, d.endReason, d.durationMs])).to.deep.equal([
        ['ended', 'check-out', HOUR],
        ['active', undefined, undefined],
      ]);
      expect(docs[1]).to.not.have.property('conflictWith');
      expect((docs[1]!.startedAt as Date).getTime()).to.equal(Date.UTC(2026, 2, 11, 10, 0));
      expect((await claimOf(m.userId))?.sessionId).to.equal(docs[1]!._id);
      // Retried runs of all three (the sweep after a failure): nothing changes.
      await tc.sessions.reconcileScans([stored(a1In), stored(a2In), stored(a1Out)]);
      await tc.sessions.reconcileScans([stored(a1Out)]);
      const again = await sessionsOf(m.userId);
      expect(again.map((d): unknown => d.status)).to.deep.equal(['ended', 'active']);
      expect(again[0]!.endedAt).to.deep.equal(docs[0]!.endedAt);
      const history = await api(m, 'GET', '/api/sessions/history');
      expect(history.body.usage).to.include({ visits: 2, conflicts: 0 });
      await tc.sessions.checkOut({ userId: m.userId, via: { origin: 'app' } });
    });

    it('holds no check-out for later when a retried check-out had closed its session', async () => {
      clock.set(Date.UTC(2026, 2, 7, 16, 0));
      const m = await member();
      const online = await tc.sessions.checkIn({ credential: qr(m), branchId: GYM_A, via: { origin: 'app' } });
      if (!online.ok) throw new Error(online.reason);
      clock.advance(30 * MIN);
      const checkOut = stored(scan('check-out', m, clock.nowMs() - MIN));
      await tc.sessions.reconcileScans([checkOut]);
      await tc.sessions.reconcileScans([checkOut]);
      expect((await sessionsOf(m.userId))[0]).to.include({ status: 'ended', endReason: 'check-out' });
      const pending = tc.mongo.collection(SESSION_COLLECTIONS.pendingCheckOuts);
      expect(await pending.countDocuments({ userId: m.userId })).to.equal(0);
    });

    it('does not call a check-in a conflict with a session whose auto-end had passed (job not run yet)', async () => {
      clock.set(Date.UTC(2026, 2, 8, 7, 0)); // 08:00 local
      const m = await member();
      const stale = await tc.sessions.checkIn({ credential: qr(m), branchId: GYM_A, via: { origin: 'app' } });
      if (!stale.ok) throw new Error(stale.reason);
      // 5 hours later, before the auto-end job ran: an offline check-in at the door.
      clock.advance(5 * HOUR);
      await tc.sessions.reconcileScans([stored(scan('check-in', m, clock.nowMs() - MIN))]);
      const docs = await sessionsOf(m.userId);
      expect(docs.map((d): unknown => d.status)).to.not.include('conflict');
      expect(docs[0]).to.include({ status: 'ended', endReason: 'auto-timeout', durationMs: 4 * HOUR });
      expect(docs[1]).to.include({ status: 'active' });
      expect((await claimOf(m.userId))?.sessionId).to.equal(docs[1]!._id);
      // The same holds online: an overdue session does not refuse the member at the door.
      await tc.sessions.checkOut({ userId: m.userId, via: { origin: 'app' } });
      const again = await tc.sessions.checkIn({ credential: qr(m), branchId: GYM_A, via: { origin: 'app' } });
      if (!again.ok) throw new Error(again.reason);
      clock.advance(4 * HOUR + MIN);
      const overdue = await api(m, 'POST', '/api/sessions/start', { branchId: GYM_A, credential: qr(m) });
      expect(overdue.status, JSON.stringify(overdue.body)).to.equal(201);
      await tc.sessions.checkOut({ userId: m.userId, via: { origin: 'app' } });
    });
  });

  describe('analytics', () => {
    it('gives staff of the branch peak hours, average duration and visits per weekday; others 403', async () => {
      const staff = await account('staff');
      await tc.branches.staff.assign('test-admin', staff.userId, GYM_C);
      const admin = await account('admin');
      const visit = async (m: TestAccount, startMs: number, minutes: number) => {
        clock.set(startMs);
        const r = await tc.sessions.checkIn({ credential: qr(m), branchId: GYM_C, via: { origin: 'app' } });
        if (!r.ok) throw new Error(r.reason);
        clock.advance(minutes * MIN);
        expect((await tc.sessions.checkOut({ userId: m.userId, via: { origin: 'app' } })).ok).to.equal(true);
      };
      const [m1, m2] = [await member([GYM_C]), await member([GYM_C])];
      // Monday 9 March 09:30 and 09:50 local (UTC+1), Tuesday 10 March 17:10 local.
      await visit(m1, Date.UTC(2026, 2, 9, 8, 30), 20);
      await visit(m2, Date.UTC(2026, 2, 9, 8, 50), 40);
      await visit(m1, Date.UTC(2026, 2, 10, 16, 10), 60);
      const query = `branchId=${GYM_C}&from=2026-03-01T00:00:00Z&to=2026-03-31T00:00:00Z`;
      const byAdmin = await api(admin, 'GET', `/api/sessions/analytics?${query}`);
      expect(byAdmin.status).to.equal(200);
      expect(byAdmin.body).to.include({ visits: 3, members: 2, averageDurationMs: 40 * MIN });
      expect(byAdmin.body.peakHours).to.deep.equal([9, 17]);
      const weekdays = byAdmin.body.visitsByWeekday as { weekday: string; visits: number }[];
      expect(weekdays.slice(0, 3).map((d) => d.visits)).to.deep.equal([2, 1, 0]);
      expect((byAdmin.body.checkInsByHour as { hour: number; visits: number }[])[9]).to.deep.equal({
        hour: 9,
        visits: 2,
      });
      const byStaff = await api(staff, 'GET', `/api/sessions/analytics?${query}`);
      expect(byStaff.body).to.deep.equal(byAdmin.body);
      expect((await api(staff, 'GET', `/api/sessions/analytics?branchId=${GYM_A}`)).status).to.equal(403);
      expect((await api(m1, 'GET', `/api/sessions/analytics?branchId=${GYM_C}`)).status).to.equal(403);
    });
  });
});
