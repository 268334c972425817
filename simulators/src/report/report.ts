/**
 * The run report: what one process measured (a WorkerResult) and the merged report of a whole run, with its checks.
 * Processes send their PUBACK latency as an encoded HDR histogram and their series per interval, so the coordinator
 * merges them exactly: percentiles of the merged histogram, not averages of percentiles.
 */
import type { BadPayloadKind } from '../bad-payloads.ts';
import type { LinkStats } from '../fleet.ts';
import { mergeDeskStats, type DeskStats } from '../front-desk.ts';
import type { OutgoingKind } from '../machine.ts';
import type { PersistedCounts } from './persisted.ts';
import { addEncoded, latencyHistogram, mergeSeries, type Histogram, type SeriesPoint } from './series.ts';

export type SentKind = OutgoingKind | 'meta';

/** What one simulator process reports at the end of its share of a run. */
/**
 * The wait for MongoDB after the run: how long; whether the hub was still storing (its count still rising at the end
 * of the wait: then "lost" includes records that were merely late); and, when the run's gateways could be asked, what
 * their uplink queues still held at the end (0: everything they accepted reached the cloud).
 */
export interface RunDrain {
  readonly waitedS: number;
  readonly stillStoring: boolean;
  readonly queuedAtEnd?: number;
}

/** Members at the doors and on the machines, as one process saw them. */
export interface WorkerAccess {
  readonly desk: DeskStats;
  readonly links: LinkStats;
  /** Tap on a machine → its `link` command, hdr compressed base64 ('' when none). */
  readonly linkLatency: string;
}

/** What the hub stored of the members' visits (read back from MongoDB by the coordinator). */
export interface StoredAccess {
  /** Gym sessions of the run's branches (conflicts apart), and those ended. */
  readonly sessions: number;
  readonly sessionsEnded: number;
  /** Sessions recorded as a `conflict`: a second check-in while one was open (one tap counted twice, or a bug). */
  readonly conflicts: number;
  /** Machine links recorded for the run's branches. */
  readonly links: number;
  /** How long the read-back waited for the cloud to apply the last decisions, s. */
  readonly waitedS?: number;
}

export interface GatewayQueueLeft {
  readonly gateway: string;
  /** Entries left, by lane (access, records, telemetry). */
  readonly byLane: Readonly<Record<string, number>>;
  /** Where its data directory was kept (so it can be started again to deliver them); absent: removed. */
  readonly keptIn?: string | undefined;
}

export interface AccessReport {
  /** Summed over the processes (doorWaitMaxMs: the longest). */
  readonly desk: DeskStats;
  readonly links: LinkStats;
  /** Tap → link, µs. */
  readonly linkLatencyUs: LatencySummary;
  readonly stored?: StoredAccess | undefined;
}

/** What the fleet counted: one process's in a WorkerResult, the run's (summed) in the report. */
export interface FleetCounts {
  readonly sent: Record<SentKind, number>;
  readonly sentBytes: number;
  readonly acked: number;
  readonly pendingAtEnd: number;
  readonly dropped: number;
  readonly errors: number;
  readonly connects: number;
  readonly reconnects: number;
  readonly connectedAtEnd: number;
  /** Machines that never connected. */
  readonly neverConnected: number;
  readonly flaps: number;
  readonly outages: number;
  readonly bad: Record<BadPayloadKind, number>;
  readonly links: number;
  readonly unlinks: number;
}

export interface WorkerResult extends FleetCounts {
  readonly worker: number;
  readonly machines: number;
  readonly durationMs: number;
  /** Runs with front desks (provisioned members): check-ins and links. */
  readonly access?: WorkerAccess | undefined;
  /** PUBACK latency, hdr compressed base64 ('' when empty). */
  readonly latency: string;
  readonly series: SeriesPoint[];
  readonly persisted?: PersistedCounts | undefined;
  /**
   * The wait for MongoDB after the run: how long, and whether the hub was still storing (its count still rising at
   * the end of the wait): then "lost" includes records that were merely late.
   */
  readonly drain?: RunDrain | undefined;
  /** Process memory at the end of the run (before the ledger is released), bytes. */
  readonly rssBytes: number;
  readonly heapUsedBytes: number;
  /** Memory the fleet added over the process's baseline, bytes (rss after the fleet − rss before it). */
  readonly fleetBytes: number;
  /** CPU time of the process, ms. */
  readonly cpuMs: number;
}

export interface LatencySummary {
  readonly count: number;
  readonly p50: number;
  readonly p95: number;
  readonly p99: number;
  readonly max: number;
  readonly mean: number;
}

export interface CheckResult {
  readonly name: string;
  readonly ok: boolean;
  readonly detail: string;
}

