/**
 * The forwarder: sends the uplink queue to the cloud broker in batches, one lane at a time, and deletes a record
 * only when the cloud's application ack (`gw/{gateway}/ack`, sent after the MongoDB write) names it as durable or
 * rejected. An MQTT PUBACK from the cloud means transport only (ARCHITECTURE.md, "Where acknowledged means
 * durable").
 *
 * - Batches: protocol `UplinkBatch`, at most MAX_BATCH_RECORDS records and MAX_BATCH_BYTES bytes, of one lane,
 *   on `gw/{gateway}/up/{lane}`. Lanes are filled in protocol order, access first.
 * - A bounded in-flight window per lane (`windowBatches`); the telemetry lane has at most two batches in flight,
 *   so the bulk lane cannot crowd access and records out of the link while a backlog drains. Two rather than one:
 *   the cloud writes two of a gateway's telemetry batches at once (cloud/src/ingest/ingest.ts). Order is no
 *   reason to keep one: the cloud keys each sample in its bucket by `(bootId, seq)` (cloud/src/ingest/store.ts),
 *   so batches landing in any order, or twice, store every sample once.
 * - A batch is resent unchanged (same batchId, same bytes) after every reconnect and whenever its ack is overdue;
 *   the cloud's writes are idempotent by msgId. Records an ack names in neither list return to the queue and go
 *   into a new batch; a batch the cloud could not read at all (`error`) moves to the rejected list.
 * - Never MQTT.js's offline queue (RELIABILITY finding 2): publish only while connected, `queueQoSZero: false`, and
 *   `reconnect()` starts each connection with fresh MQTT.js stores, so packet ids never key anything that matters.
 * - Connection: client id = username = gateway id, `clean: true` (see below), retained birth on
 *   `gw/{gateway}/state` after every connect and a retained last will registered with every CONNECT, each carrying
 *   the connection number `conn`; reconnects with exponential backoff and jitter (backoff.ts).
 *
 * - Drain rate: batches of the records and telemetry lanes take tokens from a bucket of `drainMaxPerS` records a
 *   second (0: no limit), so a gateway back from a long outage does not flood the cloud; access never waits.
 * - Live path: while a lane has a backlog (its window full and more than a batch of records behind), each
 *   machine's latest status and latest telemetry sample jump it in a small "live" batch of their lane (one in flight
 *   per lane, outside the window and the drain rate; a newer one replaces an older one still waiting, which then
 *   goes with the backlog). The cloud stores them once like any record (idempotent by msgId; status by
 *   `statusSupersedes`, telemetry keyed by `(bootId, seq)`), keeping their event time, so apps see the present while
 *   the past catches up. They may therefore reach MongoDB before older records of the same machine and lane.
 *
 * - Also on this connection: the branch's machine commands (`m/+/cmd/+`, handed to `onMachineCommand`) and the
 *   machines' command answers (`relay`), both passed through as they are, neither queued.
 *
 * Why `clean: true`: the gateway's queue, not a broker session, is what must survive. With a persistent session the
 * cloud broker would hold acks (and subscriptions) for a gateway that is gone, in its memory, and replay acks of
 * batches a restarted gateway never sent; with a clean session an ack lost while the link was down only costs a
 * resend, which the cloud answers again from its idempotent write.
 */
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import {
  LANES,
  MAX_BATCH_BYTES,
  MAX_BATCH_RECORDS,
  filters,
  newBatchId,
  parsePayload,
  parseTopic,
  topics,
} from '../../../protocol/index.ts';
import type {
  BatchId,
  BootId,
  BranchId,
  GatewayId,
  GatewayState,
  Lane,
  MsgId,
  RecordKind,
  SourceId,
  UplinkAck,
} from '../../../protocol/index.ts';
import type { Logger } from '../../../tools/runtime/logger.ts';
import type { UplinkConfig } from '../config.ts';
import type { RejectedList } from '../local-broker/rejected.ts';
import type { GatewayMetrics } from '../metrics.ts';
import { createBackoff } from './backoff.ts';
import { birthState, offlineState, willState } from './gateway-state.ts';
import type { QueueSeq, QueuedRecord, UplinkQueue } from './queue.ts';

