/**
 * The hub's spine as processes (issue 4, "Tests"): the cloud (node cloud/src/main.ts), the edge gateway
 * (node edge-gateway/src/main.ts, uplink over TLS) and the simulator (node simulators/src/cli.ts) on free loopback
 * ports, against the run's MongoDB stand-in (a database per suite) and Redis (a key prefix per cloud). An in-process
 * fleet (startFleet) beside the simulator process gives the PUBACK ledger to check MongoDB against.
 *
 * Order matters inside the first suite: its last test kills the gateway. The second suite is RELIABILITY C1.
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { Redis } from 'ioredis';
import type { Connection } from 'mongoose';
import { asBranchId, asGatewayId, asMachineId, newBatchId, newBootId, topics } from '../../protocol/index.ts';
import { TestGateway } from '../../cloud/src/ingest/testing.ts';
import { startFleet, type Fleet } from '../../simulators/src/fleet.ts';
import { machineIdAt, typeAt } from '../../simulators/src/machines/index.ts';
import type { ServiceProcess } from '../../tools/services/index.ts';
import { eventually } from '../helpers/eventually.ts';
import { connectMongoose, testServices, uniqueDbName } from '../helpers/services.ts';
import {
  availability,
  checkWorkouts,
  mosquitto,
  scrapeMetric,
  provisionBranch,
  startCloudProcess,
  startGatewayProcess,
  startSimulatorProcess,
  WorkoutMachine,
  workoutPayload,
  workoutsIn,
  type CloudProcess,
  type GatewayProcess,
  type LedgerEntry,
  type ProvisionedBranch,
} from '../helpers/spine.ts';

const RECORD_COLLECTIONS = ['machine_metas', 'machine_status_changes', 'workouts', 'machine_events'] as const;
const LIVE = new Set(['available', 'in_use']);

/** After the processes stopped: drops the suite's database, deletes the cloud's Redis keys, removes its files. */
async function cleanUp(
  mongo: Connection | undefined,
  redis: Redis | undefined,
  cloud: CloudProcess | undefined,
  dir: string | undefined,
): Promise<void> {
  await mongo?.dropDatabase().catch(() => undefined);
  await mongo?.close();
  if (redis && cloud) {
    const keys = await redis.keys(`${cloud.redisPrefix}*`);
    if (keys.length > 0) await redis.del(...keys);
  }
  redis?.disconnect();
  if (dir) await rm(dir, { recursive: true, force: true });
}

