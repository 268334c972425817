/**
 * Cloud ingest: consumes every gateway's uplink batches (`b/+/gw/+/up/+`) and births/wills (`b/+/gw/+/state`) from
 * the cloud broker, writes batches to MongoDB idempotently, acks on `gw/{gateway}/ack` only after the write, and
 * keeps live machine state in Redis with the retained `live/machines/{machine}` topics.
 *
 *   const ingest = await startIngest({ aedes, mongo, redis, log, clock, metrics, config: config.ingest });
 *   …
 *   await ingest.stop(); // before the broker closes
 *
 * A MongoDB outage stops acks, not the link: the handler never errors into the broker, the batch stays unanswered
 * and the gateway resends it (ARCHITECTURE "Where acknowledged means durable").
 */
import type { Aedes, AedesPublishPacket } from 'aedes';
import type { Redis } from 'ioredis';
import type { Connection } from 'mongoose';
import type { Clock } from '../../../tools/runtime/clock.ts';
import type { Logger } from '../../../tools/runtime/logger.ts';
import {
  TOPIC_POLICY,
  filters,
  parsePayload,
  parseTopic,
  parseUplinkBatch,
  topics,
  validatePayload,
} from '../../../protocol/index.ts';
import type { BranchId, GatewayId, Telemetry, UplinkAck } from '../../../protocol/index.ts';
import { createLivePublisher, type LiveHooks } from '../machines/live-publisher.ts';
import { createLiveState, type LiveState } from '../machines/live-state.ts';
import type { CloudMetrics } from '../metrics/metrics.ts';
import { processBatch, type ReceivedBatch } from './batch.ts';
import type { IngestConfig } from './config.ts';
import { createLiveUpdater } from './live-updates.ts';
import { ingestMetrics, type IngestMetrics } from './metrics.ts';
import { createRateLimitedLog, type RateLimitedLog } from '../../../tools/runtime/rate-limited-log.ts';
import { createSourceCheck, type MachineDirectory } from './sources.ts';
import { createIngestStore, ensureIngestCollections, type StoredRecordKind } from './store.ts';
import { createStoredHooks, type OnStoredOptions, type StoredHandler } from './stored-hooks.ts';
import { createWorkQueue } from './work-queue.ts';

export interface IngestOptions {
  aedes: Aedes;
  mongo: Connection;
  /** The cloud's client; its key prefix (REDIS_KEY_PREFIX) applies to every live-state key. */
  redis: Redis;
  log: Logger;
  clock: Clock;
  metrics: Pick<CloudMetrics, 'registry'>;
  config: IngestConfig;
  /** Telemetry older than this many days is refused as too old (it would be deleted by retention anyway). */
  telemetryRetentionDays?: number;
  /**
   * The provisioned machines of each gateway: machine records from any other source are refused (`wrong-source`).
   * Without it, machine sources are not checked (the gateway-sourced kinds always are).
   */
  machines?: MachineDirectory;
  /** Erased members (cloud/src/privacy): records naming one are stored without the member. */
  erasedMembers?: { isDeleted(userId: string): Promise<boolean> };
  /** How long a full queue holds the broker before dropping a batch unanswered (default 2 s). */
  holdMs?: number;
  /** How long stop() waits for batches being written (default 10 s). */
  stopTimeoutMs?: number;
  /** Machines' overlay on what apps see (linked → in_use, out of order → maintenance) and status observer. */
  liveHooks?: LiveHooks;
  /**
   * Every accepted telemetry sample, before the MongoDB write (live snapshots and stored batches alike, so a sample
   * may come twice): the machines domain forwards the linked member's to `u/{user}/live/workout`. Must not throw.
   */
  onTelemetry?: (branch: BranchId, samples: readonly Telemetry[]) => void;
  /** The onStored sweep: how often it runs and how old a pending record must be (defaults 5 s / 5 s). */
  storedSweep?: { everyMs?: number; retryAfterMs?: number; maxAttempts?: number; fullEveryMs?: number };
}

