/**
 * The coordinator of a run: sets up what the scenario drives (stack.ts), splits the machines over `processes`
 * simulator processes (worker.ts; machine i goes to process i mod processes), plays the scenario's events at their
 * times, merges the processes' results into one report and evaluates the scenario's checks.
 */
import { cp, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { Logger } from 'pino';
import { spawnService, type ServiceProcess } from '../../tools/services/index.ts';
import { machineInfo } from '../../tools/bench/system.ts';
import type { FleetMachine } from './fleet.ts';
import { accessChecks, runChecks } from './report/checks.ts';
import {
  mergeResults,
  type GatewayQueueLeft,
  type RunEvent,
  type RunReport,
  type WorkerResult,
} from './report/report.ts';
import type { Scenario, ScenarioEvent, Settings } from './scenario.ts';
import { provisionRun, retireRun, type BranchDesk } from './provision.ts';
import { waitForStoredAccess } from './report/access.ts';
import { readGatewayQueue, settleLost, type GatewayQueue } from './report/queued.ts';
import {
  hubFromFile,
  repoRoot,
  startGateway,
  startOwnHub,
  type GatewayHandle,
  type Hub,
  type HubFile,
} from './stack.ts';
import { runWorker, type Progress, type WorkerPlan } from './worker.ts';

export type Target =
  | {
      readonly kind: 'attach';
      readonly url: string;
      readonly branch: string;
      readonly machines: readonly FleetMachine[];
      readonly mongoUrl?: string | undefined;
    }
  | { readonly kind: 'npm-start'; readonly hub: HubFile }
  | {
      readonly kind: 'own';
      readonly mongoUrl?: string | undefined;
      readonly redisUrl?: string | undefined;
      /** The database the own hub uses (default: a fresh one per run). */
      readonly database?: string | undefined;
    };

export interface RunOptions {
  readonly scenario: Scenario;
  readonly settings: Settings;
  readonly seed: number;
  readonly processes: number;
  readonly target: Target;
  readonly log: Logger;
  /** Every second: the processes' progress summed, and the seconds elapsed. */
  readonly onProgress?: (progress: Progress, elapsedS: number) => void;
  readonly onEvent?: (event: RunEvent) => void;
  /** Resolves when the user wants the run to end now (Ctrl-C). */
  readonly interrupted?: Promise<void>;
  /** A directory for the run's gateways' logs (`<gateway id>.log`); default: none kept. */
  readonly logDir?: string | undefined;
  /**
   * Where a gateway's data directory is kept when it stopped with entries still queued (`<dir>/<gateway id>`), so it
   * can be started again to deliver them (npm start's hub lives on); default: removed with the run.
   */
  readonly queueDir?: string | undefined;
}

const sumProgress = (all: readonly Progress[]): Progress => ({
  sent: all.reduce((s, p) => s + p.sent, 0),
  acked: all.reduce((s, p) => s + p.acked, 0),
  errors: all.reduce((s, p) => s + p.errors, 0),
  dropped: all.reduce((s, p) => s + p.dropped, 0),
  connected: all.reduce((s, p) => s + p.connected, 0),
  reconnects: all.reduce((s, p) => s + p.reconnects, 0),
  // Merged exactly in the report; for the live line the worst process is what matters.
  p99Us: Math.max(0, ...all.map((p) => p.p99Us)),
  phase: all.some((p) => p.phase === 'connect') ? 'connect' : all.some((p) => p.phase === 'run') ? 'run' : 'drain',
  outstanding: all.reduce((s, p) => s + (p.outstanding ?? 0), 0),
  // Every process asks the same gateways: the largest answer is the latest.
  ...(all.some((p) => p.queued !== undefined) ? { queued: Math.max(...all.map((p) => p.queued ?? 0)) } : {}),
});

export async function runScenario(options: RunOptions): Promise<RunReport> {
  const { scenario, settings, target, log } = options;
  const events: RunEvent[] = [];
  const startedAt = new Date().toISOString();
  const work = await mkdtemp(path.join(os.tmpdir(), 'nxg-sim-'));
  let hub: Hub | undefined;
  const gateways: GatewayHandle[] = [];
  const children: ServiceProcess[] = [];
  let desks: BranchDesk[] = [];
  let retire: ((keep: ReadonlySet<string>) => Promise<void>) | undefined;
  /** Gateways whose identity stays (their kept queue still has to be delivered). */
  const keepIdentities = new Set<string>();
  try {
    if (scenario.needs === 'own-cloud' && target.kind !== 'own')
      throw new Error(`scenario ${scenario.name} restarts the cloud: run it with --stack own`);
    if (scenario.needs === 'gateways' && target.kind === 'attach')
      throw new Error(`scenario ${scenario.name} kills a gateway: run it against npm start or with --stack own`);

    let machines: FleetMachine[];
    let mongoUrl: string | undefined;
    let url = 'mqtt://127.0.0.1:1884';
    let branch = 'demo';
    let targetLabel: string;
    if (target.kind === 'attach') {
      machines = [...target.machines];
      mongoUrl = target.mongoUrl;
      url = target.url;
      branch = target.branch;
      targetLabel = `broker ${target.url} (branch ${target.branch})`;
    } else {
      hub =
        target.kind === 'own'
          ? await startOwnHub({
              dir: path.join(work, 'hub'),
              mongoUrl: target.mongoUrl,
              redisUrl: target.redisUrl,
              ...(target.database ? { database: target.database } : {}),
            })
          : hubFromFile(target.hub);
      mongoUrl = hub.mongoUrl;
      const runTag = `sim${Date.now().toString(36)}`;
      const dir = path.join(work, 'gateways');
      await mkdir(dir, { recursive: true });
      log.info(
        {
          branches: settings.branches,
          gateways: settings.gatewaysPerBranch,
          machines: settings.machines,
          members: settings.members,
        },
        'provisioning the run’s branches, enrolled gateways, machines, door readers and members',
      );
      const provisioned = await provisionRun(hub.mongoUrl, hub.apiUrl, {
        runTag,
        branches: settings.branches,
        gatewaysPerBranch: settings.gatewaysPerBranch,
        machinesPerBranch: settings.machines,
        membersPerBranch: settings.members,
        mix: settings.mix,
        dir,
        log: (msg) => log.info(msg),
      });
      desks = provisioned.desks;
      const runHub = hub;
      // npm start's hub outlives the run: its identities are disabled at the end (an own hub goes away whole).
      if (target.kind === 'npm-start')
        retire = async (keep) => {
          const n = await retireRun(
            runHub.mongoUrl,
            provisioned.identities.filter((id) => !keep.has(id)),
          );
          log.info({ identities: n }, 'the run’s gateway and machine identities are disabled');
        };
      if (options.logDir) await mkdir(options.logDir, { recursive: true, mode: 0o700 });
      for (const gateway of provisioned.gateways)
        gateways.push(
          await startGateway(gateway, hub, options.logDir ? path.join(options.logDir, `${gateway.id}.log`) : undefined),
        );
      machines = provisioned.gateways.flatMap((gateway) => gateway.machines);
      targetLabel =
        target.kind === 'own'
          ? `own hub (cloud ${hub.apiUrl}), branches ${runTag}-b1…`
          : `npm start's hub (${hub.apiUrl}), branches ${runTag}-b1…`;
    }

    const processes = Math.max(1, Math.min(options.processes, machines.length));
    const plans: WorkerPlan[] = Array.from({ length: processes }, (_, worker) => ({
      worker,
      seed: options.seed,
      url,
      branch,
      machines: machines.filter((_m, i) => i % processes === worker),
      settings,
      mongoUrl,
      queueUrls: gateways.map((gateway) => gateway.healthUrl),
      desks,
      processes,
    }));

    const progress: Progress[] = plans.map(() => ({
      sent: 0,
      acked: 0,
      errors: 0,
      dropped: 0,
      connected: 0,
      reconnects: 0,
      p99Us: 0,
      phase: 'connect',
    }));
    const started = performance.now();
    const elapsedS = () => (performance.now() - started) / 1000;
    const progressTimer = setInterval(() => options.onProgress?.(sumProgress(progress), elapsedS()), 1000);

    // The scenario's events, at their times after the fleet connected (every process past its connect phase): a
    // large fleet takes a while to connect, and "a third into the run" means into the run, not into the connecting.
    const timers: NodeJS.Timeout[] = [];
    let eventsArmed = false;
    const onWorkerProgress = (i: number, p: Progress) => {
      progress[i] = p;
      if (eventsArmed || progress.some((x) => x.phase === 'connect')) return;
      eventsArmed = true;
      const record = { t: elapsedS(), what: 'fleet connected' };
      events.push(record);
      options.onEvent?.(record);
      for (const event of scenario.events?.(settings) ?? [])
        timers.push(setTimeout(() => void play(event), event.atS * 1000));
    };
    const play = async (event: ScenarioEvent) => {
      const what =
        event.action === 'restart-cloud' ? 'cloud restarts' : `${event.action} ${gateways[event.gateway ?? 0]?.id}`;
      const record = { t: elapsedS(), what };
      events.push(record);
      options.onEvent?.(record);
      try {
        if (event.action === 'restart-cloud') await hub!.restartCloud!();
        else if (event.action === 'kill-gateway') await gateways[event.gateway ?? 0]!.kill();
        else await gateways[event.gateway ?? 0]!.start();
        const done = { t: elapsedS(), what: `${what}: done` };
        events.push(done);
        options.onEvent?.(done);
      } catch (err) {
        log.error({ err: (err as Error).message }, `scenario event failed: ${what}`);
        events.push({ t: elapsedS(), what: `${what}: FAILED ${(err as Error).message}` });
      }
    };

    let results: WorkerResult[];
    if (processes === 1) {
      const control = runWorker(plans[0]!, (p) => onWorkerProgress(0, p), log.child({ module: 'fleet' }));
      void options.interrupted?.then(() => control.stop());
      results = [await control.result];
    } else {
      results = await Promise.all(
        plans.map(async (plan, i) => {
          const planFile = path.join(work, `plan-${i}.json`);
          const resultFile = path.join(work, `result-${i}.json`);
          await writeFile(planFile, JSON.stringify(plan), { mode: 0o600 });
          const child = await spawnService({
            name: `sim worker ${i}`,
            command: process.execPath,
            args: [path.join(repoRoot, 'simulators/src/worker.ts'), planFile, resultFile],
            cwd: repoRoot,
            env: { ...process.env },
            parentDeathSignal: 'SIGTERM',
            onLine: (line) => {
              if (!line.startsWith('{"progress"')) return;
              onWorkerProgress(i, (JSON.parse(line) as { progress: Progress }).progress);
            },
          });
          children.push(child);
          void options.interrupted?.then(() => process.kill(child.pid, 'SIGTERM'));
          const exit = await child.exited;
          if (exit.code !== 0)
            throw new Error(`simulator process ${i} failed (${exit.signal ?? exit.code}):\n${child.recentOutput()}`);
          return JSON.parse(await readFile(resultFile, 'utf8')) as WorkerResult;
        }),
      );
    }
    for (const timer of timers) clearTimeout(timer);
    clearInterval(progressTimer);
    options.onProgress?.(sumProgress(progress), elapsedS());

    const host = machineInfo();
    const report = mergeResults(
      {
        scenario: scenario.name,
        description: scenario.description,
        seed: options.seed,
        startedAt,
        branches: target.kind === 'attach' ? 1 : settings.branches,
        gateways: gateways.length,
        members: settings.members * (target.kind === 'attach' ? 1 : settings.branches),
        target: targetLabel,
        host: { cpuModel: host.cpuModel, cores: host.cores, node: host.node },
        events,
      },
      results,
    );
    // The gateways stop (their queues persisted); what they still hold is late, not lost (report/queued.ts).
    let settled = report;
    if (gateways.length > 0) {
      const queues: GatewayQueue[] = [];
      for (const gateway of gateways) {
        await gateway.stop();
        queues.push(readGatewayQueue(gateway.id, gateway.dataDir));
      }
      const left: GatewayQueueLeft[] = [];
      for (const q of queues) {
        const total = Object.values(q.byLane).reduce((a, b) => a + b, 0);
        let keptIn: string | undefined;
        if (total > 0 && options.queueDir && target.kind === 'npm-start' && hub) {
          keptIn = path.join(options.queueDir, q.gateway);
          await cp(q.dataDir, keptIn, { recursive: true });
          keepIdentities.add(q.gateway);
          log.warn(
            { gateway: q.gateway, queued: q.byLane, keptIn },
            `gateway ${q.gateway} stopped with ${total} entries queued, kept in ${keptIn}; to deliver them: ` +
              `GATEWAY_DATA_DIR=${keptIn} GATEWAY_UPLINK_URL=${hub.mqttTlsUrl} GATEWAY_UPLINK_CA_FILE=${hub.caFile} ` +
              'GATEWAY_MQTT_PORT=18840 GATEWAY_HEALTH_PORT=18841 npm run gateway',
          );
        }
        left.push({ gateway: q.gateway, byLane: q.byLane, ...(keptIn ? { keptIn } : {}) });
      }
      const persisted =
        report.persisted && mongoUrl ? await settleLost(mongoUrl, report.persisted, queues) : report.persisted;
      settled = {
        ...report,
        gatewayQueues: left,
        persisted,
        lost: persisted ? persisted.records.lost + persisted.telemetry.lost : report.lost,
      };
    }
    // What the hub made of the members' visits: sessions and links, read back once for the whole run.
    const withAccess =
      settled.access && mongoUrl
        ? {
            ...settled,
            access: {
              ...settled.access,
              stored: await waitForStoredAccess(
                mongoUrl,
                desks.map((d) => d.branch),
                {
                  checkIns: settled.access.desk.checkInTaps,
                  checkOuts: settled.access.desk.checkOutTaps,
                  links: settled.access.links.linked,
                },
                { timeoutMs: Math.max(10_000, settings.drainS * 1000) },
              ),
            },
          }
        : settled;
    return runChecks(withAccess, [...scenario.checks(settings), ...(withAccess.access ? accessChecks : [])]);
  } finally {
    for (const child of children) await child.stop(5_000).catch(() => undefined);
    for (const gateway of gateways) await gateway.stop().catch(() => undefined);
    await retire?.(keepIdentities).catch((err: unknown) =>
      log.warn({ err }, 'the run’s identities could not be disabled'),
    );
    await hub?.stop().catch(() => undefined);
    await rm(work, { recursive: true, force: true });
  }
}