describe('spine as processes: machines → gateway → cloud → MongoDB, Redis and the API', function () {
  this.timeout(60_000);
  const branch = 'e2e';
  const simMachines = [0, 1, 2, 3].map((i) => ({ id: machineIdAt(i), type: typeAt(i) }));
  const fleetMachines = [4, 5, 6, 7].map((i) => ({ id: machineIdAt(i), type: typeAt(i) }));
  const running = [...simMachines, ...fleetMachines].map((m) => m.id);
  let dir: string;
  let mongo: Connection;
  let redis: Redis;
  let site: ProvisionedBranch;
  let cloud: CloudProcess;
  let gateway: GatewayProcess;
  let sim: ServiceProcess | undefined;
  let fleet: Fleet | undefined;
  const cred = (id: string) => site.machines.find((m) => m.id === id)!;

  before(async function () {
    this.timeout(120_000);
    dir = await mkdtemp(path.join(tmpdir(), 'nxg-spine-'));
    const dbName = uniqueDbName('spine');
    mongo = await connectMongoose(dbName);
    redis = new Redis(testServices().redisUrl, { maxRetriesPerRequest: 1 });
    site = await provisionBranch(mongo, dir, {
      branch,
      gatewayId: 'gw-e2e',
      machines: [
        ...simMachines,
        ...fleetMachines,
        { id: 'bad-1', type: 'rower' },
        { id: 'c6-1', type: 'rower' },
        { id: 'mq-a', type: 'rower' },
      ],
      extraGateways: [{ id: 'gw-direct', machines: ['dl-1'] }],
    });
    cloud = await startCloudProcess({
      mongoUrl: `${testServices().mongoUrl}/${dbName}`,
      redisUrl: testServices().redisUrl,
      redisPrefix: `spine-${randomBytes(4).toString('hex')}:`,
      dataDir: path.join(dir, 'cloud'),
    });
    gateway = await startGatewayProcess(site, cloud, {
      GATEWAY_UPLINK_KEEPALIVE_S: '3',
      GATEWAY_UPLINK_RECONNECT_MAX_MS: '1000',
    });
    const simCredentials = path.join(dir, 'sim.credentials.json');
    await writeFile(simCredentials, JSON.stringify(simMachines.map((m) => cred(m.id))), { mode: 0o600 });
    sim = await startSimulatorProcess(simCredentials, { url: gateway.mqttUrl, branch });
    fleet = startFleet({
      url: gateway.mqttUrl,
      branch,
      machines: fleetMachines.map((m) => ({ ...cred(m.id), type: m.type })),
      seed: 11,
      rate: 2,
      timeScale: 30,
    });
    await fleet.whenConnected(30_000);
  });

  after(async function () {
    this.timeout(30_000);
    await fleet?.stop();
    await Promise.all([sim?.stop(3_000), gateway?.proc.stop(3_000), cloud?.proc.stop(5_000)]);
    await cleanUp(mongo, redis, cloud, dir);
  });

  const recordsOf = async (machine: string) => {
    const docs = [];
    for (const name of RECORD_COLLECTIONS) {
      docs.push(...(await mongo.db!.collection(name).find({ source: machine }).toArray()));
    }
    return docs;
  };

  it('carries a simulator process and an in-process fleet to MongoDB, Redis and the availability endpoint', async () => {
    // Every running machine live at GET /api/machines/availability.
    const listed = await eventually(
      'all machines live on the availability endpoint',
      async () => {
        const machines = await availability(cloud.apiUrl, branch);
        const live = machines.filter((m) => running.includes(m.machine) && LIVE.has(m.status));
        return live.length === running.length ? machines : undefined;
      },
      30_000,
    );
    for (const m of listed.filter((m) => running.includes(m.machine))) expect(m.gateway).to.equal('gw-e2e');

    // Redis: the live state of each machine, under this cloud's key prefix.
    const members = await redis.smembers(`${cloud.redisPrefix}live:machines:${branch}`);
    expect(members).to.include.members(running);
    await eventually(
      'a last sample in Redis for every machine',
      async () => {
        for (const id of running) {
          const h = await redis.hgetall(`${cloud.redisPrefix}live:machine:${branch}:${id}`);
          if (!LIVE.has(h.status ?? '') || !h.lastSeen || !h.metrics || h.gw !== 'gw-e2e') return false;
        }
        return true;
      },
      30_000,
    );

    // MongoDB: each machine's meta and status records, and its telemetry in buckets.
    await eventually(
      'meta, status and telemetry of every machine in MongoDB',
      async () => {
        for (const id of running) {
          const metas = await mongo.db!.collection('machine_metas').countDocuments({ source: id });
          const statuses = await mongo.db!.collection('machine_status_changes').countDocuments({ source: id });
          const buckets = await mongo.db!.collection('telemetry_buckets').countDocuments({ branch, machine: id });
          if (metas < 1 || statuses < 1 || buckets < 1) return false;
        }
        return true;
      },
      30_000,
    );

    // The fleet's PUBACK ledger: what the gateway acknowledged is in MongoDB, each record once.
    const snapshot = new Map([...fleet!.ledger()].map(([id, l]) => [id, [...l.acked]]));
    expect([...snapshot.values()].every((ids) => ids.length > 0)).to.equal(true);
    await eventually(
      'every acknowledged record in MongoDB',
      async () => {
        for (const [id, acked] of snapshot) {
          const stored = new Set((await recordsOf(id)).map((d) => String(d._id)));
          if (!acked.every((msgId) => stored.has(msgId))) return false;
        }
        return true;
      },
      30_000,
    );
    for (const id of running) {
      const docs = await recordsOf(id);
      const ids = docs.map((d) => String(d._id));
      const keys = docs.map((d) => `${String(d.bootId)}:${Number(d.seq)}`);
      expect(new Set(ids).size, `${id}: a msgId in two collections`).to.equal(ids.length);
      expect(new Set(keys).size, `${id}: one record stored twice`).to.equal(keys.length);
      const buckets = await mongo.db!.collection('telemetry_buckets').find({ branch, machine: id }).toArray();
      const samples = buckets.flatMap((b) => Object.values(b.samples as Record<string, { msgId: string }>));
      expect(samples.length, `${id}: telemetry samples`).to.be.greaterThan(0);
      expect(new Set(samples.map((s) => s.msgId)).size, `${id}: a sample stored twice`).to.equal(samples.length);
    }
    const stats = fleet!.stats();
    expect(stats.errors).to.equal(0);
  });

  it('counts a schema-breaking machine payload while valid traffic flows on, and dead-letters a refused record', async () => {
    const before = (await gateway.health()).rejected.total;
    const bad = await WorkoutMachine.connect(gateway.mqttUrl, branch, cred('bad-1'));
    try {
      const broken = { ...workoutPayload('bad-1', newBootId(), 0), distanceM: 'far' };
      // The gateway acknowledges a refused payload (a machine is never cut off for its payload) and counts it.
      await bad.client.publishAsync(
        topics.machineWorkout(asBranchId(branch), asMachineId(bad.id)),
        JSON.stringify(broken),
        { qos: 1 },
      );
      const health = await eventually(
        'the refused payload on the gateway /health',
        async () => {
          const h = await gateway.health();
          return h.rejected.total === before + 1 ? h : undefined;
        },
        15_000,
      );
      expect(health.rejected.byReason['machine:invalid'], JSON.stringify(health.rejected)).to.be.at.least(1);
      expect(await gateway.metric('gateway_rejected_total')).to.be.at.least(1);

      // Valid traffic flows on: the same connection's next workout and the fleet's records get through.
      const ackedBefore = fleet!.stats().acked;
      await bad.publishNext();
      expect(bad.client.connected).to.equal(true);
      await eventually('the fleet acknowledged further records', () => fleet!.stats().acked > ackedBefore, 20_000);
      await eventually(
        'the valid workout in MongoDB',
        async () => (await workoutsIn(mongo).countDocuments({ _id: bad.acked[0]!.msgId })) === 1,
        15_000,
      );
      expect(await workoutsIn(mongo).countDocuments({ _id: broken.msgId })).to.equal(0);
    } finally {
      await bad.close();
    }

    // A record the cloud refuses: published as a gateway straight to the cloud's loopback listener.
    const direct = site.extraGateways[0]!;
    const gw = await TestGateway.connect(
      `mqtt://127.0.0.1:${cloud.tcpPort}`,
      asBranchId(branch),
      asGatewayId(direct.id),
      { username: direct.id, password: direct.secret },
    );
    try {
      const boot = newBootId();
      const good = workoutPayload('dl-1', boot, 1);
      const refused = { ...workoutPayload('dl-1', boot, 2), endedAt: 'soon' };
      const batchId = newBatchId();
      const ack = await gw.send(
        'records',
        {
          batchId,
          records: [
            { kind: 'workout', payload: good },
            { kind: 'workout', payload: refused },
          ],
        },
        20_000,
      );
      expect(ack.acked).to.deep.equal([good.msgId]);
      expect(ack.rejected).to.have.length(1);
      expect(ack.rejected[0]).to.include({ index: 1, msgId: refused.msgId });
      const letter = await mongo.db!.collection('dead_letters').findOne({ batchId, index: 1 });
      expect(letter, 'dead letter').to.not.equal(null);
      expect(letter!.reason).to.be.a('string').and.equal(ack.rejected[0]!.reason);
      expect(letter!.raw).to.include(refused.msgId);
      expect(await workoutsIn(mongo).countDocuments({ _id: good.msgId })).to.equal(1);
      expect(await workoutsIn(mongo).countDocuments({ _id: refused.msgId })).to.equal(0);
    } finally {
      await gw.close();
    }
  });

  it('refuses external peers (mosquitto clients): wrong credentials, another branch, an observer, a machine as another', async () => {
    const cloudTcp = ['-h', '127.0.0.1', '-p', String(cloud.tcpPort)];
    const cloudTls = ['-h', '127.0.0.1', '-p', String(cloud.tlsPort), '--cafile', cloud.caFile];
    const gatewayBroker = ['-h', '127.0.0.1', '-p', String(gateway.mqttPort)];
    const obs = site.observer;
    const direct = site.extraGateways[0]!;
    const mqA = cred('mq-a');
    const batchOf = (payload: object) =>
      JSON.stringify({ batchId: newBatchId(), sentAt: Date.now(), records: [{ kind: 'workout', payload }] });
    const CONNECTION_LOST = 7; // mosquitto_pub: the broker closed the connection instead of answering
    const REFUSED = 5; // CONNACK 5, not authorised

    // The observer's credentials work (retained live state over TLS); a wrong password gets CONNACK 5, on the
    // cloud broker and on the gateway's broker alike.
    const live = await mosquitto('mosquitto_sub', [
      ...cloudTls,
      ...['-u', obs.id, '-P', obs.secret, '-i', `${obs.id}.cli`],
      ...['-t', `nxg/v1/b/${branch}/live/machines/#`, '-C', '1', '-W', '15', '-v'],
    ]);
    expect(live.code, live.stderr).to.equal(0);
    expect(live.stdout).to.match(new RegExp(`^nxg/v1/b/${branch}/live/machines/\\S+ \\{`));
    const wrong = await mosquitto('mosquitto_sub', [
      ...cloudTcp,
      ...['-u', obs.id, '-P', 'x'.repeat(43), '-i', `${obs.id}.cli`, '-t', `nxg/v1/b/${branch}/live/#`, '-W', '10'],
    ]);
    expect(wrong, 'wrong observer password').to.include({ code: REFUSED });
    const wrongMachine = await mosquitto('mosquitto_pub', [
      ...gatewayBroker,
      ...['-u', mqA.id, '-P', 'x'.repeat(43), '-i', mqA.id, '-q', '1'],
      ...['-t', `nxg/v1/b/${branch}/m/${mqA.id}/workout`, '-m', '{}'],
    ]);
    expect(wrongMachine, 'wrong machine password').to.include({ code: REFUSED });

    // A gateway publishing into another branch: its connection is closed, nothing is stored. The same client and
    // credentials on its own branch are the control.
    const foreign = workoutPayload('dl-1', newBootId(), 1);
    const asGateway = [...cloudTcp, '-u', direct.id, '-P', direct.secret, '-i', direct.id, '-q', '1'];
    const intoOther = await mosquitto('mosquitto_pub', [
      ...asGateway,
      ...['-t', `nxg/v1/b/other/gw/${direct.id}/up/records`, '-m', batchOf(foreign)],
    ]);
    expect(intoOther, 'gateway into another branch').to.include({ code: CONNECTION_LOST });
    const own = workoutPayload('dl-1', newBootId(), 1);
    const intoOwn = await mosquitto('mosquitto_pub', [
      ...asGateway,
      ...['-t', `nxg/v1/b/${branch}/gw/${direct.id}/up/records`, '-m', batchOf(own)],
    ]);
    expect(intoOwn, 'gateway into its own branch').to.include({ code: 0 });

    // An observer publishing: refused the same way.
    const observed = workoutPayload('dl-1', newBootId(), 1);
    const observerPub = await mosquitto('mosquitto_pub', [
      ...cloudTcp,
      ...['-u', obs.id, '-P', obs.secret, '-i', `${obs.id}.pub`, '-q', '1'],
      ...['-t', `nxg/v1/b/${branch}/gw/${direct.id}/up/records`, '-m', batchOf(observed)],
    ]);
    expect(observerPub, 'observer publishing').to.include({ code: CONNECTION_LOST });

    // A machine publishing as another machine on the gateway broker, or an oversized frame: cut off, nothing
    // queued. Its own topic is the control.
    const asMqA = [...gatewayBroker, '-u', mqA.id, '-P', mqA.secret, '-i', mqA.id, '-q', '1'];
    const victim = fleetMachines[0]!.id;
    const spoofed = workoutPayload(victim, newBootId(), 1);
    const asOther = await mosquitto('mosquitto_pub', [
      ...asMqA,
      ...['-t', `nxg/v1/b/${branch}/m/${victim}/workout`, '-m', JSON.stringify(spoofed)],
    ]);
    expect(asOther, 'machine as another machine').to.include({ code: CONNECTION_LOST });
    const oversized = { ...workoutPayload(mqA.id, newBootId(), 1), exercise: 'x'.repeat(80 * 1024) };
    const tooBig = await mosquitto('mosquitto_pub', [
      ...asMqA,
      ...['-t', `nxg/v1/b/${branch}/m/${mqA.id}/workout`, '-m', JSON.stringify(oversized)],
    ]);
    expect(tooBig.code, `oversized frame: ${tooBig.stderr}`).to.not.equal(0);
    const mine = workoutPayload(mqA.id, newBootId(), 1);
    const ownTopic = await mosquitto('mosquitto_pub', [
      ...asMqA,
      ...['-t', `nxg/v1/b/${branch}/m/${mqA.id}/workout`, '-m', JSON.stringify(mine)],
    ]);
    expect(ownTopic, 'machine on its own topic').to.include({ code: 0 });

    // Each refusal counted for its reason, on the cloud's and the gateway's /metrics.
    const cloudMetric = (name: string, labels: Record<string, string>) =>
      scrapeMetric(`${cloud.apiUrl}/metrics`, name, labels);
    expect(await cloudMetric('mqtt_authz_denied_total', { action: 'publish', reason: 'out-of-scope' })).to.be.at.least(
      1,
    );
    expect(await cloudMetric('mqtt_authz_denied_total', { action: 'publish', reason: 'read-only' })).to.be.at.least(1);
    expect(await cloudMetric('mqtt_connections_refused_total', {})).to.be.at.least(1);
    expect(await gateway.metric('gateway_machine_connects_total', { result: 'refused' })).to.be.at.least(1);
    expect(await gateway.metric('gateway_mqtt_connections_cut_total', { reason: 'oversized' })).to.be.at.least(1);

    // The controls reach MongoDB; the refused records never do (each refusal came before its control).
    const workouts = workoutsIn(mongo);
    await eventually(
      'the controls in MongoDB',
      async () => (await workouts.countDocuments({ _id: { $in: [own.msgId, mine.msgId] } })) === 2,
      20_000,
    );
    for (const refused of [foreign, observed, spoofed, oversized]) {
      expect(await workouts.countDocuments({ _id: refused.msgId }), refused.source).to.equal(0);
      expect(await mongo.db!.collection('dead_letters').countDocuments({ msgId: refused.msgId })).to.equal(0);
    }
  });

  it('C6: a machine killed with -9 goes offline; a gateway killed with -9 turns its machines unknown', async () => {
    const c6Credentials = path.join(dir, 'c6.credentials.json');
    await writeFile(c6Credentials, JSON.stringify([{ ...cred('c6-1'), type: 'rower' }]), { mode: 0o600 });
    const lone = await startSimulatorProcess(c6Credentials, { url: gateway.mqttUrl, branch, seed: 3 });
    try {
      await eventually(
        'c6-1 live',
        async () =>
          LIVE.has((await availability(cloud.apiUrl, branch)).find((m) => m.machine === 'c6-1')?.status ?? ''),
        20_000,
      );
    } finally {
      await lone.stop(0); // SIGKILL: the gateway's broker publishes its last will
    }
    await eventually(
      'c6-1 offline by its last will',
      async () => (await availability(cloud.apiUrl, branch)).find((m) => m.machine === 'c6-1')?.status === 'offline',
      15_000,
    );
    expect(
      await redis.hget(`${cloud.redisPrefix}live:machine:${branch}:c6-1`, 'sWill'),
      'status from the will',
    ).to.equal('1');

    await gateway.proc.stop(0); // SIGKILL: the cloud broker publishes the gateway's last will
    const machines = await eventually(
      "every machine of the gateway unknown (≤ 3× the uplink keepalive of 3 s, plus the cloud's own work)",
      async () => {
        const all = await availability(cloud.apiUrl, branch);
        const mine = all.filter((m) => m.gateway === 'gw-e2e');
        return mine.length > 0 && mine.every((m) => m.status === 'unknown') ? mine : undefined;
      },
      15_000,
    );
    expect(machines.map((m) => m.machine)).to.include.members([...running, 'c6-1']);
    // The gateway's will is held, and each machine's own last status is kept for when the gateway returns.
    expect(await redis.hget(`${cloud.redisPrefix}live:gateway:${branch}:gw-e2e`, 'online')).to.equal('0');
    expect(await redis.hget(`${cloud.redisPrefix}live:machine:${branch}:c6-1`, 'status')).to.equal('offline');
  });
});

