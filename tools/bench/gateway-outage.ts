/**
 * Part (2) of `npm run bench:gateway`: a cloud outage seen from one edge gateway, as separate processes like
 * `npm start` runs them — MongoDB stand-in (in memory), redis-server, the cloud (`node cloud/src/main.ts`), the
 * gateway (`node edge-gateway/src/main.ts`, its durable queue in a temporary GATEWAY_DATA_DIR) whose uplink to the
 * cloud's TLS listener runs through a TCP proxy of ours (edge-gateway/src/testing/tcp-proxy.ts), and the simulated
 * fleet in this process (telemetry at QoS 1, so every sample is in the PUBACK ledger; sessions 20× faster, so
 * workouts, statuses and events flow beside it).
 *
 * Phases: warm-up with the link up; outage (the proxy refuses new connections and cuts the open one) for
 * `outageS`; restore, load continuing, until the backlog is empty (the oldest queued record younger than 3 s); a
 * few seconds more; fleet stopped; queue empty. Then every acknowledged msgId is looked up in MongoDB (records by
 * `_id`, samples by their key in their bucket), and the documents are counted: stored exactly once means counted =
 * acknowledged and none missing (both stores are keyed by msgId / (bootId, seq), so a duplicate cannot be a second
 * document — a resent one is answered as a duplicate by ingest).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { MongoClient, type Db } from 'mongodb';
import { RECORD_COLLECTIONS, TELEMETRY_COLLECTION } from '../../cloud/src/ingest/store.ts';
import { startTcpProxy } from '../../edge-gateway/src/testing/tcp-proxy.ts';
import { startFleet } from '../../simulators/src/fleet.ts';
import { startMongo, startRedis } from '../../tools/services/index.ts';
import { meanMs, scrape } from './prometheus.ts';
import { cpuSnapshot } from './system.ts';
import { BRANCH, GATEWAY, provisionGateway, startCloudProcess, startGatewayProcess } from './cloud-process.ts';

export interface OutageOptions {
  readonly machines: number;
  readonly rateHz: number;
  readonly outageS: number;
  readonly warmS: number;
  /** Longest wait for the backlog to empty after the restore. */
  readonly drainTimeoutS: number;
  /** GATEWAY_UPLINK_DRAIN_MAX_PER_S for the gateway; undefined: its default. */
  readonly drainMaxPerS?: number;
  readonly onProgress?: (p: { phase: string; elapsedS: number; totalS: number; detail: string }) => void;
  readonly log?: (line: string) => void;
}

export interface OutageResult {
  readonly machines: number;
  readonly rateHz: number;
  readonly outageS: number;
  readonly published: number;
  /** Records the gateway acknowledged (PUBACK). */
  readonly acked: number;
  /** Of those, found in MongoDB at the end. */
  readonly stored: number;
  /** Acknowledged, not in MongoDB at the end. */
  readonly missing: number;
  /** Of those, still in the gateway's queue when counted (not lost: the settle wait ran out). */
  readonly stillQueued: number;
  /**
   * Documents in MongoDB: record documents + samples in buckets (information: the machines' last wills, queued by
   * the gateway, count too; a duplicate cannot be a second document — records are keyed by msgId, samples by
   * (bootId, seq) in their bucket).
   */
  readonly documents: number;
  readonly peakDepth: number;
  readonly depthAtRestore: number;
  /** Restore → uplink up again (reconnect backoff included). */
  readonly reconnectS: number;
  /** Restore → backlog empty (oldest queued record < 3 s old). */
  readonly drainS: number | undefined;
  /** Records acked by the cloud per second between restore and empty (backlog and live traffic). */
  readonly drainPerS: number;
  /** Peak of the gateway's own drain-rate gauge (EWMA over ~10 s). */
  readonly drainGaugePeak: number;
  /**
   * Means during the drain, ms: gateway append (the PUBACK waits for it), batch sent → ack at the gateway, and the
   * cloud's receipt → ack (MongoDB write included), from the processes' own histograms.
   */
  readonly stagesMs: { readonly append: number; readonly batchAck: number; readonly cloudAck: number };
  /** Live traffic offered during the drain, msg/s. */
  readonly liveOfferedPerS: number;
  readonly liveRecords: number;
  readonly evicted: number;
  readonly offlineHoursAtRestore: number | null;
  readonly pubackP99Ms: number;
  readonly cpuPct: Record<string, number>;
  readonly passed: boolean;
}

