/**
 * Intake: what happens to a machine's PUBLISH inside `authorizePublish`, before Aedes may PUBACK it (a PUBACK from
 * Aedes is written before `published` or on('publish') run, so only `authorizePublish` can hold it back;
 * RELIABILITY finding 1). The steps, in order:
 *   1. validate the payload with the protocol schema of the topic (decodeJson and validatePayload never throw);
 *   2. check the envelope names this machine as its source;
 *   3. map it to an UplinkRecord of the topic's kind (its lane follows from the kind);
 *   4. append it to the uplink queue — and only when that resolves (the durable queue: after its group commit)
 *      does the caller let Aedes acknowledge. When the queue refuses (full, or its store failed) the append rejects:
 *      no PUBACK, and the queue's alarm is already raised (gateway.ts).
 * A payload failing 1–2 is acknowledged all the same (a machine is never disconnected for its payload), counted,
 * logged rate-limited and kept in the rejected list. Telemetry is QoS 0 on the wire and queued the same way.
 * Command responses (`cmd/{name}/res`) are not records: they are relayed to the cloud broker as they are.
 */
import {
  PAYLOADS,
  RECORD_KIND_LANE,
  decodeJson,
  payloadNameFor,
  parsePayload,
  validatePayload,
} from '../../../protocol/index.ts';
import type { MachineId, MachineUplinkKind, ParsedTopic, RecordKind, UplinkRecord } from '../../../protocol/index.ts';
import type { Logger } from '../../../tools/runtime/logger.ts';
import type { GatewayMetrics } from '../metrics.ts';
import type { QueuedNotice } from '../uplink/forwarder.ts';
import type { UplinkQueue } from '../uplink/queue.ts';
import type { RejectedList } from './rejected.ts';

export interface IntakePacket {
  readonly topic: string;
  readonly payload: Buffer | string;
  readonly retain?: boolean;
  /** The PUBLISH's QoS (0 when absent): decides what a rate refusal means for it (`maxEventHz`). */
  readonly qos?: number;
}

export interface IntakeOptions {
  readonly queue: UplinkQueue;
  readonly rejected: RejectedList;
  readonly metrics: GatewayMetrics;
  readonly nowMs: () => number;
  readonly log: Logger;
  /** Called after each append, so the forwarder can send without polling (and send it on its live path). */
  readonly onQueued?: (queued: QueuedNotice) => void;
  /** Sends a machine's command response on to the cloud broker; false when it could not (uplink down). */
  readonly relay?: (topic: string, payload: Buffer) => boolean;
  /**
   * Most telemetry samples per second a machine may queue (a one-second burst allowed); beyond it samples are
   * dropped, counted and logged as `telemetry-rate`. FTMS machines notify at ≤ 4 Hz: the cap stops one faulty
   * machine from filling the queue, evicting everyone's telemetry, and growing one cloud bucket past MongoDB's
   * 16 MB document limit (which would wedge the gateway's telemetry lane on every resend). Default: no cap.
   */
  readonly maxTelemetryHz?: number;
  /**
   * Most `event` messages per second a machine may queue (a one-second burst allowed): a machine flooding events
   * (qr-scanned, errors) must not fill the durable queue. Events are QoS 1 records, so an excess one is REFUSED,
   * not dropped: no PUBACK (the machine must never be told a record is stored when it is not), Aedes closes the
   * connection, and the machine resends it after reconnecting — its reconnect delay is the back-pressure. From
   * the refusal on, that machine's later records are refused too until it connects again (`release`), so what it
   * resends keeps its order. An event sent at QoS 0 beyond the limit is dropped (nothing was promised). Both are
   * counted and logged as `event-rate`. Default: no cap.
   */
  readonly maxEventHz?: number;
}

/** Thrown (rejected) by `accept` when the intake refuses a QoS 1 record itself: no PUBACK, connection closed. */
export class IntakeRefusedError extends Error {
  readonly reason: string;
  constructor(reason: string, detail: string) {
    super(`record refused (${reason}): ${detail}`);
    this.name = 'IntakeRefusedError';
    this.reason = reason;
  }
}

export interface Intake {
  /**
   * Handles one PUBLISH of `machine` to a topic the ACL already allowed. Resolves when the machine may get its
   * PUBACK: the record is queued, or the payload was refused and recorded. Rejects only when the record cannot be
   * queued (queue full or closed): the machine then gets no PUBACK.
   */
  accept(machine: MachineId, topic: Extract<ParsedTopic, { machine: MachineId }>, packet: IntakePacket): Promise<void>;
}

/** The intake createIntake builds: also told when a machine connects again. */
export interface MachineIntake extends Intake {
  /** The machine connected again: its records are accepted again after a rate refusal (`maxEventHz`). */
  release(machine: MachineId): void;
}

const RECORD_KIND_OF_TOPIC: Readonly<Record<`machine-${MachineUplinkKind}`, RecordKind>> = {
  'machine-meta': 'meta',
  'machine-status': 'status',
  'machine-telemetry': 'telemetry',
  'machine-workout': 'workout',
  'machine-event': 'event',
};

