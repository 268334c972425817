/**
 * One tap at a machine, one effect: a gateway's link or unlink request that the cloud carried out after its deadline
 * (the gateway was answered `timeout` and decided offline) is not applied a second time when the gateway's
 * OfflineDecision of that tap — naming the same reqId — arrives later (real cloud: MQTT gateway requests, ingest,
 * sessions, links on the MongoDB stand-in and Redis). The cloud is held past its deadline by fault injection (sinon
 * on a step after the link's write), released by the test once the gateway has been answered.
 */
import { expect } from 'chai';
import sinon from 'sinon';
import { createManualClock } from '../../../tools/runtime/clock.ts';
import {
  asBranchId,
  asGatewayId,
  newBatchId,
  newBootId,
  newMsgId,
  newReqId,
  topics,
  type MachineId,
  type RequestResponse,
  type UplinkRecord,
} from '../../../protocol/index.ts';
import { startTestCloud, createTestAccount, type TestAccount, type TestCloud } from '../../../test/helpers/accounts.ts';
import { eventually, gate } from '../../../test/helpers/eventually.ts';
import { createIdentityStore } from '../broker/identities.ts';
import { addGateway, addMachine } from '../broker/provisioning.ts';
import { gatewayRequest } from '../broker/testing.ts';
import { WEEKDAYS } from '../branches/hours.ts';
import { T0, TestGateway } from '../ingest/testing.ts';
import type { StoredRecord } from '../ingest/stored-hooks.ts';
import { SESSION_COLLECTIONS } from '../sessions/model.ts';
import { LINKS_COLLECTION, LINK_HISTORY_COLLECTION, offlineLinkId } from './links.ts';

const GYM = 'gym-link-once';
const branch = asBranchId(GYM);
const GW = asGatewayId('gw-link-once');
const BIKE = 'bike-once' as MachineId;
const open24 = Object.fromEntries(WEEKDAYS.map((d) => [d, [{ open: '00:00', close: '24:00' }]])) as never;

