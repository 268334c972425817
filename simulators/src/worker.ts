/**
 * One simulator process's share of a run: a fleet of machines for the run's duration, then (with MongoDB) the
 * read-back of what they sent. Runs inside the coordinator's process for a single-process run, or as a child
 * process (`node simulators/src/worker.ts <plan.json> <result.json>`) that prints its progress as JSON lines and
 * writes its WorkerResult to a file.
 */
import { readFile, writeFile } from 'node:fs/promises';
import hdr from 'hdr-histogram-js';
import { MongoClient } from 'mongodb';
import type { Logger } from 'pino';
import { pino } from 'pino';
import { startFleet, type FleetMachine } from './fleet.ts';
import { createFrontDesk, mergeDeskStats, type FrontDesk } from './front-desk.ts';
import type { BranchDesk } from './provision.ts';
import { countPersisted, type PersistedCounts } from './report/persisted.ts';
import type { WorkerResult } from './report/report.ts';
import { intervalFor } from './report/series.ts';
import type { Settings } from './scenario.ts';

export interface WorkerPlan {
  readonly worker: number;
  readonly seed: number;
  readonly url: string;
  readonly branch: string;
  readonly machines: readonly FleetMachine[];
  readonly settings: Settings;
  /** MongoDB to read back from (with the database); absent: no read-back. */
  readonly mongoUrl?: string | undefined;
  /**
   * The run's gateways' health endpoints (`…/health`, with `queue.depth`): the wait for MongoDB lasts until their
   * uplink queues are empty, so QoS 0 telemetry still queued at a gateway is counted as late, not as not stored.
   */
  readonly queueUrls?: readonly string[] | undefined;
  /** The run's branches with doors and members (provisioned runs): members check in and tap on the machines. */
  readonly desks?: readonly BranchDesk[] | undefined;
  /** Simulator processes in the run (members are split between them). */
  readonly processes?: number | undefined;
}

export interface Progress {
  readonly sent: number;
  readonly acked: number;
  readonly errors: number;
  readonly dropped: number;
  readonly connected: number;
  readonly reconnects: number;
  /** PUBACK latency p99 of the last interval, µs (0: none). */
  readonly p99Us: number;
  /** 'connect' until every machine has connected once, 'run' while the fleet runs, 'drain' while waiting for MongoDB. */
  readonly phase: 'connect' | 'run' | 'drain';
  readonly outstanding?: number;
  /** Records and samples still in the gateways' uplink queues (while draining, when known). */
  readonly queued?: number;
}

