/**
 * `npm run sim -- [--scenario <name>] [options]`: fleets of simulated gym machines for demos, QA and load tests.
 *
 * Where the machines go:
 * - `--url <broker>` (and `--credentials <file>`): machines connect to that broker — npm start's own fleet runs so;
 * - default: the hub `npm start` runs (found through `<data dir>/hub.json`): `--branch demo` drives the demo
 *   branch's provisioned machines; otherwise the run provisions branches, gateways and machines of its own and
 *   starts their gateways;
 * - `--stack own`: a hub of the run's own (databases and cloud), stopped at the end.
 *
 * A run ends after `--duration` seconds (a scenario has its own; without a scenario or duration it runs until
 * Ctrl-C), then waits for MongoDB to hold what was acknowledged and prints the report; `--report` names the JSON and
 * HTML files written next to it.
 */
import { Command, InvalidArgumentError, Option } from '@commander-js/extra-typings';
import cliProgress from 'cli-progress';
import path from 'node:path';
import { createLogger } from '../../tools/runtime/logger.ts';
import { CredentialsError, readCredentials } from './credentials.ts';
import type { FleetMachine } from './fleet.ts';
import { isSimulatedType, machineIdAt, typeAt, type SimulatedMachineType } from './machines/index.ts';
import { randomSeed } from './random.ts';
import { renderTable, writeReport } from './report/output.ts';
import { runScenario, type Target } from './run.ts';
import { DEFAULT_SETTINGS, loadScenario, scenarioNames, type Settings } from './scenario.ts';
import { readHubFile, repoRoot } from './stack.ts';

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

function share(value: string) {
  const n = Number(value);
  if (!Number.isFinite(n) || n < 0 || n > 1) throw new InvalidArgumentError('a share from 0 to 1');
  return n;
}

/** `treadmill,rower,selectorised` or `treadmill=5,rower=2`: the types cycled through per branch. */
function mix(value: string): SimulatedMachineType[] {
  const out: SimulatedMachineType[] = [];
  for (const part of value.split(',')) {
    const [type, count = '1'] = part.trim().split('=');
    if (!type || !isSimulatedType(type)) throw new InvalidArgumentError(`unknown machine type ${type}`);
    const n = Number(count);
    if (!Number.isSafeInteger(n) || n < 1 || n > 1000) throw new InvalidArgumentError(`${part}: count 1…1000`);
    for (let i = 0; i < n; i++) out.push(type);
  }
  return out;
}

const program = new Command()
  .name('sim')
  .description(
    'Simulated gym machines — one MQTT connection each, FTMS-style telemetry, workouts, status — driven by a scenario, with a report at the end (table, JSON, HTML).',
  )
  .option('--scenario <name>', 'scenario: a name under simulators/scenarios/ or a .ts file', 'steady')
  .option('--list-scenarios', 'list the scenarios and exit')
  .addOption(
    new Option('--stack <kind>', "what to drive: npm start's hub (default), or a hub of the run's own").choices([
      'npm-start',
      'own',
    ] as const),
  )
  .option('--data-dir <dir>', "npm start's data directory (its hub.json)", path.join(repoRoot, 'data'))
  .option('--url <url>', 'connect the machines to this broker instead (e.g. a gateway: mqtt://127.0.0.1:1884)')
  .option('--credentials <file>', 'with --url: JSON [{id, secret, type?}] of provisioned machines')
  .option('--branch <id>', 'branch id in the topics (with --url; `demo` drives the npm start demo branch)')
  .option('--mongo-url <url>', 'MongoDB (with its database) to read the run back from; with --stack own, to use')
  .option('--redis-url <url>', 'with --stack own: Redis to use')
  .option('--branches <n>', 'branches', integer(1, 1000))
  .option('--gateways <n>', 'gateways per branch (at least one per 1,000 machines)', integer(1, 100))
  .option('--machines <n>', 'machines per branch (default 40, or all in --credentials)', integer(1, 100_000))
  .option('--mix <types>', 'machine types per branch, cycled: e.g. treadmill=5,indoor-bike=4,selectorised=3', mix)
  .option(
    '--members <n>',
    'members per branch (default: the scenario’s, at least 1.5 per machine)',
    integer(1, 10_000_000),
  )
  .option(
    '--duration <s>',
    'run time (default: the scenario’s; without a scenario and with --url: until Ctrl-C)',
    positive(30 * 24 * 3600),
  )
  .option('--rate <hz>', 'telemetry samples per second per machine', positive(1000))
  .option('--time-scale <x>', 'simulated seconds per real second', positive(1000))
  .option('--start-hour <h>', 'simulated hour of day at the start (arrivals follow the day)', atLeastZero(23.99))
  .addOption(new Option('--telemetry-qos <qos>', 'QoS of telemetry samples').choices(['0', '1'] as const))
  .option('--faults-per-hour <n>', 'machine faults per simulated hour of idle time', atLeastZero(3600))
  .option('--outages-per-hour <n>', 'machine power-offs per simulated hour of idle time', atLeastZero(3600))
  .option('--flapping <share>', 'share of machines that drop their connection every ~10 s', share)
  .option('--bad-payloads <share>', 'share of machines that also send 5 bad payloads/s', share)
  .option('--connect-rate <n>', 'new connections per second per process at the start', positive(100_000))
  .option(
    '--drain <s>',
    'after the run, wait at most this long for MongoDB to hold what was acknowledged',
    atLeastZero(3600),
  )
  .option(
    '--processes <n>',
    'simulator processes sharing the run (a coordinator merges their reports)',
    integer(1, 64),
    1,
  )
  .option(
    '--seed <n>',
    'seed: the same seed gives the same machine behaviour (default: random, printed)',
    integer(0, 2 ** 31 - 1),
  )
  .option('--report <base>', 'write <base>.json and <base>.html (default: <data dir>/sim-reports/<scenario>-<time>)')
  .option('--no-progress', 'no progress bar (a line every --stats-every seconds instead)')
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
  .option(
    '--stats-every <s>',
    'without a progress bar: a progress line every this many seconds (0: never)',
    atLeastZero(3600),
    10,
  );

