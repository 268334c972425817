/**
 * The end-to-end ingest pipeline as separate processes, co-located on this machine as `npm start` runs them:
 * MongoDB stand-in (in memory) and redis-server, the cloud (`node cloud/src/main.ts`: broker + ingest), one edge
 * gateway (`node edge-gateway/src/main.ts`) for branch `bench`, uplinked over MQTT/TLS, and the simulated fleet in
 * this process, connected to the gateway's broker with provisioned machine credentials.
 *
 * Each step runs the fleet at a telemetry rate (QoS 1, so every sample is in the PUBACK ledger), lets the pipeline
 * drain, and then checks every acknowledged record against MongoDB (durability.ts).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { MongoClient } from 'mongodb';
import { asBranchId } from '../../protocol/ids.ts';
import { startFleet, type PublishedMessage } from '../../simulators/src/fleet.ts';
import { startMongo, startRedis } from '../../tools/services/index.ts';
import { DurabilityTracker, type StepDurability } from './durability.ts';
import { meanMs, scrape, type Scrape } from './prometheus.ts';
import { cpuSnapshot } from './system.ts';
import { BRANCH, GATEWAY, provisionGateway, startCloudProcess, startGatewayProcess } from './cloud-process.ts';

export interface StepResult extends StepDurability {
  readonly machines: number;
  readonly rateHz: number;
  /** Messages the fleet published per second during the load (samples and records). */
  readonly offeredPerS: number;
  readonly persistedPerS: number;
  readonly acked: number;
  readonly notAcked: number;
  /** Fleet reconnects during the step, and messages it dropped (QoS 1 over maxPending). */
  readonly reconnects: number;
  readonly dropped: number;
  /** Machine publish → gateway PUBACK (after its queue append), p99 ms. */
  readonly pubackP99Ms: number;
  /**
   * Means over the step, ms, from the processes' own histograms: gateway queue append (intake), gateway batch sent →
   * ack, cloud batch received → ack (MongoDB write included).
   */
  readonly stagesMs: { readonly intake: number; readonly uplinkAck: number; readonly cloudAck: number };
  readonly drained: boolean;
  /** CPU µs per persisted message, per process. */
  readonly cpuUsPerMsg: Record<string, number>;
  /** CPU use per process during the step, % of one core. */
  readonly cpuPct: Record<string, number>;
  readonly passed: boolean;
}

export interface E2eOptions {
  readonly machines: number;
  readonly ratesHz: readonly number[];
  readonly stepMs: number;
  /** The first part of each step, whose messages are checked for loss but not timed. */
  readonly warmupMs: number;
  readonly drainMs: number;
  readonly p99LimitMs: number;
  readonly onStepStart?: (step: { index: number; total: number; rateHz: number; offeredPerS: number }) => void;
  readonly onProgress?: (info: { elapsedMs: number; published: number; outstanding: number; phase: string }) => void;
  readonly log?: (line: string) => void;
}

export interface E2eResult {
  readonly steps: StepResult[];
  readonly pids: Record<string, number>;
}

