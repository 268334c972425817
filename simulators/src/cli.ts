/**
 * `npm run sim -- --branch demo --machines 40 [--url mqtt://127.0.0.1:1884] [--credentials file] [--rate 1]
 * [--seed N] [--duration s]`: a fleet of simulated machines against a branch gateway (or any MQTT broker).
 * Ctrl-C or SIGTERM sets every machine offline and disconnects cleanly.
 */
import { Command, InvalidArgumentError, Option } from '@commander-js/extra-typings';
import Table from 'cli-table3';
import { createLogger } from '../../tools/runtime/logger.ts';
import { CredentialsError, readCredentials } from './credentials.ts';
import { startFleet, type FleetMachine, type FleetStats } from './fleet.ts';
import { machineIdAt, typeAt } from './machines/index.ts';
import { randomSeed } from './random.ts';

function integer(min: number, max: number) {
  return (value: string) => {
    const n = Number(value);
    if (!Number.isSafeInteger(n) || n < min || n > max)
      throw new InvalidArgumentError(`an integer from ${min} to ${max}`);
    return n;
  };
}

function atLeastZero(max: number) {
  return (value: string) => {
    const n = Number(value);
    if (!Number.isFinite(n) || n < 0 || n > max) throw new InvalidArgumentError(`a number from 0 to ${max}`);
    return n;
  };
}

function positive(max: number) {
  return (value: string) => {
    const n = Number(value);
    if (!Number.isFinite(n) || n <= 0 || n > max) throw new InvalidArgumentError(`a number above 0, at most ${max}`);
    return n;
  };
}

const program = new Command()
  .name('sim')
  .description('Simulated gym machines: one MQTT connection each, FTMS-style telemetry, workouts and status.')
  .option('--branch <id>', 'branch id in the topics', 'demo')
  .option('--machines <n>', 'how many machines (default: 40, or all in --credentials)', integer(1, 100_000))
  .option('--url <url>', "the branch gateway's broker for machines", 'mqtt://127.0.0.1:1884')
  .option('--credentials <file>', 'JSON [{id, secret, type?}] of provisioned machines')
  .option('--rate <hz>', 'telemetry samples per second per machine', positive(1000), 1)
  .option(
    '--seed <n>',
    'seed: the same seed gives the same machine behaviour (default: random, printed)',
    integer(0, 2 ** 31 - 1),
  )
  .option('--duration <s>', 'stop after this many seconds (default: until Ctrl-C)', positive(30 * 24 * 3600))
  .option('--time-scale <x>', 'simulated seconds per real second, to see sessions finish sooner', positive(1000), 1)
  .addOption(
    new Option('--telemetry-qos <qos>', 'QoS of telemetry samples').choices(['0', '1'] as const).default('0' as const),
  )
  .addOption(
    new Option('--log-level <level>', 'log level')
      .choices(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const)
      .default('info' as const)
      .env('LOG_LEVEL'),
  )
  .addOption(
    new Option('--log-format <format>', 'json (a line per event) or pretty (default: pretty on a terminal)')
      .choices(['json', 'pretty'] as const)
      .env('LOG_FORMAT'),
  )
  .option('--stats-every <s>', 'print a progress line every this many seconds (0: never)', atLeastZero(3600), 10);

async function main(): Promise<void> {
  program.parse();
  const opts = program.opts();
  const pretty = opts.logFormat === undefined ? process.stdout.isTTY === true : opts.logFormat === 'pretty';
  const log = createLogger({ name: 'sim', level: opts.logLevel, pretty });
  let machines: FleetMachine[];
  if (opts.credentials) {
    const all = await readCredentials(opts.credentials);
    const count = opts.machines ?? all.length;
    if (count > all.length)
      throw new CredentialsError(`--machines ${count}, but ${opts.credentials} has ${all.length}`);
    machines = all.slice(0, count);
  } else {
    const count = opts.machines ?? 40;
    machines = Array.from({ length: count }, (_, i) => ({ id: machineIdAt(i), type: typeAt(i) }));
  }
  const seed = opts.seed ?? randomSeed();
  const fleet = startFleet({
    url: opts.url,
    branch: opts.branch,
    machines,
    rate: opts.rate,
    seed,
    timeScale: opts.timeScale,
    telemetryQos: opts.telemetryQos === '1' ? 1 : 0,
    log: log.child({ module: 'fleet' }),
  });
  log.info(
    { branch: opts.branch, url: opts.url, machines: machines.length, rate: opts.rate, seed },
    `starting ${machines.length} machines (replay with --seed ${seed})`,
  );

  const started = Date.now();
  const progress =
    opts.statsEvery > 0
      ? setInterval(() => log.info(summary(fleet.stats(), started), 'fleet'), opts.statsEvery * 1000)
      : undefined;
  fleet.whenConnected(60_000).then(
    () => log.info({ machines: machines.length }, 'all machines connected'),
    (err: Error) => log.warn({ err: err.message }, 'not every machine has connected yet'),
  );

  let stopping = false;
  const stop = async (why: string) => {
    if (stopping) return;
    stopping = true;
    clearInterval(progress);
    clearTimeout(durationTimer);
    log.info({ why }, 'stopping: machines go offline');
    await fleet.stop();
    printReport(fleet.stats(), started);
    process.exitCode = 0;
  };
  const durationTimer = opts.duration ? setTimeout(() => void stop('duration'), opts.duration * 1000) : undefined;
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.on(signal, () => {
      if (stopping) process.exit(130); // a second Ctrl-C: leave now
      void stop(signal);
    });
  }
}

function summary(stats: FleetStats, started: number) {
  const seconds = (Date.now() - started) / 1000;
  const total = Object.values(stats.published).reduce((a, b) => a + b, 0);
  return {
    connected: `${stats.connected}/${stats.machines}`,
    msgPerS: Math.round(total / seconds),
    published: stats.published,
    acked: stats.acked,
    pendingAcks: stats.pendingAcks,
    dropped: stats.dropped,
    reconnects: stats.reconnects,
    ackP99Ms: stats.ackLatencyUs.p99 / 1000,
  };
}

function printReport(stats: FleetStats, started: number): void {
  const seconds = (Date.now() - started) / 1000;
  const plain = process.stdout.isTTY !== true;
  const table = new Table({ head: ['what', 'value'], ...(plain ? { style: { head: [], border: [] } } : {}) });
  const total = Object.values(stats.published).reduce((a, b) => a + b, 0);
  table.push(
    ['run time', `${seconds.toFixed(1)} s`],
    ['machines (connected at the end)', `${stats.machines} (${stats.connected})`],
    ['connects / reconnects', `${stats.connects} / ${stats.reconnects}`],
    ...Object.entries(stats.published).map(([kind, n]) => [`published ${kind}`, String(n)]),
    ['published, all', `${total} (${Math.round(total / seconds)}/s, ${(stats.publishedBytes / 1e6).toFixed(1)} MB)`],
    ['QoS 1 acknowledged / still pending', `${stats.acked} / ${stats.pendingAcks}`],
    ['dropped / errors', `${stats.dropped} / ${stats.errors}`],
    [
      'PUBACK latency p50 / p99 / max',
      `${ms(stats.ackLatencyUs.p50)} / ${ms(stats.ackLatencyUs.p99)} / ${ms(stats.ackLatencyUs.max)}`,
    ],
  );
  process.stdout.write(`${table.toString()}\n`);
}

const ms = (us: number) => `${(us / 1000).toFixed(1)} ms`;

main().catch((err: unknown) => {
  process.stderr.write(`sim: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(err instanceof CredentialsError ? 2 : 1);
});