export interface Ingest {
  readonly live: LiveState;
  /**
   * Runs `handler` on each newly stored record of `kind` (never on duplicates), after its MongoDB write, durably:
   * the record is stored marked pending for the handler and a sweep retries it after a failure or a crash
   * (stored-hooks.ts). Register before traffic, under a stable `name`.
   */
  onStored<K extends StoredRecordKind>(kind: K, handler: StoredHandler<K>, options?: OnStoredOptions): void;
  /** Hands records still pending (older than the retry delay) to their handlers now; resolves with how many. */
  sweepStored(): Promise<number>;
  /** Unsubscribes, sheds what waits for room, and waits (bounded) for the batches being written. */
  stop(): Promise<void>;
}

const DAY_MS = 86_400_000;

export async function startIngest(options: IngestOptions): Promise<Ingest> {
  const { aedes, mongo, redis, log, clock, config } = options;
  const db = mongo.db;
  if (!db) throw new Error('startIngest: the MongoDB connection is not open');
  await ensureIngestCollections(db);

  const metrics = ingestMetrics(options.metrics.registry);
  const rlog = createRateLimitedLog({ log, clock });
  const store = createIngestStore(db, { writeTimeoutMs: config.writeTimeoutMs });
  const live = createLiveState(redis);
  const publisher = createLivePublisher({ aedes, log, ...(options.liveHooks ? { hooks: options.liveHooks } : {}) });
  const applyLive = createLiveUpdater({ live, publisher, metrics, rlog, clock });
  const sources = options.machines ? createSourceCheck({ directory: options.machines, clock }) : undefined;
  const hooks = createStoredHooks({
    db,
    log: log.child({ module: 'ingest-hooks' }),
    clock,
    ...(options.storedSweep?.everyMs === undefined ? {} : { sweepEveryMs: options.storedSweep.everyMs }),
    ...(options.storedSweep?.retryAfterMs === undefined ? {} : { retryAfterMs: options.storedSweep.retryAfterMs }),
    ...(options.storedSweep?.maxAttempts === undefined ? {} : { maxAttempts: options.storedSweep.maxAttempts }),
    ...(options.storedSweep?.fullEveryMs === undefined ? {} : { fullSweepEveryMs: options.storedSweep.fullEveryMs }),
  });

  const queue = createWorkQueue<ReceivedBatch>({
    concurrency: config.concurrency,
    maxQueued: config.maxQueuedBatches,
    holdMs: options.holdMs ?? 2_000,
    maxHeld: 16,
    // Door decisions first, then records, then telemetry (keys end in their lane, telemetry in `/0` or `/1`).
    priority: (key) => (key.endsWith('/access') ? 0 : key.endsWith('/records') ? 1 : 2),
    work: async (batch) => {
      updateGauges();
      try {
        const outcome = await processBatch(batch, {
          store,
          publishAck: (branch, gateway, ack) => publishAck(aedes, branch, gateway, ack),
          applyLive,
          metrics,
          rlog,
          log,
          clock,
          hooks,
          ...(options.onTelemetry ? { onTelemetry: options.onTelemetry } : {}),
          ...(config.ackDelayMs ? { ackDelayMs: config.ackDelayMs } : {}),
          ...(sources ? { sources } : {}),
          ...(options.erasedMembers ? { erasedMembers: options.erasedMembers } : {}),
          ...(options.telemetryRetentionDays === undefined
            ? {}
            : { telemetryMaxAgeMs: options.telemetryRetentionDays * DAY_MS }),
        });
        metrics.batches.inc({ lane: batch.lane, outcome });
      } catch (err) {
        // processBatch reports expected failures itself; anything here is a bug, and still must not stop ingest.
        metrics.batches.inc({ lane: batch.lane, outcome: 'error' });
        log.error({ err, gateway: batch.gateway, lane: batch.lane }, 'uplink batch processing failed');
      } finally {
        updateGauges();
      }
    },
    onShed: (batch) => {
      metrics.batches.inc({ lane: batch.lane, outcome: 'shed' });
      rlog.warn(
        'queue-full',
        { gateway: batch.gateway, lane: batch.lane },
        'ingest queue full: batch dropped unanswered',
      );
    },
  });
  const updateGauges = () => {
    metrics.queued.set(queue.queued);
    metrics.running.set(queue.running);
  };

  const forwardChecked = (
    branch: BranchId,
    gateway: GatewayId,
    samples: Telemetry[],
    forward: NonNullable<IngestOptions['onTelemetry']>,
  ) => {
    if (!sources) {
      forward(branch, samples);
      return;
    }
    sources.unknownAmong(branch, gateway, new Set(samples.map((s) => s.source))).then(
      (foreign) => {
        const own = foreign.size === 0 ? samples : samples.filter((s) => !foreign.has(s.source));
        if (foreign.size > 0) {
          rlog.warn(
            'live-foreign-source',
            { branch, gateway, machines: [...foreign].slice(0, 10) },
            'live samples from machines not provisioned for this gateway dropped',
          );
        }
        if (own.length > 0) forward(branch, own);
      },
      (err: unknown) => {
        rlog.warn(
          'live-source-check-failed',
          { branch, gateway, err: { message: (err as Error).message } },
          'live samples not forwarded: machine directory unreadable',
        );
      },
    );
  };

  let telemetrySlot = 0;
  const onUplink = (packet: AedesPublishPacket, done: () => void) => {
    const topic = parseTopic(packet.topic);
    if (topic?.kind !== 'gateway-uplink') {
      done();
      return;
    }
    const batch: ReceivedBatch = {
      branch: topic.branch,
      gateway: topic.gateway,
      lane: topic.lane,
      payload: Buffer.isBuffer(packet.payload) ? packet.payload : Buffer.from(packet.payload),
      receivedAtMs: clock.nowMs(),
      receivedPerfMs: performance.now(),
    };
    if (topic.lane === 'telemetry' && options.onTelemetry) {
      // The linked members' live workout must not wait behind the MongoDB writes of the queue: telemetry batches
      // are parsed here, at receipt (once: the worker reuses the result), and their valid samples forwarded now.
      // Only samples of machines linked in this branch reach anyone (machines/live-workout.ts).
      // The same per-gateway source check as the stored path applies first (a gateway of the branch must not drive
      // another gateway's linked machine): from the cache it costs a microtask; a sample whose check cannot be made
      // (directory unreadable) is not forwarded — nor stored, since the worker's own check fails the same way.
      batch.parsed = parseUplinkBatch(batch.payload);
      if (batch.parsed.ok) {
        const samples: Telemetry[] = [];
        for (const r of batch.parsed.records) if (r.ok && r.record.kind === 'telemetry') samples.push(r.record.payload);
        if (samples.length > 0) forwardChecked(topic.branch, topic.gateway, samples, options.onTelemetry);
      }
      batch.forwarded = true;
    }
    // Records keep their lane's order (one batch at a time per lane); telemetry samples land in their buckets by
    // (bootId, seq) in any order, so two of a gateway's telemetry batches may be written at once.
    const slot = topic.lane === 'telemetry' ? `/${(telemetrySlot = 1 - telemetrySlot)}` : '';
    queue.offer(`${topic.branch}/${topic.gateway}/${topic.lane}${slot}`, batch, done);
    updateGauges();
  };

  const gatewayStates = createGatewayStateHandler({ live, publisher, metrics, rlog, log, clock });
  const onGatewayState = (packet: AedesPublishPacket, done: () => void) => {
    // Births and wills are rare and small: handled beside the broker, never holding it.
    done();
    gatewayStates.handle(packet);
  };

  await subscribe(aedes, filters.allGatewayUplinks(), onUplink);
  await subscribe(aedes, filters.allGatewayStates(), onGatewayState);
  log.info({ concurrency: config.concurrency, maxQueued: config.maxQueuedBatches }, 'ingest started');

  let stopping: Promise<void> | undefined;
  return {
    live,
    onStored: (kind, handler, opts) => hooks.on(kind, handler, opts),
    sweepStored: () => hooks.sweep(),
    stop() {
      stopping ??= (async () => {
        await unsubscribe(aedes, filters.allGatewayUplinks(), onUplink);
        await unsubscribe(aedes, filters.allGatewayStates(), onGatewayState);
        const timeoutMs = options.stopTimeoutMs ?? 10_000;
        let timer: NodeJS.Timeout | undefined;
        const timedOut = new Promise<'timeout'>((resolve) => {
          timer = setTimeout(() => resolve('timeout'), timeoutMs);
        });
        const result = await Promise.race([Promise.all([queue.close(), gatewayStates.idle()]), timedOut]);
        clearTimeout(timer);
        await hooks.stop(Math.min(timeoutMs, 5_000));
        if (result === 'timeout') log.warn({ timeoutMs }, 'ingest stopped with batches still being written');
        else log.info('ingest stopped');
      })();
      return stopping;
    },
  };
}

