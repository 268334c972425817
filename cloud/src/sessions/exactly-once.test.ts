/**
 * One tap at a door, one effect — whichever way the race between the cloud's online decision and the gateway's
 * offline fallback goes (against the real cloud: MQTT gateway requests, the dispatcher's deadline, ingest of access
 * scans, MongoDB stand-in and Redis). The cloud is slowed past its deadline by fault injection (sinon on the session
 * model's writes, released by the test once the gateway has been answered `timeout`), never by wall-clock sleeps.
 */
import { randomBytes } from 'node:crypto';
import { expect } from 'chai';
import sinon from 'sinon';
import type { MqttClient } from 'mqtt';
import { createManualClock } from '../../../tools/runtime/clock.ts';
import { startTestCloud, type TestCloud } from '../../../test/helpers/accounts.ts';
import { eventually, gate } from '../../../test/helpers/eventually.ts';
import {
  PROTOCOL_MINOR,
  asBranchId,
  asGatewayId,
  newBatchId,
  newBootId,
  newMsgId,
  newReqId,
  topics,
  type RequestResponse,
} from '../../../protocol/index.ts';
import { createAccountStore, type AccountStore } from '../accounts/store.ts';
import { addGateway } from '../broker/provisioning.ts';
import { createIdentityStore } from '../broker/identities.ts';
import { connectClient, gatewayRequest } from '../broker/testing.ts';
import { WEEKDAYS } from '../branches/hours.ts';
import { SESSION_COLLECTIONS, type SessionDoc } from './model.ts';

const GYM = 'gym-once';
const GW = 'gw-once';
/** Monday 2 March 2026, 10:00 in Berlin. */
const T0 = Date.UTC(2026, 2, 2, 9, 0);
const MIN = 60_000;
const open6to22 = Object.fromEntries(WEEKDAYS.map((d) => [d, [{ open: '06:00', close: '22:00' }]])) as never;