export interface ForwarderOptions {
  readonly config: UplinkConfig;
  readonly gatewayId: GatewayId;
  readonly branch: BranchId;
  /** The gateway's MQTT secret on the cloud broker. */
  readonly secret: string;
  /** PEM of the CA that signed the cloud broker's certificate (mqtts); undefined: the system's CAs. */
  readonly ca: Buffer | undefined;
  readonly queue: UplinkQueue;
  readonly rejected: RejectedList;
  readonly metrics: GatewayMetrics;
  readonly log: Logger;
  readonly nowMs: () => number;
  readonly bootId: BootId;
  readonly version: string;
  readonly machinesConnected: () => number;
  /**
   * A command for one of the branch's machines arrived from the cloud (`m/{machine}/cmd/{name}`): the gateway
   * hands it to its local broker. Best effort, like any MQTT command: not queued, answered on `…/res`.
   */
  readonly onMachineCommand?: (topic: string, payload: Buffer) => void;
  /**
   * The gateway's own topics (access/configuration, edge-gateway/src/access and cloud-config): with this set,
   * `gw/{gateway}/cmd/+` (signed configuration, allow-list) and `gw/{gateway}/req/+/res` (answers to its online
   * requests) are subscribed on every connection and each message is handed here as it is.
   */
  readonly onGatewayMessage?: (topic: string, payload: Buffer) => void;
  /** The queue's drain rate and forecast, merged into the birth's `queue` (queue-monitor.ts). */
  readonly queueExtras?: () => QueueExtras;
  /** Readers and the configuration/allow-list revisions in use, merged into every birth. */
  readonly birthExtras?: () => BirthExtras;
}

/** What the queue monitor adds to the birth's queue figures. */
export type QueueExtras = Partial<
  Pick<Extract<GatewayState, { online: true }>['queue'], 'offlineHoursLeft' | 'drainPerS' | 'fullReason'>
>;

/** A record just queued by the intake: the forwarder may send it on the live path. */
export interface QueuedNotice {
  readonly seq: QueueSeq;
  readonly lane: Lane;
  readonly kind: RecordKind;
  readonly source: SourceId;
}

/** What the access side adds to the birth (the cloud pushes a newer configuration or allow-list on seeing it). */
export type BirthExtras = Partial<
  Pick<Extract<GatewayState, { online: true }>, 'readers' | 'configRevision' | 'allowListRevision'>
>;

export interface LaneInFlight {
  readonly batches: number;
  readonly records: number;
}

export interface UplinkStatus {
  readonly up: boolean;
  /** Gateway clock when the uplink went up or down, ms. */
  readonly sinceMs: number;
  /** Successful connections since start. */
  readonly connects: number;
  /** The connection number of the current (or last) CONNECT. */
  readonly conn: number;
  readonly lastError: string | undefined;
  readonly inFlight: Readonly<Record<Lane, LaneInFlight>>;
}

export interface Forwarder {
  /** Starts connecting; returns at once (the gateway works offline). Once per forwarder: throws after stop(). */
  start(): void;
  /** Publishes the offline state if connected, then disconnects cleanly; in-flight batches stay queued. */
  stop(): Promise<void>;
  /** New records may be waiting (called by the intake after each append, with the record for the live path). */
  wake(queued?: QueuedNotice): void;
  /** Publishes a machine's command response to the cloud broker as it is; false when the uplink is down. */
  relay(topic: string, payload: Buffer): boolean;
  status(): UplinkStatus;
  /** Republishes the birth now (e.g. after a new configuration or allow-list revision); no-op while down. */
  publishState(): void;
}

interface BatchRecord {
  readonly seq: QueueSeq;
  readonly msgId: MsgId;
  readonly source: SourceId;
}

