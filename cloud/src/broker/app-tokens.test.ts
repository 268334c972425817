/**
 * Apps on MQTT over WebSocket with their access token as password (ARCHITECTURE "Identities and credentials";
 * RELIABILITY M1, M4, (c)3, P1): a whole test cloud, accounts made through the HTTP API, real mqtt.js over
 * ws://…/mqtt. The cloud runs on a manual clock so a token's expiry can be reached without waiting 15 minutes.
 */
import { randomBytes } from 'node:crypto';
import { expect } from 'chai';
import type { MqttClient } from 'mqtt';
import sinon from 'sinon';
import { createManualClock } from '../../../tools/runtime/clock.ts';
import { asBranchId, asMachineId, asUserId, type BranchId, type UserId } from '../../../protocol/ids.ts';
import { filters, topics } from '../../../protocol/topics.ts';
import { createTestAccount, startTestCloud, type TestAccount, type TestCloud } from '../../../test/helpers/accounts.ts';
import { WEEKDAYS } from '../branches/hours.ts';
import { APP_RECHECK_MS } from './app-tokens.ts';
import { closed, connackCode, connectClient, subscribeGranted } from './testing.ts';

/** Deadline for a revocation to reach an open connection: 3× the 5 s target. */
const CLOSE_DEADLINE_MS = 15_000;

