/**
 * `npm run bench:gateway`: the edge gateway's durable store-and-forward queue (issue 5, "Benchmark").
 *
 * (1) Durable queue write rate at the sync policy (WAL, synchronous=FULL) with group commit as the gateway runs it
 *     (GATEWAY_QUEUE_COMMIT_MS / _ROWS defaults), a larger group, and one row per transaction as the baseline, in
 *     the same run (gateway-queue.ts).
 * (2) A cloud outage: `--machines` machines at `--rate` msg/s each, the uplink refused for `--outage-s`, then
 *     restored with the load going on: acknowledged vs stored in MongoDB, drain rate, time until the backlog is
 *     empty (gateway-outage.ts). Targets: all delivered exactly once, drain ≥ 5k msg/s while live traffic continues,
 *     empty ≤ 240 s after a 120 s outage of 200 × 10 msg/s.
 *
 * Prints progress while running and the result tables; appends them to docs/benchmarks.md (section "Edge gateway")
 * with the date, the command and the machine.
 */
import path from 'node:path';
import { Command } from '@commander-js/extra-typings';
import { runOutage, type OutageResult } from './gateway-outage.ts';
import { measureQueueWrites, type QueueWriteResult } from './gateway-queue.ts';
import { markdownTable, terminalTable } from './ingest-report.ts';
import { benchCommand, loadAverage, machineInfo, runHeader } from './system.ts';
import { BENCHMARKS_DOC, appendToSection, inRange } from './cli.ts';

const program = new Command()
  .name('bench:gateway')
  .description('Edge gateway benchmark: durable queue write rate, then a cloud outage and its drain.')
  .option('--parts <list>', 'which parts to run: 1 (queue write rate), 2 (outage)', '1,2')
  .option('--records <n>', 'appends per group-commit measurement', inRange(1_000, 1_000_000), 40_000)
  .option('--baseline-records <n>', 'appends for the one-row-per-transaction baseline', inRange(100, 100_000), 2_000)
  .option('--in-flight <n>', 'appends open at once (machines awaiting their PUBACK)', inRange(1, 10_000), 200)
  .option('--machines <n>', 'machines in the outage run', inRange(1, 2_000), 200)
  .option('--rate <hz>', 'messages per second per machine', inRange(0.1, 100), 10)
  .option('--outage-s <s>', 'how long the uplink is refused', inRange(1, 3_600), 120)
  .option('--warm-s <s>', 'load with the link up before the outage', inRange(0, 600), 10)
  .option('--drain-timeout-s <s>', 'longest wait for the backlog to empty', inRange(10, 3_600), 300)
  .option('--drain-max-per-s <n>', 'GATEWAY_UPLINK_DRAIN_MAX_PER_S for the gateway (default: its own)', inRange(0, 1e6))
  .option('--doc <file>', 'where the results are appended', BENCHMARKS_DOC)
  .option('--no-write', 'do not append the results');

const QUEUE_HEAD = [
  'queue writes (WAL, synchronous=FULL)',
  'appends/s',
  'rows per commit',
  'append→commit p50 / p99 ms',
];
const OUTAGE_HEAD = [
  'machines × msg/s',
  'outage s',
  'acked / stored in MongoDB (missing)',
  'documents / published',
  'queued at restore (peak)',
  'reconnect s',
  'backlog empty after s',
  'acked/s during drain (gauge peak)',
  'drain means ms: append / batch sent→ack / cloud receipt→ack',
  'live msg/s offered during drain (sent live)',
  'evicted',
  'offline h left at restore',
  'PUBACK p99 ms',
  'CPU % of a core (gateway / cloud / mongo / sim)',
  'result',
];

const fmt = (n: number) => (Number.isFinite(n) ? n.toLocaleString('en-US', { maximumFractionDigits: 1 }) : '–');

function queueRows(results: readonly QueueWriteResult[]): string[][] {
  return results.map((r) => [
    `${r.label}: ≤ ${r.commitDelayMs} ms or ≤ ${r.commitMaxRows} rows per transaction, ${fmt(r.records)} appends`,
    fmt(r.perS),
    fmt(r.rowsPerCommit),
    `${fmt(r.p50Ms)} / ${fmt(r.p99Ms)}`,
  ]);
}

