/**
 * The gateway assembled: machines file → uplink queue → intake → local broker for machines, forwarder to the
 * cloud, health endpoint. Started in that order; stopped by publishing the offline state first, then closing the
 * intake, then the rest. main.ts runs it as a process; tests start it in-process from the same factory.
 */
import { readFile } from 'node:fs/promises';
import { newBootId } from '../../protocol/index.ts';
import type { BootId } from '../../protocol/index.ts';
import type { Clock } from '../../tools/runtime/clock.ts';
import type { Logger } from '../../tools/runtime/logger.ts';
import type { GatewayConfig } from './config.ts';
import { createHealthServer, type HealthServer } from './health/health-server.ts';
import { createLocalBroker, type LocalBroker } from './local-broker/broker.ts';
import { createCommandRelay } from './local-broker/command-relay.ts';
import { createIntake } from './local-broker/intake.ts';
import { createRejectedList, type RejectedList } from './local-broker/rejected.ts';
import { loadMachinesFile, type MachineRegistry } from './machines-file.ts';
import { createGatewayMetrics, type GatewayMetrics } from './metrics.ts';
import { createForwarder, type Forwarder } from './uplink/forwarder.ts';
import { MemoryQueue } from './uplink/memory-queue.ts';
import type { UplinkQueue } from './uplink/queue.ts';
import { version } from './version.ts';

export interface StartGatewayOptions {
  readonly config: GatewayConfig;
  readonly log: Logger;
  readonly clock: Clock;
  /** Defaults to a MemoryQueue with the configured caps (tests pass one with a hook). */
  readonly queue?: UplinkQueue;
  /** Defaults to true; tests side by side may skip process metrics. */
  readonly defaultMetrics?: boolean;
}

export interface RunningGateway {
  readonly machines: MachineRegistry;
  readonly bootId: BootId;
  readonly queue: UplinkQueue;
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

async function readSecret(config: GatewayConfig): Promise<string> {
  if ('value' in config.secret) return config.secret.value;
  const text = await readFile(config.secret.file, 'utf8');
  const secret = text.trim();
  if (secret.length === 0) throw new Error(`GATEWAY_SECRET_FILE ${config.secret.file} is empty`);
  return secret;
}

export async function startGateway(options: StartGatewayOptions): Promise<RunningGateway> {
  const { config, log, clock } = options;
  const nowMs = () => clock.nowMs();
  const machines = await loadMachinesFile(config.machinesFile);
  const secret = await readSecret(config);
  const ca = config.uplink.caFile === undefined ? undefined : await readFile(config.uplink.caFile);
  const bootId = newBootId();
  const metrics = createGatewayMetrics({ defaultMetrics: options.defaultMetrics ?? true });
  const queue = options.queue ?? new MemoryQueue(config.queue);
  const rejected = createRejectedList({
    keep: config.rejectedKeep,
    log: log.child({ module: 'rejected' }),
    nowMs,
    onRejected: (entry) => metrics.intakeRejected.inc({ origin: entry.origin, reason: entry.reason }),
  });

  let stopping = false;
  // The forwarder asks the broker for its client count and hands it commands; the broker is built after it.
  const late: { broker?: LocalBroker; commands?: (topic: string, payload: Buffer) => void } = {};

  const forwarder = createForwarder({
    config: config.uplink,
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
  });
  const intake = createIntake({
    queue,
    rejected,
    metrics,
    nowMs,
    log: log.child({ module: 'intake' }),
    onQueued: () => forwarder.wake(),
    relay: (topic, payload) => forwarder.relay(topic, payload),
    maxTelemetryHz: config.telemetryMaxHz,
  });
  const broker: LocalBroker = createLocalBroker({
    config: config.broker,
    machines,
    intake,
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
      machinesConnected: () => late.broker?.machinesConnected ?? 0,
      intakeListening: () => listening,
      rejected: () => ({ total: rejected.total, byReason: rejected.counts() }),
      stopping: () => stopping,
    },
  });

  const started: (() => Promise<void>)[] = [];
  try {
    await broker.start();
    listening = true;
    started.push(() => broker.stop());
    forwarder.start();
    started.push(() => forwarder.stop());
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
    bootId,
    queue,
    rejected,
    forwarder,
    metrics,
    brokerPort: broker.port,
    healthPort: health.port,
    stop() {
      stopped ??= (async () => {
        stopping = true;
        await forwarder.stop();
        listening = false;
        await broker.stop();
        await health.stop();
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