describe('one tap, one effect: door decisions the cloud took after its deadline', function () {
  this.timeout(60_000);
  const clock = createManualClock(T0);
  let tc: TestCloud;
  let gw: MqttClient;
  let store: AccountStore;
  let uidCounter = 0;
  let seq = 0;
  const bootId = newBootId();

  async function member(): Promise<{ userId: string; uid: string }> {
    const created = await store.insert({
      email: `once-${randomBytes(6).toString('hex')}@nxg.test`,
      passwordHash: 'not-a-login-password',
    });
    if (!created) throw new Error('account not created');
    await store.markEmailVerified(created.id);
    await tc.users.services.memberships.join(created.id, GYM);
    const uid = (0x04c1d200 + ++uidCounter).toString(16).padStart(8, '0');
    await tc.access.cards.enrol({ userId: created.id, uid, by: 'test' });
    return { userId: created.id, uid };
  }

  /** A door request of the test gateway with a given reqId; resolves with the cloud's answer. */
  async function door(name: 'check-in' | 'check-out', uid: string, reqId: string): Promise<RequestResponse> {
    return gatewayRequest(gw, topics.gatewayRequest(asBranchId(GYM), asGatewayId(GW), name), {
      reqId,
      ts: clock.nowMs(),
      reader: 'door-1',
      credential: { kind: 'nfc', uid },
    });
  }

  /** The gateway's record of an offline decision, naming the online request it tried first (if any). */
  const scan = (action: 'check-in' | 'check-out', m: { userId: string; uid: string }, reqId?: string) => ({
    msgId: newMsgId(),
    source: GW,
    bootId,
    seq: ++seq,
    ts: clock.nowMs(),
    v: PROTOCOL_MINOR,
    reader: 'door-1',
    action,
    credential: { kind: 'nfc', uid: m.uid },
    decision: 'allow',
    decidedBy: 'offline',
    userId: m.userId,
    ...(reqId === undefined ? {} : { reqId }),
  });
  /** The scan as ingest hands it to sessions once stored. */
  const stored = (payload: ReturnType<typeof scan>) => ({
    msgId: payload.msgId,
    branch: GYM,
    gateway: GW,
    payload: payload as never,
  });

  /** Sends scans in an access-lane batch, as the gateway's forwarder does; resolves once acked. */
  async function uplink(payloads: ReturnType<typeof scan>[]): Promise<void> {
    const batchId = newBatchId();
    const acked = new Promise<void>((resolve) => {
      const onAck = (topic: string, payload: Buffer) => {
        if (!topic.endsWith('/ack')) return;
        if ((JSON.parse(payload.toString()) as { batchId: string }).batchId !== batchId) return;
        gw.off('message', onAck);
        resolve();
      };
      gw.on('message', onAck);
    });
    await gw.publishAsync(
      topics.gatewayUplink(asBranchId(GYM), asGatewayId(GW), 'access'),
      JSON.stringify({
        batchId,
        sentAt: clock.nowMs(),
        records: payloads.map((payload) => ({ kind: 'access-scan', payload })),
      }),
      { qos: 1 },
    );
    await acked;
  }

  const sessionsOf = async (userId: string) =>
    (await tc.mongo
      .collection(SESSION_COLLECTIONS.sessions)
      .find({ userId })
      .sort({ startedAt: 1 })
      .toArray()) as unknown as SessionDoc[];
  const claimOf = (userId: string) => tc.mongo.collection(SESSION_COLLECTIONS.claims).findOne({ _id: userId as never });
  const pendingCheckOuts = (userId: string) =>
    tc.mongo.collection(SESSION_COLLECTIONS.pendingCheckOuts).countDocuments({ userId });

  /**
   * Stalls the next call of a model method until `until` opens; `done` resolves once the real call returned. A
   * query method (findOne, findOneAndUpdate: it returns a chainable query) runs when the query is executed.
   */
  function stall<M extends object>(model: M, method: keyof M & string, until: Promise<void>, query = false) {
    const real = (model[method] as (...args: unknown[]) => unknown).bind(model);
    let finished!: () => void;
    const done = new Promise<void>((resolve) => (finished = resolve));
    const held = async <T>(run: () => Promise<T>): Promise<T> => {
      await until;
      try {
        return await run();
      } finally {
        finished();
      }
    };
    const stub = sinon.stub(model, method as never).callsFake((...args: unknown[]) => {
      stub.restore(); // only the call under test
      if (!query) return held(() => real(...args) as Promise<unknown>);
      const q = real(...args) as { exec: () => Promise<unknown> };
      const exec = q.exec.bind(q);
      q.exec = () => held(exec);
      return q;
    });
    return { done };
  }

  function expectTimeout(answer: RequestResponse): void {
    expect(answer.ok, JSON.stringify(answer)).to.equal(false);
    if (!answer.ok) expect(answer.error.code).to.equal('timeout');
  }

  /**
   * A door request of the test gateway answered `timeout` while `hold` stalls the cloud's step past the deadline;
   * resolves once the stalled step was let go and has run.
   */
  async function lateDoor(
    name: 'check-in' | 'check-out',
    m: { uid: string },
    reqId: string,
    hold: (until: Promise<void>) => { done: Promise<void> },
  ): Promise<void> {
    const late = gate();
    const step = hold(late.opened);
    expectTimeout(await door(name, m.uid, reqId));
    late.open();
    await step.done;
  }

  /** The member checks in through the app (not through the door under test). */
  const appCheckIn = (m: { uid: string }) =>
    tc.sessions.checkIn({ credential: { kind: 'nfc', uid: m.uid }, branchId: GYM, via: { origin: 'app' } });

  /** A new member, checked in through the app. */
  async function checkedInMember(): Promise<{ userId: string; uid: string }> {
    const m = await member();
    const opened = await appCheckIn(m);
    if (!opened.ok) throw new Error(opened.reason);
    return m;
  }

  before(async () => {
    tc = await startTestCloud({
      clock,
      dbPrefix: 'once',
      env: {
        JOBS_POLL_INTERVAL_MS: '200',
        SESSION_JOBS_LOCK_SECONDS: '1',
        // Long enough that an unhindered decision is never late on a loaded machine; the decisions under test are
        // held past it by the test itself.
        GATEWAY_REQUEST_DEADLINE_MS: '1500',
      },
    });
    store = await createAccountStore(tc.mongo, clock);
    await tc.branches.create('test-admin', GYM, { name: GYM, timeZone: 'Europe/Berlin', openingHours: open6to22 });
    const { secret } = await addGateway({ store: createIdentityStore(tc.mongo) }, { id: GW, branch: GYM });
    gw = await connectClient(tc.broker.tcp.url, { username: GW, password: secret, clientId: GW });
    await gw.subscribeAsync(
      [`nxg/v1/b/${GYM}/gw/${GW}/req/+/res`, topics.gatewayAck(asBranchId(GYM), asGatewayId(GW))],
      { qos: 1 },
    );
  });

  afterEach(() => sinon.restore());

  after(async () => {
    await gw?.endAsync();
    await tc?.stop();
  });

  it('a check-in written after the deadline and the gateway’s offline record of the same tap: one session, no conflict', async () => {
    clock.set(T0);
    const m = await member();
    const reqId = newReqId();
    // The session write stalls past the deadline: the gateway is answered `timeout` and decides offline.
    await lateDoor('check-in', m, reqId, (until) => stall(tc.mongo.models.GymSession!, 'create', until));
    const online = await eventually('the late online session', async () => (await sessionsOf(m.userId))[0], 10_000);
    expect(online).to.deep.include({ status: 'active' });
    expect(online.startedVia).to.include({ origin: 'gateway', gateway: GW, reqId });

    // The gateway's offline decision of that tap reaches the cloud through ingest.
    clock.advance(2_000);
    const record = scan('check-in', m, reqId);
    await uplink([record]);
    await eventually(
      'the offline record noted on the online session',
      async () => (await sessionsOf(m.userId))[0]?.startedVia?.scanMsgId === record.msgId,
      10_000,
    );
    const docs = await sessionsOf(m.userId);
    expect(docs.map((d): unknown => d.status)).to.deep.equal(['active']);
    expect((await claimOf(m.userId))?.sessionId).to.equal(online._id);
    // A retried run changes nothing either.
    await tc.sessions.reconcileScans([stored(record)]);
    expect(await sessionsOf(m.userId)).to.have.length(1);
    await tc.sessions.checkOut({ userId: m.userId, via: { origin: 'app' } });
  });

  it('an offline record arriving while the late online check-in is still being written waits for it: one session', async () => {
    clock.set(T0 + 10 * MIN);
    const m = await member();
    const reqId = newReqId();
    const late = gate();
    const write = stall(tc.mongo.models.GymSession!, 'create', late.opened);
    expectTimeout(await door('check-in', m.uid, reqId));
    // The claim is written, the session is not: the offline record of the same tap arrives now.
    expect((await claimOf(m.userId))?.reqId).to.equal(reqId);
    const record = scan('check-in', m, reqId);
    let settled = false;
    const reconciling = tc.sessions.reconcileScans([stored(record)]).finally(() => (settled = true));
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(settled, 'reconciled before the online session was written').to.equal(false);
    late.open();
    await write.done;
    await reconciling;
    const docs = await sessionsOf(m.userId);
    expect(docs.map((d): unknown => [d.status, d.startedVia.origin, d.startedVia.scanMsgId])).to.deep.equal([
      ['active', 'gateway', record.msgId],
    ]);
    await tc.sessions.checkOut({ userId: m.userId, via: { origin: 'app' } });
  });

  it('a check-in past the deadline before its session is written backs out: the offline decision opens the one session', async () => {
    clock.set(T0 + 20 * MIN);
    const m = await member();
    const reqId = newReqId();
    await lateDoor('check-in', m, reqId, (until) => stall(tc.mongo.models.ActiveSession!, 'create', until));
    // The claim was taken after the deadline: released again, no session written.
    await eventually('the late claim released', async () => (await claimOf(m.userId)) === null, 10_000);
    expect(await sessionsOf(m.userId)).to.have.length(0);
    const record = scan('check-in', m, reqId);
    await tc.sessions.reconcileScans([stored(record)]);
    const docs = await sessionsOf(m.userId);
    expect(docs.map((d): unknown => [d.status, d.startedVia.origin])).to.deep.equal([['active', 'offline']]);
    expect((await claimOf(m.userId))?.sessionId).to.equal(docs[0]!._id);
    await tc.sessions.checkOut({ userId: m.userId, via: { origin: 'app' } });
  });

  it('a check-out written after the deadline and the offline record of the same tap: ended once, nothing held', async () => {
    clock.set(T0 + 30 * MIN);
    const m = await checkedInMember();
    clock.advance(40 * MIN);
    const reqId = newReqId();
    await lateDoor('check-out', m, reqId, (until) =>
      stall(tc.mongo.models.GymSession!, 'findOneAndUpdate', until, true),
    );
    const [ended] = await sessionsOf(m.userId);
    expect(ended).to.deep.include({ status: 'ended', endReason: 'check-out', durationMs: 40 * MIN });
    expect(ended!.endedVia).to.include({ origin: 'gateway', reqId });

    clock.advance(2_000);
    const record = scan('check-out', m, reqId);
    await uplink([record]);
    await eventually(
      'the offline record noted on the session it ended',
      async () => (await sessionsOf(m.userId))[0]?.endedVia?.scanMsgId === record.msgId,
      10_000,
    );
    const docs = await sessionsOf(m.userId);
    expect(docs).to.have.length(1);
    expect(docs[0]).to.deep.include({ status: 'ended', durationMs: 40 * MIN });
    // Not held for a check-in still to come (it would end the member's next visit).
    expect(await pendingCheckOuts(m.userId)).to.equal(0);
    // The member checks in again: nothing of that tap ends the new visit.
    await tc.sessions.reconcileScans([stored(record)]);
    const again = await appCheckIn(m);
    expect(again.ok).to.equal(true);
    await tc.sessions.checkOut({ userId: m.userId, via: { origin: 'app' } });
  });

  it('a check-out past the deadline before it ends the session ends nothing: the offline decision ends it', async () => {
    clock.set(T0 + 2 * 60 * MIN);
    const m = await checkedInMember();
    clock.advance(30 * MIN);
    const reqId = newReqId();
    // Held before it reads the open session: past the deadline it writes nothing.
    await lateDoor('check-out', m, reqId, (until) => stall(tc.mongo.models.GymSession!, 'findOne', until, true));
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect((await sessionsOf(m.userId))[0]).to.deep.include({ status: 'active' });
    const record = scan('check-out', m, reqId);
    await tc.sessions.reconcileScans([stored(record)]);
    const docs = await sessionsOf(m.userId);
    expect(docs).to.have.length(1);
    expect(docs[0]).to.deep.include({ status: 'ended', endReason: 'check-out', durationMs: 30 * MIN });
    expect(docs[0]!.endedVia).to.include({ origin: 'offline', scanMsgId: record.msgId });
  });

  it('an offline record naming a request that never reached the cloud is reconciled as before', async () => {
    clock.set(T0 + 4 * 60 * MIN);
    const m = await member();
    const checkIn = scan('check-in', m, newReqId());
    clock.advance(45 * MIN);
    const checkOut = scan('check-out', m, newReqId());
    await uplink([checkIn, checkOut]);
    const [visit] = await eventually(
      'the offline visit',
      async () => {
        const docs = await sessionsOf(m.userId);
        return docs[0]?.status === 'ended' ? docs : undefined;
      },
      10_000,
    );
    expect(visit).to.deep.include({ status: 'ended', endReason: 'check-out', durationMs: 45 * MIN });
    expect(visit!.startedVia).to.include({ origin: 'offline', scanMsgId: checkIn.msgId });
    expect(await sessionsOf(m.userId)).to.have.length(1);
    expect(await claimOf(m.userId)).to.equal(null);
  });
});