function outageRows(r: OutageResult): string[][] {
  return [
    [
      `${r.machines} × ${r.rateHz}`,
      fmt(r.outageS),
      `${fmt(r.acked)} / ${fmt(r.stored)} (${fmt(r.missing)}${r.stillQueued > 0 ? `; ${fmt(r.stillQueued)} still queued` : ''})`,
      `${fmt(r.documents)} / ${fmt(r.published)}`,
      `${fmt(r.depthAtRestore)} (${fmt(r.peakDepth)})`,
      fmt(r.reconnectS),
      r.drainS === undefined ? 'not within the timeout' : fmt(r.drainS),
      `${fmt(r.drainPerS)} (${fmt(r.drainGaugePeak)})`,
      `${fmt(r.stagesMs.append)} / ${fmt(r.stagesMs.batchAck)} / ${fmt(r.stagesMs.cloudAck)}`,
      `${fmt(r.liveOfferedPerS)} (${fmt(r.liveRecords)})`,
      fmt(r.evicted),
      r.offlineHoursAtRestore === null ? '–' : fmt(r.offlineHoursAtRestore),
      fmt(r.pubackP99Ms),
      `${r.cpuPct.gateway} / ${r.cpuPct.cloud} / ${r.cpuPct.mongo} / ${r.cpuPct.sim}`,
      r.passed ? 'pass' : 'FAIL',
    ],
  ];
}

function summary(queue: readonly QueueWriteResult[], outage: OutageResult | undefined, note: string | undefined) {
  const lines: string[] = [];
  const group = queue.find((r) => r.label === 'group commit (gateway default)');
  const single = queue.find((r) => r.label === 'baseline');
  if (group && single) {
    lines.push(
      `Group commit writes ${fmt(group.perS / single.perS)}× the one-row-per-transaction baseline ` +
        `(${fmt(group.perS)} vs ${fmt(single.perS)} appends/s at synchronous=FULL on this disk).`,
    );
  }
  if (outage) {
    lines.push('Gateway queue: SQLite (WAL, synchronous=FULL) in its own worker thread (uplink/worker-queue.ts).');
    const delivered =
      outage.missing === 0
        ? 'every acknowledged record stored once'
        : `${outage.missing} acknowledged records not in MongoDB at the end, ${outage.stillQueued} of them still ` +
          'queued on the gateway (the settle wait ran out)';
    lines.push(
      `Outage: ${delivered}; drain ${fmt(outage.drainPerS)} records/s acked (target ≥ 5,000 while live traffic ` +
        `continues), backlog empty after ${outage.drainS === undefined ? 'more than the timeout' : `${fmt(outage.drainS)} s`} ` +
        `(target ≤ 240 s for 120 s of 200 × 10 msg/s).`,
    );
    const { append, batchAck, cloudAck } = outage.stagesMs;
    if (Number.isFinite(cloudAck) && Number.isFinite(batchAck) && batchAck > 0) {
      const cloudShare = cloudAck / batchAck;
      lines.push(
        `Limiting part: ${cloudShare > 0.7 ? "the cloud's ingest (MongoDB writes and ack)" : 'the gateway or the link'} — ` +
          `a batch's round trip averaged ${fmt(batchAck)} ms, ${fmt(cloudAck)} ms of it from the cloud's receipt to ` +
          `its ack; the gateway's append (PUBACK wait) averaged ${fmt(append)} ms.`,
      );
    }
  }
  lines.push(
    'Check-in round trip during the drain: not measured here — the gateway-side access path (issue 5, NFC/QR) is ' +
      'built in parallel; access records take the access lane, which the drain never rate-limits and which is filled first.',
  );
  if (note) lines.push(note);
  return lines;
}