describe('one tap, one effect: machine links the cloud made after its deadline', function () {
  this.timeout(60_000);
  const clock = createManualClock(T0 + 120_000);
  const now = () => clock.nowMs();
  let tc: TestCloud;
  let gw: TestGateway;
  let uids = 0;
  let seq = 0;
  const bootId = newBootId();

  async function member(): Promise<TestAccount & { uid: string }> {
    const account = await createTestAccount(tc);
    await tc.users.services.memberships.join(account.userId, GYM);
    const uid = (0x04e1f200 + ++uids).toString(16).padStart(8, '0');
    await tc.access.cards.enrol({ userId: account.userId, uid, by: 'test' });
    const opened = await tc.sessions.checkIn({
      credential: { kind: 'nfc', uid },
      branchId: GYM,
      via: { origin: 'app' },
    });
    if (!opened.ok) throw new Error(opened.reason);
    return { ...account, uid };
  }

  async function request(name: 'link' | 'unlink', reqId: string, body: Record<string, unknown>) {
    return gatewayRequest(gw.client, topics.gatewayRequest(branch, GW, name), { reqId, ts: now(), ...body });
  }

  /** The gateway's OfflineDecision of a tap as ingest hands it to the machines domain once stored. */
  function offlineDecision(
    name: 'link' | 'unlink',
    request: Record<string, unknown>,
    userId: string,
  ): StoredRecord<'offline-decision'> {
    const msgId = newMsgId();
    return {
      kind: 'offline-decision',
      msgId,
      branch,
      gateway: GW,
      batchId: newBatchId(),
      ingestedAtMs: now(),
      payload: {
        msgId,
        source: GW,
        bootId,
        seq: ++seq,
        ts: now(),
        v: 0,
        name,
        request: { ts: now(), ...request },
        decision: { decision: 'allow', userId },
      },
    } as never;
  }

  const claim = () => tc.mongo.collection(LINKS_COLLECTION).findOne({ _id: BIKE });
  const historyOf = (userId: string) =>
    tc.mongo.collection(LINK_HISTORY_COLLECTION).find({ machine: BIKE, userId }).sort({ startedAt: 1 }).toArray();
  /** The member's link history once it has rows; `beforeEach` runs before every look (e.g. an ingest sweep). */
  const historyWhenRecorded = (what: string, userId: string, intervalMs: number, beforeEach?: () => Promise<unknown>) =>
    eventually(
      what,
      async () => {
        await beforeEach?.();
        const found = await historyOf(userId);
        return found.length > 0 ? found : undefined;
      },
      10_000,
      intervalMs,
    );
  /** History rows as [via, startedAt ms, endedAt ms, endReason]. */
  const spans = (rows: Record<string, unknown>[]): unknown[] =>
    rows.map((r): unknown => [
      r['via'],
      (r['startedAt'] as Date).getTime(),
      (r['endedAt'] as Date).getTime(),
      r['endReason'],
    ]);

  function expectTimeout(answer: RequestResponse): void {
    expect(answer.ok, JSON.stringify(answer)).to.equal(false);
    if (!answer.ok) expect(answer.error.code).to.equal('timeout');
  }

  /** Holds the next call of `method` on `target` until `until` opens (a step after the write under test). */
  function hold<T extends object>(target: T, method: keyof T & string, until: Promise<void>) {
    const real = (target[method] as (...args: unknown[]) => Promise<unknown>).bind(target);
    let finished!: () => void;
    const done = new Promise<void>((resolve) => (finished = resolve));
    const stub = sinon.stub(target, method as never).callsFake(async (...args: unknown[]) => {
      stub.restore();
      await until;
      try {
        return await real(...args);
      } finally {
        finished();
      }
    });
    return { done };
  }

  before(async () => {
    tc = await startTestCloud({
      clock,
      dbPrefix: 'linkonce',
      env: { AUTH_ACCESS_TOKEN_TTL_S: '3600', GATEWAY_REQUEST_DEADLINE_MS: '1500' },
    });
    await tc.branches.create('test-admin', GYM, { name: GYM, timeZone: 'Europe/Berlin', openingHours: open24 });
    const store = createIdentityStore(tc.mongo);
    const { secret } = await addGateway({ store }, { id: GW, branch: GYM });
    await addMachine({ store }, { id: BIKE, branch: GYM, gateway: GW });
    gw = await TestGateway.connect(tc.broker.tcp.url, branch, GW, { username: GW, password: secret });
    await gw.client.subscribeAsync({ [`nxg/v1/b/${GYM}/gw/${GW}/req/+/res`]: { qos: 1 } });
    const env = () => ({ msgId: newMsgId(), source: BIKE, bootId, seq: ++seq, ts: now(), v: 0 });
    await gw.send('records', {
      batchId: newBatchId(),
      records: [
        {
          kind: 'meta',
          payload: {
            ...env(),
            type: 'indoor-bike',
            manufacturer: 'Test',
            model: 'T1',
            firmware: '1.0.0',
            displayName: BIKE,
            fields: ['powerW', 'cadenceRpm'],
          },
        },
        { kind: 'status', payload: { ...env(), status: 'available', since: now(), conn: 0 } },
      ] as UplinkRecord[],
    });
    await eventually(
      'the machine available',
      async () => (await tc.ingest.live.listBranch(branch)).some((m) => m.machine === BIKE && m.status === 'available'),
      10_000,
      50,
    );
  });

  afterEach(() => sinon.restore());

  after(async () => {
    await gw?.close();
    await tc?.stop();
  });

  it('a link made after the deadline, released since: the offline decision of that tap does not link again', async () => {
    const m = await member();
    const credential = { kind: 'nfc', uid: m.uid };
    const reqId = newReqId();
    const late = gate();
    // The link is written; what follows it stalls past the deadline: the gateway is answered `timeout`.
    const step = hold(tc.sessions, 'recordMachineUse', late.opened);
    expectTimeout(await request('link', reqId, { machine: BIKE, credential }));
    late.open();
    await step.done;
    await eventually('the late link', async () => (await claim())?.['reqId'] === reqId, 10_000, 50);
    // The member taps again later (the gateway knows them linked): unlinked online.
    const unlinked = await request('unlink', newReqId(), { machine: BIKE, userId: m.userId, reason: 'member' });
    expect(unlinked.ok && unlinked.decision.decision).to.equal('allow');
    expect(await claim()).to.equal(null);

    // The gateway's offline decision of the first tap arrives only now.
    await tc.machines.applyOfflineDecisions([offlineDecision('link', { reqId, machine: BIKE, credential }, m.userId)]);
    expect(await claim()).to.equal(null);
    const rows = await historyOf(m.userId);
    expect(rows.map((r): unknown => [r['via'], r['reqId'], r['endReason']])).to.deep.equal([
      ['gateway', reqId, 'member'],
    ]);
    await tc.sessions.checkOut({ userId: m.userId, via: { origin: 'app' } });
  });

  it('an unlink made after the deadline, linked again since: the offline decision of that tap leaves the new link', async () => {
    const m = await member();
    const credential = { kind: 'nfc', uid: m.uid };
    const first = await request('link', newReqId(), { machine: BIKE, credential });
    expect(first.ok && first.decision.decision, JSON.stringify(first)).to.equal('allow');
    const reqId = newReqId();
    const late = gate();
    // The release is written; what follows it (the waitlist's turn) stalls past the deadline.
    const step = hold(tc.machines.waitlists, 'advance', late.opened);
    expectTimeout(await request('unlink', reqId, { machine: BIKE, userId: m.userId, reason: 'member' }));
    late.open();
    await step.done;
    expect(await claim()).to.equal(null);
    // Linked again by a later tap, online.
    const again = await request('link', newReqId(), { machine: BIKE, credential });
    expect(again.ok && again.decision.decision, JSON.stringify(again)).to.equal('allow');
    const linkId = (await claim())?.['linkId'] as string;

    await tc.machines.applyOfflineDecisions([
      offlineDecision('unlink', { reqId, machine: BIKE, userId: m.userId, reason: 'member' }, m.userId),
    ]);
    expect((await claim())?.['linkId']).to.equal(linkId);
    const rows = await historyOf(m.userId);
    expect(rows.map((r): unknown => [r['endReqId'] ?? null, r['endedAt'] === null])).to.deep.equal([
      [reqId, false],
      [null, true],
    ]);
    await tc.sessions.checkOut({ userId: m.userId, via: { origin: 'app' } });
    await tc.machines.links.idle();
  });

  it('an offline link naming a request the cloud never decided is applied as before', async () => {
    const m = await member();
    await tc.machines.applyOfflineDecisions([
      offlineDecision('link', { reqId: newReqId(), machine: BIKE, credential: { kind: 'nfc', uid: m.uid } }, m.userId),
    ]);
    expect(await claim()).to.deep.include({ userId: m.userId, via: 'offline' });
    await tc.sessions.checkOut({ userId: m.userId, via: { origin: 'app' } });
    await tc.machines.links.idle();
  });

  describe('offline decisions of the records lane and the access lane, applied in either order', () => {
    /** A member of the gym with a card, not checked in. */
    async function enrolled(): Promise<TestAccount & { uid: string }> {
      const account = await createTestAccount(tc);
      await tc.users.services.memberships.join(account.userId, GYM);
      const uid = (0x04e1f200 + ++uids).toString(16).padStart(8, '0');
      await tc.access.cards.enrol({ userId: account.userId, uid, by: 'test' });
      return { ...account, uid };
    }
    const scan = (action: 'check-in' | 'check-out', m: TestAccount & { uid: string }, ts: number) => ({
      kind: 'access-scan',
      payload: {
        msgId: newMsgId(),
        source: GW,
        bootId,
        seq: ++seq,
        ts,
        v: 0,
        reader: 'door-1',
        action,
        credential: { kind: 'nfc', uid: m.uid },
        decision: 'allow',
        decidedBy: 'offline',
        userId: m.userId,
      },
    });
    const linkRecord = (m: TestAccount & { uid: string }, ts: number) => {
      const record = offlineDecision(
        'link',
        { reqId: newReqId(), machine: BIKE, credential: { kind: 'nfc', uid: m.uid } },
        m.userId,
      );
      return { kind: 'offline-decision', payload: { ...record.payload, ts } };
    };
    const sessionOf = (userId: string) =>
      tc.mongo.collection(SESSION_COLLECTIONS.sessions).find({ userId }).sort({ startedAt: 1 }).toArray();
    /** The access lane delivers the offline check-in of `m` at `ts`; resolves once it has opened the visit. */
    async function offlineCheckIn(m: TestAccount & { uid: string }, ts: number): Promise<void> {
      await gw.send('access', { batchId: newBatchId(), records: [scan('check-in', m, ts)] });
      await eventually(
        'the check-in reconciled',
        async () => (await sessionOf(m.userId))[0]?.['status'] === 'active',
        10_000,
        50,
      );
    }
    const undos: { topic: string; userId: string }[] = [];

    beforeEach(() => {
      // The tests before used the bike up to the current (manual) instant: each test's taps come later.
      clock.advance(10 * 60_000);
    });

    before(async () => {
      // What the gateway would relay to the machine: an undo of its offline link would show here.
      await gw.client.subscribeAsync(topics.machineCommand(branch, BIKE, 'unlink'), { qos: 1 });
      gw.client.on('message', (topic, payload) => {
        if (topic !== topics.machineCommand(branch, BIKE, 'unlink')) return;
        const body = JSON.parse(payload.toString()) as { userId: string; reason: string };
        if (body.reason === 'offline-decision-undone') undos.push({ topic, userId: body.userId });
      });
    });

    it('a link stored before the check-in it followed waits for it and is then made (no undo)', async () => {
      const m = await enrolled();
      const checkInAt = now() - 20_000;
      const link = linkRecord(m, now() - 10_000);
      // The records lane first: no visit of the member is known yet.
      const ack = await gw.send('records', { batchId: newBatchId(), records: [link] });
      expect(ack.acked).to.have.length(1);
      await tc.machines.idle();
      expect(await claim()).to.equal(null);
      // Then the access lane: the offline check-in 10 s before the link.
      await offlineCheckIn(m, checkInAt);
      // The sweep retries the waiting link (it runs every 5 s on its own; the manual clock is moved past its age).
      clock.advance(6_000);
      await eventually(
        'the offline link made',
        async () => {
          await tc.ingest.sweepStored();
          return (await claim())?.['userId'] === m.userId;
        },
        10_000,
        100,
      );
      const [session] = await sessionOf(m.userId);
      expect(await claim()).to.deep.include({ via: 'offline', sessionId: session!._id });
      const rows = await historyOf(m.userId);
      expect(rows.map((r): unknown => [r['_id'], r['via'], r['endedAt']])).to.deep.equal([
        [offlineLinkId(link.payload.msgId), 'offline', null],
      ]);
      expect(session!['machinesUsed']).to.deep.equal([BIKE]);
      // Retried once more (a sweep after a crash): nothing changes.
      await tc.machines.applyOfflineDecisions([
        { ...offlineDecision('link', {}, m.userId), msgId: link.payload.msgId, payload: link.payload },
      ]);
      expect(await historyOf(m.userId)).to.have.length(1);
      expect(undos.filter((u) => u.userId === m.userId)).to.deep.equal([]);
      await tc.sessions.checkOut({ userId: m.userId, via: { origin: 'app' } });
      await tc.machines.links.idle();
    });

    it('a waiting link keeps its member’s later unlink behind it: retried, the link ends at that unlink', async () => {
      const m = await enrolled();
      const t = now();
      const link = linkRecord(m, t - 30_000);
      const unlink = offlineDecision(
        'unlink',
        { reqId: newReqId(), machine: BIKE, userId: m.userId, reason: 'member' },
        m.userId,
      );
      await gw.send('records', {
        batchId: newBatchId(),
        records: [link, { kind: 'offline-decision', payload: { ...unlink.payload, ts: t - 10_000 } }],
      });
      await tc.machines.idle();
      expect(await historyOf(m.userId)).to.deep.equal([]);
      await offlineCheckIn(m, t - 40_000);
      clock.advance(6_000);
      const rows = await historyWhenRecorded('the link applied, then its unlink', m.userId, 100, () =>
        tc.ingest.sweepStored(),
      );
      expect(spans(rows)).to.deep.equal([['offline', t - 30_000, t - 10_000, 'offline-decision']]);
      expect(await claim()).to.equal(null);
      const pending = await tc.mongo
        .collection('offline_decisions')
        .countDocuments({ _id: { $in: [link.payload.msgId, unlink.msgId] } as never, pending: 'machine-links' });
      expect(pending).to.equal(0);
      expect(undos.filter((u) => u.userId === m.userId)).to.deep.equal([]);
      await tc.sessions.checkOut({ userId: m.userId, via: { origin: 'app' } });
    });

    it('a link applied after the visit it belongs to was over is recorded in history, not undone', async () => {
      const m = await enrolled();
      const t = now();
      // The access lane's check-in and check-out are reconciled first; the link between them arrives later.
      await gw.send('access', {
        batchId: newBatchId(),
        records: [scan('check-in', m, t - 60_000), scan('check-out', m, t - 20_000)],
      });
      await eventually(
        'the visit reconciled',
        async () => (await sessionOf(m.userId))[0]?.['status'] === 'ended',
        10_000,
        50,
      );
      const link = linkRecord(m, t - 40_000);
      await gw.send('records', { batchId: newBatchId(), records: [link] });
      const rows = await historyWhenRecorded('the past link recorded', m.userId, 50);
      expect(spans(rows)).to.deep.equal([['offline', t - 40_000, t - 20_000, 'session-ended']]);
      expect(await claim()).to.equal(null);
      expect((await sessionOf(m.userId))[0]!['machinesUsed']).to.deep.equal([BIKE]);
      expect(undos.filter((u) => u.userId === m.userId)).to.deep.equal([]);
    });
  });
});