export interface ReportPoint {
  /** Seconds since the coordinator started (the connect phase included; `fleet connected` marks its end). */
  readonly t: number;
  readonly sentPerS: number;
  readonly ackedPerS: number;
  readonly errors: number;
  readonly dropped: number;
  readonly connected: number;
  /** PUBACK latency of the interval, ms (null when nothing was acknowledged). */
  readonly p50Ms: number | null;
  readonly p99Ms: number | null;
  readonly maxMs: number | null;
}

export interface RunEvent {
  /** Seconds since the coordinator started (the connect phase included; `fleet connected` marks its end). */
  readonly t: number;
  readonly what: string;
}

export interface RunReport {
  readonly scenario: string;
  readonly description: string;
  readonly seed: number;
  readonly startedAt: string;
  readonly durationS: number;
  readonly processes: number;
  readonly branches: number;
  readonly gateways: number;
  readonly machines: number;
  readonly members: number;
  readonly target: string;
  readonly host: { readonly cpuModel: string; readonly cores: number; readonly node: string };
  readonly counts: FleetCounts & { readonly sentTotal: number };
  /** What each of the run's gateways still held in its durable queue when it stopped, and where it was kept. */
  readonly gatewayQueues?: readonly GatewayQueueLeft[] | undefined;
  /** Check-ins at the doors and links at the machines (runs with provisioned members). */
  readonly access?: AccessReport | undefined;
  /** Absent when the run had no MongoDB to read back from. */
  readonly persisted?: PersistedCounts | undefined;
  /** The longest wait for MongoDB over the processes, and whether any was still storing at its end. */
  readonly drain?: RunDrain | undefined;
  /** Lost (acknowledged, not stored) and duplicated, over records and telemetry; undefined without MongoDB. */
  readonly lost?: number | undefined;
  readonly duplicated?: number | undefined;
  /** PUBACK latency, µs. */
  readonly latencyUs: LatencySummary;
  readonly throughput: { readonly meanPerS: number; readonly peakPerS: number };
  readonly memory: { readonly rssMiB: number; readonly perMachineKiB: number };
  readonly cpu: { readonly ms: number; readonly usPerMessage: number };
  readonly events: readonly RunEvent[];
  readonly series: readonly ReportPoint[];
  readonly checks: readonly CheckResult[];
}

export function summarize(histogram: Histogram): LatencySummary {
  if (histogram.totalCount === 0) return { count: 0, p50: 0, p95: 0, p99: 0, max: 0, mean: 0 };
  return {
    count: histogram.totalCount,
    p50: histogram.getValueAtPercentile(50),
    p95: histogram.getValueAtPercentile(95),
    p99: histogram.getValueAtPercentile(99),
    max: histogram.maxValue,
    mean: Math.round(histogram.mean),
  };
}

function sumPersisted(all: readonly PersistedCounts[]): PersistedCounts | undefined {
  if (all.length === 0) return undefined;
  const add = <T extends Record<string, number>>(pick: (p: PersistedCounts) => T): T => {
    const out = {} as Record<string, number>;
    for (const p of all) for (const [k, v] of Object.entries(pick(p))) out[k] = (out[k] ?? 0) + v;
    return out as T;
  };
  return {
    records: add((p) => p.records),
    telemetry: add((p) => p.telemetry),
    bad: add((p) => p.bad),
    lostExamples: all.flatMap((p) => p.lostExamples).slice(0, 10),
    lostRecords: all.flatMap((p) => p.lostRecords ?? []),
  };
}

function mergeAccess(all: readonly WorkerAccess[]): AccessReport | undefined {
  if (all.length === 0) return undefined;
  const sum = (pick: (l: LinkStats) => number) => all.reduce((total, a) => total + pick(a.links), 0);
  const byText = (pick: (l: LinkStats) => Readonly<Record<string, number>> | undefined) => {
    const out: Record<string, number> = {};
    for (const a of all)
      for (const [why, count] of Object.entries(pick(a.links) ?? {})) out[why] = (out[why] ?? 0) + count;
    return out;
  };
  const h = latencyHistogram();
  for (const a of all) addEncoded(h, a.linkLatency);
  const linkLatencyUs = summarize(h);
  h.destroy();
  return {
    desk: mergeDeskStats(all.map((a) => a.desk)),
    links: {
      sessionsWithMember: sum((l) => l.sessionsWithMember),
      linkTaps: sum((l) => l.linkTaps),
      unlinkTaps: sum((l) => l.unlinkTaps),
      linked: sum((l) => l.linked),
      denied: sum((l) => l.denied),
      deniedBy: byText((l) => l.deniedBy),
      unlinked: sum((l) => l.unlinked),
      unanswered: sum((l) => l.unanswered),
      unlinkDenied: sum((l) => l.unlinkDenied ?? 0),
      unlinkDeniedBy: byText((l) => l.unlinkDeniedBy),
    },
    linkLatencyUs,
  };
}

