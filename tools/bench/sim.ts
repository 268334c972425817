/**
 * `npm run bench:sim`: how much load one simulator process offers (issue 8: one process drives thousands of machines,
 * one MQTT connection each, at ≥ 20k messages/s; memory per simulated machine stated).
 *
 * Mosquitto (the fastest broker here, so it is not the limit) pinned to core 0; on core 1, one after the other:
 * - the baseline: bare MQTT.js with the same connections and rate, publishing one fixed sample (sim-baseline.ts);
 * - the simulator (`npm run sim -- --url … --scenario steady`): machines with their physics, envelopes, statuses and
 *   workouts, its ledger and HDR histograms, as QA runs it.
 * Reports messages/s (mean and peak), CPU per message and memory per machine side by side, appended to
 * docs/benchmarks.md ("Simulator capacity").
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Command } from '@commander-js/extra-typings';
import { startMosquitto } from '../services/index.ts';
import { appendToSection, BENCHMARKS_DOC, inRange, repoRoot } from './cli.ts';
import { benchCommand, loadAverage, machineInfo, pin, runHeader } from './system.ts';

const SECTION = '## Simulator capacity (npm run bench:sim)';
const INTRO = `${SECTION}

\`tools/bench/sim.ts\`: the load one simulator process offers (issue 8's target: ≥ 20,000 messages/s per process,
one MQTT connection per machine), into Mosquitto pinned to core 0 while the load runs on core 1. Baseline in the same
run: bare MQTT.js (\`tools/bench/sim-baseline.ts\`) with as many connections at the same rate publishing one fixed
sample, without the simulator's physics, envelopes, ledger and histograms.`;

const program = new Command()
  .name('bench:sim')
  .option('--machines <n>', 'simulated machines (connections)', inRange(1, 20_000), 2000)
  .option('--rate <hz>', 'samples per second per machine', inRange(0.1, 100), 12)
  .option('--duration <s>', 'seconds measured', inRange(5, 600), 30)
  .option('--out <file>', 'the benchmarks page to append to', BENCHMARKS_DOC)
  .option('--no-write', 'print only');

interface SimReport {
  readonly throughput: { readonly meanPerS: number; readonly peakPerS: number };
  readonly cpu: { readonly usPerMessage: number };
  readonly memory: { readonly rssMiB: number; readonly perMachineKiB: number };
  readonly counts: { readonly sentTotal: number; readonly connectedAtEnd: number; readonly dropped: number };
  readonly machines: number;
}

/** Runs `node <args>` with its every thread on core 1; resolves with its stdout. */
async function runPinned(args: string[], what: string): Promise<string> {
  const child = spawn(process.execPath, args, { cwd: repoRoot, stdio: ['ignore', 'pipe', 'inherit'] });
  const pinned = pin(child.pid!, '1');
  let out = '';
  child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString()));
  const [code] = (await once(child, 'exit')) as [number | null];
  if (code !== 0) throw new Error(`${what} exited with ${code}:\n${out.slice(-2000)}`);
  if (!pinned) process.stderr.write(`bench:sim: ${what} not pinned (taskset missing or one core)\n`);
  return out;
}

async function main(): Promise<void> {
  program.parse();
  const opts = program.opts();
  const startedAt = new Date();
  const loadAtStart = loadAverage();
  const work = await mkdtemp(path.join(os.tmpdir(), 'nxg-bench-sim-'));
  const broker = await startMosquitto({ extraConfig: 'max_connections -1' });
  try {
    pin(broker.pid, '0');
    const say = (text: string) => process.stderr.write(`bench:sim: ${text}\n`);
    say(`Mosquitto on ${broker.url}; ${opts.machines} machines × ${opts.rate} Hz for ${opts.duration} s each`);

    say('1/2 baseline: bare MQTT.js…');
    const baseline = JSON.parse(
      await runPinned(
        [
          path.join(repoRoot, 'tools/bench/sim-baseline.ts'),
          broker.url,
          String(opts.machines),
          String(opts.rate),
          String(opts.duration),
        ],
        'the baseline',
      ),
    ) as { msgPerS: number; cpuUsPerMsg: number; rssPerConnectionKiB: number };
    say(`baseline: ${baseline.msgPerS} msg/s, ${baseline.cpuUsPerMsg} µs CPU/msg`);

    say('2/2 simulator (npm run sim, steady)…');
    const base = path.join(work, 'report');
    await runPinned(
      [
        '--expose-gc',
        path.join(repoRoot, 'simulators/src/cli.ts'),
        '--url',
        broker.url,
        '--machines',
        String(opts.machines),
        '--rate',
        String(opts.rate),
        '--duration',
        String(opts.duration),
        '--no-progress',
        '--stats-every',
        '0',
        '--log-level',
        'warn',
        '--report',
        base,
      ],
      'the simulator',
    ).catch((err: Error) => {
      // Exit code 3 = a scenario check failed (no MongoDB to read back from here): the report is still written.
      if (!/exited with 3/.test(err.message)) throw err;
    });
    const sim = JSON.parse(await readFile(`${base}.json`, 'utf8')) as SimReport;
    say(`simulator: ${sim.throughput.meanPerS} msg/s mean, ${sim.throughput.peakPerS} peak`);

    const offered = Math.round(opts.machines * opts.rate);
    const rows = [
      `| load (core 1)         | messages/s mean | peak   | CPU µs/msg | memory per machine | connected at the end |`,
      `| --------------------- | --------------- | ------ | ---------- | ------------------ | -------------------- |`,
      `| bare MQTT.js          | ${baseline.msgPerS} | — | ${baseline.cpuUsPerMsg} | ${baseline.rssPerConnectionKiB} KiB (RSS per connection) | ${opts.machines} |`,
      `| simulator (steady)    | ${sim.throughput.meanPerS} | ${sim.throughput.peakPerS} | ${sim.cpu.usPerMessage} | ${sim.memory.perMachineKiB} KiB (RSS growth per machine; ${sim.memory.rssMiB} MiB RSS) | ${sim.counts.connectedAtEnd} of ${sim.machines} |`,
    ];
    const max = Math.max(baseline.msgPerS, sim.throughput.meanPerS, 20_000);
    const bar = (name: string, value: number) =>
      `${name.padEnd(14)} ${'█'.repeat(Math.round((value / max) * 50)).padEnd(50)} ${value} msg/s`;
    const target = sim.throughput.meanPerS >= 20_000 ? 'met' : 'NOT met';
    const run = [
      ...runHeader(startedAt, benchCommand('bench:sim'), machineInfo(), loadAtStart),
      `- ${opts.machines} machines × ${opts.rate} Hz = ${offered} msg/s offered, ${opts.duration} s measured; broker Mosquitto pinned to core 0, load to core 1`,
      '',
      ...rows,
      '',
      '```text',
      bar('bare MQTT.js', baseline.msgPerS),
      bar('simulator', sim.throughput.meanPerS),
      bar('target', 20_000),
      '```',
      '',
      `- target ≥ 20,000 msg/s per process: ${target} (${sim.throughput.meanPerS} mean over the run; ${sim.counts.dropped} dropped)`,
    ].join('\n');
    process.stdout.write(`${run}\n`);
    if (opts.write) {
      await appendToSection(opts.out, SECTION, INTRO, run);
      say(`appended to ${opts.out}`);
    }
  } finally {
    await broker.stop();
    await rm(work, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`bench:sim: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