export function createIntake(options: IntakeOptions): MachineIntake {
  const { queue, rejected, metrics, nowMs, log } = options;
  const telemetryBudget = options.maxTelemetryHz === undefined ? undefined : createRateBudget(options.maxTelemetryHz);
  const eventBudget = options.maxEventHz === undefined ? undefined : createRateBudget(options.maxEventHz);
  /** Machines whose QoS 1 record this intake refused (rate): their later records wait for a reconnect. */
  const refusedMachines = new Set<MachineId>();

  function refuse(
    machine: MachineId,
    packet: IntakePacket,
    reason: string,
    detail: { path?: string; issue?: string; msgId?: string } = {},
  ): void {
    rejected.add({
      origin: 'machine',
      reason,
      source: machine,
      topic: packet.topic,
      payload: packet.payload,
      ...detail,
    });
  }

  async function accept(
    machine: MachineId,
    topic: Extract<ParsedTopic, { machine: MachineId }>,
    packet: IntakePacket,
  ): Promise<void> {
    const started = performance.now();
    if (topic.kind === 'machine-command-response') {
      const response = parsePayload('CommandResponse', packet.payload);
      if (!response.ok) {
        refuse(machine, packet, response.reason, pick(response));
        return;
      }
      const sent = options.relay?.(packet.topic, Buffer.from(packet.payload)) ?? false;
      metrics.uplinkRelayed.inc({ result: sent ? 'sent' : 'dropped-offline' });
      return;
    }
    if (topic.kind === 'machine-command' || topic.kind === 'live-machine') {
      // Not machine publications (the ACL never lets them through); refused loudly should it ever change.
      refuse(machine, packet, 'not-a-record');
      return;
    }
    const kind = RECORD_KIND_OF_TOPIC[topic.kind];
    if (kind === 'telemetry' && telemetryBudget && !telemetryBudget.take(machine, nowMs())) {
      // Telemetry is QoS 0 and lossy by design; no payload kept (a flood would only churn the rejected list).
      rejected.add({
        origin: 'machine',
        reason: 'telemetry-rate',
        source: machine,
        topic: packet.topic,
        bytes: packet.payload.length,
      });
      return;
    }
    if (kind !== 'telemetry' && refusedMachines.has(machine)) {
      // An earlier record of this connection was refused: a later one must not be stored before its resend.
      throw new IntakeRefusedError('event-rate', `${machine}: an earlier record was refused; reconnect and resend`);
    }
    if (kind === 'event' && eventBudget && !eventBudget.take(machine, nowMs())) {
      rejected.add({
        origin: 'machine',
        reason: 'event-rate',
        source: machine,
        topic: packet.topic,
        bytes: packet.payload.length,
      });
      if ((packet.qos ?? 0) === 0) return;
      refusedMachines.add(machine);
      throw new IntakeRefusedError('event-rate', `${machine} exceeds ${options.maxEventHz} events/s`);
    }
    const name = payloadNameFor(topic);
    // Decode once, validate the decoded value, and queue the value as the machine sent it: the record's payload
    // is "the message exactly as its source published it", so fields of a newer minor version reach the cloud.
    const decoded = decodeJson(packet.payload, PAYLOADS[name].maxBytes);
    if (!decoded.ok) {
      refuse(machine, packet, decoded.reason, pick(decoded));
      return;
    }
    const checked = validatePayload(name, decoded.value);
    if (!checked.ok) {
      refuse(machine, packet, checked.reason, pick(checked));
      return;
    }
    const envelope = checked.value as UplinkRecord['payload'];
    if (envelope.source !== machine) {
      // The envelope must name the machine that sent it: the cloud orders and deduplicates per source.
      refuse(machine, packet, 'wrong-source', { path: 'source', msgId: envelope.msgId });
      return;
    }
    if (checked.unknownKeys.length > 0) {
      log.debug(
        { machine, topic: packet.topic, unknownKeys: checked.unknownKeys },
        'fields this gateway does not know',
      );
    }
    const payload = decoded.value as UplinkRecord['payload'];
    const receivedAt = nowMs();
    const record = { kind, receivedAt, payload } as UplinkRecord;
    const seq = await queue.append(record, receivedAt);
    metrics.intakeRecords.inc({ kind });
    metrics.intakeAppendSeconds.observe((performance.now() - started) / 1000);
    options.onQueued?.({ seq, lane: RECORD_KIND_LANE[kind], kind, source: machine });
  }

  return {
    accept,
    release(machine) {
      refusedMachines.delete(machine);
    },
  };
}

/** A token bucket per machine: `perSecond` tokens a second, at most one second's worth saved up. */
function createRateBudget(perSecond: number): { take(key: string, nowMs: number): boolean } {
  const buckets = new Map<string, { tokens: number; atMs: number }>();
  return {
    take(key, nowMs) {
      const bucket = buckets.get(key) ?? { tokens: perSecond, atMs: nowMs };
      bucket.tokens = Math.min(perSecond, bucket.tokens + ((nowMs - bucket.atMs) / 1000) * perSecond);
      bucket.atMs = nowMs;
      buckets.set(key, bucket);
      if (bucket.tokens < 1) return false;
      bucket.tokens -= 1;
      return true;
    },
  };
}

function pick(failure: { path?: string; issue?: string }): { path?: string; issue?: string } {
  return {
    ...(failure.path === undefined ? {} : { path: failure.path }),
    ...(failure.issue === undefined ? {} : { issue: failure.issue }),
  };
}