interface Health {
  uplink: string;
  uplinkError: string | null;
  queue: {
    depth: number;
    oldestAgeS: number | null;
    drainPerS: number | null;
    offlineHoursLeft: number | null;
    telemetry: { evicted: number };
  };
}

/** A counter's value summed over its label sets. */
async function counter(url: string, name: string): Promise<number> {
  const text = await (await fetch(url, { signal: AbortSignal.timeout(5_000) })).text();
  let sum = 0;
  for (const line of text.split('\n')) {
    const match = new RegExp(`^${name}(?:\\{[^}]*\\})?\\s+(\\S+)$`).exec(line);
    if (match) sum += Number(match[1]);
  }
  return sum;
}

async function health(url: string): Promise<Health> {
  const response = await fetch(url, { signal: AbortSignal.timeout(5_000) });
  return (await response.json()) as Health;
}

/** How many of the acknowledged ids are in MongoDB, and how many documents (records + samples) it holds. */
async function countStored(
  db: Db,
  ackedRecords: ReadonlySet<string>,
  ackedSamples: ReadonlySet<string>,
): Promise<{ stored: number; documents: number }> {
  let stored = 0;
  let documents = 0;
  for (const collection of new Set(Object.values(RECORD_COLLECTIONS))) {
    for await (const doc of db.collection<{ _id: string }>(collection).find({}, { projection: { _id: 1 } })) {
      documents += 1;
      if (ackedRecords.has(doc._id)) stored += 1;
    }
  }
  const cursor = db
    .collection<{ _id: string; samples?: Record<string, unknown> }>(TELEMETRY_COLLECTION)
    .find({}, { projection: { samples: 1 } });
  for await (const bucket of cursor) {
    // Bucket id `{branch}:{machine}:{start}`; a sample's key `{bootId}:{seq}` is unique within its machine.
    const machine = bucket._id.split(':')[1] ?? '';
    for (const key of Object.keys(bucket.samples ?? {})) {
      documents += 1;
      if (ackedSamples.has(`${machine} ${key}`)) stored += 1;
    }
  }
  return { stored, documents };
}

