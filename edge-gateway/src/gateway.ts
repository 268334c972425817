/**
 * The gateway assembled: machines file → uplink queue → intake → local broker for machines, forwarder to the
 * cloud, health endpoint. Started in that order; stopped by publishing the offline state first, then closing the
 * intake, then the rest. main.ts runs it as a process; tests start it in-process from the same factory.
 */
import { newBootId } from '../../protocol/index.ts';
import type { BootId } from '../../protocol/index.ts';
import type { Clock } from '../../tools/runtime/clock.ts';
import type { Logger } from '../../tools/runtime/logger.ts';
import { DEFAULT_ACCESS_CONFIG } from './access/config.ts';
import { createGatewayAccess, type GatewayAccess } from './access/gateway-access.ts';
import { createSwitchableMachines } from './cloud-config/machine-set.ts';
import type { GatewayConfig } from './config.ts';
import { resolveIdentity } from './enrolment/identity.ts';
import { createHealthServer, type HealthServer } from './health/health-server.ts';
import { createLocalBroker, type LocalBroker } from './local-broker/broker.ts';
import { createCommandRelay } from './local-broker/command-relay.ts';
import { createIntake } from './local-broker/intake.ts';
import { createRejectedList, type RejectedList } from './local-broker/rejected.ts';
import type { MachineRegistry } from './machines-file.ts';
import { createGatewayMetrics, type GatewayMetrics } from './metrics.ts';
import { createForwarder, type Forwarder } from './uplink/forwarder.ts';
import { createQueueMonitor, type QueueMonitor } from './uplink/queue-monitor.ts';
import type { UplinkQueue } from './uplink/queue.ts';
import type { FullReason } from './uplink/sqlite-queue.ts';
import type { QueuePragmas } from './health/health-server.ts';
import { WorkerSqliteQueue } from './uplink/worker-queue.ts';
import { version } from './version.ts';

export interface StartGatewayOptions {
  readonly config: GatewayConfig;
  readonly log: Logger;
  readonly clock: Clock;
  /** Defaults to the durable SQLite queue (in its worker thread) under GATEWAY_DATA_DIR; unit tests may pass one. */
  readonly queue?: UplinkQueue;
  /** Defaults to true; tests side by side may skip process metrics. */
  readonly defaultMetrics?: boolean;
}

export interface RunningGateway {
  readonly machines: MachineRegistry;
  /** Access path, signed configuration and allow-list (edge-gateway/src/access, cloud-config). */
  readonly access: GatewayAccess;
  readonly bootId: BootId;
  readonly queue: UplinkQueue;
  /** Drain rate and offline-hours forecast of the queue. */
  readonly queueMonitor: QueueMonitor;
  readonly rejected: RejectedList;
  readonly forwarder: Forwarder;
  readonly metrics: GatewayMetrics;
  /** Where machines connect (the chosen port when configured with 0). */
  readonly brokerPort: number;
  /** Where /health and /metrics answer. */
  readonly healthPort: number;
  /** Offline state to the cloud, then intake closed, then everything else. Safe to call twice. */
  stop(): Promise<void>;
}

