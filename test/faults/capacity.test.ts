/**
 * The gateway's queue at its limits (RELIABILITY (b) G9–G11, scaled for CI): at capacity (telemetry evicted first,
 * workouts kept, then new records refused with an alarm on /health, the retained `gw/{id}/state` topic and the log),
 * the store full (SQLite on a small tmpfs: the real ENOSPC path; the SQLITE_FULL path of `max_page_count` is driven
 * in-process in edge-gateway/src/uplink/sqlite-queue.test.ts), and the durability policy read back from the file.
 *
 * For G9 the uplink stays connected but the cloud holds every ack for 60 s (its INGEST_ACK_DELAY_MS test hook), so
 * the queue fills while the retained state topic can still carry the alarm; the cloud is then killed and started
 * without the delay, and everything the machines were acknowledged must be in MongoDB exactly once.
 */
import { execFileSync } from 'node:child_process';
import { writeFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { expect } from 'chai';
import {
  checkLedger,
  settle,
  expectExactlyOnce,
  eventually,
  inspectQueueFile,
  observe,
  queueFileOf,
  readHealth,
  report,
  since,
  sleep,
  startFaultRig,
  startMachines,
  type FaultHealth,
  type FaultRig,
  type Machines,
  type Observed,
} from './harness.ts';

const stateFull = (m: Observed['messages'][number]) =>
  m.payload.online === true && (m.payload.queue as { full?: boolean } | undefined)?.full === true;

/** Mounts a tmpfs of `sizeMiB` on `dir` (root only); false when mounting is not permitted here. */
function mountTmpfs(dir: string, sizeMiB: number): boolean {
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${sizeMiB}m,mode=0700`, 'tmpfs', dir], { stdio: 'pipe' });
    return true;
  } catch {
    return false;
  }
}

describe('faults: the queue at capacity and the store full (G9–G11)', function () {
  this.timeout(240_000);
  let rig: FaultRig;
  let machines: Machines | undefined;
  let observer: Observed | undefined;
  /** The cloud holds its acks (G9) until it is restarted without the delay. */
  let acksHeld = true;
  let mounted: string | undefined;

  before(async function () {
    this.timeout(120_000);
    rig = await startFaultRig('capacity', { INGEST_ACK_DELAY_MS: '60000' });
  });

  afterEach(async function () {
    this.timeout(30_000);
    await machines?.stop();
    machines = undefined;
    // The gateways stop before a tmpfs under one of them is unmounted, and that before the rig removes its files.
    await rig.finish();
    if (mounted) execFileSync('umount', ['-l', mounted], { stdio: 'pipe' });
    mounted = undefined;
  });

  after(async function () {
    this.timeout(60_000);
    await observer?.close();
    await rig?.close();
  });

  it('G9: telemetry is evicted first, workouts are kept, then refused (no PUBACK) with the alarm on /health, the state topic and the log; nothing PUBACKed is lost', async () => {
    const cap = 3_000;
    const s = await rig.scenario('g9', {
      machines: 20,
      env: {
        GATEWAY_QUEUE_MAX_RECORDS: String(cap),
        GATEWAY_UPLINK_WINDOW_BATCHES: '1',
        GATEWAY_STATE_INTERVAL_MS: '5000',
      },
    });
    // G11: the durability policy the queue runs with, as the gateway states it at start-up.
    const opened = await s.gateway.proc.waitForLine(/"msg":"uplink queue open"/, 10_000);
    const openedLine = JSON.parse(opened.input) as { journalMode?: string; synchronous?: string };
    expect(openedLine.journalMode, 'journal_mode read back at start-up').to.equal('wal');
    expect(openedLine.synchronous, 'synchronous read back at start-up').to.equal('FULL');
    const pragmas = (await readHealth(s.gateway)) as FaultHealth & { queue: { pragmas?: unknown } };
    expect(pragmas.queue.pragmas, '/health queue.pragmas').to.deep.include({ journalMode: 'wal', synchronous: 'FULL' });

    observer = await observe(rig.cloud, s.site, `nxg/v1/b/${s.site.branch}/gw/${s.site.gateway.id}/state`);
    machines = startMachines(() => s.gateway.mqttUrl, s.site);
    await machines.whenConnected(30_000);
    await s.waitHealth('uplink up', (h) => h.uplink === 'up', 30_000);

    // 20 machines × 10 workouts/s (QoS 1) and 3 telemetry samples per workout (QoS 0); the cloud acks nothing.
    void machines.startTraffic(10, { telemetryPerWorkout: 3 });
    const samples: FaultHealth[] = [];
    let fullAt: number | undefined;
    let firstTelemetryEviction: FaultHealth | undefined;
    const full = await eventually(
      'the queue full',
      async () => {
        const h = await readHealth(s.gateway);
        samples.push(h);
        if (firstTelemetryEviction === undefined && h.queue.lanes.telemetry.evicted > 0) firstTelemetryEviction = h;
        if (h.queue.full) {
          fullAt = Date.now();
          return h;
        }
        return undefined;
      },
      90_000,
      50,
    );
    const ackedAtFull = machines.acked();

    // Telemetry went first: evicted while workouts were still accepted; workouts and access never evicted.
    expect(firstTelemetryEviction, 'telemetry evicted before the queue was full').to.not.equal(undefined);
    expect(firstTelemetryEviction!.queue.full).to.equal(false);
    for (const h of samples) {
      expect(h.queue.lanes.records.evicted, 'workouts evicted').to.equal(0);
      expect(h.queue.lanes.access.evicted, 'access evicted').to.equal(0);
    }
    expect(full.queue.lanes.records.depth, 'workouts fill the cap when it refuses').to.be.at.least(cap * 0.95);

    // The alarm, target 1 s, deadlines 3 s: /health (503, full, reason), the log line, the retained state topic.
    const res = await fetch(s.gateway.healthUrl);
    expect(res.status, '/health while full').to.equal(503);
    const body = (await res.json()) as FaultHealth;
    expect(body.queue.full).to.equal(true);
    expect(body.queue.fullReason).to.equal('capacity');
    const logged = await s.gateway.proc.waitForLine(/uplink queue full/, 3_000);
    expect(logged.input).to.include('"level":50');
    const stated = await eventually(
      'the retained state topic says full',
      () => observer!.messages.find((m) => stateFull(m) && m.atMs >= fullAt! - 1_000),
      3_000,
      20,
    );
    const stateDelayMs = stated.atMs - fullAt!;

    // Refused: machines publishing on get no PUBACK (their connections are closed), for as long as it is full.
    await sleep(3_000);
    const ackedWhileFull = machines.acked() - ackedAtFull;
    const stillFull = await readHealth(s.gateway);
    expect(stillFull.queue.full).to.equal(true);
    // Records whose commit was under way when the cap was reached may still be acknowledged; nothing after that.
    expect(ackedWhileFull, 'PUBACKs while full').to.be.at.most(200);
    expect(machines.drops(), 'machine connections closed on refusal').to.be.greaterThan(0);
    machines.stopTraffic();
    const pendingAtRelease = machines.pending();

    // Release: the cloud killed and started without the delay; the gateway resends, the machines' unacknowledged
    // records are accepted once there is room. Everything acknowledged ends in MongoDB exactly once.
    await rig.cloud.proc.stop(0);
    await rig.cloud.restart({ INGEST_ACK_DELAY_MS: '0' });
    acksHeld = false;
    const t0 = Date.now();
    await settle(s, machines, 120_000);
    const cleared = await eventually(
      'the retained state topic says not full',
      () => observer!.messages.find((m) => m.atMs > t0 && m.payload.online === true && !stateFull(m)),
      15_000,
      50,
    );
    const f = await checkLedger(rig.mongo, machines.ledger());
    const line = report('G9', f, {
      cap,
      'telemetry evicted': full.queue.lanes.telemetry.evicted,
      'records at full': full.queue.lanes.records.depth,
      'PUBACKs while full (3 s)': ackedWhileFull,
      'state topic after full ms': stateDelayMs,
      'pending at release': pendingAtRelease,
      'drained ms': since(t0),
      'state topic not full ms after restart': cleared.atMs - t0,
    });
    expectExactlyOnce(line, f, machines.published());
  });

  it('G10: ENOSPC refuses new records with the alarm, nothing crashes, integrity ok, and it recovers by itself once space is freed', async function () {
    if (acksHeld) {
      // G9 did not get as far as releasing the cloud: this test needs one that acks.
      await rig.cloud.proc.stop(0);
      await rig.cloud.restart({ INGEST_ACK_DELAY_MS: '0' });
      acksHeld = false;
    }
    let ballast = '';
    let mountable = true;
    const s = await rig.scenario('g10', {
      machines: 20,
      offline: true,
      beforeStart: async (dataDir) => {
        mountable = mountTmpfs(dataDir, 8);
        if (!mountable) return;
        mounted = dataDir;
        // Ballast: freed later to give the queue room again.
        ballast = path.join(dataDir, 'ballast');
        await writeFile(ballast, Buffer.alloc(2 * 1024 * 1024, 1));
      },
    });
    if (!mountable) {
      console.log('      G10: skipped — mounting a tmpfs is not permitted here (needs root)');
      this.skip();
    }
    machines = startMachines(() => s.gateway.mqttUrl, s.site);
    await machines.whenConnected(30_000);

    // Offline, machines publish until the disk is full: ~6 MiB of queue room for 330-byte workouts.
    const trafficAt = Date.now();
    void machines.startTraffic(50);
    const full = await s.waitHealth('the queue refusing on a full disk', (h) => h.queue.full, 120_000, 100);
    const fullAt = Date.now();
    expect(full.queue.fullReason).to.equal('storage');
    const logged = await s.gateway.proc.waitForLine(/uplink queue full/, 3_000);
    expect(logged.input).to.include('"reason":"storage"');
    const ackedAtFull = machines.acked();
    await sleep(2_000);
    const ackedWhileFull = machines.acked() - ackedAtFull;
    expect(ackedWhileFull, 'PUBACKs on a full disk').to.be.at.most(200);
    expect(s.gateway.proc.exitStatus(), 'the gateway still running').to.equal(null);
    machines.stopTraffic();
    // Near a full disk the store may accept a commit again now and then (SQLite reuses WAL frames after a
    // checkpoint): that is a durable write, so a PUBACK then is correct; what must never happen is a PUBACK
    // without one, which the final check against the ledger would show as a loss.
    const beforeFreeing = await readHealth(s.gateway);
    const depthAtFull = beforeFreeing.queue.depth;

    // Space freed (the ballast deleted): the queue accepts again by itself (target 5 s, deadline 15 s).
    await rm(ballast);
    const t0 = Date.now();
    await s.waitHealth('the queue accepting again after space was freed', (h) => !h.queue.full, 15_000, 100);
    const recoveredMs = since(t0);

    // The link returns: the refused records (their machines resend them) and the backlog all reach MongoDB once.
    s.restore();
    await settle(s, machines, 120_000);
    await s.gateway.proc.stop(5_000);
    const disk = inspectQueueFile(queueFileOf(s));
    const f = await checkLedger(rig.mongo, machines.ledger());
    const line = report('G10', f, {
      'depth at full': depthAtFull,
      'full after ms of traffic': fullAt - trafficAt,
      'PUBACKs while full (2 s)': ackedWhileFull,
      'still full when space was freed': String(beforeFreeing.queue.full),
      'recovered ms after space freed': recoveredMs,
      integrity: disk.integrity,
      journal: disk.journalMode,
    });
    expect(disk.integrity).to.equal('ok');
    expect(disk.journalMode, 'G11: journal mode on disk').to.equal('wal');
    expectExactlyOnce(line, f, machines.published());
  });

  it('G10b: SQLITE_FULL (GATEWAY_QUEUE_MAX_PAGES) in the real process refuses with the alarm, no crash, and recovers once the cloud takes the backlog', async () => {
    if (acksHeld) {
      await rig.cloud.proc.stop(0);
      await rig.cloud.restart({ INGEST_ACK_DELAY_MS: '0' });
      acksHeld = false;
    }
    // 400 pages of 4 KiB: about a thousand workouts, full within seconds of offline traffic.
    const s = await rig.scenario('g10b', { machines: 20, offline: true, env: { GATEWAY_QUEUE_MAX_PAGES: '400' } });
    machines = startMachines(() => s.gateway.mqttUrl, s.site);
    await machines.whenConnected(30_000);
    void machines.startTraffic(50);
    const full = await s.waitHealth('the queue refusing at its page limit', (h) => h.queue.full, 60_000, 100);
    expect(full.queue.fullReason).to.equal('storage');
    const logged = await s.gateway.proc.waitForLine(/uplink queue full/, 3_000);
    expect(logged.input).to.match(/"reason":"storage".*full/);
    const ackedAtFull = machines.acked();
    await sleep(1_000);
    const ackedWhileFull = machines.acked() - ackedAtFull;
    expect(ackedWhileFull, 'PUBACKs at the page limit').to.be.at.most(200);
    expect(s.gateway.proc.exitStatus(), 'the gateway still running').to.equal(null);
    machines.stopTraffic();
    // The link returns: acked records are deleted, pages free, the probe clears the alarm, refused records come again.
    const t0 = Date.now();
    s.restore();
    await s.waitHealth('the queue accepting again', (h) => !h.queue.full, 30_000, 100);
    const recoveredMs = since(t0);
    await settle(s, machines, 60_000);
    await s.gateway.proc.stop(5_000);
    const disk = inspectQueueFile(queueFileOf(s));
    const f = await checkLedger(rig.mongo, machines.ledger());
    const line = report('G10b', f, {
      'depth at full': full.queue.depth,
      'PUBACKs while full (1 s)': ackedWhileFull,
      'accepting again ms after the link returned': recoveredMs,
      integrity: disk.integrity,
    });
    expect(disk.integrity).to.equal('ok');
    expectExactlyOnce(line, f, machines.published());
  });
});