export interface RunInfo {
  readonly scenario: string;
  readonly description: string;
  readonly seed: number;
  readonly startedAt: string;
  readonly branches: number;
  readonly gateways: number;
  readonly members: number;
  readonly target: string;
  readonly host: RunReport['host'];
  readonly events: readonly RunEvent[];
}

/** Merges the processes' results into the run's report (checks not evaluated yet: `checks` is empty). */
export function mergeResults(info: RunInfo, results: readonly WorkerResult[]): RunReport {
  const sum = (pick: (r: WorkerResult) => number) => results.reduce((total, r) => total + pick(r), 0);
  const sent = { meta: 0, status: 0, telemetry: 0, workout: 0, event: 0 } as Record<SentKind, number>;
  const bad = { 'not-json': 0, invalid: 0, 'wrong-source': 0, oversized: 0 } as Record<BadPayloadKind, number>;
  for (const r of results) {
    for (const k of Object.keys(sent) as SentKind[]) sent[k] += r.sent[k];
    for (const k of Object.keys(bad) as BadPayloadKind[]) bad[k] += r.bad[k];
  }
  const histogram = latencyHistogram();
  for (const r of results) addEncoded(histogram, r.latency);
  const latencyUs = summarize(histogram);
  histogram.destroy();
  const merged = mergeSeries(results.map((r) => r.series));
  const intervalS = merged.length > 1 ? (merged[1]!.atMs - merged[0]!.atMs) / 1000 : 1;
  const series: ReportPoint[] = merged.map((point) => {
    const h = latencyHistogram();
    addEncoded(h, point.latency);
    const s = summarize(h);
    h.destroy();
    return {
      t: point.atMs / 1000,
      sentPerS: point.sent / intervalS,
      ackedPerS: point.acked / intervalS,
      errors: point.errors,
      dropped: point.dropped,
      connected: point.connected,
      p50Ms: s.count ? s.p50 / 1000 : null,
      p99Ms: s.count ? s.p99 / 1000 : null,
      maxMs: s.count ? s.max / 1000 : null,
    };
  });
  const durationMs = Math.max(...results.map((r) => r.durationMs), 1);
  const sentTotal = Object.values(sent).reduce((a, b) => a + b, 0);
  const persisted = sumPersisted(results.flatMap((r) => (r.persisted ? [r.persisted] : [])));
  const machines = sum((r) => r.machines);
  // The last interval is usually partial: leave it out of the peak.
  const full = series.length > 2 ? series.slice(0, -1) : series;
  const cpuMs = sum((r) => r.cpuMs);
  return {
    ...info,
    durationS: durationMs / 1000,
    processes: results.length,
    machines,
    counts: {
      sent,
      sentTotal,
      sentBytes: sum((r) => r.sentBytes),
      acked: sum((r) => r.acked),
      pendingAtEnd: sum((r) => r.pendingAtEnd),
      dropped: sum((r) => r.dropped),
      errors: sum((r) => r.errors),
      connects: sum((r) => r.connects),
      reconnects: sum((r) => r.reconnects),
      connectedAtEnd: sum((r) => r.connectedAtEnd),
      neverConnected: sum((r) => r.neverConnected),
      flaps: sum((r) => r.flaps),
      outages: sum((r) => r.outages),
      bad,
      links: sum((r) => r.links),
      unlinks: sum((r) => r.unlinks),
    },
    access: mergeAccess(results.flatMap((r) => (r.access ? [r.access] : []))),
    persisted,
    drain: results.some((r) => r.drain)
      ? {
          waitedS: Math.max(...results.map((r) => r.drain?.waitedS ?? 0)),
          stillStoring: results.some((r) => r.drain?.stillStoring === true),
          ...(results.some((r) => r.drain?.queuedAtEnd !== undefined)
            ? { queuedAtEnd: Math.max(...results.map((r) => r.drain?.queuedAtEnd ?? 0)) }
            : {}),
        }
      : undefined,
    lost: persisted ? persisted.records.lost + persisted.telemetry.lost : undefined,
    duplicated: persisted ? persisted.records.duplicated : undefined,
    latencyUs,
    throughput: {
      meanPerS: Math.round((sentTotal * 1000) / durationMs),
      peakPerS: Math.round(Math.max(0, ...full.map((p) => p.sentPerS))),
    },
    memory: {
      rssMiB: Math.round(sum((r) => r.rssBytes) / 2 ** 20),
      perMachineKiB: machines ? Math.round((sum((r) => r.fleetBytes) / machines / 1024) * 10) / 10 : 0,
    },
    cpu: { ms: Math.round(cpuMs), usPerMessage: sentTotal ? Math.round(((cpuMs * 1000) / sentTotal) * 10) / 10 : 0 },
    series,
    checks: [],
  };
}
