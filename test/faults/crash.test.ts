/**
 * Crashes and restarts (RELIABILITY (b) G6–G8 and C1, scaled for CI): the gateway SIGKILLed while it drains a
 * backlog and while machines publish, a cold start with the cloud unreachable and the backlog on disk, and the cloud
 * SIGKILLed between its MongoDB write and its ack. The gateway's durable queue (edge-gateway/src/uplink/
 * sqlite-queue.ts) is read straight from its file between a kill and the restart: `PRAGMA integrity_check` and the
 * rows on disk. The offline check-in part of G8 starts the gateway with a signed configuration and allow-list cached
 * in its data directory (signed with a test key it is configured to trust) and scans cards on a line reader.
 */
import { appendFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { expect } from 'chai';
import { asBranchId, asMachineId, asReaderId, asUserId, type GatewayId } from '../../protocol/index.ts';
import { createAllowList } from '../../edge-gateway/src/cloud-config/allow-list.ts';
import { createKeyring } from '../../edge-gateway/src/cloud-config/keys.ts';
import { ALLOW_LIST_FILE_NAME, CONFIG_FILE_NAME } from '../../edge-gateway/src/access/gateway-access.ts';
import {
  allowListCommands,
  configCommand,
  configDocument,
  newSigningKey,
} from '../../edge-gateway/src/testing/access-fixtures.ts';
import { hashSecret } from '../../tools/mqtt/secrets.ts';
import { createLogger } from '../../tools/runtime/logger.ts';
import {
  checkLedger,
  settle,
  expectExactlyOnce,
  eventually,
  inspectQueueFile,
  queueFileOf,
  readHealth,
  report,
  since,
  sleep,
  faultSuite,
  startFaultRig,
  startMachines,
  storedWorkouts,
  type FaultRig,
  type Machines,
  type Scenario,
} from './harness.ts';

/** The access part of the gateway's /health (edge-gateway/src/access/access-service.ts, AccessStats). */
interface AccessDecision {
  action: string;
  decision: 'allow' | 'deny';
  decidedBy: string;
  atMs: number;
}
interface AccessDecisions {
  decisions: number;
  offline: number;
  last?: AccessDecision;
}

/** SIGKILL, then the file checked on disk, then the same gateway started again; returns the figures of the kill. */
async function killAndRestart(
  s: Scenario,
  stored: () => Promise<number>,
): Promise<{ integrity: string; rows: number; storedAfter: number; downMs: number }> {
  const t0 = Date.now();
  await s.gateway.proc.stop(0);
  const disk = inspectQueueFile(queueFileOf(s));
  // Read after the file: every record is on disk, or in MongoDB, or both.
  const storedAfter = await stored();
  await s.restartGateway();
  const rows = Object.values(disk.rows).reduce((a, b) => a + b, 0);
  return { integrity: disk.integrity, rows, storedAfter, downMs: since(t0) };
}

describe('faults: crashes and restarts (G6–G8)', function () {
  this.timeout(240_000);
  const suite = faultSuite('crash');

  it('G6: the gateway SIGKILLed at 25 %, 50 % and 75 % of draining a 10,000-record backlog: 10,000 exactly once, integrity ok', async () => {
    const total = 10_000;
    // A drain of about 1,000 records/s leaves time to kill at each quarter.
    const s = await suite.rig.scenario('g6', { machines: 50, env: { GATEWAY_UPLINK_DRAIN_MAX_PER_S: '1000' } });
    const machines = suite.startMachines(s);
    await machines.whenConnected(30_000);
    await s.waitHealth('uplink up', (h) => h.uplink === 'up', 30_000);
    s.cut('refuse');
    await s.waitHealth('uplink down', (h) => h.uplink === 'down', 10_000, 50);
    machines.burst(total / 50);
    await machines.whenAllAcked(120_000);
    expect((await readHealth(s.gateway)).queue.depth, 'backlog on the gateway').to.equal(total);

    s.restore();
    const kills: string[] = [];
    for (const fraction of [0.25, 0.5, 0.75]) {
      await eventually(
        `${fraction * 100} % of the backlog in MongoDB`,
        async () => (await storedWorkouts(suite.rig.mongo, s.site.branch)) >= fraction * total,
        60_000,
        50,
      );
      const atKill = await storedWorkouts(suite.rig.mongo, s.site.branch);
      const k = await killAndRestart(s, () => storedWorkouts(suite.rig.mongo, s.site.branch));
      const restartedAt = Date.now();
      const atRestart = await storedWorkouts(suite.rig.mongo, s.site.branch);
      expect(k.integrity, `integrity_check after the kill at ${fraction * 100} %`).to.equal('ok');
      expect(k.rows + k.storedAfter, 'rows on disk + records in MongoDB cover the backlog').to.be.at.least(total);
      // Target 5 s; deadline 3×.
      await eventually(
        'draining resumed after the restart',
        async () => atRestart >= total || (await storedWorkouts(suite.rig.mongo, s.site.branch)) > atRestart,
        15_000,
        50,
      );
      kills.push(
        `${fraction * 100}%: stored ${atKill}, on disk ${k.rows}, integrity ${k.integrity}, down ${k.downMs} ms, ` +
          `resumed ${since(restartedAt)} ms after ready`,
      );
    }
    await settle(s, machines, 90_000);
    const f = await checkLedger(suite.rig.mongo, machines.ledger());
    const line = report('G6', f, {
      'redeliveries (cloud)': await suite.rig.cloudMetric('ingest_records_total', {
        kind: 'workout',
        outcome: 'duplicate',
      }),
    });
    for (const k of kills) console.log(`        kill at ${k}`);
    expectExactlyOnce(line, f, total);
  });

  it('G7: the gateway SIGKILLed 4 times while 50 machines publish 10 msg/s: every PUBACKed record in MongoDB exactly once', async () => {
    const s = await suite.rig.scenario('g7', { machines: 50 });
    const machines = suite.startMachines(s);
    await machines.whenConnected(30_000);
    await s.waitHealth('uplink up', (h) => h.uplink === 'up', 30_000);
    void machines.startTraffic(10);
    const kills: string[] = [];
    // Kills at pseudo-random instants (a fixed seed: the run is repeatable), 2–4.5 s apart.
    let seed = 7;
    const random = () => (seed = (seed * 48_271) % 2_147_483_647) / 2_147_483_647; // MINSTD
    for (let i = 0; i < 4; i++) {
      await sleep(2_000 + Math.floor(random() * 2_500));
      const ackedAtKill = machines.acked();
      const k = await killAndRestart(s, () => storedWorkouts(suite.rig.mongo, s.site.branch));
      expect(k.integrity, `integrity_check after kill ${i + 1}`).to.equal('ok');
      kills.push(`#${i + 1}: ${ackedAtKill} PUBACKed, ${k.rows} rows on disk, down ${k.downMs} ms`);
    }
    await sleep(2_000);
    machines.stopTraffic();
    await settle(s, machines, 90_000);
    const f = await checkLedger(suite.rig.mongo, machines.ledger());
    const line = report('G7', f, {
      published: machines.published(),
      'machine reconnects': machines.drops(),
      'redeliveries (cloud)': await suite.rig.cloudMetric('ingest_records_total', {
        kind: 'workout',
        outcome: 'duplicate',
      }),
    });
    for (const k of kills) console.log(`        kill ${k}`);
    expectExactlyOnce(line, f, machines.published());
  });

  it('G8: cold start with the cloud unreachable, then a restart while still offline: the backlog survives on disk and is delivered once', async () => {
    const s = await suite.rig.scenario('g8', { machines: 50, offline: true });
    // The gateway came up (ready line) although its uplink is refused; machines connect and are acknowledged.
    const machines = suite.startMachines(s);
    await machines.whenConnected(30_000);
    const first = await readHealth(s.gateway);
    expect(first.uplink).to.equal('down');
    await machines.startTraffic(10, { ticks: 100 }); // 10 s: 5,000 records
    await machines.whenAllAcked(30_000);
    const before = await readHealth(s.gateway);
    expect(before.queue.depth, 'queued while offline').to.equal(5_000);

    // Power cut while offline: SIGKILL, the file inspected, then started again, still offline.
    const k = await killAndRestart(s, () => storedWorkouts(suite.rig.mongo, s.site.branch));
    const after = await readHealth(s.gateway);
    expect(k.integrity).to.equal('ok');
    expect(k.rows, 'rows on disk between the kill and the restart').to.equal(5_000);
    expect(after.uplink, 'still offline after the restart').to.equal('down');
    expect(after.queue.depth, 'backlog after the offline restart').to.equal(5_000);

    // Machines reconnect to the restarted gateway and go on publishing while it is still offline.
    await machines.whenConnected(30_000);
    await machines.startTraffic(10, { ticks: 20 });
    await machines.whenAllAcked(30_000);
    expect((await readHealth(s.gateway)).queue.depth).to.equal(6_000);

    const t0 = Date.now();
    s.restore();
    await settle(s, machines, 90_000);
    const drainMs = since(t0);
    const f = await checkLedger(suite.rig.mongo, machines.ledger());
    const line = report('G8', f, {
      'depth before/after the offline restart': `${before.queue.depth}/${after.queue.depth}`,
      'rows on disk': k.rows,
      'delivered ms after the cloud returned': drainMs,
    });
    expectExactlyOnce(line, f, 6_000);
  });

  it('G8: with the signed configuration and allow-list cached on disk, a gateway started offline (and killed and started again offline) decides card check-ins itself, and the decisions reach the cloud later', async () => {
    const anaCard = '04a1b2c3d4e5f6';
    const strangerCard = '04ffeeddccbbaa';
    const ana = asUserId('u-g8a-ana');
    const configKey = newSigningKey();
    const qrKey = newSigningKey();
    const keysFile = path.join(suite.rig.dir, 'g8a-config-keys.json');
    const scans = path.join(suite.rig.dir, 'g8a-door-in.scans');
    await writeFile(keysFile, JSON.stringify({ keys: [configKey.jwk] }));
    await writeFile(scans, '');
    const s = await suite.rig.scenario('g8a', {
      machines: 5,
      offline: true,
      env: { GATEWAY_CONFIG_KEYS_FILE: keysFile, GATEWAY_QR_READERS: `door-in=${scans}` },
      // What an earlier connection left on disk: the cloud's signed configuration and allow-list, stored the way
      // the gateway stores a verified push (config.jws as pushed; allow-list.json through the gateway's own
      // createAllowList.apply, which verifies each part).
      beforeStart: async (dataDir, site) => {
        const branch = asBranchId(site.branch);
        const document = configDocument({
          branch,
          gateway: site.gateway.id as GatewayId,
          revision: 1,
          qrKeys: [qrKey.jwk],
          machines: site.machines.map((m) => ({ machine: asMachineId(m.id), secretSha256: hashSecret(m.secret) })),
          readers: [{ reader: asReaderId('door-in'), kind: 'nfc', action: 'check-in' }],
        });
        await writeFile(path.join(dataDir, CONFIG_FILE_NAME), configCommand(configKey, document).jws, { mode: 0o600 });
        const list = createAllowList({
          file: path.join(dataDir, ALLOW_LIST_FILE_NAME),
          branch,
          keys: createKeyring([configKey.jwk]),
          nowMs: Date.now,
          log: createLogger({ name: 'g8a-seed', level: 'silent' }),
        });
        for (const part of allowListCommands(configKey, {
          branch,
          revision: 1,
          members: [{ userId: ana, uids: [anaCard] }],
        })) {
          const outcome = await list.apply(part);
          if (!outcome.ok) throw new Error(`allow-list part not stored: ${JSON.stringify(outcome)}`);
        }
      },
    });

    /** Appends a card UID to the door reader's file; resolves with the decision /health reports for it. */
    const decisions = async () => (await readHealth(s.gateway)).access as { decisions: AccessDecisions } | undefined;
    const scan = async (uid: string): Promise<AccessDecision & { tookMs: number; offline: number }> => {
      const before = (await decisions())?.decisions.decisions ?? 0;
      const t0 = Date.now();
      await appendFile(scans, `${uid}\n`);
      // Target 1 s from scan to decision; deadline 3×.
      const after = await eventually(
        `an access decision for the scan of ${uid}`,
        async () => {
          const d = (await decisions())?.decisions;
          return d !== undefined && d.decisions > before ? d : undefined;
        },
        3_000,
        20,
      );
      return { ...after.last!, tookMs: since(t0), offline: after.offline };
    };

    const machines = suite.startMachines(s);
    await machines.whenConnected(30_000);
    expect((await readHealth(s.gateway)).uplink).to.equal('down');
    const first = await scan(anaCard);
    expect(first, JSON.stringify(first)).to.include({ decision: 'allow', decidedBy: 'offline', action: 'check-in' });
    const stranger = await scan(strangerCard);
    expect(stranger, JSON.stringify(stranger)).to.include({ decision: 'deny', decidedBy: 'offline' });

    // Power cut while offline, started again offline: the cached documents are used as they are.
    const k = await killAndRestart(s, () => Promise.resolve(0));
    expect(k.integrity).to.equal('ok');
    const afterRestart = await scan(anaCard);
    expect(afterRestart, JSON.stringify(afterRestart)).to.include({ decision: 'allow', decidedBy: 'offline' });
    const queued = await readHealth(s.gateway);
    expect(queued.queue.lanes.access.depth, 'decisions queued in the access lane').to.be.at.least(3);

    // The cloud returns: the access lane drains first; every record reaches MongoDB (stored or dead-lettered).
    s.restore();
    await s.waitHealth(
      'the access lane delivered',
      (h) => h.uplink === 'up' && h.queue.lanes.access.depth === 0,
      60_000,
    );
    const db = suite.rig.mongo.db!;
    const stored = {
      access_scans: await db.collection('access_scans').countDocuments({ branch: s.site.branch }),
      offline_decisions: await db.collection('offline_decisions').countDocuments({ branch: s.site.branch }),
      dead_letters: await db.collection('dead_letters').countDocuments({ gateway: s.site.gateway.id }),
    };
    console.log(
      `      G8 (access): offline decisions seen on /health ${first.tookMs} / ${stranger.tookMs} / ` +
        `${afterRestart.tookMs} ms after the scan; ` +
        `access lane ${queued.queue.lanes.access.depth} queued offline; in MongoDB: ${JSON.stringify(stored)}`,
    );
    expect(stored.access_scans + stored.offline_decisions, 'access records stored').to.be.at.least(3);
  });
});

describe('faults: the cloud SIGKILLed between its MongoDB write and its ack (C1)', function () {
  this.timeout(240_000);
  let rig: FaultRig;
  let machines: Machines | undefined;

  before(async function () {
    this.timeout(120_000);
    // The test hook: every ack waits 200 ms after its MongoDB write (cloud/src/ingest/batch.ts).
    rig = await startFaultRig('c1', { INGEST_ACK_DELAY_MS: '200' });
  });

  after(async function () {
    this.timeout(60_000);
    await machines?.stop();
    await rig?.close();
  });

  it('C1: 10,000 records drained at ~1,000/s, the cloud killed at 50 % with records stored but unacked: 10,000 exactly once', async () => {
    const total = 10_000;
    const s = await rig.scenario('c1', { machines: 50, env: { GATEWAY_UPLINK_DRAIN_MAX_PER_S: '1000' } });
    machines = startMachines(() => s.gateway.mqttUrl, s.site);
    await machines.whenConnected(30_000);
    await s.waitHealth('uplink up', (h) => h.uplink === 'up', 30_000);
    s.cut('refuse');
    await s.waitHealth('uplink down', (h) => h.uplink === 'down', 10_000, 50);
    machines.burst(total / 50);
    await machines.whenAllAcked(120_000);
    s.restore();

    const acked = () => s.gateway.metric('gateway_uplink_records_acked_total');
    await eventually(
      'half the backlog stored, some of it not yet acknowledged to the gateway',
      async () => {
        const stored = await storedWorkouts(rig.mongo, s.site.branch);
        return stored >= total / 2 && stored > (await acked());
      },
      60_000,
      20,
    );
    await rig.cloud.proc.stop(0); // SIGKILL
    const storedAtKill = await storedWorkouts(rig.mongo, s.site.branch);
    const ackedAtKill = await acked();
    expect(storedAtKill, 'stored but unacknowledged at the kill').to.be.greaterThan(ackedAtKill);
    await s.waitHealth('the uplink down after the kill', (h) => h.uplink === 'down', 15_000, 50);
    // The gateway still holds every record the cloud did not acknowledge (acks already on the wire settle first).
    const queuedAtKill = await eventually(
      'queue depth = records not acknowledged',
      async () => {
        const depth = (await readHealth(s.gateway)).queue.depth;
        return depth === total - (await acked()) ? depth : undefined;
      },
      5_000,
      100,
    );

    const t0 = Date.now();
    await rig.cloud.restart({ INGEST_ACK_DELAY_MS: '0' });
    await settle(s, machines, 90_000);
    const f = await checkLedger(rig.mongo, machines.ledger());
    const redelivered = await rig.cloudMetric('ingest_records_total', { kind: 'workout', outcome: 'duplicate' });
    const line = report('C1', f, {
      'stored at kill': storedAtKill,
      'acked at kill': ackedAtKill,
      'queued at kill': queuedAtKill,
      'redeliveries after restart': redelivered,
      'drained ms after restart': since(t0),
    });
    expectExactlyOnce(line, f, total);
    expect(redelivered, 'stored-but-unacked records resent and recognised').to.be.at.least(storedAtKill - ackedAtKill);
  });
});
