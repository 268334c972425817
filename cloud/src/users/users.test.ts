import { expect } from 'chai';
import { Types } from 'mongoose';
import {
  createTestAccount,
  postJson,
  startTestCloud,
  tokenFromEmail,
  type TestAccount,
  type TestCloud,
} from '../../../test/helpers/accounts.ts';
import { testServices, uniqueDbName } from '../../../test/helpers/services.ts';
import { call, fieldsOf, testFieldKeys } from '../../../test/helpers/users-api.ts';
import type { SealedValue } from '../crypto/field-cipher.ts';
import { rotateFromEnv } from '../crypto/rotate-cli.ts';
import { macroTargets } from './macros.ts';
import { AVAILABILITY_ACCESS_CACHE_MS } from '../machines/routes.ts';
import { eventually } from '../../../test/helpers/eventually.ts';

type Json = Record<string, unknown>;
type Sealed = {
  _id: string;
  userId: string;
  sealed: { measurements: SealedValue; healthConditions: SealedValue; allergies: SealedValue };
};

describe('members API (real cloud, MongoDB-compatible server, Redis)', function () {
  this.timeout(60_000);
  let tc: TestCloud;
  let a: TestAccount;
  let b: TestAccount;
  const api = <T = Json>(method: string, path: string, token?: string, body?: unknown) =>
    call<T>(tc.url, method, path, token, body);

  before(async () => {
    tc = await startTestCloud({ dbPrefix: 'users', env: testFieldKeys().env });
    [a, b] = await Promise.all([createTestAccount(tc), createTestAccount(tc)]);
  });
  after(() => tc?.stop());

  describe('GET/PUT /api/users/profile', () => {
    it('answers 401 without a token and 415 for a non-JSON body', async () => {
      expect((await api('GET', '/api/users/profile')).status).to.equal(401);
      const res = await fetch(`${tc.url}/api/users/profile`, {
        method: 'PUT',
        headers: { Authorization: `Bearer ${a.accessToken}`, 'Content-Type': 'text/plain' },
        body: 'firstName=Eve',
      });
      expect(res.status).to.equal(415);
    });

    it('shows the account beside empty profile fields, then changes only the fields sent', async () => {
      const empty = await api('GET', '/api/users/profile', a.accessToken);
      expect(empty.status).to.equal(200);
      expect(empty.body).to.include({ id: a.userId, email: a.email, role: 'member', firstName: null });

      const first = await api('PUT', '/api/users/profile', a.accessToken, {
        firstName: 'Ada',
        lastName: 'Lovelace',
        dateOfBirth: '1990-12-10',
        sex: 'female',
        phone: '+4915112345678',
        avatarUrl: 'https://cdn.nxg.test/a.png',
      });
      expect(first.status).to.equal(200);
      const second = await api('PUT', '/api/users/profile', a.accessToken, { displayName: 'ada', phone: null });
      expect(second.body).to.include({
        firstName: 'Ada',
        lastName: 'Lovelace',
        displayName: 'ada',
        phone: null,
        dateOfBirth: '1990-12-10',
      });
      // B's profile is B's: untouched by A's writes.
      expect((await api('GET', '/api/users/profile', b.accessToken)).body).to.include({
        id: b.userId,
        firstName: null,
      });
    });

    it('refuses mass assignment with 400 naming role, status and emailVerified; the stored role stays member', async () => {
      const res = await api('PUT', '/api/users/profile', a.accessToken, {
        firstName: 'Eve',
        role: 'admin',
        status: 'active',
        emailVerified: true,
      });
      expect(res.status).to.equal(400);
      expect(res.headers.get('content-type')).to.match(/application\/problem\+json/);
      expect(fieldsOf(res.body)).to.include.members(['role', 'status', 'emailVerified']);
      expect(JSON.stringify(res.body)).to.not.match(/at .*\.ts:\d+/); // no stack trace
      const account = await tc.mongo.collection('accounts').findOne({ _id: new Types.ObjectId(a.userId) });
      expect(account).to.include({ role: 'member', status: 'active' });
      expect((await api('GET', '/api/users/profile', a.accessToken)).body).to.include({ firstName: 'Ada' });
    });

    it('refuses unknown keys, $-operators, dotted keys and impossible values', async () => {
      for (const [body, field] of [
        [{ nickname: 'x' }, 'nickname'],
        [{ $where: 'sleep(1000)' }, '$where'],
        [{ 'profile.role': 'admin' }, 'profile.role'],
        [{ firstName: { $ne: null } }, 'firstName.$ne'],
        [{ dateOfBirth: '2025-01-01' }, 'dateOfBirth'],
        [{ dateOfBirth: '1990-02-30' }, 'dateOfBirth'],
        [{ phone: '0151 123' }, 'phone'],
        [{ avatarUrl: 'javascript:alert(1)' }, 'avatarUrl'],
        [{ lastName: '   ' }, 'lastName'],
        [{ lastName: 'a\u0000b' }, 'lastName'],
        [{ displayName: 'admin\u202egnp.exe' }, 'displayName'], // shown reversed to other members
        [{ firstName: 'a\u2067b' }, 'firstName'],
        [{ displayName: '😀'.repeat(41) }, 'displayName'],
      ] as const) {
        const res = await api('PUT', '/api/users/profile', a.accessToken, body);
        expect(res.status, JSON.stringify(body)).to.equal(400);
        expect(fieldsOf(res.body), JSON.stringify(body)).to.include(field);
      }
    });
  });

  it('counts lengths in characters as the OpenAPI document does (an emoji is one)', async () => {
    const res = await api<Json>('PUT', '/api/users/profile', b.accessToken, { displayName: '😀'.repeat(40) });
    expect(res.status).to.equal(200);
    expect(res.body.displayName).to.equal('😀'.repeat(40));
    expect((await api('PUT', '/api/users/profile', b.accessToken, { displayName: null })).status).to.equal(200);
  });

  describe('POST /api/users/register (full-profile sign-up)', () => {
    it('creates the account and the profile in one request; pending members manage profile and body metrics only', async () => {
      const email = `full-${Date.now()}@nxg.test`;
      const password = 'correct-horse-battery-9';
      const res = await postJson(tc, '/api/users/register', {
        email,
        password,
        firstName: 'Grace',
        lastName: 'Hopper',
        dateOfBirth: '1986-12-09',
        sex: 'female',
        units: 'imperial',
      });
      expect(res.status).to.equal(202);
      expect(await res.json()).to.include({ status: 'accepted' });
      await tokenFromEmail(tc, email, 'verify-email'); // the verification email went out

      const login = (await (await postJson(tc, '/api/auth/login', { email, password })).json()) as Json;
      const token = login.accessToken as string;
      const profile = await api('GET', '/api/users/profile', token);
      expect(profile.body).to.include({
        firstName: 'Grace',
        lastName: 'Hopper',
        status: 'pending_verification',
        emailVerified: false,
      });
      expect((await api('GET', '/api/users/preferences', token)).body).to.include({ units: 'imperial' });
      // Pending verification: own profile and body metrics yes; gym access (branches) no.
      expect((await api('PUT', '/api/users/body-metrics', token, { measurements: { weightKg: 60 } })).status).to.equal(
        200,
      );
      const join = await api('POST', '/api/users/branches/demo', token);
      expect(join.status).to.equal(403);
      expect(join.body).to.include({ type: '/problems/email-not-verified' });

      // The same address again: the same answer, and nothing changes (no enumeration, no takeover of the profile).
      const again = await postJson(tc, '/api/users/register', { email, password, firstName: 'Mallory' });
      expect(again.status).to.equal(202);
      expect((await api('GET', '/api/users/profile', token)).body).to.include({ firstName: 'Grace' });
    });

    it('refuses account fields and impossible profile values before creating anything', async () => {
      const email = `refused-${Date.now()}@nxg.test`;
      const mass = await postJson(tc, '/api/users/register', {
        email,
        password: 'correct-horse-battery-9',
        role: 'admin',
        emailVerified: true,
      });
      expect(mass.status).to.equal(400);
      expect(fieldsOf(await mass.json())).to.include.members(['role', 'emailVerified']);
      const young = await postJson(tc, '/api/users/register', {
        email,
        password: 'correct-horse-battery-9',
        dateOfBirth: `${new Date().getUTCFullYear() - 5}-01-01`,
      });
      expect(young.status).to.equal(400);
      expect(await tc.mongo.collection('accounts').countDocuments({ email })).to.equal(0);
    });
  });

  describe('GET/PUT /api/users/body-metrics and history', () => {
    let c: TestAccount;
    before(async () => {
      c = await createTestAccount(tc);
      const year = new Date().getUTCFullYear() - 30;
      await api('PUT', '/api/users/profile', c.accessToken, { dateOfBirth: `${year}-01-01`, sex: 'male' });
    });

    it('computes BMI and Mifflin-St Jeor macro targets on the server and stores them', async () => {
      const res = await api<Json>('PUT', '/api/users/body-metrics', c.accessToken, {
        measurements: { weightKg: 80, heightCm: 180, bodyFatPct: 18, waistCm: 84 },
        fitness: { activityLevel: 'moderate', goal: 'lose_weight', healthConditions: ['asthma', 'asthma'] },
        diet: { preference: 'vegetarian', allergies: ['peanuts'], mealsPerDay: 4 },
      });
      expect(res.status).to.equal(200);
      expect(res.body.measurements).to.deep.equal({
        weightKg: 80,
        heightCm: 180,
        bodyFatPct: 18,
        waistCm: 84,
        bmi: 24.7,
      });
      expect((res.body.fitness as Json).healthConditions).to.deep.equal(['asthma']);
      // BMR = 10·80 + 6.25·180 − 5·30 + 5 = 1780; × 1.55 = 2759; −20 % = 2207 kcal; protein 2.0 g/kg = 160 g;
      // fat 25 % = 61 g; carbs the rest = 254 g.
      expect(res.body.macroTargets).to.include({
        bmrKcal: 1780,
        tdeeKcal: 2759,
        kcal: 2207,
        proteinG: 160,
        fatG: 61,
        carbsG: 254,
        method: 'mifflin-st-jeor',
      });
      const stored = await tc.mongo.collection('body_profiles').findOne({ _id: c.userId as never });
      expect(stored!.macroTargets).to.include({ kcal: 2207 });
      expect((await api('GET', '/api/users/body-metrics', c.accessToken)).body).to.deep.equal(res.body);

      // A profile change that moves the BMR (sex) recomputes the stored targets: −161 instead of +5.
      await api('PUT', '/api/users/profile', c.accessToken, { sex: 'female' });
      const after = await api<Json>('GET', '/api/users/body-metrics', c.accessToken);
      expect(after.body.macroTargets).to.include({ bmrKcal: 1614 });
      await api('PUT', '/api/users/profile', c.accessToken, { sex: 'male' });
      expect((await api<Json>('GET', '/api/users/body-metrics', c.accessToken)).body.macroTargets).to.include({
        bmrKcal: 1780,
      });
    });

    it('refuses impossible values with 400 naming the field and its bounds', async () => {
      for (const [measurements, field] of [
        [{ weightKg: 1000 }, 'measurements.weightKg'],
        [{ weightKg: -5 }, 'measurements.weightKg'],
        [{ heightCm: 10 }, 'measurements.heightCm'],
        [{ bodyFatPct: 90 }, 'measurements.bodyFatPct'],
        [{ restingHeartRateBpm: 60.5 }, 'measurements.restingHeartRateBpm'],
        [{ bmi: 22 }, 'measurements.bmi'],
        [{ weightKg: 60, muscleMassKg: 70 }, 'measurements'],
        [{ weightKg: 'heavy' }, 'measurements.weightKg'],
      ] as const) {
        const res = await api('PUT', '/api/users/body-metrics', c.accessToken, { measurements });
        expect(res.status, JSON.stringify(measurements)).to.equal(400);
        expect(fieldsOf(res.body), JSON.stringify(measurements)).to.include(field);
      }
      const weight = await api('PUT', '/api/users/body-metrics', c.accessToken, { measurements: { weightKg: 1000 } });
      expect(JSON.stringify(weight.body)).to.include('at most 400 kg');
      const future = await api('PUT', '/api/users/body-metrics', c.accessToken, {
        measuredAt: new Date(Date.now() + 86_400_000).toISOString(),
        measurements: { weightKg: 70 },
      });
      expect(fieldsOf(future.body)).to.include('measuredAt');
      const macros = await api('PUT', '/api/users/body-metrics', c.accessToken, { macroTargets: { kcal: 9000 } });
      expect(fieldsOf(macros.body)).to.include('macroTargets');
      expect((await api<Json>('GET', '/api/users/body-metrics', c.accessToken)).body.measurements).to.include({
        weightKg: 80,
      });
    });

    it('pages the history newest first within a date range; a back-dated entry leaves the current values alone', async () => {
      const d = createTestAccount(tc);
      const member = await d;
      for (const [day, weightKg] of [
        ['2026-01-05', 90],
        ['2026-02-05', 88],
        ['2026-03-05', 86],
        ['2026-04-05', 84],
      ] as const) {
        const res = await api('PUT', '/api/users/body-metrics', member.accessToken, {
          measuredAt: `${day}T07:00:00Z`,
          measurements: { weightKg, heightCm: 175 },
        });
        expect(res.status).to.equal(200);
      }
      const backdated = await api<Json>('PUT', '/api/users/body-metrics', member.accessToken, {
        measuredAt: '2025-12-01T07:00:00Z',
        measurements: { weightKg: 95 },
      });
      // Dated before 1970: its position in the history is a negative epoch (found by schemathesis via the export).
      for (const [measuredAt, weightKg] of [
        ['1965-06-01', 70],
        ['1950-01-01', 72],
      ] as const) {
        const old = await api('PUT', '/api/users/body-metrics', member.accessToken, {
          measuredAt,
          measurements: { weightKg },
        });
        expect(old.status).to.equal(200);
      }
      expect(backdated.body.measurements).to.include({ weightKg: 84 });
      expect(backdated.body.measuredAt).to.equal('2026-04-05T07:00:00.000Z');

      type Page = { items: { measuredAt: string; measurements: Json }[]; nextCursor: string | null };
      const first = await api<Page>('GET', '/api/users/body-metrics/history?limit=2', member.accessToken);
      expect(first.body.items.map((i) => i.measurements.weightKg)).to.deep.equal([84, 86]);
      expect(first.body.items[0]!.measurements).to.include({ bmi: 27.4 });
      const second = await api<Page>(
        'GET',
        `/api/users/body-metrics/history?limit=2&cursor=${first.body.nextCursor}`,
        member.accessToken,
      );
      expect(second.body.items.map((i) => i.measurements.weightKg)).to.deep.equal([88, 90]);
      const third = await api<Page>(
        'GET',
        `/api/users/body-metrics/history?limit=2&cursor=${second.body.nextCursor}`,
        member.accessToken,
      );
      expect(third.body.items.map((i) => i.measurements.weightKg)).to.deep.equal([95, 70]);
      expect(third.body.nextCursor).to.match(/^-\d+-/);
      const fourth = await api<Page>(
        'GET',
        `/api/users/body-metrics/history?limit=2&cursor=${third.body.nextCursor}`,
        member.accessToken,
      );
      expect(fourth.body.items.map((i) => i.measurements.weightKg)).to.deep.equal([72]);
      expect(fourth.body.nextCursor).to.equal(null);
      expect((await api('GET', '/api/users/export', member.accessToken)).status).to.equal(200);

      const ranged = await api<Page>(
        'GET',
        '/api/users/body-metrics/history?from=2026-02-01&to=2026-03-31',
        member.accessToken,
      );
      expect(ranged.body.items.map((i) => i.measurements.weightKg)).to.deep.equal([86, 88]);
      const clamped = await api<Page>('GET', '/api/users/body-metrics/history?limit=1000000', member.accessToken);
      expect(clamped.status).to.equal(200);
      expect(clamped.body.items).to.have.length(7);
      for (const bad of ['limit=0', 'limit=-1', 'cursor=%24ne', 'cursor=bm90LWEtY3Vyc29y', 'from=yesterday']) {
        expect((await api('GET', `/api/users/body-metrics/history?${bad}`, member.accessToken)).status, bad).to.equal(
          400,
        );
      }
      // Another member sees none of it.
      const other = await api<Page>('GET', '/api/users/body-metrics/history', b.accessToken);
      expect(other.body.items).to.deep.equal([]);
    });

    it('keeps health values encrypted at rest: no marker in the raw documents, key id stored, random IVs (P2)', async () => {
      const marker = 'MARKER-7731-hypertension';
      const [m1, m2] = await Promise.all([createTestAccount(tc), createTestAccount(tc)]);
      for (const member of [m1, m2]) {
        const res = await api('PUT', '/api/users/body-metrics', member.accessToken, {
          measurements: { weightKg: 123.456, heightCm: 171.3 },
          fitness: { healthConditions: [marker] },
          diet: { allergies: ['MARKER-sesame'] },
        });
        expect(res.status).to.equal(200);
      }
      const profiles = await tc.mongo
        .collection<Sealed>('body_profiles')
        .find({ _id: { $in: [m1.userId, m2.userId] } })
        .toArray();
      const entries = await tc.mongo
        .collection<Sealed>('body_metric_entries')
        .find({ userId: { $in: [m1.userId, m2.userId] } })
        .toArray();
      expect(profiles).to.have.length(2);
      expect(entries).to.have.length(2);
      const raw = JSON.stringify([...profiles, ...entries]);
      expect(raw).to.not.include('MARKER');
      expect(raw).to.not.include('123.456');
      expect(raw).to.not.include('171.3');
      for (const doc of profiles) {
        for (const field of ['measurements', 'healthConditions', 'allergies'] as const) {
          expect(doc.sealed[field]).to.include({ v: 1, kid: 'k1' });
        }
      }
      // Identical plaintexts (same weight, same conditions) → different ciphertexts.
      expect(profiles[0]!.sealed.healthConditions.ct).to.not.equal(profiles[1]!.sealed.healthConditions.ct);
      expect(entries[0]!.sealed.measurements.iv).to.not.equal(entries[1]!.sealed.measurements.iv);
      expect((await api<Json>('GET', '/api/users/body-metrics', m1.accessToken)).body.fitness).to.include({
        goal: null,
      });
    });

    it('answers a tampered ciphertext with a 409 problem, never a 5xx, and audits it (P2)', async () => {
      const member = await createTestAccount(tc);
      await api('PUT', '/api/users/body-metrics', member.accessToken, {
        measurements: { weightKg: 70, heightCm: 170 },
      });
      const doc = await tc.mongo.collection<Sealed>('body_profiles').findOne({ _id: member.userId });
      const tag = Buffer.from(doc!.sealed.measurements.tag, 'base64');
      tag[0]! ^= 0x80;
      await tc.mongo
        .collection('body_profiles')
        .updateOne({ _id: member.userId as never }, { $set: { 'sealed.measurements.tag': tag.toString('base64') } });
      const res = await api('GET', '/api/users/body-metrics', member.accessToken);
      expect(res.status).to.equal(409);
      expect(res.body).to.include({ type: '/problems/unreadable-data', field: 'measurements' });
      const put = await api('PUT', '/api/users/body-metrics', member.accessToken, { measurements: { weightKg: 71 } });
      expect(put.status).to.equal(409);
      const audit = await tc.mongo
        .collection('audit_log')
        .findOne({ action: 'sealed_field_unreadable', target: member.userId });
      expect(audit).to.not.equal(null);
    });
  });

  describe('preferences and privacy', () => {
    it('starts from private-by-default values and changes only the keys sent', async () => {
      const prefs = await api<Json>('GET', '/api/users/preferences', b.accessToken);
      expect(prefs.body).to.include({ units: 'metric', timezone: 'UTC' });
      expect(prefs.body.notifications).to.include({ marketing: false, push: true });
      const changed = await api<Json>('PUT', '/api/users/preferences', b.accessToken, {
        timezone: 'Europe/Vienna',
        notifications: { marketing: true },
      });
      expect(changed.body).to.include({ timezone: 'Europe/Vienna', units: 'metric' });
      expect(changed.body.notifications).to.include({ marketing: true, push: true, email: true });
      expect((await api('PUT', '/api/users/preferences', b.accessToken, { timezone: 'Mars/Olympus' })).status).to.equal(
        400,
      );

      const privacy = await api<Json>('GET', '/api/users/privacy', b.accessToken);
      expect(privacy.body).to.include({
        leaderboards: 'anonymous',
        profileVisibility: 'members',
        shareWorkouts: false,
      });
      const hidden = await api<Json>('PUT', '/api/users/privacy', b.accessToken, { leaderboards: 'hidden' });
      expect(hidden.body).to.include({ leaderboards: 'hidden', profileVisibility: 'members' });
      expect((await api('PUT', '/api/users/privacy', b.accessToken, { leaderboards: 'everyone' })).status).to.equal(
        400,
      );
      // A's settings are A's own.
      expect((await api<Json>('GET', '/api/users/privacy', a.accessToken)).body).to.include({
        leaderboards: 'anonymous',
      });
      expect(await tc.users.services.settings.privacyOf(b.userId)).to.include({ leaderboards: 'hidden' });
    });
  });

  describe('devices, feedback', () => {
    it('registers push tokens per platform; another member deleting one gets 404 and it stays (BOLA)', async () => {
      const token = `fcm-token-${Date.now()}-abcdef`;
      const created = await api<Json>('POST', '/api/users/devices', a.accessToken, {
        platform: 'android',
        token,
        appVersion: '1.4.2',
      });
      expect(created.status).to.equal(201);
      expect(created.body).to.include({ platform: 'android', tokenHint: '…abcdef' });
      expect(JSON.stringify(created.body)).to.not.include(token);
      const again = await api<Json>('POST', '/api/users/devices', a.accessToken, { platform: 'android', token });
      expect(again.status).to.equal(200);
      expect(again.body.id).to.equal(created.body.id);

      const stolen = await api('DELETE', `/api/users/devices/${created.body.id as string}`, b.accessToken);
      expect(stolen.status).to.equal(404);
      expect(await tc.users.services.devices.tokensOf(a.userId)).to.deep.include({ platform: 'android', token });
      const audit = await tc.mongo.collection('audit_log').findOne({ action: 'access_denied', actor: b.userId });
      expect(audit).to.include({ target: `device:${created.body.id as string}` });

      const list = await api<{ items: Json[] }>('GET', '/api/users/devices', a.accessToken);
      expect(list.body.items.map((d) => d.id)).to.include(created.body.id);
      expect((await api('DELETE', `/api/users/devices/${created.body.id as string}`, a.accessToken)).status).to.equal(
        204,
      );
      expect((await api('DELETE', `/api/users/devices/${created.body.id as string}`, a.accessToken)).status).to.equal(
        404,
      );
      expect((await api('DELETE', '/api/users/devices/not-an-id', a.accessToken)).status).to.equal(400);
      expect((await api('POST', '/api/users/devices', a.accessToken, { platform: 'symbian', token })).status).to.equal(
        400,
      );
    });

    it('moves a token to whoever registers it last (one installation, one member)', async () => {
      const token = `apns-${Date.now()}-shared-tablet`;
      await api('POST', '/api/users/devices', a.accessToken, { platform: 'ios', token });
      await api('POST', '/api/users/devices', b.accessToken, { platform: 'ios', token });
      expect(await tc.users.services.devices.tokensOf(a.userId)).to.not.deep.include({ platform: 'ios', token });
      expect(await tc.users.services.devices.tokensOf(b.userId)).to.deep.include({ platform: 'ios', token });
    });

    it('stores feedback and lists only the member’s own', async () => {
      const sent = await api<Json>('POST', '/api/users/feedback', a.accessToken, {
        category: 'idea',
        message: 'Dark mode please',
        rating: 5,
        platform: 'ios',
      });
      expect(sent.status).to.equal(201);
      expect(
        (await api('POST', '/api/users/feedback', a.accessToken, { category: 'idea', message: 'x', rating: 6 })).status,
      ).to.equal(400);
      const mine = await api<{ items: Json[] }>('GET', '/api/users/feedback', a.accessToken);
      expect(mine.body.items.map((f) => f.message)).to.include('Dark mode please');
      const theirs = await api<{ items: Json[] }>('GET', '/api/users/feedback', b.accessToken);
      expect(theirs.body.items).to.deep.equal([]);
    });
  });

  describe('activity events and summaries', () => {
    it('stores events once per eventId and sums them by day, ISO week and month (UTC)', async () => {
      const member = await createTestAccount(tc);
      const now = new Date();
      const day = (daysAgo: number, hour = 10) =>
        new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate() - daysAgo, hour)).toISOString();
      const events = [
        { eventId: 'evt-00000001', type: 'app_open', at: day(0, 0) },
        { eventId: 'evt-00000002', type: 'feature_used', feature: 'workout.timer', at: day(0, 0), durationS: 120 },
        { eventId: 'evt-00000003', type: 'feature_used', feature: 'nutrition.scan', at: day(1), durationS: 30 },
        { eventId: 'evt-00000004', type: 'app_open', at: day(9) },
      ];
      const first = await api<Json>('POST', '/api/users/activity', member.accessToken, { events });
      expect(first.status).to.equal(202);
      expect(first.body).to.deep.equal({ accepted: 4, duplicates: 0 });
      const retry = await api<Json>('POST', '/api/users/activity', member.accessToken, {
        events: [...events.slice(0, 2), { type: 'app_open', at: day(2), properties: { screen: 'home', cold: true } }],
      });
      expect(retry.body).to.deep.equal({ accepted: 1, duplicates: 2 });

      type Summary = {
        buckets: { start: string; events: number; activeDays: number; durationS: number; byType: Json }[];
        totals: Json;
      };
      const daily = await api<Summary>('GET', '/api/users/activity/summary?period=daily', member.accessToken);
      expect(daily.status).to.equal(200);
      expect(daily.body.buckets).to.have.length(30);
      const today = daily.body.buckets.at(-1)!;
      expect(today).to.deep.include({ start: day(0).slice(0, 10), events: 2, activeDays: 1, durationS: 120 });
      expect(today.byType).to.deep.equal({ app_open: 1, feature_used: 1 });
      expect(daily.body.totals).to.deep.equal({ events: 5, activeDays: 4, durationS: 150 });

      const weekly = await api<Summary>('GET', '/api/users/activity/summary?period=weekly', member.accessToken);
      expect(weekly.body.buckets).to.have.length(12);
      expect(weekly.body.totals).to.include({ events: 5 });
      for (const bucket of weekly.body.buckets) expect(new Date(`${bucket.start}T00:00:00Z`).getUTCDay()).to.equal(1);
      const monthly = await api<Summary>('GET', '/api/users/activity/summary?period=monthly', member.accessToken);
      expect(monthly.body.buckets).to.have.length(12);
      expect(monthly.body.buckets.at(-1)!.start.endsWith('-01')).to.equal(true);
      expect(monthly.body.totals).to.include({ events: 5 });

      // Late events count where they happened; one from the future (a clock ahead) counts as received now.
      const late = await api<Json>('POST', '/api/users/activity', member.accessToken, {
        events: [
          { type: 'app_open', at: day(40) },
          { type: 'clock_ahead', at: '2099-01-01T00:00:00Z' },
        ],
      });
      expect(late.body).to.deep.equal({ accepted: 2, duplicates: 0 });
      const after = await api<Summary>('GET', '/api/users/activity/summary?period=daily', member.accessToken);
      expect(after.body.buckets.at(-1)!.byType).to.include({ clock_ahead: 1 });
      const weeks = await api<Summary>('GET', '/api/users/activity/summary?period=weekly', member.accessToken);
      expect(weeks.body.totals).to.include({ events: 7 });

      const empty = await api<Summary>(
        'GET',
        '/api/users/activity/summary?from=2026-05-01&to=2026-04-01',
        member.accessToken,
      );
      expect(empty.status).to.equal(200);
      expect(empty.body.buckets).to.deep.equal([]);
      const wide = await api<Summary>(
        'GET',
        '/api/users/activity/summary?from=1900-01-01&period=daily',
        member.accessToken,
      );
      expect(wide.body.buckets).to.have.length(366);
      for (const bad of ['period=hourly', 'from=2026-13-01', 'from=1899-12-31', 'to=2026-02-30']) {
        expect((await api('GET', `/api/users/activity/summary?${bad}`, member.accessToken)).status, bad).to.equal(400);
      }
      expect((await api('POST', '/api/users/activity', member.accessToken, { events: [] })).status).to.equal(400);
      // Someone else's summary is empty.
      const other = await api<Summary>('GET', '/api/users/activity/summary', b.accessToken);
      expect(other.body.totals).to.include({ events: 0 });
    });

    it('counts event types named like Object.prototype members as plain counts', async () => {
      const member = await createTestAccount(tc);
      const at = new Date().toISOString();
      const events = ['constructor', 'constructor', 'app_open'].map((type) => ({ type, at }));
      expect((await api('POST', '/api/users/activity', member.accessToken, { events })).status).to.equal(202);
      type Summary = { buckets: { byType: Json }[]; totals: Json };
      const daily = await api<Summary>('GET', '/api/users/activity/summary?period=daily', member.accessToken);
      expect(daily.status).to.equal(200);
      expect(daily.body.buckets.at(-1)!.byType).to.deep.equal({ constructor: 2, app_open: 1 });
      expect(daily.body.totals).to.include({ events: 3 });
    });
  });

  describe('branch memberships', () => {
    type Page = { items: Json[]; nextCursor: string | null };
    const allDay = Object.fromEntries(
      ['monday', 'tuesday', 'wednesday', 'thursday', 'friday', 'saturday', 'sunday'].map((d) => [
        d,
        [{ open: '00:00', close: '24:00' }],
      ]),
    ) as unknown as Parameters<TestCloud['branches']['create']>[2]['openingHours'];
    let admin: TestAccount;
    let staffDemo: TestAccount;
    let staffVienna: TestAccount;
    const grant = (branch: string, userId: string, as: TestAccount, body: Json = {}) =>
      api<Json>('PUT', `/api/branches/${branch}/members/${userId}`, as.accessToken, body);

    before(async () => {
      for (const id of ['demo', 'vienna-1']) {
        await tc.branches.create('test-admin', id, { name: id, timeZone: 'UTC', openingHours: allDay });
      }
      [admin, staffDemo, staffVienna] = await Promise.all([
        createTestAccount(tc, { role: 'admin' }),
        createTestAccount(tc, { role: 'staff' }),
        createTestAccount(tc, { role: 'staff' }),
      ]);
      await tc.branches.staff.assign('test-admin', staffDemo.userId, 'demo');
      await tc.branches.staff.assign('test-admin', staffVienna.userId, 'vienna-1');
    });

    it('a member only asks to join (202, requested, verified members only); staff of the branch approve it', async () => {
      const asked = await api<Json>('POST', '/api/users/branches/demo', a.accessToken);
      expect(asked.status, JSON.stringify(asked.body)).to.equal(202);
      expect(asked.body).to.include({ branchId: 'demo', status: 'requested', validUntil: null });
      expect((await api<Json>('POST', '/api/users/branches/demo', a.accessToken)).status).to.equal(202);
      expect((await api('POST', '/api/users/branches/nowhere', a.accessToken)).status).to.equal(404);
      // The request grants nothing anywhere the membership counts.
      expect(await tc.users.services.memberships.list(a.userId)).to.deep.equal([]);
      expect(await tc.users.services.memberships.membersOf('demo')).to.deep.equal([]);
      expect((await api<Page>('GET', '/api/users/branches', a.accessToken)).body.items).to.deep.equal([
        {
          branchId: 'demo',
          status: 'requested',
          joinedAt: asked.body.joinedAt,
          requestedAt: asked.body.requestedAt,
          validUntil: null,
        },
      ]);

      // Only staff of THAT branch, or an admin, grant it; never the member, never staff of another branch.
      expect((await grant('demo', a.userId, a)).status).to.equal(403);
      expect((await grant('demo', a.userId, staffVienna)).status).to.equal(403);
      expect((await api('GET', '/api/branches/demo/members', staffVienna.accessToken)).status).to.equal(403);
      expect((await api('GET', '/api/branches/demo/members', a.accessToken)).status).to.equal(403);
      expect((await grant('nowhere', a.userId, admin)).status).to.equal(404);
      expect((await grant('demo', new Types.ObjectId().toHexString(), admin)).status).to.equal(404);
      expect((await grant('demo', a.userId, staffDemo, { validUntil: '2020-01-01T00:00:00Z' })).status).to.equal(400);
      expect((await grant('demo', a.userId, staffDemo, { validUntil: '2100-06-01T00:00:00Z' })).status).to.equal(400);
      expect((await grant('demo', a.userId, staffDemo, { role: 'admin' })).status).to.equal(400);
      expect((await grant('demo', a.userId, staffDemo, { validUntil: 'tomorrow' })).status).to.equal(400);

      const pending = await api<Page>('GET', '/api/branches/demo/members?status=requested', staffDemo.accessToken);
      expect(pending.body.items.map((m) => [m.userId, m.status])).to.deep.equal([[a.userId, 'requested']]);
      const approved = await grant('demo', a.userId, staffDemo);
      expect(approved.status, JSON.stringify(approved.body)).to.equal(201);
      expect(approved.body).to.include({ branchId: 'demo', status: 'active', validUntil: null });
      expect((await grant('demo', a.userId, staffDemo)).status).to.equal(200);
      expect((await tc.users.services.memberships.list(a.userId)).map((m) => m.branchId)).to.deep.equal(['demo']);
      expect((await api<Json>('POST', '/api/users/branches/demo', a.accessToken)).body).to.include({
        status: 'active',
      });
      const granted = await tc.mongo
        .collection<{ actor: string; details: Json }>('audit_log')
        .find({ action: 'branch_membership_granted', target: 'branch:demo' })
        .toArray();
      expect(granted.map((e) => [e.actor, e.details.userId, e.details.created])).to.deep.equal([
        [staffDemo.userId, a.userId, true],
        [staffDemo.userId, a.userId, false],
      ]);

      // B's pending request does not make B a member (admin search below finds A only).
      expect((await api('POST', '/api/users/branches/demo', b.accessToken)).status).to.equal(202);
      const page1 = await api<Page>('GET', '/api/branches/demo/members?limit=1', staffDemo.accessToken);
      expect(page1.body.items).to.have.length(1);
      const page2 = await api<Page>(
        'GET',
        `/api/branches/demo/members?limit=1&cursor=${page1.body.nextCursor}`,
        staffDemo.accessToken,
      );
      expect(page2.body.nextCursor).to.equal(null);
      const everyone = [...page1.body.items, ...page2.body.items].map((m) => [m.userId, m.status]);
      expect(everyone).to.have.deep.members([
        [a.userId, 'active'],
        [b.userId, 'requested'],
      ]);
      const active = await api<Page>('GET', '/api/branches/demo/members?status=active', admin.accessToken);
      expect(active.body.items.map((m) => m.userId)).to.deep.equal([a.userId]);
      for (const bad of ['limit=0', 'status=expired', 'status[$ne]=x', 'x=1']) {
        expect((await api('GET', `/api/branches/demo/members?${bad}`, staffDemo.accessToken)).status, bad).to.equal(
          400,
        );
      }
    });

    it('withdraws a request or leaves; staff end a membership; nobody touches another member’s', async () => {
      expect((await api('POST', '/api/users/branches/vienna-1', a.accessToken)).status).to.equal(202);
      expect((await api('DELETE', '/api/users/branches/vienna-1', a.accessToken)).status).to.equal(204);
      expect((await api('DELETE', '/api/users/branches/vienna-1', a.accessToken)).status).to.equal(404);
      // B leaving A's branch does not touch A's membership.
      expect((await api('DELETE', '/api/users/branches/vienna-1', b.accessToken)).status).to.equal(404);
      expect((await api<Page>('GET', '/api/users/branches', a.accessToken)).body.items).to.have.length(1);
      for (const bad of ['Demo', 'a%2Fb', '-x', '%24ne']) {
        expect((await api('POST', `/api/users/branches/${bad}`, a.accessToken)).status, bad).to.equal(400);
      }
      const c = await createTestAccount(tc);
      expect((await grant('vienna-1', c.userId, staffVienna)).status).to.equal(201);
      expect(
        (await api('DELETE', `/api/branches/vienna-1/members/${c.userId}`, staffDemo.accessToken)).status,
      ).to.equal(403);
      expect(
        (await api('DELETE', `/api/branches/vienna-1/members/${c.userId}`, staffVienna.accessToken)).status,
      ).to.equal(204);
      expect(
        (await api('DELETE', `/api/branches/vienna-1/members/${c.userId}`, staffVienna.accessToken)).status,
      ).to.equal(404);
      expect(await tc.users.services.memberships.list(c.userId)).to.deep.equal([]);
    });

    it('a requested or ended membership grants nothing: no QR check-in, no availability, not on the allow-list', async () => {
      const m = await createTestAccount(tc);
      const checkIn = async () => {
        const qr = await api<{ token: string }>('GET', '/api/access/qr-token', m.accessToken);
        expect(qr.status).to.equal(200);
        return api<Json>('POST', '/api/sessions/start', m.accessToken, {
          branchId: 'vienna-1',
          credential: { kind: 'qr', token: qr.body.token },
        });
      };
      const availability = () => api('GET', '/api/machines/availability?branchId=vienna-1', m.accessToken);
      const listed = async () =>
        (await tc.access.allowLists.signed('vienna-1')).parts
          .map((jws) => JSON.parse(Buffer.from(jws.split('.')[1]!, 'base64url').toString()) as { members: Json[] })
          .flatMap((doc) => doc.members)
          .filter((e) => e.userId === m.userId);

      expect((await api('POST', '/api/users/branches/vienna-1', m.accessToken)).status).to.equal(202);
      const refused = await checkIn();
      expect(refused.status).to.equal(403);
      expect(refused.body.type).to.equal('/problems/membership-inactive');
      expect((await availability()).status).to.equal(403);
      expect(await listed()).to.deep.equal([]);

      // Approved until a date: admitted, and the allow-list carries the end for offline decisions.
      const until = new Date(Date.now() + 30 * 86_400_000);
      until.setUTCMilliseconds(0);
      const approved = await grant('vienna-1', m.userId, staffVienna, { validUntil: until.toISOString() });
      expect(approved.body).to.include({ status: 'active', validUntil: until.toISOString() });
      expect((await availability()).status).to.equal(200);
      expect(await listed()).to.deep.equal([{ userId: m.userId, validUntil: until.getTime(), nfc: [] }]);
      const admitted = await checkIn();
      expect(admitted.status, JSON.stringify(admitted.body)).to.equal(201);
      expect((await api('POST', '/api/sessions/end', m.accessToken, {})).status).to.equal(200);

      // Past its end (moved into the past in the database, as time would): nothing again.
      await tc.mongo
        .collection('branch_memberships')
        .updateOne({ _id: `${m.userId}:vienna-1` as never }, { $set: { validUntil: new Date(Date.now() - 1_000) } });
      expect((await checkIn()).body.type).to.equal('/problems/membership-inactive');
      // Availability reuses a member's "may see this branch" for AVAILABILITY_ACCESS_CACHE_MS (machine states only,
      // no member data): the end shows there within that window.
      await eventually(
        'availability refused after the membership ended',
        async () => (await availability()).status === 403,
        3 * AVAILABILITY_ACCESS_CACHE_MS,
      );
      expect(await listed()).to.deep.equal([]);
      expect((await api<Page>('GET', '/api/users/branches', m.accessToken)).body.items[0]).to.include({
        status: 'expired',
      });
      // Asking again after the end: a new request, granting nothing until staff approve it again (open-ended now).
      expect((await api<Json>('POST', '/api/users/branches/vienna-1', m.accessToken)).body).to.include({
        status: 'requested',
        validUntil: null,
      });
      expect((await availability()).status).to.equal(403);
      expect((await grant('vienna-1', m.userId, staffVienna)).body).to.include({ status: 'active', validUntil: null });
      expect((await availability()).status).to.equal(200);
      // A membership document from before statuses existed (no status field) is active.
      await tc.mongo
        .collection('branch_memberships')
        .updateOne({ _id: `${m.userId}:vienna-1` as never }, { $unset: { status: '', validUntil: '' } });
      expect((await availability()).status).to.equal(200);
      expect(await listed()).to.deep.equal([{ userId: m.userId, nfc: [] }]);
    });
  });

  describe('administration: /api/admin/users', () => {
    let admin: TestAccount;
    let staff: TestAccount;
    before(async () => {
      [admin, staff] = await Promise.all([
        createTestAccount(tc, { role: 'admin' }),
        createTestAccount(tc, { role: 'staff' }),
      ]);
    });

    it('is for administrators only: 403 for members and staff, 401 without a token', async () => {
      expect((await api('GET', '/api/admin/users', a.accessToken)).status).to.equal(403);
      expect((await api('GET', '/api/admin/users', staff.accessToken)).status).to.equal(403);
      expect((await api('GET', '/api/admin/users')).status).to.equal(401);
      expect(
        (await api('POST', `/api/admin/users/${b.userId}/suspend`, a.accessToken, { reason: 'spam' })).status,
      ).to.equal(403);
      expect((await api<Json>('GET', '/api/users/profile', b.accessToken)).body).to.include({ status: 'active' });
    });

    it('searches by email prefix, role, status and branch, with keyset pages and a clamped limit', async () => {
      type Page = { items: Json[]; nextCursor: string | null };
      const byEmail = await api<Page>(
        'GET',
        `/api/admin/users?email=${encodeURIComponent(a.email.slice(0, 20))}`,
        admin.accessToken,
      );
      expect(byEmail.status).to.equal(200);
      expect(byEmail.body.items.map((u) => u.id)).to.include(a.userId);
      expect(JSON.stringify(byEmail.body)).to.not.include('passwordHash');
      const byRole = await api<Page>('GET', '/api/admin/users?role=staff', admin.accessToken);
      // Staff of the membership tests' branches are staff too.
      expect(byRole.body.items.map((u) => u.id)).to.include(staff.userId);
      expect(byRole.body.items.map((u) => u.role)).to.satisfy((roles: string[]) => roles.every((r) => r === 'staff'));
      const byBranch = await api<Page>('GET', '/api/admin/users?branch=demo', admin.accessToken);
      expect(byBranch.body.items.map((u) => u.id)).to.deep.equal([a.userId]);
      expect(byBranch.body.items[0]).to.deep.include({ branches: ['demo'], firstName: 'Ada' });
      // A regex metacharacter is a literal character of the prefix, not a pattern.
      expect((await api<Page>('GET', '/api/admin/users?email=.*', admin.accessToken)).body.items).to.deep.equal([]);

      const seen: string[] = [];
      let cursor: string | null = null;
      do {
        const page: { body: Page } = await api<Page>(
          'GET',
          `/api/admin/users?limit=2${cursor ? `&cursor=${cursor}` : ''}`,
          admin.accessToken,
        );
        expect(page.body.items.length).to.be.at.most(2);
        seen.push(...page.body.items.map((u) => u.id as string));
        cursor = page.body.nextCursor;
      } while (cursor);
      const total = await tc.mongo.collection('accounts').countDocuments();
      expect(seen).to.have.length(total);
      expect(new Set(seen).size).to.equal(total);

      const clamped = await api<Page>('GET', '/api/admin/users?limit=1000000', admin.accessToken);
      expect(clamped.status).to.equal(200);
      expect(clamped.body.items.length).to.be.at.most(100);
      for (const bad of [
        'email[$regex]=.*',
        'email%5B%24regex%5D=.*',
        'role[$ne]=admin',
        'role=root',
        'limit=abc',
        'cursor=zzz',
      ]) {
        const res = await api('GET', `/api/admin/users?${bad}`, admin.accessToken);
        expect(res.status, bad).to.equal(400);
      }
    });

    it('suspends with a reason (audited): the member can only read why; reactivation restores access', async () => {
      const target = await createTestAccount(tc);
      const suspended = await api<Json>('POST', `/api/admin/users/${target.userId}/suspend`, admin.accessToken, {
        reason: 'payment overdue',
      });
      expect(suspended.status).to.equal(200);
      expect(suspended.body).to.include({ status: 'suspended', suspendedReason: 'payment overdue' });
      const blocked = await api('GET', '/api/users/profile', target.accessToken);
      expect(blocked.status).to.equal(403);
      expect(
        (await api('PUT', '/api/users/body-metrics', target.accessToken, { measurements: { weightKg: 70 } })).status,
      ).to.equal(403);
      const why = await api<Json>('GET', '/api/auth/me', target.accessToken);
      expect(why.status).to.equal(200);
      expect(why.body).to.include({ status: 'suspended', suspendedReason: 'payment overdue' });
      expect(
        (await api('POST', `/api/admin/users/${target.userId}/suspend`, admin.accessToken, { reason: 'again' })).status,
      ).to.equal(409);

      const back = await api<Json>('POST', `/api/admin/users/${target.userId}/reactivate`, admin.accessToken, {
        reason: 'paid',
      });
      expect(back.body).to.include({ status: 'active', suspendedReason: null });
      expect((await api('GET', '/api/users/profile', target.accessToken)).status).to.equal(200);
      const entries = await tc.mongo
        .collection<{ action: string; actor: string; details: { reason: string } }>('audit_log')
        .find({ target: target.userId, action: { $in: ['account_suspended', 'account_reactivated'] } })
        .toArray();
      expect(entries.map((e) => [e.action, e.actor, e.details.reason])).to.deep.equal([
        ['account_suspended', admin.userId, 'payment overdue'],
        ['account_reactivated', admin.userId, 'paid'],
      ]);
      expect(
        (await api('POST', `/api/admin/users/${admin.userId}/suspend`, admin.accessToken, { reason: 'oops' })).status,
      ).to.equal(409);
      expect(
        (
          await api('POST', `/api/admin/users/${new Types.ObjectId().toHexString()}/suspend`, admin.accessToken, {
            reason: 'who',
          })
        ).status,
      ).to.equal(404);
      expect((await api('GET', `/api/admin/users/${target.userId}`, admin.accessToken)).body).to.include({
        status: 'active',
      });
    });
  });

  describe('OpenAPI', () => {
    it('documents every members route, the bearer requirement and the clamp of limit', async () => {
      const doc = (await api<{ paths: Record<string, Record<string, Json>> }>('GET', '/api/openapi.json')).body;
      const expected: [string, string][] = [
        ['/api/v1/users/register', 'post'],
        ['/api/v1/users/profile', 'get'],
        ['/api/v1/users/profile', 'put'],
        ['/api/v1/users/account', 'delete'],
        ['/api/v1/users/export', 'get'],
        ['/api/v1/users/body-metrics', 'get'],
        ['/api/v1/users/body-metrics', 'put'],
        ['/api/v1/users/body-metrics/history', 'get'],
        ['/api/v1/users/preferences', 'put'],
        ['/api/v1/users/privacy', 'put'],
        ['/api/v1/users/devices', 'post'],
        ['/api/v1/users/devices/{deviceId}', 'delete'],
        ['/api/v1/users/feedback', 'post'],
        ['/api/v1/users/activity', 'post'],
        ['/api/v1/users/activity/summary', 'get'],
        ['/api/v1/users/branches', 'get'],
        ['/api/v1/users/branches/{branchId}', 'post'],
        ['/api/v1/users/branches/{branchId}', 'delete'],
        ['/api/v1/branches/{branchId}/members', 'get'],
        ['/api/v1/branches/{branchId}/members/{userId}', 'put'],
        ['/api/v1/branches/{branchId}/members/{userId}', 'delete'],
        ['/api/v1/admin/users', 'get'],
        ['/api/v1/admin/users/{userId}/suspend', 'post'],
        ['/api/v1/admin/users/{userId}/reactivate', 'post'],
      ];
      for (const [path, method] of expected) expect(doc.paths[path]?.[method], `${method} ${path}`).to.be.an('object');
      const search = doc.paths['/api/v1/admin/users']!.get as {
        parameters: { name: string; schema: Json }[];
        security: unknown;
      };
      const limit = search.parameters.find((p) => p.name === 'limit')!;
      expect(limit.schema.description).to.match(/clamped to 100/);
      expect(search.security).to.deep.equal([{ bearer: [] }]);
    });
  });

  it('computes macro targets as documented for other sexes and goals', () => {
    const now = new Date('2026-06-01T00:00:00Z');
    const base = { weightKg: 60, heightCm: 165, dateOfBirth: '1996-06-02', activityLevel: null, goal: null } as const;
    // Age 29 (birthday tomorrow): 600 + 1031.25 − 145 − 161 = 1325.25; sedentary 1.2 → 1590.3.
    expect(macroTargets({ ...base, sex: 'female' }, now)).to.include({ bmrKcal: 1325, tdeeKcal: 1590, kcal: 1590 });
    expect(macroTargets({ ...base, sex: null, goal: 'gain_muscle' }, now)).to.include({ bmrKcal: 1408, proteinG: 108 });
    expect(macroTargets({ ...base, sex: 'female', goal: 'lose_weight' }, now)!.kcal).to.equal(1458); // ≥ 1.1 × BMR
    expect(macroTargets({ ...base, sex: 'male', dateOfBirth: null }, now)).to.equal(null);
  });

  describe('key rotation through the API (P2)', () => {
    it('re-encrypts every stored value with the new key; a cloud without the old key reads them all', async () => {
      const keys = testFieldKeys();
      const k2 = Buffer.alloc(32, 7).toString('base64');
      const mongoUrl = `${testServices().mongoUrl}/${uniqueDbName('users-rotation')}`;
      const before = await startTestCloud({ env: { ...keys.env, MONGO_URL: mongoUrl } });
      let member: TestAccount;
      let written: Json;
      try {
        // A deletion left pending (its hook fails) holds the member's id sealed with the old key.
        before.users.privacy.registerDeletionHook('test.objectStore', () => Promise.reject(new Error('unreachable')));
        const leaving = await createTestAccount(before);
        expect((await call(before.url, 'DELETE', '/api/users/account', leaving.accessToken)).status).to.equal(202);
        member = await createTestAccount(before);
        for (const [day, weightKg] of [
          ['2026-03-01', 77],
          ['2026-03-08', 76],
        ] as const) {
          await call(before.url, 'PUT', '/api/users/body-metrics', member.accessToken, {
            measuredAt: `${day}T06:00:00Z`,
            measurements: { weightKg, heightCm: 172 },
            fitness: { healthConditions: ['knee injury'] },
          });
        }
        written = (await call<Json>(before.url, 'GET', '/api/users/body-metrics', member.accessToken)).body;
      } finally {
        await before.stop();
      }

      const rotationEnv = {
        MONGO_URL: mongoUrl,
        FIELD_ENCRYPTION_KEYS: `${keys.env.FIELD_ENCRYPTION_KEYS},k2:${k2}`,
        PSEUDONYM_KEY: keys.env.PSEUDONYM_KEY!,
        LOG_LEVEL: 'silent',
      };
      const report = await rotateFromEnv(rotationEnv, { dryRun: false, batchSize: 50 });
      expect(report.complete).to.equal(true);
      expect(report.collections.body_profiles).to.include({ rotated: 1, unreadable: 0 });
      expect(report.collections.body_metric_entries).to.include({ rotated: 2, unreadable: 0 });
      expect(report.collections.deletion_requests).to.include({ rotated: 1, unreadable: 0 });

      // The old key retired: only k2 is configured.
      const after = await startTestCloud({
        env: { ...keys.env, MONGO_URL: mongoUrl, FIELD_ENCRYPTION_KEYS: `k2:${k2}` },
      });
      try {
        const raw = await after.mongo.collection<Sealed>('body_metric_entries').find({}).toArray();
        expect(raw.map((doc) => doc.sealed.measurements.kid)).to.deep.equal(['k2', 'k2']);
        const login = (await (
          await postJson(after, '/api/auth/login', { email: member.email, password: member.password })
        ).json()) as Json;
        const token = login.accessToken as string;
        const now = await call<Json>(after.url, 'GET', '/api/users/body-metrics', token);
        expect(now.status).to.equal(200);
        expect(now.body).to.deep.equal(written);
        const history = await call<{ items: { measurements: Json }[] }>(
          after.url,
          'GET',
          '/api/users/body-metrics/history',
          token,
        );
        expect(history.body.items.map((i) => i.measurements.weightKg)).to.deep.equal([76, 77]);
        // The pending deletion completes under the new key alone.
        const erased: string[] = [];
        after.users.privacy.registerDeletionHook('test.objectStore', (userId) => {
          erased.push(userId);
          return Promise.resolve();
        });
        expect(await after.users.privacy.retryPending()).to.deep.equal({ completed: 1, stillPending: 0 });
        expect(erased).to.have.length(1);
      } finally {
        await after.stop();
      }
    });
  });
});