function subscribe(aedes: Aedes, filter: string, handler: (packet: AedesPublishPacket, done: () => void) => void) {
  return new Promise<void>((resolve) => aedes.subscribe(filter, handler, resolve));
}

function unsubscribe(aedes: Aedes, filter: string, handler: (packet: AedesPublishPacket, done: () => void) => void) {
  return new Promise<void>((resolve) => aedes.unsubscribe(filter, handler, resolve));
}

/** Publishes an ack QoS1 on `gw/{gateway}/ack`, after checking it against the UplinkAck schema. */
export function publishAck(aedes: Aedes, branch: BranchId, gateway: GatewayId, ack: UplinkAck): Promise<void> {
  const checked = validatePayload('UplinkAck', ack);
  if (!checked.ok) {
    return Promise.reject(new Error(`invalid UplinkAck (${checked.path ?? checked.reason}: ${checked.issue ?? ''})`));
  }
  return new Promise((resolve, reject) => {
    aedes.publish(
      {
        cmd: 'publish',
        topic: topics.gatewayAck(branch, gateway),
        payload: Buffer.from(JSON.stringify(checked.value)),
        qos: TOPIC_POLICY['gateway-ack'].qos,
        retain: false,
        dup: false,
      },
      (err) => (err ? reject(err) : resolve()),
    );
  });
}