type Opts = ReturnType<typeof program.opts>;

function settingsFrom(opts: Opts, base: Settings, unbounded: boolean): Settings {
  const pick = <T>(value: T | undefined, fallback: T): T => (value === undefined ? fallback : value);
  return {
    ...base,
    branches: pick(opts.branches, base.branches),
    gatewaysPerBranch: pick(opts.gateways, base.gatewaysPerBranch),
    machines: pick(opts.machines, base.machines),
    mix: pick(opts.mix, base.mix),
    // Enough members that a full floor does not run out of them (each needs a machine and walks between them).
    members: pick(opts.members, Math.max(base.members, Math.ceil(pick(opts.machines, base.machines) * 1.5))),
    durationS: unbounded ? 0 : pick(opts.duration, base.durationS),
    rate: pick(opts.rate, base.rate),
    timeScale: pick(opts.timeScale, base.timeScale),
    startHour: pick(opts.startHour, base.startHour),
    telemetryQos: opts.telemetryQos === undefined ? base.telemetryQos : opts.telemetryQos === '1' ? 1 : 0,
    faultsPerHour: pick(opts.faultsPerHour, base.faultsPerHour),
    outagesPerHour: pick(opts.outagesPerHour, base.outagesPerHour),
    flapping: opts.flapping === undefined ? base.flapping : { share: opts.flapping, everyS: 10 },
    badPayloads: opts.badPayloads === undefined ? base.badPayloads : { share: opts.badPayloads, perS: 5 },
    connectRate: pick(opts.connectRate, base.connectRate),
    drainS: pick(opts.drain, base.drainS),
  };
}