describe('spine C1: the cloud killed between its MongoDB write and its ack', function () {
  this.timeout(90_000);
  const branch = 'c1';
  const machineIds = ['c1-m1', 'c1-m2', 'c1-m3'];
  const perMachine = 120;
  let dir: string;
  let mongo: Connection;
  let redis: Redis;
  let cloud: CloudProcess | undefined;
  let gateway: GatewayProcess | undefined;
  const machines: WorkoutMachine[] = [];

  after(async function () {
    this.timeout(30_000);
    await Promise.all(machines.map((m) => m.close().catch(() => undefined)));
    await Promise.all([gateway?.proc.stop(3_000), cloud?.proc.stop(5_000)]);
    await cleanUp(mongo, redis, cloud, dir);
  });

  it('the gateway resends and MongoDB holds every acknowledged record exactly once (acked ⊆ mongo, 0 dups, 0 gaps)', async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'nxg-spine-c1-'));
    const dbName = uniqueDbName('spine_c1');
    mongo = await connectMongoose(dbName);
    redis = new Redis(testServices().redisUrl, { maxRetriesPerRequest: 1 });
    const site = await provisionBranch(mongo, dir, {
      branch,
      gatewayId: 'gw-c1',
      machines: machineIds.map((id) => ({ id, type: 'rower' })),
    });
    cloud = await startCloudProcess({
      mongoUrl: `${testServices().mongoUrl}/${dbName}`,
      redisUrl: testServices().redisUrl,
      redisPrefix: `spine-c1-${randomBytes(4).toString('hex')}:`,
      dataDir: path.join(dir, 'cloud'),
      env: { INGEST_ACK_DELAY_MS: '500' },
    });
    gateway = await startGatewayProcess(site, cloud, {
      GATEWAY_UPLINK_RECONNECT_MIN_MS: '100',
      GATEWAY_UPLINK_RECONNECT_MAX_MS: '500',
      GATEWAY_UPLINK_ACK_TIMEOUT_MS: '5000',
    });
    await eventually('uplink up', async () => (await gateway!.health()).uplink === 'up', 20_000);
    for (const m of site.machines) machines.push(await WorkoutMachine.connect(gateway.mqttUrl, branch, m));

    // Each machine publishes its workouts one after another (QoS 1, each awaited: its PUBACK joins the ledger).
    const publishing = Promise.all(
      machines.map(async (m) => {
        for (let i = 0; i < perMachine; i++) {
          await m.publishNext();
          await new Promise((resolve) => setTimeout(resolve, 40));
        }
      }),
    );
    const workouts = workoutsIn(mongo);
    const acked = () => gateway!.metric('gateway_uplink_records_acked_total');
    // Kill while records are written but not yet acknowledged (the ack waits INGEST_ACK_DELAY_MS after the write):
    // MongoDB read first, the gateway's acked count second, so "stored > acked" held at the second read.
    await eventually(
      // Never true when the gateway counts records as delivered on the broker's PUBACK (RELIABILITY finding 1).
      'records stored in MongoDB and not yet acknowledged to the gateway (it must wait for the ingest ack)',
      async () => {
        const stored = await workouts.countDocuments({});
        return stored >= 30 && stored > (await acked());
      },
      30_000,
      50,
    );
    await cloud.proc.stop(0); // SIGKILL
    const storedAtKill = await workouts.countDocuments({});
    const ackedAtKill = await acked();
    const total = perMachine * machineIds.length;
    const ledgerSize = () => machines.reduce((sum, m) => sum + m.acked.length, 0);
    const ledgerAtKill = ledgerSize();
    expect(storedAtKill, 'stored but unacknowledged at the kill').to.be.greaterThan(ackedAtKill);

    // While the cloud is down (G1, scaled down) the gateway reports the uplink down but keeps accepting: machines
    // still get PUBACKs, and its queue holds every record the cloud has not acknowledged.
    await eventually(
      'the uplink down on the gateway /health, still accepting',
      async () => {
        const h = await gateway!.health();
        return h.uplink === 'down' && h.status === 'degraded';
      },
      20_000,
    );
    await eventually('PUBACKs during the outage', () => ledgerSize() >= Math.min(total, ledgerAtKill + 30), 20_000);
    const queuedBefore = ledgerSize();
    const outage = await gateway.health();
    expect(outage.queue.depth, 'queue depth during the outage').to.be.at.least(queuedBefore - ackedAtKill);

    // Same ports, same data; the fault-injection pause is off now.
    await cloud.restart({ INGEST_ACK_DELAY_MS: '0' });
    await publishing;
    await eventually(
      'the gateway queue drained',
      async () => {
        const h = await gateway!.health();
        return h.uplink === 'up' && h.queue.depth === 0;
      },
      30_000,
    );

    const ledger = new Map<string, LedgerEntry[]>(machines.map((m) => [m.id, m.acked]));
    const results = await checkWorkouts(mongo, ledger);
    const report = results.map(
      (r) => `${r.machine}: acked ${r.acked} / in-mongo ${r.inMongo} / dup-docs ${r.dupDocs} / gaps ${r.gaps.length}`,
    );
    for (const r of results) {
      expect(r.acked, report.join('\n')).to.equal(perMachine);
      expect(r.missing, `${r.machine}: acknowledged but not in MongoDB`).to.deep.equal([]);
      expect(r.dupDocs, `${r.machine}: duplicate documents`).to.equal(0);
      expect(r.gaps, `${r.machine}: gaps`).to.deep.equal([]);
      expect(r.inMongo).to.equal(perMachine);
    }
    // The gateway resent what was stored but unacknowledged: the restarted cloud found each already stored.
    const redelivered = await scrapeMetric(`${cloud.apiUrl}/metrics`, 'ingest_records_total', {
      kind: 'workout',
      outcome: 'duplicate',
    });
    expect(redelivered, 'records resent and recognised as stored').to.be.at.least(storedAtKill - ackedAtKill);
    console.log(
      `      C1: killed at ${ledgerAtKill}/${total} PUBACKed, ${storedAtKill} stored, ${ackedAtKill} acked; ` +
        `queue depth ${outage.queue.depth} in the outage; ${redelivered} redeliveries after the restart\n      ` +
        report.join('\n      '),
    );
  });
});