interface Batch {
  readonly batchId: BatchId;
  readonly lane: Lane;
  readonly records: readonly BatchRecord[];
  readonly payload: Buffer;
  readonly firstSentAtMs: number;
  lastSentAtMs: number;
  sends: number;
  /** Not (successfully) handed to MQTT.js on the current connection: send when connected. */
  pending: boolean;
  /** Sent on the live path (outside the window and the drain rate). */
  readonly live: boolean;
}

interface LaneState {
  /** Records up to this seq have been put into batches (unless returned by an ack since). */
  cursor: QueueSeq;
  /** Batches sent and not answered, in send order. */
  readonly batches: Map<BatchId, Batch>;
  /** Seqs of the records in those batches. */
  readonly seqs: Set<QueueSeq>;
  /** The live batch in flight, if any (at most one per lane). */
  liveBatch: BatchId | undefined;
}

/** Bytes of `{"batchId":"…","sentAt":…,"records":[]}` besides the records: a bound, not the exact figure. */
const BATCH_ENVELOPE_BYTES = 128;
/** How long a clean stop waits for the offline state's PUBACK. */
const STOP_PUBLISH_TIMEOUT_MS = 2_000;

export function createForwarder(options: ForwarderOptions): Forwarder {
  const { config, gatewayId, branch, queue, rejected, metrics, log, nowMs, bootId } = options;
  const stateTopic = topics.gatewayState(branch, gatewayId);
  const ackTopic = topics.gatewayAck(branch, gatewayId);
  const commandFilter = filters.branchMachineCommands(branch);
  const backoff = createBackoff(config.reconnectMinMs, config.reconnectMaxMs);
  const lanes = Object.fromEntries(
    LANES.map((lane) => [
      lane,
      { cursor: 0, batches: new Map(), seqs: new Set(), liveBatch: undefined } satisfies LaneState,
    ]),
  ) as Record<Lane, LaneState>;

  let client: MqttClient | undefined;
  let up = false;
  let ready = false; // connected, ack subscription granted: batches may go out
  let sinceMs = nowMs();
  let connects = 0;
  let conn = 0;
  let connectedAtMs = 0;
  let lastError: string | undefined;
  let stopping = false;
  let reconnectTimer: NodeJS.Timeout | undefined;
  let ackTimer: NodeJS.Timeout | undefined;
  let stateTimer: NodeJS.Timeout | undefined;
  let pumping = false;
  let pumpAgain = false;

  const windowOf = (lane: Lane) => (lane === 'telemetry' ? Math.min(2, config.windowBatches) : config.windowBatches);
  /** Backlog batches in flight (the live batch is outside the window). */
  const inWindow = (state: LaneState) => state.batches.size - (state.liveBatch === undefined ? 0 : 1);
  /** Each machine's latest status and sample waiting for the live path: `${kind} ${source}` → seq. */
  const liveWanted = new Map<string, { lane: Lane; seq: QueueSeq }>();
  const drain = { tokens: config.drainMaxPerS, atMs: nowMs(), timer: undefined as NodeJS.Timeout | undefined };

  function willPacket(): NonNullable<IClientOptions['will']> {
    return {
      topic: stateTopic,
      payload: Buffer.from(JSON.stringify(willState(bootId, conn, nowMs()))),
      qos: 1,
      retain: true,
    };
  }

  function setUp(value: boolean): void {
    if (up === value) return;
    up = value;
    sinceMs = nowMs();
    metrics.uplinkUp.set(value ? 1 : 0);
  }

  function publishBirth(): void {
    if (!client?.connected) return;
    const birth = {
      ...birthState({
        bootId,
        conn,
        sinceMs: connectedAtMs,
        nowMs: nowMs(),
        version: options.version,
        queue: queue.stats(),
        machinesConnected: options.machinesConnected(),
        queueExtras: options.queueExtras?.(),
      }),
      ...options.birthExtras?.(),
    };
    client.publish(stateTopic, JSON.stringify(birth), { qos: 1, retain: true }, (err) => {
      if (err) log.debug({ err: err.message }, 'birth not published');
    });
  }

  // ------------------------------------------------------------------------------------------------------------
  // Connection

  function connect(): void {
    const clientOptions: IClientOptions = {
      clientId: gatewayId,
      username: gatewayId,
      password: options.secret,
      protocolVersion: 4,
      clean: true,
      keepalive: config.keepaliveS,
      connectTimeout: config.connectTimeoutMs,
      // Reconnects are ours (backoff with jitter), each with fresh MQTT.js stores.
      reconnectPeriod: 0,
      queueQoSZero: false,
      resubscribe: false,
      will: willPacket(),
      rejectUnauthorized: true,
      ...(options.ca === undefined ? {} : { ca: options.ca }),
    };
    const c = mqtt.connect(config.url, clientOptions);
    client = c;
    c.on('connect', () => {
      void onConnect(c);
    });
    c.on('close', () => onClose());
    c.on('error', (err) => {
      lastError = err.message;
      log.debug({ err: err.message }, 'uplink error');
    });
    c.on('message', onMessage);
  }

  async function onConnect(c: MqttClient): Promise<void> {
    connectedAtMs = nowMs();
    connects += 1;
    metrics.uplinkConnects.inc();
    let refused: boolean;
    try {
      const granted = await c.subscribeAsync(ackTopic, { qos: 1 });
      refused = granted.some((g) => g.qos === 128);
      if (!refused && options.onMachineCommand !== undefined) subscribeCommands(c);
      if (!refused && options.onGatewayMessage !== undefined) subscribeGatewayTopics(c);
    } catch (err) {
      // mqtt.js rejects a SUBACK whose every entry is a failure; anything else means the link is going away.
      refused = (err as { packet?: { granted?: number[] } }).packet?.granted?.includes(128) === true;
      if (!refused) {
        log.warn({ err: (err as Error).message }, 'ack subscription failed');
        return; // the next connect tries again
      }
    }
    if (refused) {
      // Without acks nothing can ever be deleted: drop the link and try again later rather than send blind.
      lastError = 'ack subscription refused by the cloud broker';
      log.error({ topic: ackTopic }, 'the cloud broker refused the ack subscription: reconnecting later');
      c.stream.destroy();
      return;
    }
    if (client !== c || !c.connected) return;
    // Up means usable: connected and subscribed to the acks, so batches sent now can be answered.
    ready = true;
    setUp(true);
    backoff.reset();
    lastError = undefined;
    log.info({ url: config.url, conn }, 'uplink connected');
    publishBirth();
    // Everything unanswered goes again on this connection, oldest first, lane by lane.
    for (const lane of LANES) {
      for (const batch of lanes[lane].batches.values()) sendBatch(batch, 'resend');
    }
    wake();
  }

  function subscribeCommands(c: MqttClient): void {
    c.subscribe(commandFilter, { qos: 1 }, (err, granted) => {
      if (err !== undefined && err !== null) {
        log.warn({ filter: commandFilter, err: err.message }, 'machine command subscription not granted');
      } else if (granted?.some((g) => g.qos === 128) === true) {
        log.warn({ filter: commandFilter }, 'machine command subscription refused by the cloud broker');
      }
    });
  }

  function subscribeGatewayTopics(c: MqttClient): void {
    const wanted = [filters.gatewayCommands(branch, gatewayId), filters.gatewayRequestResponses(branch, gatewayId)];
    c.subscribe(wanted, { qos: 1 }, (err, granted) => {
      if (err !== undefined && err !== null) {
        log.warn({ filters: wanted, err: err.message }, 'gateway command/response subscription not granted');
      } else if (granted?.some((g) => g.qos === 128) === true) {
        log.warn({ filters: wanted }, 'gateway command/response subscription refused by the cloud broker');
      }
    });
  }

  function onMessage(topic: string, payload: Buffer): void {
    if (topic === ackTopic) {
      void onAck(payload);
      return;
    }
    const parsed = parseTopic(topic);
    if (parsed?.kind === 'gateway-command' || parsed?.kind === 'gateway-request-response') {
      if (parsed.branch === branch && parsed.gateway === gatewayId) options.onGatewayMessage?.(topic, payload);
      return;
    }
    if (parsed?.kind === 'machine-command' && parsed.branch === branch) options.onMachineCommand?.(topic, payload);
  }

  function onClose(): void {
    ready = false;
    if (up) log.warn({ url: config.url, lastError }, 'uplink down');
    setUp(false);
    for (const lane of LANES) for (const batch of lanes[lane].batches.values()) batch.pending = true;
    if (stopping || reconnectTimer !== undefined) return;
    const delayMs = backoff.next();
    log.debug({ delayMs, attempt: backoff.attempts }, 'uplink reconnect scheduled');
    reconnectTimer = setTimeout(() => {
      reconnectTimer = undefined;
      const c = client;
      if (stopping || c === undefined) return;
      conn += 1;
      c.options.will = willPacket();
      c.reconnect();
    }, delayMs);
  }

  // ------------------------------------------------------------------------------------------------------------
  // Sending

  function sendBatch(batch: Batch, attempt: 'first' | 'resend'): void {
    const c = client;
    if (!ready || c === undefined || !c.connected) {
      batch.pending = true;
      return;
    }
    batch.pending = false;
    batch.lastSentAtMs = nowMs();
    batch.sends += 1;
    metrics.uplinkBatchesSent.inc({ lane: batch.lane, attempt });
    c.publish(topics.gatewayUplink(branch, gatewayId, batch.lane), batch.payload, { qos: 1 }, (err) => {
      // A failed hand-over (the link dropped) is sent again on the next connection or by the ack timeout.
      if (err) batch.pending = true;
    });
  }

  async function buildBatch(lane: Lane): Promise<Batch | undefined> {
    const state = lanes[lane];
    const startCursor = state.cursor;
    const picked: QueuedRecord[] = [];
    const unsendable: QueuedRecord[] = [];
    let bytes = BATCH_ENVELOPE_BYTES;
    let after = startCursor;
    let full = false;
    while (!full) {
      const page = await queue.peek(lane, { afterSeq: after, limit: MAX_BATCH_RECORDS });
      if (page.length === 0) break;
      for (const record of page) {
        if (state.seqs.has(record.seq)) {
          after = record.seq;
          continue;
        }
        const add = record.bytes + 1; // the comma
        if (BATCH_ENVELOPE_BYTES + add > MAX_BATCH_BYTES) {
          // Could never travel in any batch: set it aside instead of stalling the lane behind it.
          unsendable.push(record);
          after = record.seq;
          continue;
        }
        if (bytes + add > MAX_BATCH_BYTES || picked.length >= MAX_BATCH_RECORDS) {
          full = true;
          break;
        }
        picked.push(record);
        bytes += add;
        after = record.seq;
      }
      if (page.length < MAX_BATCH_RECORDS) break;
    }
    if (unsendable.length > 0) {
      for (const r of unsendable) {
        rejected.add({
          origin: 'gateway',
          reason: 'too-large-for-batch',
          msgId: r.msgId,
          source: r.source,
          bytes: r.bytes,
        });
      }
      await queue.deleteBySeq(unsendable.map((r) => r.seq));
    }
    if (picked.length === 0) return undefined;
    // An ack may have returned records to the lane (lowering the cursor) while we awaited the queue.
    if (state.cursor === startCursor) state.cursor = picked[picked.length - 1]!.seq;
    return makeBatch(lane, picked, false);
  }

  function makeBatch(lane: Lane, picked: readonly QueuedRecord[], live: boolean): Batch {
    const batchId = newBatchId();
    const sentAt = nowMs();
    const text = `{"batchId":${JSON.stringify(batchId)},"sentAt":${sentAt},"records":[${picked.map((r) => r.json).join(',')}]}`;
    return {
      batchId,
      lane,
      records: picked.map((r) => ({ seq: r.seq, msgId: r.msgId, source: r.source })),
      payload: Buffer.from(text, 'utf8'),
      firstSentAtMs: sentAt,
      lastSentAtMs: sentAt,
      sends: 0,
      pending: true,
      live,
    };
  }

  function launch(state: LaneState, batch: Batch): void {
    state.batches.set(batch.batchId, batch);
    for (const r of batch.records) state.seqs.add(r.seq);
    metrics.uplinkInFlightBatches.set({ lane: batch.lane }, state.batches.size);
    sendBatch(batch, 'first');
  }

  /** Whether the drain rate lets a backlog batch of `lane` go now; if not, a wake is scheduled for when it will. */
  function drainAllows(lane: Lane): boolean {
    const rate = config.drainMaxPerS;
    if (lane === 'access' || rate <= 0) return true;
    const now = nowMs();
    drain.tokens = Math.min(rate, drain.tokens + ((now - drain.atMs) / 1000) * rate);
    drain.atMs = now;
    if (drain.tokens >= 1) return true;
    if (drain.timer === undefined) {
      drain.timer = setTimeout(
        () => {
          drain.timer = undefined;
          wake();
        },
        Math.max(5, Math.ceil(((1 - drain.tokens) / rate) * 1000)),
      );
    }
    return false;
  }

  async function fillLane(lane: Lane): Promise<void> {
    const state = lanes[lane];
    while (ready && !stopping && inWindow(state) < windowOf(lane) && drainAllows(lane)) {
      const batch = await buildBatch(lane);
      if (batch === undefined) return;
      if (lane !== 'access') drain.tokens -= batch.records.length;
      launch(state, batch);
    }
  }

  /** Sends the latest status and sample per machine waiting for the live path of `lane` (one batch in flight). */
  async function fillLive(lane: Lane): Promise<void> {
    const state = lanes[lane];
    if (!ready || stopping || state.liveBatch !== undefined || liveWanted.size === 0) return;
    const seqs: QueueSeq[] = [];
    for (const [key, wanted] of liveWanted) {
      if (wanted.lane !== lane) continue;
      liveWanted.delete(key);
      if (!state.seqs.has(wanted.seq)) seqs.push(wanted.seq);
    }
    if (seqs.length === 0) return;
    const picked: QueuedRecord[] = [];
    let bytes = BATCH_ENVELOPE_BYTES;
    for (const record of await queue.get(seqs.sort((a, b) => a - b))) {
      // Deleted meanwhile (acked in a backlog batch) or already in flight: nothing to do for it.
      if (state.seqs.has(record.seq)) continue;
      if (picked.length >= MAX_BATCH_RECORDS || bytes + record.bytes + 1 > MAX_BATCH_BYTES) break;
      picked.push(record);
      bytes += record.bytes + 1;
    }
    if (picked.length === 0 || !ready || state.liveBatch !== undefined) return;
    const batch = makeBatch(lane, picked, true);
    state.liveBatch = batch.batchId;
    metrics.uplinkLiveRecords.inc({ lane }, picked.length);
    launch(state, batch);
  }

  /** A freshly queued status or sample goes live when its lane has a backlog it would otherwise wait behind. */
  function noteLive(queued: QueuedNotice): void {
    if (!config.live || (queued.kind !== 'status' && queued.kind !== 'telemetry')) return;
    const state = lanes[queued.lane];
    const behind = queued.seq - state.cursor > MAX_BATCH_RECORDS;
    const waiting = !ready || inWindow(state) >= windowOf(queued.lane) || !drainAllows(queued.lane);
    if (behind && waiting) liveWanted.set(`${queued.kind} ${queued.source}`, { lane: queued.lane, seq: queued.seq });
  }

  async function pump(): Promise<void> {
    pumping = true;
    try {
      do {
        pumpAgain = false;
        for (const lane of LANES) {
          await fillLive(lane);
          await fillLane(lane);
        }
      } while (pumpAgain && ready && !stopping);
    } catch (err) {
      log.error({ err }, 'uplink pump failed');
    } finally {
      pumping = false;
    }
  }

  function wake(queued?: QueuedNotice): void {
    if (queued !== undefined) noteLive(queued);
    if (pumping) {
      pumpAgain = true;
      return;
    }
    if (ready && !stopping) void pump();
  }

  /**
   * Resends what is overdue or was not handed over, while connected; then looks for queued records, so a record
   * that arrived without a wake (appended by another part, or while a pump failed) waits one tick at most.
   */
  function checkOverdue(): void {
    if (!ready) return;
    const now = nowMs();
    for (const lane of LANES) {
      for (const batch of lanes[lane].batches.values()) {
        if (batch.pending || now - batch.lastSentAtMs >= config.ackTimeoutMs) {
          if (!batch.pending) log.debug({ batchId: batch.batchId, lane, sends: batch.sends }, 'ack overdue: resending');
          sendBatch(batch, 'resend');
        }
      }
    }
    wake();
  }

  // ------------------------------------------------------------------------------------------------------------
  // Acks

  async function onAck(payload: Buffer): Promise<void> {
    const parsed = parsePayload('UplinkAck', payload);
    if (!parsed.ok) {
      metrics.uplinkAcks.inc({ result: 'invalid' });
      log.warn({ reason: parsed.reason, path: parsed.path, issue: parsed.issue }, 'unreadable ack ignored');
      return;
    }
    const ack = parsed.value;
    const batch = findBatch(ack.batchId);
    try {
      if (batch === undefined) {
        // Answered before (a duplicate ack after a resend), or sent by an earlier run: what it acks is durable.
        metrics.uplinkAcks.inc({ result: 'unknown-batch' });
        await queue.deleteByMsgId(ack.acked);
        return;
      }
      await settle(batch, ack);
    } catch (err) {
      log.error({ err, batchId: ack.batchId }, 'ack could not be applied');
    } finally {
      wake();
    }
  }

  function findBatch(batchId: BatchId): Batch | undefined {
    for (const lane of LANES) {
      const batch = lanes[lane].batches.get(batchId);
      if (batch !== undefined) return batch;
    }
    return undefined;
  }

  async function settle(batch: Batch, ack: UplinkAck): Promise<void> {
    const state = lanes[batch.lane];
    // Out of the window at once, so a second ack for this batch (after a resend) finds nothing to settle. Its
    // records stay marked in flight (`state.seqs`) until the queue has deleted them: a pump running while the
    // delete is awaited must not put them into another batch.
    state.batches.delete(batch.batchId);
    if (state.liveBatch === batch.batchId) state.liveBatch = undefined;
    metrics.uplinkInFlightBatches.set({ lane: batch.lane }, state.batches.size);
    metrics.uplinkAckSeconds.observe({ lane: batch.lane }, (nowMs() - batch.firstSentAtMs) / 1000);

    const done: QueueSeq[] = [];
    let lowestReturned: QueueSeq | undefined;
    if (ack.error !== undefined) {
      // The cloud could not read the batch at all: resending it would fail forever. Keep its records locally.
      metrics.uplinkAcks.inc({ result: 'batch-error' });
      for (const r of batch.records) {
        rejected.add({ origin: 'cloud', reason: ack.error, msgId: r.msgId, source: r.source });
        done.push(r.seq);
      }
      metrics.uplinkRecordsRejected.inc({ lane: batch.lane }, batch.records.length);
    } else {
      metrics.uplinkAcks.inc({ result: 'batch' });
      const acked = new Set<string>(ack.acked);
      const refusedAt = new Map(ack.rejected.map((r) => [r.index, r]));
      let ackedCount = 0;
      batch.records.forEach((r, index) => {
        const refusal = refusedAt.get(index);
        if (refusal !== undefined) {
          rejected.add({
            origin: 'cloud',
            reason: refusal.reason,
            msgId: r.msgId,
            source: r.source,
            ...(refusal.path === undefined ? {} : { path: refusal.path }),
          });
          done.push(r.seq);
        } else if (acked.has(r.msgId)) {
          ackedCount += 1;
          done.push(r.seq);
        } else if (lowestReturned === undefined || r.seq < lowestReturned) {
          lowestReturned = r.seq;
        }
      });
      metrics.uplinkRecordsAcked.inc({ lane: batch.lane }, ackedCount);
      if (refusedAt.size > 0) metrics.uplinkRecordsRejected.inc({ lane: batch.lane }, done.length - ackedCount);
      if (lowestReturned !== undefined) {
        // Named in neither list: back to the lane, into a new batch with a new batchId.
        log.warn(
          { batchId: batch.batchId, returned: batch.records.length - done.length },
          'ack left records unanswered: they go into a new batch',
        );
      }
    }

    try {
      await queue.deleteBySeq(done);
    } catch (err) {
      // Still queued: send them again (the cloud's writes are idempotent) rather than leave them behind the
      // cursor, where nothing would ever send or delete them until a restart.
      for (const seq of done) if (lowestReturned === undefined || seq < lowestReturned) lowestReturned = seq;
      throw err;
    } finally {
      for (const r of batch.records) state.seqs.delete(r.seq);
      if (lowestReturned !== undefined) state.cursor = Math.min(state.cursor, lowestReturned - 1);
    }
  }

  // ------------------------------------------------------------------------------------------------------------

  /** start() calls so far: a forwarder runs once. */
  let runs = 0;

  return {
    start() {
      // One run per forwarder: after stop() its batches in flight, lane cursors and client belong to the ended
      // connection, and resuming them would need a reset of all that; a stopped gateway builds a new forwarder.
      if (runs > 0) {
        throw new Error(
          stopping
            ? 'forwarder: start() after stop() is not supported; create a new forwarder'
            : 'forwarder: started twice',
        );
      }
      runs += 1;
      stopping = false;
      metrics.uplinkUp.set(0);
      connect();
      const tickMs = Math.max(20, Math.min(1_000, Math.floor(config.ackTimeoutMs / 4)));
      ackTimer = setInterval(checkOverdue, tickMs);
      if (config.stateIntervalMs > 0) stateTimer = setInterval(publishBirth, config.stateIntervalMs);
    },

    async stop() {
      stopping = true;
      clearTimeout(reconnectTimer);
      clearInterval(ackTimer);
      clearInterval(stateTimer);
      clearTimeout(drain.timer);
      drain.timer = undefined;
      reconnectTimer = undefined;
      const c = client;
      if (c === undefined) return;
      if (c.connected) {
        const offline = JSON.stringify(offlineState(bootId, conn, nowMs()));
        try {
          await withTimeout(c.publishAsync(stateTopic, offline, { qos: 1, retain: true }), STOP_PUBLISH_TIMEOUT_MS);
        } catch (err) {
          log.warn({ err: (err as Error).message }, 'offline state not confirmed before disconnecting');
        }
        await withTimeout(c.endAsync(), STOP_PUBLISH_TIMEOUT_MS).catch(() => c.end(true));
      } else {
        await c.endAsync(true);
      }
      ready = false;
      setUp(false);
    },

    wake,

    publishState: publishBirth,

    relay(topic, payload) {
      const c = client;
      if (!ready || c === undefined || !c.connected) return false;
      c.publish(topic, payload, { qos: 1 }, (err) => {
        if (err) log.debug({ topic, err: err.message }, 'relay not confirmed');
      });
      return true;
    },

    status() {
      const inFlight = Object.fromEntries(
        LANES.map((lane) => [lane, { batches: lanes[lane].batches.size, records: lanes[lane].seqs.size }]),
      ) as Record<Lane, LaneInFlight>;
      return { up, sinceMs, connects, conn, lastError, inFlight };
    },
  };
}

function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}
