/**
 * Machines against the real cloud (HTTP API, cloud broker over TCP and WebSocket, ingest, sessions, MongoDB
 * stand-in, Redis): links and their claim, the member's live workout topic, workout data attached by event time,
 * inferred intervals, range flags, release on inactivity (manual clock), session end, maintenance, heartbeats,
 * waitlists, gateway link requests and offline decisions.
 */
import { expect } from 'chai';
import type { MqttClient } from 'mqtt';
import { createManualClock } from '../../../tools/runtime/clock.ts';
import {
  asBranchId,
  asGatewayId,
  newBatchId,
  newBootId,
  newMsgId,
  topics,
  type RequestResponse,
  type UplinkRecord,
  type UserLiveWorkout,
  type UserNotification,
} from '../../../protocol/index.ts';
import {
  bearer,
  createTestAccount,
  startTestCloud,
  type TestAccount,
  type TestCloud,
} from '../../../test/helpers/accounts.ts';
import { eventually } from '../../../test/helpers/eventually.ts';
import { createIdentityStore } from '../broker/identities.ts';
import { addGateway, addMachine } from '../broker/provisioning.ts';
import { connectClient, subscribeGranted } from '../broker/testing.ts';
import { WEEKDAYS } from '../branches/hours.ts';
import { T0, TestGateway } from '../ingest/testing.ts';
import type { WorkoutRecord } from '../workouts/service.ts';
import { LINKS_COLLECTION, LINK_HISTORY_COLLECTION } from './links.ts';
import type { BranchAvailability } from './routes.ts';

const GYM = 'gym-m';
const branch = asBranchId(GYM);
const GW = asGatewayId('gw-m');
const open24 = Object.fromEntries(WEEKDAYS.map((d) => [d, [{ open: '00:00', close: '24:00' }]])) as never;
const SEC = 1000;

const until = (what: string, check: () => unknown, timeoutMs = 10_000): Promise<boolean> =>
  eventually(
    what,
    async () => {
      await check();
      return true;
    },
    timeoutMs,
    50,
  );

/** Records of one machine with a running seq and event times from the cloud's clock. */
function machine(id: string, nowMs: () => number) {
  const bootId = newBootId();
  let seq = 0;
  const env = (ts = nowMs()) => ({ msgId: newMsgId(), source: id, bootId, seq: seq++, ts, v: 0 });
  return {
    id,
    status: (status: string): UplinkRecord =>
      ({ kind: 'status', payload: { ...env(), status, since: nowMs(), conn: 0 } }) as UplinkRecord,
    meta: (type: string, fields: string[], ranges?: Record<string, unknown>): UplinkRecord =>
      ({
        kind: 'meta',
        payload: {
          ...env(),
          type,
          manufacturer: 'Test',
          model: 'T1',
          firmware: '1.0.0',
          displayName: id,
          fields,
          ...(ranges ? { ranges } : {}),
        },
      }) as UplinkRecord,
    telemetry: (fields: Record<string, unknown>, ts = nowMs()): UplinkRecord =>
      ({ kind: 'telemetry', payload: { ...env(ts), ...fields } }) as UplinkRecord,
    set: (startedAt: number, endedAt: number, fields: Record<string, unknown>): UplinkRecord =>
      ({
        kind: 'workout',
        payload: {
          ...env(endedAt),
          segment: 'set',
          machineType: 'selectorised',
          startedAt,
          endedAt,
          ...fields,
        },
      }) as UplinkRecord,
  };
}