export async function startGateway(options: StartGatewayOptions): Promise<RunningGateway> {
  const { config, log, clock } = options;
  const nowMs = () => clock.nowMs();
  // Identity from the enrolment, or from GATEWAY_SECRET and the machines file; machines switchable at run time.
  const identity = await resolveIdentity(config);
  const machines = createSwitchableMachines(identity.machines);
  const { secret, ca } = identity;
  const bootId = newBootId();
  const metrics = createGatewayMetrics({ defaultMetrics: options.defaultMetrics ?? true });
  // Forwarder and queue reference each other's alarms: bound once both exist.
  const late: {
    broker?: LocalBroker;
    commands?: (topic: string, payload: Buffer) => void;
    forwarder?: Forwarder;
  } = {};
  const queueLog = log.child({ module: 'queue' });
  let fullReason: FullReason | undefined;
  const queue =
    options.queue ??
    (await WorkerSqliteQueue.open({
      file: config.queue.file,
      capRecords: config.queue.capRecords,
      capBytes: config.queue.capBytes,
      commitDelayMs: config.queue.commitDelayMs,
      commitMaxRows: config.queue.commitMaxRows,
      ...(config.queue.maxPages === undefined ? {} : { maxPageCount: config.queue.maxPages }),
      onCommit: (rows) => metrics.queueCommitRows.observe(rows),
      onStorageError: () => metrics.queueStorageErrors.inc(),
      onFullChange: (full, reason, detail) => {
        // The alarm (RELIABILITY G9/G10): health and metrics read `full` directly; the log line and the retained
        // state go out now, not at the next refresh.
        fullReason = reason;
        metrics.queueFull.set(full ? 1 : 0);
        if (full) queueLog.error({ reason, detail }, 'uplink queue full: new records are refused (no PUBACK)');
        else queueLog.warn({ detail }, 'uplink queue accepts records again');
        late.forwarder?.publishState();
      },
    }));
  const queueMonitor = createQueueMonitor({
    stats: () => queue.stats(),
    nowMs,
    log: queueLog,
    minOfflineHours: config.queue.minOfflineHours,
    dataDir: options.queue === undefined ? config.dataDir : undefined,
  });
  queueLog.info(
    {
      file: options.queue === undefined ? config.queue.file : undefined,
      depth: queue.stats().depth,
      capRecords: config.queue.capRecords,
      capBytes: config.queue.capBytes,
      // As read back from the file (WorkerSqliteQueue checked them at open); an injected queue has none.
      ...queuePragmas(queue).pragmas,
      maxPages: config.queue.maxPages,
    },
    'uplink queue open',
  );
  const rejected = createRejectedList({
    keep: config.rejectedKeep,
    log: log.child({ module: 'rejected' }),
    nowMs,
    onRejected: (entry) => metrics.intakeRejected.inc({ origin: entry.origin, reason: entry.reason }),
  });

  let access: GatewayAccess;
  try {
    // Loads and verifies the stored signed configuration and allow-list; applies the configuration's machines.
    access = await createGatewayAccess({
      access: config.access ?? DEFAULT_ACCESS_CONFIG,
      dataDir: config.dataDir,
      gatewayId: machines.gatewayId,
      branch: machines.branch,
      bootId,
      configKeys: identity.configKeys,
      machines,
      queue,
      nowMs,
      log: log.child({ module: 'access' }),
      registry: metrics.registry,
    });
  } catch (err) {
    await queue.close();
    throw err;
  }

  let stopping = false;
  // The forwarder asks the broker for its client count and hands it commands; the broker is built after it.

  const forwarder = createForwarder({
    config: { ...config.uplink, url: identity.uplinkUrl },
    gatewayId: machines.gatewayId,
    branch: machines.branch,
    secret,
    ca,
    queue,
    rejected,
    metrics,
    log: log.child({ module: 'uplink' }),
    nowMs,
    bootId,
    version,
    machinesConnected: () => late.broker?.machinesConnected ?? 0,
    onMachineCommand: (topic, payload) => late.commands?.(topic, payload),
    onGatewayMessage: (topic, payload) => access.onGatewayMessage(topic, payload),
    birthExtras: () => access.birthExtras(),
    queueExtras: () => {
      const insight = queueMonitor.insight();
      return {
        drainPerS: insight.drainPerS,
        ...(insight.offlineHoursLeft === null ? {} : { offlineHoursLeft: insight.offlineHoursLeft }),
        ...(fullReason === undefined ? {} : { fullReason }),
      };
    },
  });
  late.forwarder = forwarder;
  const intake = createIntake({
    queue,
    rejected,
    metrics,
    nowMs,
    log: log.child({ module: 'intake' }),
    onQueued: (queued) => forwarder.wake(queued),
    relay: (topic, payload) => forwarder.relay(topic, payload),
    maxTelemetryHz: config.telemetryMaxHz,
    ...(config.eventMaxHz === undefined ? {} : { maxEventHz: config.eventMaxHz }),
  });
  const broker: LocalBroker = createLocalBroker({
    config: config.broker,
    machines,
    // Machines' qr-scanned / nfc-tapped events, once queued, also become link decisions.
    intake: access.wrapIntake(intake),
    // A machine connected again: what it resends now comes in its order (see UplinkQueue.append).
    onMachineConnected: (machine) => {
      intake.release(machine);
      queue.releaseSource(machine);
    },
    metrics,
    log: log.child({ module: 'local-broker' }),
  });
  late.broker = broker;
  late.commands = createCommandRelay({
    machines,
    broker,
    rejected,
    metrics,
    log: log.child({ module: 'commands' }),
  });
  access.attach({
    publishToCloud: (topic, payload) => forwarder.relay(topic, payload),
    wake: () => forwarder.wake(),
    publishState: () => forwarder.publishState(),
    machineCommand: (topic, payload) => broker.publish(topic, payload),
    disconnectRemovedMachines: () => broker.disconnectRemoved(),
  });
  let listening = false;
  const health: HealthServer = createHealthServer({
    host: config.health.host,
    port: config.health.port,
    metrics,
    log: log.child({ module: 'health' }),
    sources: {
      gatewayId: machines.gatewayId,
      branch: machines.branch,
      bootId,
      version,
      nowMs,
      uplink: () => forwarder.status(),
      queue: () => queue.stats(),
      queueInsight: () => queueMonitor.insight(),
      queueFullReason: () => fullReason,
      queuePragmas: () => queuePragmas(queue).pragmas,
      machinesConnected: () => late.broker?.machinesConnected ?? 0,
      intakeListening: () => listening,
      rejected: () => ({ total: rejected.total, byReason: rejected.counts() }),
      stopping: () => stopping,
      access: () => access.status(),
    },
  });

  const started: (() => Promise<void>)[] = [];
  try {
    await broker.start();
    listening = true;
    started.push(() => broker.stop());
    forwarder.start();
    started.push(() => forwarder.stop());
    access.start();
    started.push(() => access.stop());
    queueMonitor.start();
    started.push(() => Promise.resolve(queueMonitor.stop()));
    await health.start();
    started.push(() => health.stop());
  } catch (err) {
    for (const stop of started.reverse()) await stop().catch(() => undefined);
    await queue.close();
    throw err;
  }
  log.info(
    { gateway: machines.gatewayId, branch: machines.branch, bootId, uplink: config.uplink.url },
    'gateway started',
  );

  let stopped: Promise<void> | undefined;
  return {
    machines,
    access,
    bootId,
    queue,
    queueMonitor,
    rejected,
    forwarder,
    metrics,
    brokerPort: broker.port,
    healthPort: health.port,
    stop() {
      stopped ??= (async () => {
        stopping = true;
        // Readers first: decisions still running finish (offline) and queue their records.
        await access.stop();
        await forwarder.stop();
        listening = false;
        await broker.stop();
        await health.stop();
        queueMonitor.stop();
        const left = queue.stats();
        if (left.depth > 0) {
          log.warn({ depth: left.depth }, 'records still queued at shutdown');
        }
        await queue.close();
        log.info('gateway stopped');
      })();
      return stopped;
    },
  };
}

/** The durability PRAGMAs the queue runs with, as read back from its file, and the policy stated from them. */
function queuePragmas(queue: UplinkQueue): { pragmas?: QueuePragmas } {
  const read = (queue as { pragmas?: unknown }).pragmas;
  if (typeof read !== 'object' || read === null) return {};
  const p = read as { journalMode: string; synchronous: number; lockingMode: string };
  const synchronous = SYNCHRONOUS_NAMES[p.synchronous] ?? String(p.synchronous);
  return { pragmas: { journalMode: p.journalMode, synchronous, lockingMode: p.lockingMode } };
}

/** PRAGMA synchronous values by number (SQLite docs). */
const SYNCHRONOUS_NAMES: Readonly<Record<number, string>> = { 0: 'OFF', 1: 'NORMAL', 2: 'FULL', 3: 'EXTRA' };