export interface WorkerControl {
  /** Ends the run now (Ctrl-C): the fleet stops and the read-back follows. */
  stop(): void;
  readonly result: Promise<WorkerResult>;
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

export function runWorker(
  plan: WorkerPlan,
  onProgress: (progress: Progress) => void,
  log: Logger = pino({ level: 'silent' }),
): WorkerControl {
  let stopEarly: () => void = () => undefined;
  let interrupted = false;
  const stopped = new Promise<void>((resolve) => (stopEarly = resolve)).then(() => {
    interrupted = true;
  });
  const result = (async (): Promise<WorkerResult> => {
    const s = plan.settings;
    global.gc?.();
    const rssBefore = process.memoryUsage().rss;
    const cpuBefore = process.cpuUsage();
    let links = 0;
    let unlinks = 0;
    const desks = new Map<string, FrontDesk>(
      (plan.desks ?? []).map((desk) => [
        desk.branch,
        createFrontDesk({
          desk,
          worker: plan.worker,
          processes: plan.processes ?? 1,
          seed: plan.seed,
          timeScale: s.timeScale,
        }),
      ]),
    );
    const fleet = startFleet({
      url: plan.url,
      branch: plan.branch,
      machines: plan.machines,
      rate: s.rate,
      seed: plan.seed,
      timeScale: s.timeScale,
      telemetryQos: s.telemetryQos,
      connectRate: s.connectRate,
      day: { startHour: s.startHour, ...(s.day ? { profile: s.day } : {}) },
      members: s.members,
      trouble: { faultsPerHour: s.faultsPerHour, outagesPerHour: s.outagesPerHour },
      ...(s.flapping ? { flapping: s.flapping } : {}),
      ...(s.badPayloads ? { badPayloads: s.badPayloads } : {}),
      onMember: (event) => {
        if (event.type === 'link') links += 1;
        else unlinks += 1;
      },
      ...(desks.size > 0 ? { desks } : {}),
      // The per-sample ledger grows with the run: kept for bounded runs that are read back.
      track: plan.mongoUrl !== undefined && s.durationS > 0,
      seriesIntervalMs: intervalFor(s.durationS),
      log,
    });
    let phase: 'connect' | 'run' = 'connect';
    const progress = () => {
      const st = fleet.stats();
      const series = fleet.series();
      const last = series.length > 1 ? series.at(-2)! : series.at(-1)!;
      onProgress({
        sent: Object.values(st.published).reduce((a, b) => a + b, 0),
        acked: st.acked,
        errors: st.errors,
        dropped: st.dropped,
        connected: st.connected,
        reconnects: st.reconnects,
        p99Us: p99OfEncoded(last.latency),
        phase,
      });
    };
    const timer = setInterval(progress, 1000);
    // The run's time counts from a connected fleet: a large fleet takes a while to connect (--connect-rate).
    await Promise.race([
      fleet.whenConnected(Math.max(60_000, (plan.machines.length / s.connectRate) * 3000)).catch((err: Error) => {
        log.warn({ err: err.message }, 'starting the run without every machine connected');
      }),
      stopped,
    ]);
    // Run time (and the mean rate) counts from here: the connect phase is not the steady state being measured.
    // The coordinator times the scenario's events from this moment too (the first 'run' progress).
    const started = performance.now();
    phase = 'run';
    progress();
    // durationS 0: until stopped (npm start's fleet).
    await Promise.race([s.durationS > 0 ? sleep(s.durationS * 1000) : new Promise<void>(() => undefined), stopped]);
    clearInterval(timer);
    const durationMs = performance.now() - started;
    const memory = process.memoryUsage();
    const cpu = process.cpuUsage(cpuBefore); // the run's CPU, not the read-back's
    const stats = fleet.stats();
    // Faults end with the run; machines still in their reconnect backoff (≤ 30 s) get that long to come back.
    // Not after Ctrl-C: a stop must be quick (npm start gives its children 15 s).
    const connectedAtEnd = await fleet.calm(interrupted ? 0 : 35_000);
    await fleet.stop();
    await Promise.all([...desks.values()].map((desk) => desk.stop()));
    const finalStats = fleet.stats();
    const series = fleet.series();
    const neverConnected = finalStats.machines - finalStats.everConnected;

    let persisted: PersistedCounts | undefined;
    let drain: WorkerResult['drain'];
    if (plan.mongoUrl) {
      const client = await MongoClient.connect(plan.mongoUrl, { serverSelectionTimeoutMS: 10_000 });
      try {
        const db = client.db();
        const ledgers = fleet.ledger();
        const drainStart = Date.now();
        const deadline = drainStart + s.drainS * 1000;
        let previous = -1;
        for (;;) {
          // The gateways' queues first: a record they no longer hold was stored (or refused) before this count.
          const queued = await queuedAtGateways(plan.queueUrls);
          persisted = await countPersisted(db, ledgers);
          const outstanding = persisted.records.lost + persisted.telemetry.lost;
          const stored = persisted.records.persisted + persisted.telemetry.persisted;
          // Done when nothing acknowledged is missing and the hub has nothing left to store: the gateways' queues
          // are empty or, where they cannot be asked, the stored count has stopped growing.
          const settled = queued === undefined ? stored === previous : queued === 0;
          if ((outstanding === 0 && settled) || Date.now() > deadline) {
            drain = {
              waitedS: Math.round((Date.now() - drainStart) / 1000),
              stillStoring: !settled && stored > previous,
              ...(queued === undefined ? {} : { queuedAtEnd: queued }),
            };
            break;
          }
          previous = stored;
          onProgress({
            ...lastProgress(finalStats),
            phase: 'drain',
            outstanding,
            ...(queued === undefined ? {} : { queued }),
          });
          await sleep(2000);
        }
      } finally {
        await client.close();
      }
    }
    return {
      worker: plan.worker,
      machines: plan.machines.length,
      durationMs,
      sent: { ...finalStats.published },
      sentBytes: finalStats.publishedBytes,
      acked: finalStats.acked,
      pendingAtEnd: stats.pendingAcks,
      dropped: finalStats.dropped,
      errors: finalStats.errors,
      connects: finalStats.connects,
      reconnects: finalStats.reconnects,
      connectedAtEnd,
      neverConnected,
      flaps: finalStats.flaps,
      outages: finalStats.outages,
      bad: { ...finalStats.bad },
      links,
      unlinks,
      ...(desks.size > 0
        ? {
            access: {
              desk: mergeDeskStats([...desks.values()].map((d) => d.stats())),
              links: finalStats.links,
              linkLatency: fleet.linkLatencyEncoded(),
            },
          }
        : {}),
      latency: fleet.latencyEncoded(),
      series,
      persisted,
      drain,
      rssBytes: memory.rss,
      heapUsedBytes: memory.heapUsed,
      fleetBytes: Math.max(0, memory.rss - rssBefore),
      cpuMs: (cpu.user + cpu.system) / 1000,
    };
  })();
  return { stop: () => stopEarly(), result };
}

/** Records and samples in the gateways' uplink queues, summed; undefined when there are none to ask or one fails. */
export async function queuedAtGateways(urls: readonly string[] | undefined): Promise<number | undefined> {
  if (!urls || urls.length === 0) return undefined;
  let total = 0;
  for (const url of urls) {
    try {
      const response = await fetch(url, { signal: AbortSignal.timeout(5_000) });
      const body = (await response.json()) as { queue?: { depth?: unknown } };
      const depth = body.queue?.depth;
      if (typeof depth !== 'number') return undefined;
      total += depth;
    } catch {
      return undefined;
    }
  }
  return total;
}

function lastProgress(st: ReturnType<ReturnType<typeof startFleet>['stats']>): Omit<Progress, 'phase'> {
  return {
    sent: Object.values(st.published).reduce((a, b) => a + b, 0),
    acked: st.acked,
    errors: st.errors,
    dropped: st.dropped,
    connected: st.connected,
    reconnects: st.reconnects,
    p99Us: 0,
  };
}

function p99OfEncoded(encoded: string): number {
  if (encoded === '') return 0;
  const h = hdr.decodeFromCompressedBase64(encoded);
  const p99 = h.getValueAtPercentile(99);
  h.destroy();
  return p99;
}

// As a child process: plan in, progress lines out, result file written; SIGTERM/SIGINT end the run early.
if (import.meta.main) {
  const [planFile, resultFile] = process.argv.slice(2);
  if (!planFile || !resultFile) {
    process.stderr.write('usage: node simulators/src/worker.ts <plan.json> <result.json>\n');
    process.exit(2);
  }
  const plan = JSON.parse(await readFile(planFile, 'utf8')) as WorkerPlan;
  const control = runWorker(plan, (progress) => process.stdout.write(`${JSON.stringify({ progress })}\n`));
  process.on('SIGTERM', () => control.stop());
  process.on('SIGINT', () => control.stop());
  const result = await control.result;
  await writeFile(resultFile, JSON.stringify(result));
  process.stdout.write(`${JSON.stringify({ done: true })}\n`);
  process.exit(0);
}
