/**
 * The ingest benchmark's report: result tables (terminal and markdown), the summary (knee, limiting part, ratios to
 * the baselines) and the docs/benchmarks.md section the runs are appended to.
 */
import Table from 'cli-table3';
import type { StepResult } from './e2e.ts';
import type { FanInResult } from './fan-in.ts';
import type { CeilingResult } from './mongo-ceiling.ts';
import { appendToSection } from './cli.ts';

export interface Baselines {
  records?: CeilingResult;
  telemetry?: CeilingResult;
  aedes?: FanInResult & { cpu: CpuSplit };
  mosquitto?: FanInResult & { cpu: CpuSplit };
}

export interface CpuSplit {
  brokerPct: number;
  loadPct: number;
}

const fmt = (n: number | undefined, digits = 0) =>
  n === undefined || Number.isNaN(n) ? '–' : n.toLocaleString('en-US', { maximumFractionDigits: digits });

export const BASE_HEAD = ['baseline', 'throughput', 'latency p50 / p99', 'notes'];

export function baselineRows(b: Baselines): string[][] {
  const rows: string[][] = [];
  if (b.records) {
    rows.push([
      'MongoDB stand-in: insertMany of 500 record documents (4 writers)',
      `${fmt(b.records.perSecond)} docs/s`,
      `${fmt(b.records.p50Ms, 1)} / ${fmt(b.records.p99Ms, 1)} ms per call`,
      `${b.records.avgDocBytes} B/doc`,
    ]);
  }
  if (b.telemetry) {
    rows.push([
      "MongoDB stand-in: ingest's telemetry bucket writes, 500 per call (4 writers)",
      `${fmt(b.telemetry.perSecond)} samples/s`,
      `${fmt(b.telemetry.p50Ms, 1)} / ${fmt(b.telemetry.p99Ms, 1)} ms per call`,
      `${b.telemetry.avgDocBytes} B/sample`,
    ]);
  }
  for (const [name, r] of [
    ['bare Aedes 1.2', b.aedes],
    ['Mosquitto (max_inflight_messages 0)', b.mosquitto],
  ] as const) {
    if (!r) continue;
    rows.push([
      `${name}: QoS 1 fan-in, 100 B payloads`,
      `${fmt(r.msgPerS)} msg/s`,
      `${fmt(r.p50Ms, 1)} / ${fmt(r.p99Ms, 1)} ms publish→delivery`,
      `broker ${r.cpu.brokerPct} % / load ${r.cpu.loadPct} % CPU; lost ${r.lost}`,
    ]);
  }
  return rows;
}

const PROCS = ['gateway', 'cloud', 'mongo', 'redis', 'sim+probe'];

export function stepRows(steps: readonly StepResult[]): string[][] {
  return steps.map((s) => [
    `${s.machines} × ${s.rateHz} Hz`,
    fmt(s.offeredPerS),
    fmt(s.persistedPerS),
    `${fmt(s.p50Ms, 0)} / ${fmt(s.p99Ms, 0)}`,
    `${fmt(s.recordsP99Ms, 0)} / ${fmt(s.telemetryP99Ms, 0)}`,
    fmt(s.pubackP99Ms, 1),
    [s.stagesMs.intake, s.stagesMs.uplinkAck, s.stagesMs.cloudAck].map((ms) => fmt(ms, 1)).join(' / '),
    `${s.missing}${s.notAcked ? ` (+${s.notAcked} unacked)` : ''}`,
    PROCS.map((p) => fmt(s.cpuUsPerMsg[p])).join(' / '),
    PROCS.map((p) => fmt(s.cpuPct[p])).join(' / '),
    s.passed ? 'ok' : s.drained ? (s.missing ? 'lost' : 'p99 > 1 s') : 'backlog not drained in 5 s',
  ]);
}

export const STEP_HEAD = [
  'machines × rate',
  'offered msg/s',
  'persisted msg/s',
  'p50 / p99 ms',
  'p99 records / telemetry ms',
  'PUBACK p99 ms',
  'mean ms: gateway append / batch sent→ack / cloud receipt→ack',
  'acked, not in MongoDB at the end',
  `CPU µs/msg (${PROCS.join(' / ')})`,
  'CPU % of a core',
  'result',
];

export interface Summary {
  knee?: StepResult;
  limiter?: string;
  ratio?: number;
  insertRatio?: number;
  halfKnee?: StepResult;
}

/**
 * Where the time goes at the first failing step (or the last one run), from the processes' own histograms: the
 * stage that takes most of the median latency is the part that limits; the busiest process says whose CPU it is.
 */
export function stagesOf(step: StepResult): [string, number][] {
  const { intake, uplinkAck, cloudAck } = step.stagesMs;
  const queued = step.p50Ms - intake - uplinkAck;
  return [
    ['gateway: queue append before the PUBACK', intake],
    ['gateway: waiting in the uplink queue (p50 − the other stages)', queued],
    ['uplink: TLS link and cloud broker (batch sent→ack − cloud receipt→ack)', uplinkAck - cloudAck],
    ['cloud ingest: parse, MongoDB writes, ack (receipt→ack)', cloudAck],
  ];
}