export async function runOutage(options: OutageOptions): Promise<OutageResult> {
  const log = options.log ?? (() => {});
  const dir = await mkdtemp(path.join(os.tmpdir(), 'nxg-bench-gw-'));
  const cleanups: (() => Promise<unknown>)[] = [() => rm(dir, { recursive: true, force: true })];
  const totalS = options.warmS + options.outageS + options.drainTimeoutS;
  const t0 = performance.now();
  const progress = (phase: string, detail: string) =>
    options.onProgress?.({ phase, elapsedS: (performance.now() - t0) / 1000, totalS, detail });
  try {
    const [mongo, redis] = await Promise.all([startMongo({ storage: { kind: 'memory' } }), startRedis()]);
    cleanups.push(
      () => mongo.stop(),
      () => redis.stop(),
    );
    const mongoUrl = `${mongo.url}/nxg_bench_gateway`;
    const provisioned = await provisionGateway(mongoUrl, dir, options.machines);
    const { machines } = provisioned;
    log(`provisioned ${GATEWAY} and ${machines.length} machines`);

    const cloudProcess = await startCloudProcess(dir, mongoUrl, redis.url, (proc) => cleanups.push(() => proc.stop()));
    const { proc: cloud, caFile, metricsUrl: cloudMetricsUrl } = cloudProcess;
    const tlsUrl = new URL(cloudProcess.tlsUrl);
    log(`cloud ready (pid ${cloud.pid}), gateways at ${tlsUrl.href}`);

    const proxy = await startTcpProxy(Number(tlsUrl.port), tlsUrl.hostname);
    cleanups.push(() => proxy.close());
    const uplinkUrl = `mqtts://${tlsUrl.hostname}:${proxy.port}`;
    const {
      proc: gatewayProc,
      mqttUrl,
      healthUrl,
      metricsUrl,
    } = await startGatewayProcess(
      dir,
      provisioned,
      { url: uplinkUrl, caFile },
      {
        // Reconnect within 2 s of the restore (the default backoff ceiling is 30 s); reported separately.
        GATEWAY_UPLINK_RECONNECT_MAX_MS: '2000',
        GATEWAY_STATE_INTERVAL_MS: '5000',
        ...(options.drainMaxPerS === undefined ? {} : { GATEWAY_UPLINK_DRAIN_MAX_PER_S: String(options.drainMaxPerS) }),
      },
      (proc) => cleanups.push(() => proc.stop()),
    );
    log(`gateway ready (pid ${gatewayProc.pid}), machines at ${mqttUrl}, uplink through ${uplinkUrl}`);

    const client = new MongoClient(mongoUrl, { serverSelectionTimeoutMS: 10_000 });
    await client.connect();
    cleanups.push(() => client.close());

    const pids = { gateway: gatewayProc.pid, cloud: cloud.pid, mongo: mongo.pid, redis: redis.pid, sim: process.pid };
    let published = 0;
    const onPublish = () => {
      published += 1;
    };
    const fleet = startFleet({
      url: mqttUrl,
      branch: BRANCH,
      machines,
      rate: options.rateHz,
      seed: 2026,
      timeScale: 20,
      telemetryQos: 1,
      maxPending: 100_000,
      track: true,
      onPublish,
    });
    cleanups.push(() => fleet.stop());
    await fleet.whenConnected(120_000);
    const cpuBefore = cpuSnapshot(pids);
    const runStarted = performance.now();

    // Warm-up, link up.
    const warmEnd = performance.now() + options.warmS * 1000;
    while (performance.now() < warmEnd) {
      await sleep(1_000);
      const h = await health(healthUrl);
      progress('warm-up', `${published} sent, queue ${h.queue.depth}, uplink ${h.uplink} ${h.uplinkError ?? ''}`);
    }

    if ((await health(healthUrl)).uplink !== 'up') {
      log(`the uplink is not up after the warm-up; last lines of the cloud:\n${cloud.recentOutput()}`);
      log(`gateway:\n${gatewayProc.recentOutput()}`);
    }

    // Outage.
    proxy.mode = 'refuse';
    proxy.cut();
    log(`outage: uplink refused for ${options.outageS} s`);
    let peakDepth = 0;
    const outageEnd = performance.now() + options.outageS * 1000;
    let h = await health(healthUrl);
    while (performance.now() < outageEnd) {
      await sleep(1_000);
      h = await health(healthUrl);
      peakDepth = Math.max(peakDepth, h.queue.depth);
      progress(
        'outage',
        `queue ${h.queue.depth}, oldest ${h.queue.oldestAgeS ?? 0} s, uplink ${h.uplink}, offline hours left ${h.queue.offlineHoursLeft ?? '∞'}`,
      );
    }
    const depthAtRestore = h.queue.depth;
    const offlineHoursAtRestore = h.queue.offlineHoursLeft;

    // Restore; the load goes on.
    proxy.mode = 'pass';
    const restoredAt = performance.now();
    const ackedBefore = await counter(metricsUrl, 'gateway_uplink_records_acked_total');
    const [gatewayBefore, cloudBefore] = await Promise.all([scrape(metricsUrl), scrape(cloudMetricsUrl)]);
    const liveBefore = await counter(metricsUrl, 'gateway_uplink_live_records_total');
    const publishedAtRestore = published;
    log(`restore: ${depthAtRestore} records queued`);
    let reconnectS: number | undefined;
    let drainS: number | undefined;
    let drainGaugePeak = 0;
    const drainDeadline = restoredAt + options.drainTimeoutS * 1000;
    while (performance.now() < drainDeadline) {
      await sleep(500);
      h = await health(healthUrl);
      peakDepth = Math.max(peakDepth, h.queue.depth);
      drainGaugePeak = Math.max(drainGaugePeak, h.queue.drainPerS ?? 0);
      const since = (performance.now() - restoredAt) / 1000;
      if (reconnectS === undefined && h.uplink === 'up') reconnectS = since;
      progress(
        'drain',
        `queue ${h.queue.depth}, oldest ${h.queue.oldestAgeS ?? 0} s, ${h.queue.drainPerS ?? 0} acked/s, uplink ${h.uplink}`,
      );
      if (h.uplink === 'up' && (h.queue.oldestAgeS ?? 0) < 3) {
        drainS = since;
        break;
      }
    }
    const drainWallS = (performance.now() - restoredAt) / 1000;
    const ackedAfter = await counter(metricsUrl, 'gateway_uplink_records_acked_total');
    const [gatewayAfter, cloudAfter] = await Promise.all([scrape(metricsUrl), scrape(cloudMetricsUrl)]);
    const stagesMs = {
      append: meanMs(gatewayBefore, gatewayAfter, 'gateway_intake_append_seconds'),
      batchAck: meanMs(gatewayBefore, gatewayAfter, 'gateway_uplink_ack_seconds'),
      cloudAck: meanMs(cloudBefore, cloudAfter, 'ingest_ack_latency_seconds'),
    };
    const liveRecords = (await counter(metricsUrl, 'gateway_uplink_live_records_total')) - liveBefore;
    const liveOfferedPerS = Math.round((published - publishedAtRestore) / drainWallS);
    const drainPerS = Math.round((ackedAfter - ackedBefore) / drainWallS);
    log(
      drainS === undefined
        ? `backlog not empty within ${options.drainTimeoutS} s`
        : `backlog empty ${drainS.toFixed(1)} s after the restore (${drainPerS} records/s acked)`,
    );

    // A little more live traffic, then stop and let everything settle.
    await sleep(3_000);
    const pubackP99Ms = fleet.stats().ackLatencyUs.p99 / 1000;
    await fleet.stop();
    const settleDeadline = performance.now() + options.drainTimeoutS * 1000;
    for (;;) {
      h = await health(healthUrl);
      progress('settle', `queue ${h.queue.depth}`);
      if (h.queue.depth === 0 || performance.now() > settleDeadline) break;
      await sleep(500);
    }
    const cpuAfter = cpuSnapshot(pids);
    const wallMs = performance.now() - runStarted;
    const cpuPct: Record<string, number> = {};
    for (const name of Object.keys(pids)) {
      cpuPct[name] = Math.round((((cpuAfter[name] ?? Number.NaN) - (cpuBefore[name] ?? Number.NaN)) / wallMs) * 100);
    }

    const ackedRecords = new Set<string>();
    const ackedSamples = new Set<string>();
    for (const [machine, ledger] of fleet.ledger()) {
      for (const msgId of ledger.acked) ackedRecords.add(msgId);
      for (const seq of ledger.telemetry.acked) ackedSamples.add(`${machine} ${ledger.bootId}:${seq}`);
    }
    const acked = ackedRecords.size + ackedSamples.size;
    progress('count', `checking ${acked} acknowledged records in MongoDB`);
    const { stored, documents } = await countStored(client.db(), ackedRecords, ackedSamples);
    const missing = acked - stored;
    const evicted = h.queue.telemetry.evicted;
    const stillQueued = h.queue.depth;
    return {
      machines: options.machines,
      rateHz: options.rateHz,
      outageS: options.outageS,
      published,
      acked,
      stored,
      missing,
      stillQueued,
      documents,
      peakDepth,
      depthAtRestore,
      reconnectS: reconnectS ?? Number.NaN,
      drainS,
      drainPerS,
      drainGaugePeak,
      stagesMs,
      liveOfferedPerS,
      liveRecords,
      evicted,
      offlineHoursAtRestore,
      pubackP99Ms,
      cpuPct,
      passed: missing === 0 && drainS !== undefined,
    };
  } finally {
    for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
