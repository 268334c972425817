/**
 * A gym visit end to end with processes (issue 7, "Tests"): the cloud (node cloud/src/main.ts) and an edge gateway
 * (node edge-gateway/src/main.ts) as processes, a real pcscd with vpcd's virtual readers for the doors (G3's
 * testing/virtual-card*), the run's MongoDB stand-in and Redis. Staff set up a branch, a gateway, a machine and two
 * NFC door readers through the REST API; the gateway enrols with its one-time token (`npm run gateway -- enrol`) and
 * receives its signed configuration and allow-list; staff enrol a card for a member, who checks in with it at the
 * door, links to the machine from the app, does three sets (seen live over MQTT.js on WebSocket with the member's
 * access token), and checks out at the exit. Then: a revoked card refused online and, after the next allow-list,
 * offline (the uplink cut by a TCP proxy), and the spent enrolment token refused to a second gateway.
 *
 * Covered elsewhere and not repeated here: racing session starts and auto-termination (cloud/src/sessions), a busy
 * machine and another member's live topic (cloud/src/machines, cloud/src/broker/app-tokens.test.ts), used and
 * expired tokens over HTTP (cloud/src/branches/sites.test.ts).
 */
import { randomBytes } from 'node:crypto';
import { appendFile, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { Redis } from 'ioredis';
import { connectAsync, type MqttClient } from 'mqtt';
import type { Connection } from 'mongoose';
import { asUserId, topics, type UserLiveWorkout } from '../../protocol/index.ts';
import { startSmtpCapture, type SmtpCapture } from '../../cloud/src/mail/smtp-capture.ts';
import { WEEKDAYS } from '../../cloud/src/branches/hours.ts';
import { insertVirtualCard } from '../../edge-gateway/src/testing/virtual-card.ts';
import {
  startVirtualReaders,
  VIRTUAL_READER_NAMES,
  virtualReadersUnavailable,
  type VirtualReaders,
} from '../../edge-gateway/src/testing/virtual-card-reader.ts';
import { startTcpProxy, type TcpProxy } from '../../edge-gateway/src/testing/tcp-proxy.ts';
import { createTestAccount, TEST_APP_BASE_URL, type TestAccount } from '../helpers/accounts.ts';
import { eventually } from '../helpers/eventually.ts';
import {
  api,
  apiOk,
  runGatewayEnrol,
  startEnrolledGatewayProcess,
  StrengthMachine,
  writeDoorHook,
  type DoorDecision,
  type EnrolledGatewayProcess,
} from '../helpers/gym-visit.ts';
import { connectMongoose, testServices, uniqueDbName } from '../helpers/services.ts';
import { startCloudProcess, type CloudProcess } from '../helpers/spine.ts';

const BRANCH = 'visit';
const GATEWAY = 'gw-visit';
const MACHINE = 'press-v1';
const DOOR_IN = 'door-in';
const DOOR_OUT = 'door-out';
/** Targets: a door decision and a live delivery well under a second; deadlines 3× and more. */
const DECISION_DEADLINE_MS = 5_000;
const LIVE_DEADLINE_MS = 5_000;
/** The gateway's repeat window for one credential at one reader (edge-gateway/src/access/scan-limiter.ts). */
const SCAN_REPEAT_MS = 3_000;
const open24 = Object.fromEntries(WEEKDAYS.map((d) => [d, [{ open: '00:00', close: '24:00' }]]));
/** Why PC/SC virtual readers cannot run here; then the doors are QR line readers instead (said in the title). */
const unavailable = virtualReadersUnavailable();
/** NXG_E2E_DOORS=qr runs the QR fallback where PC/SC works too. */
const DOOR_KIND: 'nfc' | 'qr' = unavailable === undefined && process.env.NXG_E2E_DOORS !== 'qr' ? 'nfc' : 'qr';

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;

describe(`a gym visit as processes: ${DOOR_KIND === 'nfc' ? 'NFC' : 'QR'} check-in, link, three sets live, check-out${
  unavailable ? ` (QR line readers: no PC/SC here, ${unavailable})` : ''
}`, function () {
  this.timeout(60_000);
  let dir: string;
  let mongo: Connection;
  let redis: Redis;
  let mail: SmtpCapture;
  let readers: VirtualReaders | undefined;
  /** QR mode: the files the gateway's line readers read, per reader. */
  const scannerFiles = new Map<string, string>();
  let cloud: CloudProcess;
  let proxy: TcpProxy;
  let gateway: EnrolledGatewayProcess | undefined;
  let machine: StrengthMachine | undefined;
  const apps: MqttClient[] = [];
  let door: Awaited<ReturnType<typeof writeDoorHook>>;
  let admin: TestAccount;
  let staff: TestAccount;
  let member: TestAccount;
  let enrolmentToken: string;
  const figures: Record<string, string> = {};

  const cloudApi = (method: string, urlPath: string, who?: TestAccount, body?: unknown) =>
    api(cloud.apiUrl, method, urlPath, who?.accessToken, body);
  const ok = <T = Record<string, unknown>>(
    status: number,
    method: string,
    urlPath: string,
    who?: TestAccount,
    body?: unknown,
  ) => apiOk<T>(status, cloud.apiUrl, method, urlPath, who?.accessToken, body);
  const accounts = () => ({ url: cloud.apiUrl, mongo, mail });

  /** A member of the branch with an NFC card enrolled by staff. */
  async function memberWithCard(uid: string): Promise<TestAccount> {
    const account = await createTestAccount(accounts());
    // The branch's staff grant the membership (a member's own POST /api/users/branches/:id is only a request).
    await ok(201, 'PUT', `/api/branches/${BRANCH}/members/${account.userId}`, staff, {});
    await ok(201, 'POST', '/api/access/cards', staff, { userId: account.userId, branch: BRANCH, uid });
    return account;
  }

  /**
   * The member at a door: their card on that door's virtual reader (NFC), or a fresh QR token from the app's
   * `GET /api/access/qr-token` as a line into that door's scanner (QR); resolves with the decision the door hook
   * reports.
   */
  async function tap(who: TestAccount, uid: string, reader: string): Promise<DoorDecision & { latencyMs: number }> {
    // The gateway drops the same card at the same reader within 3 s as a repeat (scan-limiter.ts): a real
    // member taps again later, so the test does too.
    const last = lastTap.get(`${reader}:${uid}`) ?? 0;
    const wait = last + SCAN_REPEAT_MS + 100 - Date.now();
    if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
    const qr =
      DOOR_KIND === 'qr' ? (await ok<{ token: string }>(200, 'GET', '/api/access/qr-token', who)).token : undefined;
    const before = (await door.decisions()).length;
    const started = Date.now();
    const card =
      qr === undefined
        ? await insertVirtualCard({ port: readers!.ports[reader === DOOR_IN ? 0 : 1], uid })
        : await appendFile(scannerFiles.get(reader)!, `${qr}\n`).then(() => undefined);
    try {
      const decision = await eventually(
        `a door decision at ${reader}`,
        async () => (await door.decisions()).slice(before).find((d) => d.reader === reader),
        DECISION_DEADLINE_MS,
        20,
      );
      return { ...decision, latencyMs: decision.atMs - started };
    } catch (err) {
      const tail = gateway?.proc.recentOutput().split('\n').slice(-15).join('\n');
      throw new Error(`${(err as Error).message}; the gateway's last lines:\n${tail}`, { cause: err });
    } finally {
      if (card) {
        await card.remove();
        lastTap.set(`${reader}:${uid}`, Date.now());
      }
    }
  }

  const lastTap = new Map<string, number>();
  const currentSession = async (who: TestAccount) =>
    (await ok<{ session: Record<string, unknown> | null }>(200, 'GET', '/api/sessions/current', who)).session;

  before(async function () {
    this.timeout(120_000);
    dir = await mkdtemp(path.join(tmpdir(), 'nxg-visit-'));
    const dbName = uniqueDbName('visit');
    mongo = await connectMongoose(dbName);
    redis = new Redis(testServices().redisUrl, { maxRetriesPerRequest: 1 });
    mail = await startSmtpCapture();
    if (DOOR_KIND === 'nfc') {
      readers = await startVirtualReaders();
    } else {
      for (const reader of [DOOR_IN, DOOR_OUT]) {
        const file = path.join(dir, `${reader}.scanner`);
        await writeFile(file, '');
        scannerFiles.set(reader, file);
      }
    }
    door = await writeDoorHook(dir);
    cloud = await startCloudProcess({
      mongoUrl: `${testServices().mongoUrl}/${dbName}`,
      redisUrl: testServices().redisUrl,
      redisPrefix: `visit-${randomBytes(4).toString('hex')}:`,
      dataDir: path.join(dir, 'cloud'),
      env: {
        SMTP_URL: mail.url,
        APP_BASE_URL: TEST_APP_BASE_URL,
        ACCESS_ALLOW_LIST_DEBOUNCE_MS: '200',
      },
    });
    proxy = await startTcpProxy(cloud.tlsPort);
    admin = await createTestAccount(accounts(), { role: 'admin' });
    staff = await createTestAccount(accounts(), { role: 'staff' });
  });

  after(async function () {
    this.timeout(30_000);
    await Promise.allSettled(apps.map((c) => c.endAsync(true)));
    await machine?.close().catch(() => undefined);
    await gateway?.proc.stop(3_000);
    await cloud?.proc.stop(5_000);
    await proxy?.close();
    await readers?.dispose();
    await mail?.stop();
    await mongo?.dropDatabase().catch(() => undefined);
    await mongo?.close();
    if (redis && cloud) {
      const keys = await redis.keys(`${cloud.redisPrefix}*`);
      if (keys.length > 0) await redis.del(...keys);
    }
    redis?.disconnect();
    if (dir) await rm(dir, { recursive: true, force: true });
    if (Object.keys(figures).length > 0) {
      console.log(
        `      figures: ${Object.entries(figures)
          .map(([k, v]) => `${k} ${v}`)
          .join(', ')}`,
      );
    }
  });

  it('staff set up the branch; the gateway enrols with its one-time token and gets its signed configuration', async () => {
    await ok(201, 'POST', '/api/branches', admin, {
      id: BRANCH,
      name: 'Visit branch',
      timeZone: 'Europe/Berlin',
      openingHours: open24,
    });
    await ok(200, 'PUT', `/api/branches/${BRANCH}/staff/${staff.userId}`, admin).catch(() =>
      ok(204, 'PUT', `/api/branches/${BRANCH}/staff/${staff.userId}`, admin),
    );
    const created = await ok<{ enrolment: { token: string } }>(201, 'POST', `/api/branches/${BRANCH}/gateways`, staff, {
      id: GATEWAY,
    });
    enrolmentToken = created.enrolment.token;

    const gatewayDir = path.join(dir, 'gateway');
    const enrolled = await runGatewayEnrol(cloud.apiUrl, enrolmentToken, gatewayDir);
    expect(enrolled.code, enrolled.output).to.equal(0);
    expect(enrolled.output).to.not.include(enrolmentToken);

    const registered = await ok<{ mqtt: { password: string } }>(
      201,
      'POST',
      `/api/branches/${BRANCH}/machines`,
      staff,
      {
        id: MACHINE,
        gateway: GATEWAY,
        kind: 'selectorised',
        model: 'Press 1',
        location: 'floor 1',
      },
    );
    for (const [reader, action] of [
      [DOOR_IN, 'check-in'],
      [DOOR_OUT, 'check-out'],
    ] as const) {
      await ok(201, 'POST', `/api/branches/${BRANCH}/readers`, staff, {
        reader,
        gateway: GATEWAY,
        kind: DOOR_KIND,
        action,
      });
    }
    member = await memberWithCard('04a1b2c3d4e5f6');

    gateway = await startEnrolledGatewayProcess(gatewayDir, cloud, proxy.port, {
      ...(readers
        ? {
            GATEWAY_NFC_READERS: `${DOOR_IN}=${VIRTUAL_READER_NAMES[0]},${DOOR_OUT}=${VIRTUAL_READER_NAMES[1]}`,
            GATEWAY_NFC_SOCKET: readers.socketPath,
          }
        : { GATEWAY_QR_READERS: [...scannerFiles].map(([reader, file]) => `${reader}=${file}`).join(',') }),
      GATEWAY_DOOR_COMMAND: door.command,
      GATEWAY_UPLINK_RECONNECT_MIN_MS: '100',
      GATEWAY_UPLINK_RECONNECT_MAX_MS: '500',
      GATEWAY_UPLINK_KEEPALIVE_S: '3',
      GATEWAY_STATE_INTERVAL_MS: '2000',
    });
    const gw = gateway;
    await eventually(
      'the signed configuration and allow-list at the gateway, both NFC readers connected',
      async () => {
        const access = (await gw.health()).access;
        return (
          access?.configRevision !== undefined &&
          access.allowList.revision !== undefined &&
          access.allowList.members >= 1 &&
          access.readers.filter((r) => r.connected).length === 2
        );
      },
      30_000,
    );
    // The fleet view agrees once the gateway's next birth names the revisions it uses.
    type FleetEntry = {
      id: string;
      online: boolean;
      enrolled: boolean;
      configRevision: { current: number; inUse: number | null };
      allowListRevision: { current: number | null; inUse: number | null };
    };
    const entry = await eventually(
      'the fleet view: online, the current revisions in use',
      async () => {
        const fleet = await ok<{ items: FleetEntry[] }>(200, 'GET', `/api/branches/${BRANCH}/gateways`, staff);
        const e = fleet.items.find((g) => g.id === GATEWAY);
        return e?.configRevision.inUse === e?.configRevision.current &&
          e?.allowListRevision.inUse === e?.allowListRevision.current
          ? e
          : undefined;
      },
      15_000,
    );
    expect(entry).to.include({ online: true, enrolled: true });

    // The machine, listed in the signed configuration, connects to the gateway with its one-time secret.
    machine = await StrengthMachine.connect(gw.mqttUrl, BRANCH, MACHINE, registered.mqtt.password);
    await machine.announce();
    await eventually(
      'the machine available at GET /api/machines/availability',
      async () => {
        const res = await cloudApi('GET', `/api/machines/availability?branchId=${BRANCH}`, member);
        const listed = (res.body.machines as { machine: string; status: string }[] | undefined) ?? [];
        return listed.find((m) => m.machine === MACHINE)?.status === 'available';
      },
      20_000,
    );
  });

  it('checks in with the card, links, does three sets seen live over WebSocket, checks out', async () => {
    const gw = gateway!;
    const m = machine!;
    // The member's app: MQTT.js over WebSocket with the access token, on its own live topic.
    const app = await connectAsync(`${cloud.apiUrl.replace('http:', 'ws:')}/mqtt`, {
      clientId: `u.${member.userId}.e2e`,
      username: 'app',
      password: member.accessToken,
      reconnectPeriod: 0,
    });
    apps.push(app);
    const live: { at: number; event: UserLiveWorkout }[] = [];
    app.on('message', (_topic, payload) =>
      live.push({ at: Date.now(), event: JSON.parse(payload.toString()) as UserLiveWorkout }),
    );
    const granted = await app.subscribeAsync(topics.userLive(asUserId(member.userId), 'workout'), { qos: 0 });
    expect(granted.map((g) => g.qos)).to.deep.equal([0]);

    // Check-in at the door: the card on the first virtual reader, decided online by the cloud.
    const checkIn = await tap(member, '04a1b2c3d4e5f6', DOOR_IN);
    expect(checkIn).to.include({ action: 'check-in', decision: 'allow' });
    figures[`check-in (${DOOR_KIND} at the reader → door hook)`] = `${checkIn.latencyMs} ms`;
    const session = await eventually('an open session', async () => (await currentSession(member)) ?? undefined, 5_000);
    expect(session).to.include({ branchId: BRANCH, status: 'active' });
    const sessionId = String(session.id);

    // Link from the app; the machine is told through the gateway, the live topic says linked.
    const linked = await ok(201, 'POST', '/api/machines/link', member, { branchId: BRANCH, machineId: MACHINE });
    expect(linked).to.include({ machineId: MACHINE, sessionId });
    await eventually('cmd/link at the machine', () => m.commands.find((c) => c.name === 'link'), 5_000);
    expect(m.commands.find((c) => c.name === 'link')!.body).to.include({ userId: member.userId, sessionId });
    await eventually(
      'the link on u/{user}/live/workout',
      () => live.some((l) => l.event.type === 'link' && l.event.state === 'linked'),
      LIVE_DEADLINE_MS,
    );

    // Three sets: samples during each, then the finished set; both reach the app live.
    const sampleLatency: number[] = [];
    const setLatency: number[] = [];
    const setIds: string[] = [];
    for (const [i, reps] of [10, 8, 6].entries()) {
      const load = 40 + i * 5;
      for (let r = 1; r <= 2; r++) {
        const sentAt = Date.now();
        const ts = await m.sample(r, load);
        const got = await eventually(
          `sample ${i}.${r} live`,
          () => live.find((l) => l.event.type === 'sample' && l.event.telemetry.ts === ts),
          LIVE_DEADLINE_MS,
          5,
        );
        sampleLatency.push(got.at - sentAt);
      }
      const sentAt = Date.now();
      const msgId = await m.set(reps, load);
      setIds.push(msgId);
      const got = await eventually(
        `set ${i + 1} live`,
        () => live.find((l) => l.event.type === 'segment' && l.event.workout.msgId === msgId),
        LIVE_DEADLINE_MS,
        5,
      );
      setLatency.push(got.at - sentAt);
    }
    figures['live sample (machine → app) median/max'] = `${median(sampleLatency)}/${Math.max(...sampleLatency)} ms`;
    figures['live set (machine → MongoDB → app) median/max'] = `${median(setLatency)}/${Math.max(...setLatency)} ms`;

    // Check-out at the exit reader: the session ends, the link is released, the machine is free.
    const checkOut = await tap(member, '04a1b2c3d4e5f6', DOOR_OUT);
    expect(checkOut).to.include({ action: 'check-out', decision: 'allow' });
    figures[`check-out (${DOOR_KIND} at the reader → door hook)`] = `${checkOut.latencyMs} ms`;
    await eventually('the session ended', async () => (await currentSession(member)) === null, 5_000);
    await eventually('cmd/unlink at the machine', () => m.commands.some((c) => c.name === 'unlink'), 5_000);

    // MongoDB: the session with its duration and machine, the three sets attached to it, the link released.
    const stored = await mongo.db!.collection('gym_sessions').findOne({ _id: sessionId as never });
    expect(stored).to.include({ userId: member.userId, branchId: BRANCH, status: 'ended' });
    expect(stored!.machinesUsed).to.deep.equal([MACHINE]);
    expect(stored!.durationMs).to.be.a('number').and.greaterThan(0);
    expect(await mongo.db!.collection('active_sessions').countDocuments({ _id: member.userId as never })).to.equal(0);
    const segments = await mongo.db!.collection('workout_segments').find({ machine: MACHINE }).toArray();
    expect(segments.map((s) => s._id).sort()).to.deep.equal([...setIds].sort());
    for (const s of segments) expect(s).to.include({ userId: member.userId, sessionId, segment: 'set' });
    expect(await mongo.db!.collection('workouts').countDocuments({ source: MACHINE })).to.equal(3);
    expect(await mongo.db!.collection('machine_links').countDocuments({ _id: MACHINE as never })).to.equal(0);
    const history = await mongo.db!.collection('machine_link_history').find({ machine: MACHINE }).toArray();
    expect(history).to.have.length(1);
    expect(history[0]).to.include({ userId: member.userId, sessionId });

    // Redis: no link mirror left, the machine's live state available.
    const mirror = await redis.hgetall(`${cloud.redisPrefix}mx:${BRANCH}:${MACHINE}`);
    expect(mirror.userId, 'link mirror in Redis').to.equal(undefined);
    const liveState = await redis.hgetall(`${cloud.redisPrefix}live:machine:${BRANCH}:${MACHINE}`);
    expect(liveState).to.include({ status: 'available', gw: GATEWAY });

    // The API: history with the machine, the workout record with three sets, the machine available again.
    const page = await ok<{ items: Record<string, unknown>[] }>(200, 'GET', '/api/sessions/history', member);
    const visit = page.items.find((s) => s.id === sessionId);
    expect(visit).to.include({ status: 'ended' });
    expect(visit!.machinesUsed).to.deep.equal([MACHINE]);
    const record = await ok<{ segments: unknown[]; totals: { reps: number } }>(
      200,
      'GET',
      `/api/workouts/${sessionId}`,
      member,
    );
    expect(record.segments).to.have.length(3);
    expect(record.totals.reps).to.equal(24);
    const availability = await ok<{ machines: { machine: string; status: string; linked?: boolean }[] }>(
      200,
      'GET',
      `/api/machines/availability?branchId=${BRANCH}`,
      member,
    );
    expect(availability.machines.find((x) => x.machine === MACHINE)).to.include({ status: 'available' });

    // Decisions at the gateway: both online, latency from its own histogram.
    const online = await gw.metric('gateway_access_decisions_total', { decided_by: 'online' });
    expect(online).to.be.at.least(2);
    const sum = await gw.metric('gateway_access_decision_seconds_sum', { decided_by: 'online' });
    const count = await gw.metric('gateway_access_decision_seconds_count', { decided_by: 'online' });
    figures['online decision (gateway histogram, mean)'] = `${((sum / count) * 1000).toFixed(1)} ms`;
  });

  it('refuses a revoked card online, and offline once the next allow-list arrived', async function () {
    if (DOOR_KIND !== 'nfc') this.skip(); // cards need the NFC readers
    const gw = gateway!;
    const other = await memberWithCard('04c0ffee000001');
    const revokedUid = '04a1b2c3d4e5f6';
    const before = (await gw.health()).access!.allowList.revision!;
    // The member blocks their own card.
    const cards = await ok<{ items?: { id: string; last4: string }[] } | { id: string; last4: string }[]>(
      200,
      'GET',
      '/api/access/cards',
      member,
    );
    const list = Array.isArray(cards) ? cards : (cards.items ?? []);
    const card = list.find((c) => c.last4 === revokedUid.slice(-4))!;
    await ok(200, 'POST', `/api/access/cards/${card.id}/block`, member);

    const online = await tap(member, revokedUid, DOOR_IN);
    expect(online).to.include({ action: 'check-in', decision: 'deny', reason: 'blocked' });
    expect(await currentSession(member)).to.equal(null);

    // The next allow-list (without the card, with the other member's) reaches the gateway while online.
    await eventually(
      'an allow-list revision after the block at the gateway',
      async () => ((await gw.health()).access?.allowList.revision ?? 0) > before,
      15_000,
    );

    // The uplink cut: the gateway decides alone from the allow-list the cloud signed.
    proxy.mode = 'refuse';
    proxy.cut();
    await eventually('uplink down', async () => (await gw.health()).uplink === 'down', 15_000);
    const offline = await tap(member, revokedUid, DOOR_IN);
    expect(offline).to.include({ action: 'check-in', decision: 'deny', reason: 'unknown-credential' });
    // The same reader still lets a valid card in offline, so the refusal is the card's.
    const allowed = await tap(other, '04c0ffee000001', DOOR_IN);
    expect(allowed).to.include({ action: 'check-in', decision: 'allow' });
    expect(
      await gw.metric('gateway_access_decisions_total', { decided_by: 'offline', decision: 'deny' }),
    ).to.be.at.least(1);
    figures['offline deny (card → door hook)'] = `${offline.latencyMs} ms`;
    figures['offline allow (card → door hook)'] = `${allowed.latencyMs} ms`;

    // Back online, the offline check-in is reconciled into the other member's session.
    proxy.mode = 'pass';
    await eventually('the offline check-in reconciled', async () => (await currentSession(other)) !== null, 20_000);
  });

  it('refuses the spent one-time token to another gateway (enrol exits non-zero)', async () => {
    const again = await runGatewayEnrol(cloud.apiUrl, enrolmentToken, path.join(dir, 'gateway-2'));
    expect(again.code).to.not.equal(0);
    expect(again.output).to.match(/401|refused|invalid|expired|used/i);
  });
});
