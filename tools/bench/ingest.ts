/**
 * `npm run bench:ingest`: how fast the spine persists machine data, and against what.
 *
 * (a) Baselines, in the same run: the MongoDB stand-in's own write ceiling for the documents ingest writes
 *     (insertMany of 500 record documents; ingest's telemetry bucket writer), and a QoS 1 fan-in (publishers → one
 *     subscriber, 100-byte payloads) against a bare Aedes and against Mosquitto (`max_inflight_messages 0`), each
 *     broker pinned to core 0 and the load to core 1 (taskset).
 * (b) End to end: simulated machines → edge gateway → cloud (broker + ingest) → MongoDB at increasing rates until
 *     p99 (source `ts` → stored, read back from MongoDB) passes 1 s or a record is lost (e2e.ts).
 *
 * Prints a progress bar per measurement and the result tables, and appends them to docs/benchmarks.md with the
 * date, the command and the machine. Bounded: ~5 s per baseline, ≤ 15 s per rate step.
 */
import { existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Command } from '@commander-js/extra-typings';
import cliProgress from 'cli-progress';
import { spawnService, startMongo, startMosquitto } from '../services/index.ts';
import { runEndToEnd, type StepResult } from './e2e.ts';
import { runFanIn } from './fan-in.ts';
import {
  BASE_HEAD,
  STEP_HEAD,
  appendToDoc,
  baselineRows,
  markdownTable,
  stepRows,
  summarize,
  summaryLines,
  terminalTable,
  type Baselines,
  type CpuSplit,
} from './ingest-report.ts';
import { recordInsertCeiling, samplePayloads, telemetryWriteCeiling } from './mongo-ceiling.ts';
import { benchCommand, cpuTimeMs, loadAverage, machineInfo, pin, runHeader } from './system.ts';
import { BENCHMARKS_DOC, inRange, repoRoot } from './cli.ts';

const program = new Command()
  .name('bench:ingest')
  .description('Ingest benchmark: database and broker baselines, then machines → gateway → cloud → MongoDB.')
  .option('--parts <list>', 'which parts to run: a (baselines), b (end to end)', 'a,b')
  .option('--seconds <s>', 'measuring time per baseline', inRange(1, 60), 4)
  .option('--step-seconds <s>', 'load time per end-to-end rate step', inRange(1, 15), 10)
  .option('--machines <n>', 'simulated machines in the end-to-end run', inRange(1, 10_000), 100)
  .option('--rates <list>', 'telemetry Hz per machine, one step each', '0.5,1,2,4,8,16,32,64')
  .option('--publishers <n>', 'publishers in the fan-in baseline', inRange(1, 100), 10)
  .option('--doc <file>', 'where the results are appended', BENCHMARKS_DOC)
  .option('--no-write', 'do not append the results');

const bars = new cliProgress.MultiBar(
  {
    format: ' {name} |{bar}| {percentage}% | {detail}',
    hideCursor: true,
    clearOnComplete: false,
    noTTYOutput: true,
    notTTYSchedule: 3000,
    barsize: 30,
  },
  cliProgress.Presets.shades_classic,
);

function bar(name: string, total: number) {
  return bars.create(total, 0, { name: name.padEnd(28), detail: '' });
}

/** Runs `work` while sampling the CPU time of `pid` and of this process. */
async function withCpu<T>(pid: number, work: () => Promise<T>): Promise<T & { cpu: CpuSplit }> {
  const started = performance.now();
  const b0 = cpuTimeMs(pid) ?? 0;
  const l0 = cpuTimeMs(process.pid) ?? 0;
  const result = await work();
  const wall = performance.now() - started;
  return {
    ...result,
    cpu: {
      brokerPct: Math.round((((cpuTimeMs(pid) ?? 0) - b0) / wall) * 100),
      loadPct: Math.round((((cpuTimeMs(process.pid) ?? 0) - l0) / wall) * 100),
    },
  };
}