async function main(): Promise<void> {
  program.parse();
  const opts = program.opts();
  if (opts.listScenarios) {
    for (const name of await scenarioNames()) {
      const s = await loadScenario(name);
      process.stdout.write(`${name.padEnd(20)} ${s.description}\n`);
    }
    return;
  }
  const pretty = opts.logFormat === undefined ? process.stdout.isTTY === true : opts.logFormat === 'pretty';
  const log = createLogger({ name: 'sim', level: opts.logLevel, pretty });
  const scenario = await loadScenario(opts.scenario);
  const scenarioGiven = program.getOptionValueSource('scenario') === 'cli';

  // Where the machines go.
  let target: Target;
  let unbounded = false;
  const hubFile = opts.stack === 'own' ? undefined : await readHubFile(opts.dataDir);
  const demo = hubFile?.demo;
  const attachDemo = opts.url === undefined && opts.stack === undefined && demo && opts.branch === demo.branch;
  if (opts.url !== undefined || opts.credentials !== undefined || attachDemo) {
    const credentialsFile = opts.credentials ?? (attachDemo ? demo.credentialsFile : undefined);
    let machines: FleetMachine[];
    if (credentialsFile) {
      const all = await readCredentials(credentialsFile);
      const count = opts.machines ?? all.length;
      if (count > all.length)
        throw new CredentialsError(
          `--machines ${count}, but ${credentialsFile} has ${all.length}` +
            (attachDemo ? ' (a bigger demo: NXG_DEMO_MACHINES on a fresh data directory, or leave out --branch)' : ''),
        );
      machines = all.slice(0, count);
    } else {
      const count = opts.machines ?? 40;
      machines = Array.from({ length: count }, (_, i) => ({ id: machineIdAt(i), type: typeAt(i) }));
    }
    target = {
      kind: 'attach',
      url: opts.url ?? (attachDemo ? demo.gatewayUrl : 'mqtt://127.0.0.1:1884'),
      branch: opts.branch ?? 'demo',
      machines,
      mongoUrl: opts.mongoUrl ?? (attachDemo ? hubFile.mongoUrl : undefined),
    };
    unbounded = opts.duration === undefined && !scenarioGiven;
  } else if (opts.stack === 'own') {
    target = { kind: 'own', mongoUrl: opts.mongoUrl, redisUrl: opts.redisUrl };
  } else {
    if (!hubFile)
      throw new UsageError(
        `no hub found: ${path.join(opts.dataDir, 'hub.json')} is written by npm start. Start it (npm start), or run ` +
          'with --stack own (a hub of the run’s own), or give --url <broker>.',
      );
    target = { kind: 'npm-start', hub: hubFile };
  }
  const settings = settingsFrom(opts, { ...DEFAULT_SETTINGS, ...scenario.settings }, unbounded);
  const seed = opts.seed ?? randomSeed();
  log.info(
    { scenario: scenario.name, target: target.kind, machines: settings.machines, seed },
    `scenario ${scenario.name}: ${scenario.description} (replay with --seed ${seed})`,
  );

  // Progress: a bar on a terminal, else a line now and then.
  const bar =
    opts.progress && process.stderr.isTTY === true
      ? new cliProgress.SingleBar(
          {
            format:
              '{bar} {elapsed}/{limit} s | {rate} msg/s | acked {acked} | err {errors} | dropped {dropped} | p99 {p99} ms | connected {connected} {phase}',
            hideCursor: true,
            clearOnComplete: false,
          },
          cliProgress.Presets.shades_classic,
        )
      : undefined;
  const limit = settings.durationS > 0 ? settings.durationS : 0;
  bar?.start(limit || 1, 0, {
    elapsed: 0,
    limit: limit || '∞',
    rate: 0,
    acked: 0,
    errors: 0,
    dropped: 0,
    p99: 0,
    connected: 0,
    phase: '',
  });
  let lastSent = 0;
  let lastAt = 0;
  let lastLine = 0;
  let interrupt: () => void = () => undefined;
  const interrupted = new Promise<void>((resolve) => (interrupt = resolve));
  let stopping = false;
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.on(signal, () => {
      if (stopping) process.exit(130); // a second Ctrl-C: leave now
      stopping = true;
      log.info({ why: signal }, 'stopping: machines go offline');
      interrupt();
    });
  }

  // Files of a bounded run: <base>.json, <base>.html and the gateways' logs in <base>-logs/.
  const writesFiles = !unbounded || opts.report !== undefined;
  const base =
    opts.report ??
    path.join(opts.dataDir, 'sim-reports', `${scenario.name}-${new Date().toISOString().replace(/[:.]/g, '-')}`);
  const report = await runScenario({
    ...(writesFiles ? { logDir: `${base}-logs`, queueDir: `${base}-queues` } : {}),
    scenario,
    settings,
    seed,
    processes: opts.processes,
    target,
    log,
    interrupted,
    onEvent: (event) => log.info({ t: Math.round(event.t) }, `scenario: ${event.what}`),
    onProgress: (p, elapsedS) => {
      const rate = elapsedS > lastAt ? Math.round((p.sent - lastSent) / (elapsedS - lastAt)) : 0;
      lastSent = p.sent;
      lastAt = elapsedS;
      const fields = {
        elapsed: Math.round(elapsedS),
        limit: limit || '∞',
        rate,
        acked: p.acked,
        errors: p.errors,
        dropped: p.dropped,
        p99: (p.p99Us / 1000).toFixed(1),
        connected: p.connected,
        phase:
          p.phase === 'drain'
            ? `| waiting for MongoDB: ${p.outstanding} acknowledged outstanding` +
              (p.queued === undefined ? '' : `, ${p.queued} queued at the gateways`)
            : p.phase === 'connect'
              ? '| connecting'
              : '',
      };
      if (bar) bar.update(Math.min(limit || 1, Math.round(elapsedS)), fields);
      else if (opts.statsEvery > 0 && elapsedS - lastLine >= opts.statsEvery) {
        lastLine = elapsedS;
        log.info({ ...fields, sent: p.sent, reconnects: p.reconnects }, 'fleet');
      }
    },
  });
  bar?.stop();
  process.stdout.write(renderTable(report, { color: process.stdout.isTTY === true }));
  // A fleet that ran until Ctrl-C (npm start's) writes no files unless asked, and its checks do not fail it.
  if (writesFiles) {
    const files = await writeReport(report, base);
    process.stdout.write(`report: ${files.json}\n        ${files.html}\n`);
    if (report.gateways > 0) process.stdout.write(`gateway logs: ${base}-logs/\n`);
  }
  process.exitCode = unbounded || report.checks.every((check) => check.ok) ? 0 : 3;
}

class UsageError extends Error {}

main().catch((err: unknown) => {
  process.stderr.write(`sim: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(err instanceof CredentialsError || err instanceof UsageError ? 2 : 1);
});