export async function runEndToEnd(options: E2eOptions): Promise<E2eResult> {
  const log = options.log ?? (() => {});
  const dir = await mkdtemp(path.join(os.tmpdir(), 'nxg-bench-'));
  const cleanups: (() => Promise<unknown>)[] = [() => rm(dir, { recursive: true, force: true })];
  try {
    const [mongo, redis] = await Promise.all([startMongo({ storage: { kind: 'memory' } }), startRedis()]);
    cleanups.push(
      () => mongo.stop(),
      () => redis.stop(),
    );
    const mongoUrl = `${mongo.url}/nxg_bench`;

    const provisioned = await provisionGateway(mongoUrl, dir, options.machines);
    const { machines } = provisioned;
    log(`provisioned ${GATEWAY} and ${machines.length} machines`);

    const {
      proc: cloud,
      tlsUrl,
      caFile,
      metricsUrl: cloudMetrics,
    } = await startCloudProcess(dir, mongoUrl, redis.url, (proc) => cleanups.push(() => proc.stop()));
    log(`cloud ready (pid ${cloud.pid}), gateways at ${tlsUrl}`);

    const {
      proc: gatewayProc,
      mqttUrl: machineUrl,
      metricsUrl: gatewayMetrics,
    } = await startGatewayProcess(
      dir,
      provisioned,
      { url: tlsUrl, caFile },
      // The bench drives machines far past FTMS rates (up to 64 Hz) on purpose: no per-machine cap here.
      { GATEWAY_TELEMETRY_MAX_HZ: '100000' },
      (proc) => cleanups.push(() => proc.stop()),
    );
    const scrapeBoth = async (): Promise<[Scrape, Scrape]> =>
      Promise.all([scrape(cloudMetrics), scrape(gatewayMetrics)]);
    log(`gateway ready (pid ${gatewayProc.pid}), machines at ${machineUrl}`);

    const client = new MongoClient(mongoUrl, { serverSelectionTimeoutMS: 10_000 });
    await client.connect();
    cleanups.push(() => client.close());
    const tracker = new DurabilityTracker(client.db(), asBranchId(BRANCH));
    tracker.start();
    cleanups.push(() => tracker.stop());

    const pids = {
      gateway: gatewayProc.pid,
      cloud: cloud.pid,
      mongo: mongo.pid,
      redis: redis.pid,
      'sim+probe': process.pid,
    };
    const steps: StepResult[] = [];
    for (const [index, rateHz] of options.ratesHz.entries()) {
      const nominalPerS = rateHz * options.machines;
      options.onStepStart?.({ index, total: options.ratesHz.length, rateHz, offeredPerS: nominalPerS });
      const telemetryKeys = new Map<string, string>();
      const onPublish = (message: PublishedMessage) => {
        if (message.kind === 'telemetry') telemetryKeys.set(message.msgId, `${message.bootId}:${message.seq}`);
        tracker.track(message);
      };
      tracker.warmingUp = true;
      const fleet = startFleet({
        url: machineUrl,
        branch: BRANCH,
        machines,
        rate: rateHz,
        seed: 2026 + index,
        // Sessions and sets pass 20× faster, so records (workouts, statuses, events) flow beside the samples.
        timeScale: 20,
        telemetryQos: 1,
        maxPending: 100_000,
        onPublish,
      });
      await fleet.whenConnected(60_000);
      const cpuBefore = cpuSnapshot(pids);
      const [cloudBefore, gatewayBefore] = await scrapeBoth();
      const started = performance.now();
      while (performance.now() - started < options.stepMs) {
        await new Promise((resolve) => setTimeout(resolve, 250));
        if (performance.now() - started >= options.warmupMs) tracker.warmingUp = false;
        const stats = fleet.stats();
        const published = Object.values(stats.published).reduce((a, b) => a + b, 0);
        options.onProgress?.({
          elapsedMs: performance.now() - started,
          published,
          outstanding: tracker.outstanding,
          phase: 'load',
        });
      }
      const loadMs = performance.now() - started;
      const publishedInStep = Object.values(fleet.stats().published).reduce((a, b) => a + b, 0);
      const offeredPerS = Math.round((publishedInStep * 1000) / loadMs);
      const fleetStats = fleet.stats();
      const pubackP99Ms = fleetStats.ackLatencyUs.p99 / 1000;
      await fleet.stop();
      const drainStarted = performance.now();
      const drained = await tracker.drain(options.drainMs, (outstanding) =>
        options.onProgress?.({
          elapsedMs: options.stepMs + performance.now() - drainStarted,
          published: 0,
          outstanding,
          phase: 'drain',
        }),
      );
      const wallMs = performance.now() - started;
      const cpuAfter = cpuSnapshot(pids);
      const [cloudAfter, gatewayAfter] = await scrapeBoth();
      const stagesMs = {
        intake: meanMs(gatewayBefore, gatewayAfter, 'gateway_intake_append_seconds'),
        uplinkAck: meanMs(gatewayBefore, gatewayAfter, 'gateway_uplink_ack_seconds'),
        cloudAck: meanMs(cloudBefore, cloudAfter, 'ingest_ack_latency_seconds'),
      };
      const acked = new Set<string>();
      let sent = 0;
      for (const ledger of fleet.ledger().values()) {
        sent += ledger.sent.length;
        for (const msgId of ledger.acked) acked.add(msgId);
      }
      const ackedKeys = new Set<string>();
      for (const [msgId, key] of telemetryKeys) if (acked.has(msgId)) ackedKeys.add(key);
      const durability = await tracker.endStep(acked, ackedKeys);
      const cpuUsPerMsg: Record<string, number> = {};
      const cpuPct: Record<string, number> = {};
      for (const name of Object.keys(pids)) {
        const used = (cpuAfter[name] ?? Number.NaN) - (cpuBefore[name] ?? Number.NaN);
        cpuUsPerMsg[name] = durability.durable > 0 ? Math.round((used * 1000) / durability.durable) : Number.NaN;
        cpuPct[name] = Math.round((used / wallMs) * 100);
      }
      // Over the whole step, drain included: a pipeline that falls behind is not credited for catching up later.
      const persistedPerS = Math.round((durability.durable * 1000) / wallMs);
      const notAcked = sent - acked.size;
      const passed = drained && durability.missing === 0 && durability.p99Ms <= options.p99LimitMs;
      const step: StepResult = {
        ...durability,
        machines: options.machines,
        rateHz,
        offeredPerS,
        persistedPerS,
        acked: acked.size,
        notAcked,
        pubackP99Ms,
        reconnects: fleetStats.reconnects,
        dropped: fleetStats.dropped,
        stagesMs,
        drained,
        cpuUsPerMsg,
        cpuPct,
        passed,
      };
      steps.push(step);
      log(
        `step ${index + 1}: ${offeredPerS} msg/s offered (${nominalPerS} samples/s nominal), ${persistedPerS}/s persisted, p50 ${durability.p50Ms} ms, ` +
          `p99 ${durability.p99Ms} ms, missing ${durability.missing}, drained ${drained}, ` +
          `reconnects ${fleetStats.reconnects}, dropped ${fleetStats.dropped}`,
      );
      if (!passed) break;
    }
    return { steps, pids };
  } finally {
    for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
  }
}