const SECTION = '## Edge gateway (npm run bench:gateway)';
const SECTION_INTRO = `${SECTION}

\`tools/bench/gateway.ts\`, issue 5's benchmark. **(1) Queue write rate**: appends to the gateway's durable queue
(SQLite in WAL mode through \`node:sqlite\`, \`synchronous=FULL\`: every commit fsyncs) with 200 appends open at once
as machines awaiting their PUBACK keep them, each append resolving only after its transaction committed; group
commit as the gateway runs it against one row per transaction, in the same run. **(2) Outage**: simulated machines
(QoS 1 telemetry, so every sample is in the PUBACK ledger) → edge gateway → TCP proxy → cloud broker over TLS →
ingest → MongoDB stand-in, all co-located on the 2 cores; the proxy refuses the uplink for the outage, then passes
again while the load goes on. "Backlog empty" = the oldest queued record is < 3 s old (gateway /health). Every
acknowledged msgId is then looked up in MongoDB. The gateway reconnects with a backoff ceiling of 2 s in the bench
(production default 30 s). Each run below is appended by the bench.`;

async function appendToDoc(file: string, run: string): Promise<void> {
  await appendToSection(file, SECTION, SECTION_INTRO, run);
}

async function main(): Promise<void> {
  program.parse();
  const opts = program.opts();
  const parts = new Set(opts.parts.split(',').map((p) => p.trim()));
  const info = machineInfo();
  const startedAt = new Date();
  const loadBefore = loadAverage();
  const command = benchCommand('bench:gateway');
  const say = (line: string) => process.stdout.write(`${line}\n`);
  say(
    `bench:gateway on ${info.cores} cores (${info.cpuModel}), ${info.memoryGiB} GiB, Node ${info.node}; load ${loadBefore}`,
  );

  const queue: QueueWriteResult[] = [];
  if (parts.has('1')) {
    const runs = [
      { label: 'group commit (gateway default)', commitDelayMs: 5, commitMaxRows: 100, records: opts.records },
      { label: 'group commit, larger groups', commitDelayMs: 10, commitMaxRows: 500, records: opts.records },
      { label: 'baseline', commitDelayMs: 0, commitMaxRows: 1, records: opts.baselineRecords },
    ];
    for (const run of runs) {
      say(`(1) ${run.label}: ${run.records} appends…`);
      const result = await measureQueueWrites({
        ...run,
        inFlight: opts.inFlight,
        onProgress: (done) => say(`    ${done} / ${run.records}`),
      });
      say(`    ${result.perS} appends/s, ${result.rowsPerCommit} rows per commit, p99 ${result.p99Ms} ms`);
      queue.push(result);
    }
  }

  let outage: OutageResult | undefined;
  let note: string | undefined;
  if (parts.has('2')) {
    say(`(2) outage: ${opts.machines} machines × ${opts.rate} msg/s, uplink refused for ${opts.outageS} s`);
    let lastLine = 0;
    try {
      outage = await runOutage({
        machines: opts.machines,
        rateHz: opts.rate,
        outageS: opts.outageS,
        warmS: opts.warmS,
        drainTimeoutS: opts.drainTimeoutS,
        ...(opts.drainMaxPerS === undefined ? {} : { drainMaxPerS: opts.drainMaxPerS }),
        log: (line) => say(`    ${line}`),
        onProgress: ({ phase, elapsedS, detail }) => {
          // One line every 5 s (the drain's lines every 2 s): readable in a log as on a terminal.
          const every = phase === 'drain' ? 2 : 5;
          if (elapsedS - lastLine < every && phase !== 'count') return;
          lastLine = elapsedS;
          say(`    [${elapsedS.toFixed(0).padStart(4)} s] ${phase}: ${detail}`);
        },
      });
    } catch (err) {
      note = `Outage: failed — ${err instanceof Error ? err.message.split('\n')[0] : String(err)}`;
    }
  }

  if (queue.length > 0) say(`\n${terminalTable(QUEUE_HEAD, queueRows(queue))}`);
  if (outage) say(terminalTable(OUTAGE_HEAD, outageRows(outage)));
  const lines = summary(queue, outage, note);
  say(lines.join('\n'));

  if (opts.write) {
    const section = [
      ...runHeader(startedAt, command, info, loadBefore),
      '',
      ...(queue.length > 0 ? [markdownTable(QUEUE_HEAD, queueRows(queue)), ''] : []),
      ...(outage ? [markdownTable(OUTAGE_HEAD, outageRows(outage)), ''] : []),
      ...lines.map((line) => `- ${line}`),
    ].join('\n');
    await appendToDoc(opts.doc, section);
    say(`appended to ${path.relative(process.cwd(), opts.doc)}`);
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`bench:gateway: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