async function runBaselines(seconds: number, publishers: number): Promise<Baselines> {
  const out: Baselines = {};
  const durationMs = seconds * 1000;
  const warmupMs = 1000;
  // The load (this process) on core 1, each server on core 0.
  const pinned = pin(process.pid, '1');

  const { records, telemetry } = samplePayloads(40, 1800);
  const mongo = await startMongo({ storage: { kind: 'memory' } });
  try {
    if (pinned) pin(mongo.pid, '0');
    let b = bar('MongoDB insertMany ×500', seconds);
    out.records = await recordInsertCeiling(
      {
        mongoUrl: mongo.url,
        warmupMs,
        durationMs,
        onProgress: (n, ms) =>
          b.update(Math.min(seconds, ms / 1000), { detail: `${Math.round((n * 1000) / ms)} docs/s` }),
      },
      records,
    );
    b.update(seconds, { detail: `${out.records.perSecond} docs/s` });
    b = bar('MongoDB telemetry buckets', seconds);
    out.telemetry = await telemetryWriteCeiling(
      {
        mongoUrl: mongo.url,
        warmupMs,
        durationMs,
        onProgress: (n, ms) =>
          b.update(Math.min(seconds, ms / 1000), { detail: `${Math.round((n * 1000) / ms)} samples/s` }),
      },
      telemetry,
    );
    b.update(seconds, { detail: `${out.telemetry.perSecond} samples/s` });
  } finally {
    await mongo.stop();
  }

  const aedes = await spawnService({
    name: 'aedes',
    command: process.execPath,
    args: [path.join(import.meta.dirname, 'aedes-server.ts'), '0'],
    stdinPipe: true,
  });
  try {
    const port = Number((await aedes.waitForLine(/^ready (\d+)$/, 20_000))[1]);
    if (pinned) pin(aedes.pid, '0');
    const b = bar('bare Aedes QoS 1 fan-in', seconds);
    out.aedes = await withCpu(aedes.pid, () =>
      runFanIn({
        url: `mqtt://127.0.0.1:${port}`,
        publishers,
        warmupMs,
        durationMs,
        onProgress: (n, ms) =>
          b.update(Math.min(seconds, ms / 1000), { detail: `${Math.round((n * 1000) / ms)} msg/s` }),
      }),
    );
    b.update(seconds, { detail: `${out.aedes.msgPerS} msg/s` });
  } finally {
    await aedes.stop();
  }

  const mosquitto = await startMosquitto({ extraConfig: 'max_inflight_messages 0' });
  try {
    if (pinned) pin(mosquitto.pid, '0');
    const b = bar('Mosquitto QoS 1 fan-in', seconds);
    out.mosquitto = await withCpu(mosquitto.pid, () =>
      runFanIn({
        url: mosquitto.url,
        publishers,
        warmupMs,
        durationMs,
        onProgress: (n, ms) =>
          b.update(Math.min(seconds, ms / 1000), { detail: `${Math.round((n * 1000) / ms)} msg/s` }),
      }),
    );
    b.update(seconds, { detail: `${out.mosquitto.msgPerS} msg/s` });
  } finally {
    await mosquitto.stop();
  }
  // Part (b) runs co-located, as npm start does: unpin.
  if (pinned) pin(process.pid, `0-${os.availableParallelism() - 1}`);
  return out;
}

const e2eReady = () =>
  ['edge-gateway/src/main.ts', 'cloud/src/main.ts', 'cloud/src/broker/broker.ts', 'cloud/src/ingest/ingest.ts'].every(
    (file) => existsSync(path.join(repoRoot, file)),
  );

// ---------------------------------------------------------------------------------------------------------------
// Tables

async function main(): Promise<void> {
  program.parse();
  const opts = program.opts();
  const parts = new Set(opts.parts.split(',').map((p) => p.trim()));
  const rates = opts.rates
    .split(',')
    .map(Number)
    .filter((n) => n > 0);
  const info = machineInfo();
  const startedAt = new Date();
  const loadBefore = loadAverage();
  const command = benchCommand('bench:ingest');
  process.stdout.write(
    `bench:ingest on ${info.cores} cores (${info.cpuModel}), ${info.memoryGiB} GiB, Node ${info.node}; load average ${loadBefore}\n`,
  );

  const baselines = parts.has('a') ? await runBaselines(opts.seconds, opts.publishers) : {};

  let steps: StepResult[] = [];
  let e2eNote: string | undefined;
  if (parts.has('b')) {
    if (!e2eReady()) {
      e2eNote = 'End to end: not run — the gateway, cloud broker or ingest is not in this tree yet.';
    } else {
      let current: cliProgress.SingleBar | undefined;
      const total = opts.stepSeconds + 5;
      try {
        const result = await runEndToEnd({
          machines: opts.machines,
          ratesHz: rates,
          stepMs: opts.stepSeconds * 1000,
          warmupMs: 2_000,
          drainMs: 5_000,
          p99LimitMs: 1000,
          onStepStart: ({ index, rateHz, offeredPerS }) => {
            current?.stop();
            current = bar(`e2e ${index + 1}/${rates.length}: ${opts.machines}×${rateHz} Hz`, total);
            current.update(0, { detail: `${offeredPerS} msg/s offered` });
          },
          onProgress: ({ elapsedMs, published, outstanding, phase }) =>
            current?.update(Math.min(total, elapsedMs / 1000), {
              detail: `${phase}: ${published ? `${published} sent, ` : ''}${outstanding} not yet stored`,
            }),
          log: (line) => bars.log(`${line}\n`),
        });
        steps = result.steps;
      } catch (err) {
        e2eNote = `End to end: failed — ${err instanceof Error ? err.message.split('\n')[0] : String(err)}`;
      }
      current?.stop();
    }
  }
  bars.stop();

  const summary = summarize(steps, baselines);
  process.stdout.write(`\n${terminalTable(BASE_HEAD, baselineRows(baselines))}\n`);
  if (steps.length > 0) process.stdout.write(`${terminalTable(STEP_HEAD, stepRows(steps))}\n`);
  process.stdout.write(`${summaryLines(summary, e2eNote, parts.has('b')).join('\n')}\n`);

  if (opts.write) {
    const section = [
      ...runHeader(startedAt, command, info, loadBefore),
      '',
      markdownTable(BASE_HEAD, baselineRows(baselines)),
      '',
      ...(steps.length > 0 ? [markdownTable(STEP_HEAD, stepRows(steps)), ''] : []),
      ...summaryLines(summary, e2eNote, parts.has('b')).map((line) => `- ${line}`),
    ].join('\n');
    await appendToDoc(opts.doc, section);
    process.stdout.write(`appended to ${path.relative(process.cwd(), opts.doc)}\n`);
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    bars.stop();
    process.stderr.write(`bench:ingest: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