describe('apps on the cloud broker (access token as MQTT password over WebSocket)', function () {
  this.timeout(60_000);
  const clock = createManualClock(Date.now());
  let cloud: TestCloud;
  let wsUrl: string;
  const open: MqttClient[] = [];

  before(async () => {
    cloud = await startTestCloud({ clock, dbPrefix: 'app-tokens' });
    wsUrl = `${cloud.url.replace('http:', 'ws:')}/mqtt`;
  });
  afterEach(async () => {
    await Promise.allSettled(open.splice(0).map((c) => c.endAsync(true)));
  });
  after(async () => {
    await cloud?.stop();
  });

  const branchId = () => asBranchId(`br-${randomBytes(4).toString('hex')}`);
  const userOf = (account: TestAccount): UserId => asUserId(account.userId);

  async function connectApp(token: string, clientId: string): Promise<MqttClient> {
    const client = await connectClient(wsUrl, { clientId, username: 'app', password: token });
    open.push(client);
    return client;
  }

  /** An active membership, as the gym's staff grant it (a member's own POST is only a request). */
  async function joinBranch(account: TestAccount, branch: BranchId): Promise<void> {
    await cloud.users.services.memberships.join(account.userId, branch);
  }

  /** Resolves with the time from now until the client's connection closes; fails after CLOSE_DEADLINE_MS. */
  async function closedWithin(client: MqttClient): Promise<number> {
    const started = performance.now();
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error('connection still open at the deadline')), CLOSE_DEADLINE_MS);
    });
    try {
      await Promise.race([closed(client), deadline]);
    } finally {
      clearTimeout(timer);
    }
    return performance.now() - started;
  }

  function retain(topic: string, body: unknown): Promise<void> {
    return new Promise((resolve, reject) => {
      cloud.broker.aedes.publish(
        { cmd: 'publish', topic, payload: Buffer.from(JSON.stringify(body)), qos: 0, retain: true, dup: false },
        (err) => (err ? reject(err) : resolve()),
      );
    });
  }

  it("receives its branch's retained live machine state and its own user topic", async () => {
    const member = await createTestAccount(cloud);
    const branch = branchId();
    await joinBranch(member, branch);
    const machineTopic = topics.liveMachine(branch, asMachineId('m-1'));
    const workoutTopic = topics.userLive(userOf(member), 'workout');
    await retain(machineTopic, { machine: 'm-1', state: 'idle' });
    await retain(workoutTopic, { reps: 12 });

    const app = await connectApp(member.accessToken, `u.${member.userId}.phone`);
    const received = new Map<string, unknown>();
    const both = new Promise<void>((resolve) => {
      app.on('message', (topic, payload) => {
        received.set(topic, JSON.parse(payload.toString()));
        if (received.size === 2) resolve();
      });
    });
    expect(
      await subscribeGranted(app, [filters.branchLive(branch), filters.userLive(userOf(member))], 1),
    ).to.deep.equal([1, 1]);
    await both;
    expect(received.get(machineTopic)).to.deep.equal({ machine: 'm-1', state: 'idle' });
    expect(received.get(workoutTopic)).to.deep.equal({ reps: 12 });

    // The bare client id `u.{user}` is the user's too.
    const bare = await connectApp(member.accessToken, `u.${member.userId}`);
    expect(bare.connected).to.equal(true);
  });

  it("is refused another user's topics, other branches and wildcards (SUBACK 0x80), and never publishes", async () => {
    const [a, b] = await Promise.all([createTestAccount(cloud), createTestAccount(cloud)]);
    const mine = branchId();
    await joinBranch(a, mine);
    const app = await connectApp(a.accessToken, `u.${a.userId}.tablet`);
    expect(
      await subscribeGranted(app, [
        filters.userLive(userOf(b)),
        `${filters.userLive(userOf(a)).split('/u/')[0]}/u/+/live/#`,
        filters.branchLive(branchId()),
        '#',
        filters.branchLive(mine),
      ]),
    ).to.deep.equal([128, 128, 128, 128, 1]);

    const gone = closedWithin(app);
    app.publish(topics.userLive(userOf(a), 'workout'), '{"reps":1}', { qos: 1 });
    await gone;
  });

  it('refuses garbage, alg-none and unsigned tokens, and client ids not bound to the token (CONNACK 5)', async () => {
    const member = await createTestAccount(cloud);
    const b64 = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');
    const payload = JSON.parse(Buffer.from(member.accessToken.split('.')[1]!, 'base64url').toString()) as object;
    const header = JSON.parse(Buffer.from(member.accessToken.split('.')[0]!, 'base64url').toString()) as object;
    const algNone = `${b64({ ...header, alg: 'none' })}.${b64(payload)}.`;
    const tampered = `${member.accessToken.split('.')[0]}.${b64({ ...payload, sub: 'aaaaaaaaaaaaaaaaaaaaaaaa' })}.${member.accessToken.split('.')[2]}`;
    const clientId = `u.${member.userId}`;
    for (const password of ['garbage', 'aaa.bbb.ccc', algNone, tampered, `${member.accessToken}x`]) {
      expect(await connackCode(wsUrl, { clientId, username: 'app', password }), password).to.equal(5);
    }
    const other = await createTestAccount(cloud);
    for (const badId of [
      `u.${other.userId}`,
      `u.${other.userId}.phone`,
      `u.${member.userId}x`,
      'app-1',
      member.userId,
    ]) {
      expect(
        await connackCode(wsUrl, { clientId: badId, username: 'app', password: member.accessToken }),
        badId,
      ).to.equal(5);
    }
    // The token itself is fine.
    expect(await connackCode(wsUrl, { clientId, username: 'app', password: member.accessToken })).to.equal(0);
  });

  it('answers CONNACK 3 when the token cannot be checked (stores unreachable)', async () => {
    const member = await createTestAccount(cloud);
    const stub = sinon.stub(cloud.auth, 'verifyAccessToken').rejects(new Error('redis unreachable'));
    try {
      expect(
        await connackCode(wsUrl, { clientId: `u.${member.userId}`, username: 'app', password: member.accessToken }),
      ).to.equal(3);
    } finally {
      stub.restore();
    }
    expect(
      await connackCode(wsUrl, { clientId: `u.${member.userId}`, username: 'app', password: member.accessToken }),
    ).to.equal(0);
  });

  it('closes the connection of a session that logs out, and only that one', async () => {
    const member = await createTestAccount(cloud);
    const login = await fetch(`${cloud.url}/api/auth/login`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', 'User-Agent': 'second-device' },
      body: JSON.stringify({ email: member.email, password: member.password }),
    });
    expect(login.status).to.equal(200);
    const second = ((await login.json()) as { accessToken: string }).accessToken;
    const phone = await connectApp(member.accessToken, `u.${member.userId}.phone`);
    const tablet = await connectApp(second, `u.${member.userId}.tablet`);

    const res = await fetch(`${cloud.url}/api/auth/logout`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${member.accessToken}` },
    });
    expect(res.status).to.equal(204);
    const tookMs = await closedWithin(phone);
    console.log(`      logout → connection closed in ${Math.round(tookMs)} ms`);
    // The pass that closed the phone checked the tablet too: its session is still valid.
    expect(tablet.connected).to.equal(true);
    expect(
      await connackCode(wsUrl, { clientId: `u.${member.userId}.x`, username: 'app', password: member.accessToken }),
    ).to.equal(5);
  });

  it('closes every connection of the member on "revoke all sessions" and on suspension', async () => {
    const member = await createTestAccount(cloud);
    const app = await connectApp(member.accessToken, `u.${member.userId}.phone`);
    const res = await fetch(`${cloud.url}/api/users/sessions`, {
      method: 'DELETE',
      headers: { Authorization: `Bearer ${member.accessToken}` },
    });
    expect(res.status).to.equal(204);
    await closedWithin(app);

    const suspended = await createTestAccount(cloud);
    const app2 = await connectApp(suspended.accessToken, `u.${suspended.userId}.phone`);
    const { Types } = await import('mongoose');
    await cloud.mongo
      .collection('accounts')
      .updateOne({ _id: new Types.ObjectId(suspended.userId) }, { $set: { status: 'suspended' } });
    await closedWithin(app2);
    expect(
      await connackCode(wsUrl, { clientId: `u.${suspended.userId}`, username: 'app', password: suspended.accessToken }),
    ).to.equal(5);
  });

  it('closes the connection when the member leaves a branch it reads', async () => {
    const member = await createTestAccount(cloud);
    const branch = branchId();
    await joinBranch(member, branch);
    const app = await connectApp(member.accessToken, `u.${member.userId}.phone`);
    const res = await fetch(`${cloud.url}/api/users/branches/${branch}`, {
      method: 'DELETE',
      headers: { Authorization: `Bearer ${member.accessToken}` },
    });
    expect(res.status).to.equal(204);
    await closedWithin(app);
    // Reconnecting works, without that branch.
    const again = await connectApp(member.accessToken, `u.${member.userId}.phone`);
    expect(await subscribeGranted(again, [filters.branchLive(branch), filters.userLive(userOf(member))])).to.deep.equal(
      [128, 1],
    );
  });

  it('grants no live topics of a branch the member only asked to join, until the gym grants the membership', async () => {
    const member = await createTestAccount(cloud);
    const branch = branchId();
    const allDay = [{ open: '00:00', close: '24:00' }];
    await cloud.branches.create('test-admin', branch, {
      name: branch,
      timeZone: 'UTC',
      openingHours: {
        monday: allDay,
        tuesday: allDay,
        wednesday: allDay,
        thursday: allDay,
        friday: allDay,
        saturday: allDay,
        sunday: allDay,
      },
    });
    const asked = await fetch(`${cloud.url}/api/users/branches/${branch}`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${member.accessToken}` },
    });
    expect(asked.status).to.equal(202);
    const app = await connectApp(member.accessToken, `u.${member.userId}.phone`);
    expect(await subscribeGranted(app, [filters.branchLive(branch)])).to.deep.equal([128]);
    await joinBranch(member, branch);
    const granted = await connectApp(member.accessToken, `u.${member.userId}.tablet`);
    expect(await subscribeGranted(granted, [filters.branchLive(branch)], 1)).to.deep.equal([1]);
  });

  it("gives staff their assigned branches' live topics (as REST), and closes the connection when unassigned", async () => {
    const staff = await createTestAccount(cloud, { role: 'staff' });
    const branch = branchId();
    const other = branchId();
    const open24 = Object.fromEntries(WEEKDAYS.map((d) => [d, [{ open: '00:00', close: '24:00' }]])) as never;
    await cloud.branches.create('test-admin', branch, { name: branch, timeZone: 'UTC', openingHours: open24 });
    await cloud.branches.staff.assign('test-admin', staff.userId, branch);
    const app = await connectApp(staff.accessToken, `u.${staff.userId}.desk`);
    expect(await subscribeGranted(app, [filters.branchLive(branch), filters.branchLive(other)])).to.deep.equal([
      1, 128,
    ]);
    // Still assigned: two recheck passes keep the connection (assignments count as held, not as an ended membership).
    await new Promise((resolve) => setTimeout(resolve, 2 * APP_RECHECK_MS + 500));
    expect(app.connected, 'connection kept while assigned').to.equal(true);
    await cloud.branches.staff.unassign('test-admin', staff.userId, branch);
    await closedWithin(app);
    const again = await connectApp(staff.accessToken, `u.${staff.userId}.desk`);
    expect(await subscribeGranted(again, [filters.branchLive(branch)])).to.deep.equal([128]);
  });

  it('closes the connection on account deletion (GDPR, P1)', async () => {
    const member = await createTestAccount(cloud);
    const app = await connectApp(member.accessToken, `u.${member.userId}.phone`);
    const res = await fetch(`${cloud.url}/api/users/account`, {
      method: 'DELETE',
      headers: { Authorization: `Bearer ${member.accessToken}` },
    });
    expect(res.status).to.be.oneOf([202, 204]);
    const tookMs = await closedWithin(app);
    console.log(`      deletion → connection closed in ${Math.round(tookMs)} ms`);
    expect(
      await connackCode(wsUrl, { clientId: `u.${member.userId}`, username: 'app', password: member.accessToken }),
    ).to.equal(5);
  });

  // Last: it moves the cloud's clock past every token issued so far.
  it('closes the connection at the token expiry and refuses the expired token (CONNACK 5, M1)', async () => {
    const member = await createTestAccount(cloud);
    const app = await connectApp(member.accessToken, `u.${member.userId}.phone`);
    const { exp } = JSON.parse(Buffer.from(member.accessToken.split('.')[1]!, 'base64url').toString()) as {
      exp: number;
    };
    clock.set(exp * 1000 + 1000);
    await closedWithin(app);
    // Past the verifier's 30 s leeway, the token is refused outright.
    clock.set(exp * 1000 + 31_000);
    expect(
      await connackCode(wsUrl, { clientId: `u.${member.userId}`, username: 'app', password: member.accessToken }),
    ).to.equal(5);
  });
});