export function summarize(steps: readonly StepResult[], b: Baselines): Summary {
  const passed = steps.filter((s) => s.passed);
  const knee = passed.at(-1);
  if (!knee) return {};
  const failing = steps.find((s) => !s.passed) ?? knee;
  const [busiest] = Object.entries(failing.cpuPct).sort((x, y) => y[1] - x[1])[0] ?? ['?'];
  const [stage, stageMs] = stagesOf(failing)
    .filter(([, ms]) => Number.isFinite(ms))
    .sort((x, y) => y[1] - x[1])[0] ?? ['?', Number.NaN];
  const halfKnee = [...passed].reverse().find((s) => s.offeredPerS <= knee.offeredPerS / 2);
  const ceiling = b.telemetry?.perSecond;
  const insertCeiling = b.records?.perSecond;
  // A queue that grows is a symptom: it drains one batch per ack round trip, so say what that round trip is made of.
  const cause = stage.startsWith('gateway: waiting')
    ? ` — the queue drains one batch per ack round trip (telemetry: two batches in flight), and a batch took ` +
      `${fmt(failing.stagesMs.uplinkAck)} ms from sent to ack, ${fmt(failing.stagesMs.cloudAck)} ms of it in the ` +
      `cloud from receipt to ack (MongoDB writes)`
    : '';
  return {
    knee,
    ...(insertCeiling ? { insertRatio: knee.persistedPerS / insertCeiling } : {}),
    limiter:
      `${stage}, ${fmt(stageMs)} ms of the ${fmt(failing.p50Ms)} ms median at ${fmt(failing.offeredPerS)} msg/s ` +
      `offered${cause}; busiest process ${busiest} (${failing.cpuPct[busiest]} % of a core)`,
    ...(ceiling ? { ratio: knee.persistedPerS / ceiling } : {}),
    ...(halfKnee ? { halfKnee } : {}),
  };
}

export function terminalTable(head: string[], rows: string[][]): string {
  const plain = process.stdout.isTTY !== true;
  const table = new Table({ head, wordWrap: true, ...(plain ? { style: { head: [], border: [] } } : {}) });
  table.push(...rows);
  return table.toString();
}

export function markdownTable(head: string[], rows: string[][]): string {
  const esc = (cell: string) => cell.replace(/\|/g, '\\|');
  return [
    `| ${head.map(esc).join(' | ')} |`,
    `| ${head.map(() => '---').join(' | ')} |`,
    ...rows.map((row) => `| ${row.map(esc).join(' | ')} |`),
  ].join('\n');
}

export function summaryLines(summary: Summary, e2eNote: string | undefined, ran: boolean): string[] {
  if (e2eNote) return [e2eNote];
  if (!ran) return ['End to end: not requested (--parts).'];
  if (!summary.knee) return ['End to end: no rate step passed (see the table).'];
  const lines = [
    `Knee: ${fmt(summary.knee.offeredPerS)} msg/s offered, ${fmt(summary.knee.persistedPerS)} msg/s persisted, ` +
      `p50 ${fmt(summary.knee.p50Ms)} ms, p99 ${fmt(summary.knee.p99Ms)} ms.`,
    `Limiting part: ${summary.limiter}.`,
  ];
  if (summary.ratio !== undefined) {
    lines.push(
      `Persisted at the knee ÷ the stand-in's own ceiling for the same writes (telemetry buckets, the bulk of the ` +
        `traffic): ${summary.ratio.toFixed(2)} (target ≥ 0.7).`,
    );
  }
  if (summary.insertRatio !== undefined) {
    lines.push(
      `Persisted at the knee ÷ the stand-in's insertMany ceiling for record documents: ${summary.insertRatio.toFixed(2)}.`,
    );
  }
  if (summary.halfKnee) {
    lines.push(
      `At ≤ half the knee (${fmt(summary.halfKnee.offeredPerS)} msg/s): p99 ${fmt(summary.halfKnee.p99Ms)} ms (target ≤ 50 ms).`,
    );
  }
  return lines;
}

const SECTION = '## Ingest (npm run bench:ingest)';

const SECTION_INTRO = `${SECTION}

\`tools/bench/ingest.ts\`, issue 4's benchmark. **(a) Baselines**, in the same run: the MongoDB stand-in's own
write ceiling for the documents ingest writes — \`insertMany\` of 500 record documents shaped as ingest builds them,
and ingest's own telemetry bucket writer (\`addTelemetry\`, 500 samples per call) — 4 writers at once; and a QoS 1
fan-in (10 publishers → 1 subscriber, 100-byte payloads, 100 unacknowledged per publisher) against a bare Aedes
and against Mosquitto (\`max_inflight_messages 0\`), broker pinned to core 0 and load to core 1 (taskset).
**(b) End to end**: simulated machines (one MQTT connection each, telemetry at QoS 1 so every sample is in the
PUBACK ledger, sessions 20× faster so workouts, statuses and events flow too) → edge gateway → cloud broker over
TLS → ingest → MongoDB stand-in, all co-located on the 2 cores as \`npm start\` runs them, at rising rates until
p99 (source \`ts\` → found in MongoDB by a 100 ms poll; the first 2 s of each step, when all machines connect and
send their meta and status, are checked for loss but not timed) passes 1 s, an acknowledged record is missing, or the backlog does not drain within 5 s after the load. CPU per
message is each process's user+system time (/proc/<pid>/stat) over the step ÷ messages persisted; the stage means
come from the gateway's and the cloud's own histograms. Targets (issue 4): end to end ≥ 0.7× the database's own
ceiling, p99 ≤ 50 ms at half the knee. Each run below is appended by the bench.`;

/** Adds a run at the end of this bench's section of docs/benchmarks.md (created when missing). */
export async function appendToDoc(file: string, run: string): Promise<void> {
  await appendToSection(file, SECTION, SECTION_INTRO, run);
}