/**
 * Gateway births and wills: stored in Redis (newest by `gatewayStateSupersedes`); when a gateway goes offline its
 * machines' live topics are republished as `unknown` (RELIABILITY C6), and with their own status when it returns.
 * One gateway's states are handled in arrival order.
 */
function createGatewayStateHandler({
  live,
  publisher,
  metrics,
  rlog,
  log,
  clock,
}: {
  live: LiveState;
  publisher: ReturnType<typeof createLivePublisher>;
  metrics: IngestMetrics;
  rlog: RateLimitedLog;
  log: Logger;
  clock: Clock;
}) {
  const chains = new Map<string, Promise<void>>();

  const apply = async (packet: AedesPublishPacket) => {
    const topic = parseTopic(packet.topic);
    if (topic?.kind !== 'gateway-state') return;
    const { branch, gateway } = topic;
    const parsed = parsePayload('GatewayState', packet.payload);
    if (!parsed.ok && parsed.reason !== 'empty') {
      metrics.gatewayStates.inc({ state: 'invalid' });
      metrics.invalidInput.inc({ reason: `gateway-state-${parsed.reason}` });
      rlog.warn(`gateway-state-${parsed.reason}`, { branch, gateway, path: parsed.path }, 'gateway state refused');
      return;
    }
    const state = parsed.ok ? parsed.value : undefined;
    const now = clock.nowMs();
    try {
      const result = await live.applyGateway(branch, gateway, state, now);
      metrics.gatewayStates.inc({
        state: !result.applied ? 'stale' : state ? (state.online ? 'online' : 'offline') : 'cleared',
      });
      if (!result.onlineChanged) return;
      const machines = await live.listBranch(branch, gateway);
      log.info({ branch, gateway, online: state?.online ?? null, machines: machines.length }, 'gateway state changed');
      for (const machine of machines) {
        const { machine: id, status, since, type, displayName } = machine;
        await publisher.publish(
          branch,
          { machine: id, status, since, ...(type ? { type } : {}), ...(displayName ? { displayName } : {}) },
          now,
        );
        metrics.livePublished.inc();
      }
    } catch (err) {
      metrics.liveFailures.inc({ stage: 'gateway-state' });
      rlog.warn(
        'gateway-state-failed',
        { branch, gateway, err: { message: (err as Error).message } },
        'gateway state not applied',
      );
    }
  };

  return {
    handle(packet: AedesPublishPacket) {
      const key = packet.topic;
      const next = (chains.get(key) ?? Promise.resolve()).then(() => apply(packet));
      chains.set(key, next);
      void next.finally(() => {
        if (chains.get(key) === next) chains.delete(key);
      });
    },
    async idle() {
      await Promise.all([...chains.values()]);
    },
  };
}