describe('machines: links, live workout, workout data, maintenance, heartbeats, waitlists (real cloud)', function () {
  this.timeout(60_000);
  const clock = createManualClock(T0 + 120_000);
  let tc: TestCloud;
  let gw: TestGateway;
  let wsUrl: string;
  const apps: MqttClient[] = [];
  const commands: { topic: string; body: Record<string, unknown> }[] = [];
  let seq = 0;
  const secrets = new Map<string, string>();
  const now = () => clock.nowMs();
  const row = machine('row-01', now);
  const press = machine('press-01', now);
  const bike = machine('bike-01', now);

  async function api(account: TestAccount | undefined, method: string, path: string, body?: unknown) {
    const res = await fetch(`${tc.url}${path}`, {
      method,
      headers: account ? bearer(account.accessToken) : { 'Content-Type': 'application/json' },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    const text = await res.text();
    return { status: res.status, body: (text ? JSON.parse(text) : undefined) as Record<string, unknown> };
  }

  async function member(): Promise<TestAccount> {
    const account = await createTestAccount(tc);
    await tc.users.services.memberships.join(account.userId, GYM);
    return account;
  }
  async function checkIn(account: TestAccount): Promise<string> {
    const credential = { kind: 'qr', token: tc.access.issueQrToken(account.userId).token };
    const res = await api(account, 'POST', '/api/sessions/start', { branchId: GYM, credential });
    expect(res.status, JSON.stringify(res.body)).to.equal(201);
    return (res.body.session as { id: string }).id;
  }
  const link = (a: TestAccount, machineId: string) =>
    api(a, 'POST', '/api/machines/link', { branchId: GYM, machineId });
  const statusOf = async (a: TestAccount, machineId: string) => {
    const res = await api(a, 'GET', `/api/machines/availability?branchId=${GYM}`);
    return (res.body as unknown as BranchAvailability).machines.find((m) => m.machine === machineId);
  };
  const send = (lane: 'records' | 'telemetry', records: UplinkRecord[]) =>
    gw.send(lane, { batchId: newBatchId(), records });

  /** An app connected over WebSocket with the member's token, collecting what arrives. */
  async function app(account: TestAccount) {
    const client = await connectClient(wsUrl, {
      clientId: `u.${account.userId}.t${++seq}`,
      username: 'app',
      password: account.accessToken,
    });
    apps.push(client);
    const got: { topic: string; body: unknown }[] = [];
    client.on('message', (topic, payload) => got.push({ topic, body: JSON.parse(payload.toString()) }));
    return { client, got };
  }

  async function request(name: 'link' | 'unlink', body: Record<string, unknown>): Promise<RequestResponse> {
    const reqId: string = newMsgId();
    const answered = new Promise<RequestResponse>((resolve) => {
      const onMessage = (topic: string, payload: Buffer) => {
        if (!topic.endsWith('/res')) return;
        const r = JSON.parse(payload.toString()) as RequestResponse;
        if (r.reqId !== reqId) return;
        gw.client.off('message', onMessage);
        resolve(r);
      };
      gw.client.on('message', onMessage);
    });
    await gw.client.publishAsync(
      topics.gatewayRequest(branch, GW, name),
      JSON.stringify({ reqId, ts: now(), ...body }),
      { qos: 1 },
    );
    return answered;
  }

  before(async () => {
    tc = await startTestCloud({
      clock,
      dbPrefix: 'machines',
      env: { AUTH_ACCESS_TOKEN_TTL_S: '3600', MACHINE_LINK_IDLE_S: '60', MACHINE_HEARTBEAT_TIMEOUT_S: '30' },
    });
    wsUrl = `${tc.url.replace('http:', 'ws:')}/mqtt`;
    await tc.branches.create('test-admin', GYM, { name: GYM, timeZone: 'Europe/Berlin', openingHours: open24 });
    const store = createIdentityStore(tc.mongo);
    const { secret } = await addGateway({ store }, { id: GW, branch: GYM });
    for (const id of ['row-01', 'press-01', 'bike-01', 'http-01']) {
      const added = await addMachine({ store }, { id, branch: GYM, gateway: GW });
      secrets.set(id, added.secret);
    }
    gw = await TestGateway.connect(tc.broker.tcp.url, branch, GW, { username: GW, password: secret });
    await gw.client.subscribeAsync({
      [`nxg/v1/b/${GYM}/m/+/cmd/+`]: { qos: 1 },
      [`nxg/v1/b/${GYM}/gw/${GW}/req/+/res`]: { qos: 1 },
    });
    gw.client.on('message', (topic, payload) => {
      if (topic.includes('/m/') && topic.includes('/cmd/')) {
        commands.push({ topic, body: JSON.parse(payload.toString()) as Record<string, unknown> });
      }
    });
    await send('records', [
      row.meta('rower', ['powerW', 'strokeRateSpm', 'distanceM']),
      row.status('available'),
      press.meta('selectorised', ['reps', 'loadKg'], { loadKg: { min: 5, max: 100, step: 5 } }),
      press.status('available'),
      bike.meta('indoor-bike', ['powerW', 'cadenceRpm']),
      bike.status('available'),
    ]);
  });
  after(async () => {
    await Promise.allSettled(apps.map((c) => c.endAsync(true)));
    await gw?.close();
    await tc?.stop();
  });

  it('links exclusively: 201, the machine busy for another member (409), no session (409); announced everywhere', async () => {
    const a = await member();
    const b = await member();
    const c = await member();
    const sessionA = await checkIn(a);
    await checkIn(b);
    const watcher = await app(a);
    expect(await subscribeGranted(watcher.client, [topics.userLive(a.userId as never, 'workout')], 0)).to.deep.equal([
      0,
    ]);

    const first = await link(a, 'row-01');
    expect(first.status, JSON.stringify(first.body)).to.equal(201);
    expect(first.body).to.include({ machineId: 'row-01', sessionId: sessionA });
    const again = await link(a, 'row-01');
    expect(again.status).to.equal(200);
    expect(again.body.linkId).to.equal(first.body.linkId);

    const busy = await link(b, 'row-01');
    expect(busy.status).to.equal(409);
    expect(busy.body.type).to.equal('/problems/machine-busy');
    const noSession = await link(c, 'bike-01');
    expect(noSession.status).to.equal(409);
    expect(noSession.body.type).to.equal('/problems/not-checked-in');
    expect(await tc.mongo.collection(LINKS_COLLECTION).countDocuments({ _id: 'row-01' as never })).to.equal(1);

    // Apps see it in use (no member data), the member's live topic says linked, the machine got cmd/link.
    const shown = await statusOf(b, 'row-01');
    expect(shown).to.include({ status: 'in_use', linked: true });
    await until('link event on u/{a}/live/workout', () => {
      const events = watcher.got.map((g) => g.body as UserLiveWorkout);
      expect(events.some((e) => e.type === 'link' && e.state === 'linked' && e.machine === 'row-01')).to.equal(true);
    });
    await until('cmd/link to the machine', () => {
      const cmd = commands.find((c) => c.topic.endsWith('/m/row-01/cmd/link'));
      expect(cmd?.body).to.include({ userId: a.userId, sessionId: sessionA });
    });

    // Another member may not subscribe to a's live topic (SUBACK 0x80).
    const spy = await app(b);
    expect(await subscribeGranted(spy.client, [topics.userLive(a.userId as never, 'workout')], 0)).to.deep.equal([128]);

    // The member's samples reach their live topic; released on unlink, and the machine is free again.
    await send('telemetry', [row.telemetry({ type: 'rower', strokeRateSpm: 22, powerW: 140, distanceM: 10 })]);
    await until('sample on u/{a}/live/workout', () => {
      const samples = watcher.got.map((g) => g.body as UserLiveWorkout).filter((e) => e.type === 'sample');
      expect(samples.map((s) => s.type === 'sample' && s.telemetry.powerW)).to.include(140);
    });
    expect(spy.got).to.deep.equal([]);
    const unlinked = await api(a, 'POST', '/api/machines/unlink', { machineId: 'row-01' });
    expect(unlinked.status).to.equal(200);
    expect((await statusOf(b, 'row-01'))?.status).to.equal('available');
    expect((await link(b, 'row-01')).status).to.equal(201);
    expect((await api(b, 'POST', '/api/machines/unlink', { machineId: 'row-01' })).status).to.equal(200);
  });

  it('attaches workout sets to the member linked at their event time and session; late and duplicate data; range flags', async () => {
    const m = await member();
    const session = await checkIn(m);
    const beforeLink = now() - 30 * SEC;
    clock.advance(5 * SEC);
    expect((await link(m, 'press-01')).status).to.equal(201);
    clock.advance(60 * SEC);
    const set1 = press.set(now() - 50 * SEC, now() - 40 * SEC, { reps: 10, loadKg: 40 });
    const set2 = press.set(now() - 30 * SEC, now() - 20 * SEC, { reps: 8, loadKg: 150 }); // above the 100 kg stack
    const orphan = press.set(beforeLink - 10 * SEC, beforeLink, { reps: 5, loadKg: 20 }); // before the link: late
    // Sent out of order, and the batch twice (a lost ack): stored once each, placed by event time.
    const batch = { batchId: newBatchId(), records: [set2, orphan, set1] };
    expect((await gw.send('records', batch)).acked).to.have.length(3);
    expect((await gw.send('records', batch)).acked).to.have.length(3);
    await until('the two sets in the member’s workout record', async () => {
      const res = await api(m, 'GET', '/api/workouts');
      const items = res.body.items as WorkoutRecord[];
      expect(items).to.have.length(1);
      expect(items[0]!.segments.map((s) => s.id)).to.deep.equal([set1.payload.msgId, set2.payload.msgId]);
    });
    const record = (await api(m, 'GET', `/api/workouts/${session}`)).body as unknown as WorkoutRecord;
    expect(record.sessionId).to.equal(session);
    expect(record.totals).to.include({ segments: 2, reps: 18, volumeKg: 10 * 40 + 8 * 150 });
    expect(record.segments[0]!.flags).to.deep.equal([]);
    expect(record.segments[1]!.flags).to.deep.equal([{ field: 'loadKg', value: 150, min: 5, max: 100 }]);
    expect(record.flagged).to.equal(1);
    const orphanDoc = await tc.mongo.collection('workout_segments').findOne({ _id: orphan.payload.msgId });
    expect(orphanDoc?.['userId']).to.equal(null);
    // Another member cannot read it (404, not 403).
    const other = await member();
    expect((await api(other, 'GET', `/api/workouts/${session}`)).status).to.equal(404);
    // HTTP equipment posts the same payload with its own credentials; the same msgId again is a no-op.
    const http = press.set(now() - 10 * SEC, now() - 5 * SEC, { reps: 12, loadKg: 30 }).payload;
    const post = (secret: string) =>
      fetch(`${tc.url}/api/machines/workout-data`, {
        method: 'POST',
        headers: { Authorization: `Bearer ${secret}`, 'Content-Type': 'application/json' },
        body: JSON.stringify(http),
      });
    expect((await post(secrets.get('row-01')!)).status).to.equal(401);
    expect((await post(secrets.get('press-01')!)).status).to.equal(201);
    expect((await post(secrets.get('press-01')!)).status).to.equal(200);
    const after = (await api(m, 'GET', `/api/workouts/${session}`)).body as unknown as WorkoutRecord;
    expect(after.totals.segments).to.equal(3);
    expect((await api(m, 'POST', '/api/machines/unlink', { machineId: 'press-01' })).status).to.equal(200);
  });

  it('infers an interval from a telemetry-only rower, closed at unlink; releases idle links by the injected clock', async () => {
    const m = await member();
    await checkIn(m);
    expect((await link(m, 'row-01')).status).to.equal(201);
    const start = now();
    const samples: UplinkRecord[] = [];
    for (let i = 0; i < 10; i++) {
      samples.push(
        row.telemetry({ type: 'rower', strokeRateSpm: 24, powerW: 150 + i, distanceM: 100 + i * 5 }, start + i * SEC),
      );
    }
    samples.push(row.telemetry({ type: 'rower', strokeRateSpm: 0, powerW: 0, distanceM: 145 }, start + 10 * SEC));
    await send('telemetry', samples);
    clock.advance(12 * SEC);
    await until('samples applied', async () => {
      const raw = await tc.redis.get(`inf:row-01`);
      expect((JSON.parse(raw ?? '{}') as { lastTs?: number }).lastTs).to.equal(start + 10 * SEC);
    });
    expect((await api(m, 'POST', '/api/machines/unlink', { machineId: 'row-01' })).status).to.equal(200);
    await until('the inferred interval', async () => {
      const items = (await api(m, 'GET', '/api/workouts')).body.items as WorkoutRecord[];
      const seg = items[0]?.segments[0];
      expect(seg?.origin).to.equal('inferred');
      expect(seg?.workout).to.include({ segment: 'interval', machineType: 'rower', distanceM: 45 });
      expect(seg?.startedAt).to.equal(start);
      expect(seg?.endedAt).to.equal(start + 9 * SEC);
    });

    // Inactivity: linked, then nothing for longer than MACHINE_LINK_IDLE_S (60 s) on the cloud's clock.
    expect((await link(m, 'bike-01')).status).to.equal(201);
    clock.advance(30 * SEC);
    expect(await tc.machines.links.releaseIdle()).to.equal(0);
    clock.advance(31 * SEC);
    expect(await tc.machines.links.releaseIdle()).to.equal(1);
    const row2 = await tc.mongo
      .collection(LINK_HISTORY_COLLECTION)
      .findOne({ machine: 'bike-01', userId: m.userId }, { sort: { startedAt: -1 } });
    expect(row2?.['endReason']).to.equal('idle-timeout');
    expect((await statusOf(m, 'bike-01'))?.status).to.equal('available');
  });

  it('releases the link when the session ends, and answers the gateway’s link/unlink requests from the same rules', async () => {
    const m = await member();
    const uid = `04a1b3${String(++seq).padStart(2, '0')}`;
    await tc.access.cards.enrol({ userId: m.userId, uid, by: 'test' });
    const credential = { kind: 'nfc', uid };
    const notIn = await request('link', { machine: 'bike-01', credential });
    expect(notIn).to.deep.include({
      ok: true,
      decision: { decision: 'deny', reason: 'not-checked-in', userId: m.userId },
    });
    const session = await checkIn(m);
    const allowed = await request('link', { machine: 'bike-01', credential });
    expect(allowed).to.deep.include({
      ok: true,
      decision: { decision: 'allow', userId: m.userId, sessionId: session },
    });
    const other = await member();
    const otherUid = `04a1b4${String(++seq).padStart(2, '0')}`;
    await tc.access.cards.enrol({ userId: other.userId, uid: otherUid, by: 'test' });
    await checkIn(other);
    const busy = await request('link', { machine: 'bike-01', credential: { kind: 'nfc', uid: otherUid } });
    expect(busy.ok && busy.decision.decision === 'deny' && busy.decision.reason).to.equal('machine-busy');

    // Checking out releases the link (sessions.onEnded).
    expect((await api(m, 'POST', '/api/sessions/end', {})).status).to.equal(200);
    await until('released on session end', async () => {
      expect(await tc.mongo.collection(LINKS_COLLECTION).findOne({ _id: 'bike-01' as never })).to.equal(null);
    });
    const unlinkNothing = await request('unlink', { machine: 'bike-01', reason: 'idle-timeout' });
    expect(unlinkNothing.ok && unlinkNothing.decision.decision).to.equal('deny');

    // An offline link the gateway decided alone arrives later in the records lane: applied by the same rules.
    const decision = {
      msgId: newMsgId(),
      source: GW,
      bootId: newBootId(),
      seq: 0,
      ts: now(),
      v: 0,
      name: 'link',
      request: { reqId: newMsgId(), ts: now(), machine: 'bike-01', credential: { kind: 'nfc', uid: otherUid } },
      decision: { decision: 'allow', userId: other.userId },
    };
    await send('records', [{ kind: 'offline-decision', payload: decision } as unknown as UplinkRecord]);
    await until('offline link applied', async () => {
      const claim = await tc.mongo.collection(LINKS_COLLECTION).findOne({ _id: 'bike-01' as never });
      expect(claim?.['userId']).to.equal(other.userId);
      expect(claim?.['via']).to.equal('offline');
    });
    const released = await request('unlink', { machine: 'bike-01', userId: other.userId, reason: 'member' });
    expect(released.ok && released.decision.decision).to.equal('allow');
  });

  it('maintenance takes a machine out of order (apps see it, links refused) and back; staff only', async () => {
    const m = await member();
    await checkIn(m);
    const staff = await createTestAccount(tc, { role: 'staff' });
    await tc.branches.staff.assign('test-admin', staff.userId, GYM);
    const body = { branchId: GYM, machineId: 'bike-01', action: 'out-of-order', note: 'belt worn' };
    expect((await api(m, 'POST', '/api/machines/maintenance', body)).status).to.equal(403);
    expect((await api(staff, 'POST', '/api/machines/maintenance', body)).status).to.equal(201);
    expect(await statusOf(m, 'bike-01')).to.include({ status: 'maintenance', outOfOrder: true });
    const refused = await link(m, 'bike-01');
    expect(refused.status).to.equal(409);
    expect(refused.body.type).to.equal('/problems/machine-unavailable');
    clock.advance(SEC);
    const back = { branchId: GYM, machineId: 'bike-01', action: 'back-in-service' };
    expect((await api(staff, 'POST', '/api/machines/maintenance', back)).status).to.equal(201);
    expect((await statusOf(m, 'bike-01'))?.status).to.equal('available');
    const history = await api(staff, 'GET', `/api/machines/bike-01/maintenance?branchId=${GYM}`);
    expect((history.body.items as { action: string }[]).map((i) => i.action)).to.deep.equal([
      'back-in-service',
      'out-of-order',
    ]);
    const stats = await api(staff, 'GET', `/api/machines/bike-01/stats?branchId=${GYM}&days=1`);
    expect(stats.status).to.equal(200);
    expect((stats.body.usage as { links: number }).links).to.be.greaterThan(0);
    expect((stats.body.performance as { suggestion: string }).suggestion).to.equal('ok');
  });

  it('takes heartbeats from HTTP equipment with its own secret and marks it offline when they stop', async () => {
    const m = await member();
    const beat = (secret: string) =>
      fetch(`${tc.url}/api/machines/heartbeat`, {
        method: 'POST',
        headers: { Authorization: `Bearer ${secret}`, 'Content-Type': 'application/json' },
        body: JSON.stringify({ machineId: 'http-01' }),
      });
    expect((await beat('x'.repeat(43))).status).to.equal(401);
    expect((await beat(secrets.get('press-01')!)).status).to.equal(401);
    expect((await beat(secrets.get('http-01')!)).status).to.equal(200);
    expect((await statusOf(m, 'http-01'))?.status).to.equal('available');
    clock.advance(31 * SEC);
    await tc.machines.sweep();
    expect((await statusOf(m, 'http-01'))?.status).to.equal('offline');
    expect((await beat(secrets.get('http-01')!)).status).to.equal(200);
    expect((await statusOf(m, 'http-01'))?.status).to.equal('available');
  });

  it('reconciles what a crash left: a claim without its mirror, a claim of an ended session, a history row alone', async () => {
    const m = await member();
    const session = await checkIn(m);
    const gone = await member();
    const links = tc.mongo.collection(LINKS_COLLECTION);
    const history = tc.mongo.collection(LINK_HISTORY_COLLECTION);
    const at = new Date(now());
    // Crashed after the claim insert (no history row, no Redis mirror).
    await links.insertOne({
      _id: 'press-01' as never,
      branch: GYM,
      userId: m.userId,
      sessionId: session,
      linkId: 'crash-link-1',
      linkedAt: at,
      via: 'app',
    });
    // A claim whose session is no longer open (its release was lost).
    await links.insertOne({
      _id: 'bike-01' as never,
      branch: GYM,
      userId: gone.userId,
      sessionId: 'ended-session',
      linkId: 'crash-link-2',
      linkedAt: at,
      via: 'app',
    });
    // A history row whose claim was already deleted.
    await history.insertOne({
      _id: 'crash-link-3' as never,
      machine: 'row-01',
      branch: GYM,
      userId: gone.userId,
      sessionId: 'ended-session',
      startedAt: at,
      endedAt: null,
      via: 'app',
    });
    // Too young to be touched: it may be between its writes.
    expect(await tc.machines.links.reconcile()).to.deep.equal({ mirrored: 0, released: 0, closed: 0 });
    clock.advance(31 * SEC);
    expect(await tc.machines.links.reconcile()).to.deep.equal({ mirrored: 1, released: 1, closed: 1 });
    expect(await statusOf(m, 'press-01')).to.include({ status: 'in_use', linked: true });
    expect(await links.findOne({ _id: 'bike-01' as never })).to.equal(null);
    expect((await history.findOne({ _id: 'crash-link-1' as never }))?.['endedAt']).to.equal(null);
    expect((await history.findOne({ _id: 'crash-link-3' as never }))?.['endReason']).to.equal('reconciled');
    expect(await tc.machines.links.reconcile()).to.deep.equal({ mirrored: 0, released: 0, closed: 0 });
    expect((await api(m, 'POST', '/api/machines/unlink', { machineId: 'press-01' })).status).to.equal(200);
  });

  it('a tap at the machine by the member linked there unlinks them: deny `unlinked`, cmd/unlink from the cloud', async () => {
    const m = await member();
    const uid = `04a1c5${String(++seq).padStart(2, '0')}`;
    await tc.access.cards.enrol({ userId: m.userId, uid, by: 'test' });
    await checkIn(m);
    const watcher = await app(m);
    await subscribeGranted(watcher.client, [topics.userLive(m.userId as never, 'workout')], 0);
    // Linked from the app; the gateway does not know, so the tap arrives as a `link` request.
    expect((await link(m, 'bike-01')).status).to.equal(201);
    const sent = commands.length;
    const tap = await request('link', { machine: 'bike-01', credential: { kind: 'nfc', uid } });
    expect(tap).to.deep.include({ ok: true, decision: { decision: 'deny', reason: 'unlinked', userId: m.userId } });
    expect(await tc.mongo.collection(LINKS_COLLECTION).findOne({ _id: 'bike-01' as never })).to.equal(null);
    expect((await statusOf(m, 'bike-01'))?.status).to.equal('available');
    await until('cmd/unlink to the machine, from the cloud', () => {
      const cmd = commands.slice(sent).find((c) => c.topic.endsWith('/m/bike-01/cmd/unlink'));
      expect(cmd?.body).to.include({ userId: m.userId });
    });
    expect(commands.slice(sent).some((c) => c.topic.endsWith('/m/bike-01/cmd/link'))).to.equal(false);
    await until('unlinked event on the member’s live topic', () => {
      const events = watcher.got.map((g) => g.body as UserLiveWorkout);
      expect(events.some((e) => e.type === 'link' && e.state === 'unlinked' && e.machine === 'bike-01')).to.equal(true);
    });
    // The next tap links again (a toggle, not a latch).
    const relink = await request('link', { machine: 'bike-01', credential: { kind: 'nfc', uid } });
    expect(relink.ok && relink.decision.decision).to.equal('allow');
    expect((await api(m, 'POST', '/api/machines/unlink', { machineId: 'bike-01' })).status).to.equal(200);

    // A claim of the member's earlier, ended session (a crash left it, not reconciled yet) is replaced, not toggled.
    await tc.mongo.collection(LINKS_COLLECTION).insertOne({
      _id: 'bike-01' as never,
      branch: GYM,
      userId: m.userId,
      sessionId: 'sess-ended-earlier',
      linkId: 'stale-link-1',
      linkedAt: new Date(now() - 3_600_000),
      via: 'app',
    });
    const session = (await tc.sessions.current(m.userId))!.id;
    const replaced = await request('link', { machine: 'bike-01', credential: { kind: 'nfc', uid } });
    expect(replaced).to.deep.include({
      ok: true,
      decision: { decision: 'allow', userId: m.userId, sessionId: session },
    });
    expect((await api(m, 'POST', '/api/machines/unlink', { machineId: 'bike-01' })).status).to.equal(200);
  });

  it('forwards live samples only from the gateway the machine is provisioned for', async () => {
    const m = await member();
    await checkIn(m);
    const watcher = await app(m);
    await subscribeGranted(watcher.client, [topics.userLive(m.userId as never, 'workout')], 0);
    expect((await link(m, 'row-01')).status).to.equal(201);
    // A second gateway of the same branch (the broker's ACL admits its uplink) sends samples as row-01.
    const GW2 = asGatewayId('gw-m2');
    const store = createIdentityStore(tc.mongo);
    const { secret } = await addGateway({ store }, { id: GW2, branch: GYM });
    await addMachine({ store }, { id: 'own-02', branch: GYM, gateway: GW2 });
    const intruder = await TestGateway.connect(tc.broker.tcp.url, branch, GW2, { username: GW2, password: secret });
    try {
      const forged = machine('row-01', now);
      const ack = await intruder.send('telemetry', {
        batchId: newBatchId(),
        records: [forged.telemetry({ type: 'rower', powerW: 999, strokeRateSpm: 40 }, now() - 1_000)],
      });
      expect(ack.acked, 'the forged sample is not stored either').to.deep.equal([]);
    } finally {
      await intruder.close();
    }
    await send('telemetry', [row.telemetry({ type: 'rower', strokeRateSpm: 20, powerW: 141, distanceM: 30 })]);
    const powers = () =>
      watcher.got
        .map((g) => g.body as UserLiveWorkout)
        .flatMap((e) => (e.type === 'sample' ? [e.telemetry.powerW] : []));
    await until('the own gateway’s sample on u/{m}/live/workout', () => expect(powers()).to.include(141));
    expect(powers(), 'forged sample forwarded').to.not.include(999);
    expect((await api(m, 'POST', '/api/machines/unlink', { machineId: 'row-01' })).status).to.equal(200);
  });

  it('documents what the machines and workouts routes answer, and refuses bad queries with 400 naming the field', async () => {
    const doc = (await (await fetch(`${tc.url}/api/openapi.json`)).json()) as {
      paths: Record<string, Record<string, { security?: unknown[]; responses: Record<string, unknown> }>>;
    };
    // Every operation behind the access-token guard documents the guard's 403 (a suspended account).
    for (const [path, item] of Object.entries(doc.paths)) {
      if (!/^\/api\/v1\/(machines|workouts)/.test(path)) continue;
      for (const [method, op] of Object.entries(item)) {
        const tokenGuarded = (op.security?.length ?? 0) > 0 && !/heartbeat|workout-data/.test(path);
        if (tokenGuarded) expect(op.responses, `${method} ${path}`).to.have.property('403');
      }
    }
    const m = await member();
    for (const [query, field] of [
      ['limit=0', 'limit'],
      ['limit=101', 'limit'],
      ['from=', 'from'],
      ['from=2026-13-01', 'from'],
      ['to=yesterday', 'to'],
    ] as const) {
      const res = await api(m, 'GET', `/api/workouts?${query}`);
      expect(res.status, query).to.equal(400);
      expect(
        (res.body.errors as { field: string }[]).map((e) => e.field),
        query,
      ).to.include(field);
    }
    for (const query of [
      'limit=1',
      'limit=100',
      `from=${T0}`,
      'from=2026-11-26',
      `to=${encodeURIComponent('2026-11-26T06:00:00.5+01:00')}`,
    ]) {
      expect((await api(m, 'GET', `/api/workouts?${query}`)).status, query).to.equal(200);
    }
  });

  it('queues members for a busy machine, notifies the first when it frees up and holds it for them', async () => {
    const a = await member();
    const b = await member();
    const c = await member();
    for (const x of [a, b, c]) await checkIn(x);
    expect((await link(a, 'press-01')).status).to.equal(201);
    const watcher = await app(c);
    await subscribeGranted(watcher.client, [topics.userLive(c.userId as never, 'notification')], 0);
    const joined = await api(c, 'POST', '/api/machines/waitlist', { branchId: GYM, machineId: 'press-01' });
    expect(joined.status).to.equal(200);
    expect(joined.body).to.include({ position: 1, queueLength: 1 });
    expect(joined.body.estimatedWaitMs).to.be.a('number');
    const bJoined = await api(b, 'POST', '/api/machines/waitlist', { branchId: GYM, machineId: 'press-01' });
    expect(bJoined.body).to.include({ position: 2 });
    expect((bJoined.body.estimatedWaitMs as number) >= (joined.body.estimatedWaitMs as number)).to.equal(true);

    expect((await api(a, 'POST', '/api/machines/unlink', { machineId: 'press-01' })).status).to.equal(200);
    await until('waitlist-ready notification', () => {
      const n = watcher.got.map((g) => g.body as UserNotification);
      expect(n.some((x) => x.category === 'waitlist-ready' && x.data?.['machine'] === 'press-01')).to.equal(true);
    });
    const held = await link(b, 'press-01');
    expect(held.status).to.equal(409);
    expect(held.body.type).to.equal('/problems/machine-busy');
    expect((await link(c, 'press-01')).status).to.equal(201);
    const left = await fetch(`${tc.url}/api/machines/waitlist?branchId=${GYM}&machineId=press-01`, {
      method: 'DELETE',
      headers: bearer(b.accessToken),
    });
    expect(left.status).to.equal(204);
    expect((await api(c, 'POST', '/api/machines/unlink', { machineId: 'press-01' })).status).to.equal(200);
  });
});
