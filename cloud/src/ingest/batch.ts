/**
 * One uplink batch, start to finish: parse → check each record against its topic → write (records, telemetry
 * buckets, dead letters) → ack → live state. The ack goes out only after every MongoDB write of the batch
 * succeeded; if one failed as a whole, nothing is acked and the gateway resends the batch (all writes are
 * idempotent, so the resend stores nothing twice).
 */
import { setTimeout as delay } from 'node:timers/promises';
import type { Logger } from '../../../tools/runtime/logger.ts';
import type { Clock } from '../../../tools/runtime/clock.ts';
import { laneOf, parseUplinkBatch, rejectionOf } from '../../../protocol/index.ts';
import type { BatchParseResult } from '../../../protocol/payloads.ts';
import type {
  BatchId,
  BranchId,
  GatewayId,
  Lane,
  MachineId,
  MsgId,
  RecordKind,
  RecordResult,
  RejectedRecord,
  Telemetry,
  UplinkAck,
  UplinkRecord,
} from '../../../protocol/index.ts';
import type { IngestMetrics } from './metrics.ts';
import type { RateLimitedLog } from '../../../tools/runtime/rate-limited-log.ts';
import type { SourceCheck } from './sources.ts';
import type { StoredHooks } from './stored-hooks.ts';
import {
  MAX_DEAD_LETTER_EXCERPT,
  type DeadLetterDocument,
  type IngestStore,
  type RecordDocument,
  type StoredRecordKind,
  type TelemetrySample,
} from './store.ts';

/** A batch as the broker handed it over. */
export interface ReceivedBatch {
  branch: BranchId;
  gateway: GatewayId;
  lane: Lane;
  payload: Buffer;
  /** Cloud clock at receipt. */
  receivedAtMs: number;
  /** performance.now() at receipt, for the ack latency. */
  receivedPerfMs: number;
  /** Parsed already at receipt (telemetry, for the live workout forwarding): not parsed again. */
  parsed?: BatchParseResult;
  /** Its telemetry went to `onTelemetry` at receipt already. */
  forwarded?: boolean;
}

export interface BatchDeps {
  store: IngestStore;
  publishAck(branch: BranchId, gateway: GatewayId, ack: UplinkAck): Promise<void>;
  /** Applies accepted records to live state; never rejects (it reports its own failures). */
  applyLive(branch: BranchId, gateway: GatewayId, records: readonly AcceptedRecord[]): Promise<void>;
  metrics: IngestMetrics;
  rlog: RateLimitedLog;
  log: Logger;
  clock: Clock;
  /** Telemetry older than this (by its `ts`) is refused as `too-old`: the retention job would delete it anyway. */
  telemetryMaxAgeMs?: number;
  /** Fault injection only (INGEST_ACK_DELAY_MS): a pause between the MongoDB write and the ack. */
  ackDelayMs?: number;
  /** Checks that machine records come from this gateway's own machines; without it they are not checked. */
  sources?: SourceCheck;
  /**
   * Erased members (GDPR): a record naming one — a workout or scan a gateway buffered while offline — is stored
   * without the member (no userId, no sessionId) rather than resurrect them.
   */
  erasedMembers?: { isDeleted(userId: string): Promise<boolean> };
  /**
   * `onStored` handlers: records of a kind with handlers are stored marked `pending` for them (same write), and
   * handed to them after the ack (stored-hooks.ts).
   */
  hooks?: Pick<StoredHooks, 'pendingFor' | 'dispatch'>;
  /**
   * The batch's accepted telemetry samples, as soon as they are checked — before the MongoDB write: the linked
   * member's live workout is a view, not a record (the durable copy is acked as usual). Must not throw.
   */
  onTelemetry?: (branch: BranchId, samples: readonly Telemetry[]) => void;
}

/** A record that passed every check, with its position in the batch. */
export interface AcceptedRecord {
  index: number;
  record: UplinkRecord;
}

interface Refusal {
  index: number;
  msgId?: MsgId;
  kind?: string;
  reason: string;
  path?: string;
  issue?: string;
}

/** Record kinds whose source is the gateway itself (its door scans and offline decisions). */
const GATEWAY_SOURCED: ReadonlySet<RecordKind> = new Set(['access-scan', 'offline-decision']);

export type BatchOutcome = 'acked' | 'error-acked' | 'live' | 'invalid' | 'write-failed';

export async function processBatch(batch: ReceivedBatch, deps: BatchDeps): Promise<BatchOutcome> {
  const { metrics, rlog } = deps;
  const where = { branch: batch.branch, gateway: batch.gateway, lane: batch.lane };
  const parsed = batch.parsed ?? parseUplinkBatch(batch.payload);

  if (!parsed.ok) {
    metrics.invalidInput.inc({ reason: `batch-${parsed.reason}` });
    rlog.warn(
      `batch-${parsed.reason}`,
      { ...where, batchId: parsed.batchId, path: parsed.path, issue: parsed.issue, bytes: batch.payload.length },
      'uplink batch refused',
    );
    // Without a batch id there is nothing to answer and nothing to file it under: counted and logged only.
    if (parsed.batchId === undefined) return 'invalid';
    const letter: DeadLetterDocument = {
      _id: `${batch.gateway}:${parsed.batchId}:batch`,
      ...where,
      batchId: parsed.batchId,
      reason: `batch-${parsed.reason}`,
      ...(parsed.path === undefined ? {} : { path: parsed.path }),
      ...(parsed.issue === undefined ? {} : { issue: parsed.issue }),
      raw: excerptOfBytes(batch.payload),
      receivedAt: new Date(batch.receivedAtMs),
    };
    if (!(await write(batch, deps, () => deps.store.insertDeadLetters([letter])))) return 'write-failed';
    metrics.deadLetters.inc({ reason: letter.reason });
    await sendAck(batch, deps, { batchId: parsed.batchId, acked: [], rejected: [], error: parsed.reason });
    return 'error-acked';
  }

  metrics.batchRecords.observe({ lane: batch.lane }, parsed.records.length);
  if (parsed.unknownKeys.length > 0) {
    rlog.warn(
      'batch-unknown-keys',
      { ...where, keys: parsed.unknownKeys.slice(0, 10) },
      'uplink batch has unknown keys',
    );
  }

  let foreign: ReadonlySet<string> = new Set();
  if (deps.sources) {
    const sources = deps.sources;
    const machines = new Set(
      parsed.records.flatMap((r) => (r.ok && !GATEWAY_SOURCED.has(r.record.kind) ? [r.record.payload.source] : [])),
    );
    // The directory is in MongoDB: if it cannot be read, neither can the batch be stored — no ack, resent later.
    const read = await write(batch, deps, async () => {
      foreign = await sources.unknownAmong(batch.branch, batch.gateway, machines);
    });
    if (!read) return 'write-failed';
  }
  const checked = checkRecords(batch, parsed.records, deps, foreign);
  const { refused } = checked;
  let accepted = checked.accepted;
  if (deps.erasedMembers) {
    const erased = deps.erasedMembers;
    let anonymised: AcceptedRecord[] | undefined;
    // Like the source check, the tombstones are in MongoDB: unreadable means no write and no ack (resent later).
    const read = await write(batch, deps, async () => {
      anonymised = await withoutErasedMembers(accepted, erased);
    });
    if (!read || !anonymised) return 'write-failed';
    accepted = anonymised;
  }

  if (deps.onTelemetry && !batch.forwarded) {
    const samples: Telemetry[] = [];
    for (const { record } of accepted) if (record.kind === 'telemetry') samples.push(record.payload);
    if (samples.length > 0) deps.onTelemetry(batch.branch, samples);
  }

  if (parsed.live) {
    // A live snapshot: live state only, never stored, never acked (the same records also travel through the queue).
    for (const r of refused) countRefusal(r, deps, where, parsed.batchId);
    await deps.applyLive(batch.branch, batch.gateway, accepted);
    return 'live';
  }

  // The raw batch is parsed again for the refused records' excerpts: once per batch, and only if one was refused.
  const rawRecords = refused.length === 0 ? undefined : rawRecordsOf(batch.payload);
  const letters = refused.map((r) => deadLetterOf(batch, parsed.batchId, r, rawRecords));
  const byKind = new Map<StoredRecordKind, RecordDocument[]>();
  const samples: TelemetrySample[] = [];
  const ingestedAt = new Date(batch.receivedAtMs);
  for (const { record } of accepted) {
    if (record.kind === 'telemetry') {
      samples.push({ branch: batch.branch, machine: record.payload.source as MachineId, sample: record.payload });
      continue;
    }
    const { msgId, ...fields } = record.payload;
    const pending = deps.hooks?.pendingFor(record.kind) ?? [];
    const doc: RecordDocument = {
      ...fields,
      _id: msgId,
      branch: batch.branch,
      gateway: batch.gateway,
      batchId: parsed.batchId,
      at: new Date(record.payload.ts),
      ingestedAt,
      ...(record.receivedAt === undefined ? {} : { gatewayReceivedAt: record.receivedAt }),
      ...(pending.length > 0 ? { pending: [...pending] } : {}),
    };
    const list = byKind.get(record.kind) ?? [];
    list.push(doc);
    byKind.set(record.kind, list);
  }

  let results: Awaited<ReturnType<typeof writeAll>> | undefined;
  const ok = await write(batch, deps, async () => {
    results = await writeAll(deps.store, byKind, samples, letters);
  });
  if (!ok || !results) return 'write-failed';
  if (deps.ackDelayMs) await delay(deps.ackDelayMs);

  const durable = new Set<string>();
  for (const [kind, outcome] of results.records) {
    for (const id of outcome.stored) durable.add(id);
    for (const id of outcome.duplicate) durable.add(id);
    metrics.records.inc({ kind, outcome: 'stored' }, outcome.stored.length);
    metrics.records.inc({ kind, outcome: 'duplicate' }, outcome.duplicate.length);
    metrics.records.inc({ kind, outcome: 'failed' }, outcome.failed.length);
    if (outcome.failed.length > 0) {
      rlog.warn('record-write-failed', { ...where, kind, failed: outcome.failed.length }, 'records not stored');
    }
  }
  metrics.records.inc({ kind: 'telemetry', outcome: 'stored' }, results.telemetry.stored);
  metrics.records.inc({ kind: 'telemetry', outcome: 'duplicate' }, results.telemetry.duplicate);
  for (const s of samples) durable.add(s.sample.msgId);
  for (const r of refused) {
    countRefusal(r, deps, where, parsed.batchId);
    metrics.deadLetters.inc({ reason: r.reason });
  }

  const acked: MsgId[] = [];
  const storedRecords: AcceptedRecord[] = [];
  for (const a of accepted) {
    if (durable.has(a.record.payload.msgId)) {
      acked.push(a.record.payload.msgId);
      storedRecords.push(a);
    }
  }
  const rejected: RejectedRecord[] = refused.map((r) => ({
    ...(r.msgId === undefined ? {} : { msgId: r.msgId }),
    index: r.index,
    reason: r.reason,
    ...(r.path === undefined ? {} : { path: r.path.slice(0, 256) }),
  }));
  if (acked.length === 0 && rejected.length === 0) {
    // Every record failed to store: an empty ack would only make the gateway re-batch them; let it resend instead.
    metrics.mongoWriteFailures.inc({ lane: batch.lane });
    return 'write-failed';
  }
  await sendAck(batch, deps, { batchId: parsed.batchId, acked, rejected });
  if (deps.hooks) {
    // Only the newly stored: a duplicate's handlers ran (or are pending) from its first delivery.
    for (const [kind, outcome] of results.records) {
      if (outcome.stored.length === 0 || deps.hooks.pendingFor(kind).length === 0) continue;
      const fresh = new Set<string>(outcome.stored);
      deps.hooks.dispatch(
        kind,
        byKind.get(kind)!.filter((doc) => fresh.has(doc._id)),
      );
    }
  }
  await deps.applyLive(batch.branch, batch.gateway, storedRecords);
  return 'acked';
}

/** The records, with every reference to an erased member removed (one tombstone lookup per distinct member). */
async function withoutErasedMembers(
  accepted: readonly AcceptedRecord[],
  erased: { isDeleted(userId: string): Promise<boolean> },
): Promise<AcceptedRecord[]> {
  const memberOf = (a: AcceptedRecord): string | undefined => {
    const userId = (a.record.payload as { userId?: unknown }).userId;
    return typeof userId === 'string' ? userId : undefined;
  };
  const members = [...new Set(accepted.flatMap((a) => memberOf(a) ?? []))];
  if (members.length === 0) return [...accepted];
  const gone = new Set<string>();
  await Promise.all(
    members.map(async (userId) => {
      if (await erased.isDeleted(userId)) gone.add(userId);
    }),
  );
  if (gone.size === 0) return [...accepted];
  return accepted.map((a) => {
    const member = memberOf(a);
    if (member === undefined || !gone.has(member)) return a;
    const {
      userId: _userId,
      sessionId: _sessionId,
      ...payload
    } = a.record.payload as typeof a.record.payload & {
      userId?: string;
      sessionId?: string;
    };
    return { ...a, record: { ...a.record, payload } as UplinkRecord };
  });
}

/** Lane, source and age checks on the records that parsed; the parse failures come along as refusals. */
function checkRecords(
  batch: ReceivedBatch,
  results: readonly RecordResult[],
  deps: BatchDeps,
  foreignMachines: ReadonlySet<string>,
): { accepted: AcceptedRecord[]; refused: Refusal[] } {
  const accepted: AcceptedRecord[] = [];
  const refused: Refusal[] = [];
  const oldest = deps.telemetryMaxAgeMs === undefined ? undefined : deps.clock.nowMs() - deps.telemetryMaxAgeMs;
  for (const result of results) {
    if (!result.ok) {
      refused.push({
        ...rejectionOf(result),
        ...(result.issue === undefined ? {} : { issue: result.issue }),
      });
      continue;
    }
    const { record, index } = result;
    const base = { index, msgId: record.payload.msgId, kind: record.kind };
    if (laneOf(record.kind) !== batch.lane) {
      refused.push({ ...base, reason: 'wrong-lane', path: 'kind' });
    } else if (GATEWAY_SOURCED.has(record.kind) !== (record.payload.source === batch.gateway)) {
      // A gateway's own records name it as their source; a machine's records never name the gateway.
      refused.push({ ...base, reason: 'wrong-source', path: 'payload.source' });
    } else if (foreignMachines.has(record.payload.source)) {
      // Not a machine provisioned for this gateway and branch.
      refused.push({ ...base, reason: 'wrong-source', path: 'payload.source' });
    } else if (record.kind === 'telemetry' && oldest !== undefined && record.payload.ts < oldest) {
      refused.push({ ...base, reason: 'too-old', path: 'payload.ts' });
    } else {
      accepted.push({ index, record });
    }
  }
  return { accepted, refused };
}

function countRefusal(r: Refusal, deps: BatchDeps, where: Record<string, string>, batchId: BatchId): void {
  deps.metrics.records.inc({ kind: r.kind ?? 'unknown', outcome: 'rejected' });
  deps.metrics.invalidInput.inc({ reason: r.reason });
  deps.rlog.warn(
    `record-${r.reason}`,
    { ...where, batchId, index: r.index, kind: r.kind, path: r.path, issue: r.issue },
    'uplink record refused',
  );
}

async function writeAll(
  store: IngestStore,
  byKind: ReadonlyMap<StoredRecordKind, RecordDocument[]>,
  samples: readonly TelemetrySample[],
  letters: readonly DeadLetterDocument[],
) {
  const kinds = [...byKind.keys()];
  const [records, telemetry] = await Promise.all([
    Promise.all(kinds.map((kind) => store.insertRecords(kind, byKind.get(kind)!))),
    store.addTelemetry(samples),
    store.insertDeadLetters(letters),
  ]);
  return { records: kinds.map((kind, i) => [kind, records[i]!] as const), telemetry };
}

/** Runs the batch's MongoDB writes; false (counted, logged) when they failed as a whole. */
async function write(batch: ReceivedBatch, deps: BatchDeps, run: () => Promise<void>): Promise<boolean> {
  try {
    await run();
    return true;
  } catch (err) {
    deps.metrics.mongoWriteFailures.inc({ lane: batch.lane });
    deps.rlog.warn(
      'mongo-write-failed',
      { gateway: batch.gateway, lane: batch.lane, err: { name: (err as Error).name, message: (err as Error).message } },
      'uplink batch not stored; no ack (the gateway resends it)',
    );
    return false;
  }
}

async function sendAck(batch: ReceivedBatch, deps: BatchDeps, ack: UplinkAck): Promise<void> {
  await deps.publishAck(batch.branch, batch.gateway, ack);
  deps.metrics.ackLatency.observe({ lane: batch.lane }, (performance.now() - batch.receivedPerfMs) / 1000);
}

function deadLetterOf(
  batch: ReceivedBatch,
  batchId: BatchId,
  r: Refusal,
  rawRecords: readonly unknown[] | undefined,
): DeadLetterDocument {
  return {
    _id: `${batch.gateway}:${batchId}:${r.index}`,
    branch: batch.branch,
    gateway: batch.gateway,
    lane: batch.lane,
    batchId,
    index: r.index,
    ...(r.msgId === undefined ? {} : { msgId: r.msgId }),
    ...(r.kind === undefined ? {} : { kind: r.kind }),
    reason: r.reason,
    ...(r.path === undefined ? {} : { path: r.path }),
    ...(r.issue === undefined ? {} : { issue: r.issue }),
    raw: excerptOfRecord(rawRecords, r.index),
    receivedAt: new Date(batch.receivedAtMs),
  };
}

/** Keys whose values are credentials (QR tokens, card UIDs, secrets): blanked in dead letters. */
const CREDENTIAL_KEY = /^(token|uid|secret|password|jws|credential)$/i;

/** The batch's records as received (before any schema stripped them), for excerpts; undefined if unreadable. */
function rawRecordsOf(payload: Buffer): readonly unknown[] | undefined {
  try {
    const batch = JSON.parse(payload.toString('utf8')) as { records?: unknown };
    return Array.isArray(batch.records) ? batch.records : undefined;
  } catch {
    return undefined;
  }
}

/** The refused record as JSON, credentials blanked, cut to MAX_DEAD_LETTER_EXCERPT characters. */
function excerptOfRecord(rawRecords: readonly unknown[] | undefined, index: number): string {
  try {
    return cut(
      JSON.stringify(rawRecords?.[index], (key, value: unknown) =>
        CREDENTIAL_KEY.test(key) && typeof value !== 'object' ? '[redacted]' : value,
      ) ?? '',
    );
  } catch {
    return '';
  }
}

function excerptOfBytes(payload: Buffer): string {
  const text = payload.subarray(0, MAX_DEAD_LETTER_EXCERPT * 4).toString('utf8');
  // Blank anything that looks like a credential field in text that may not even be JSON.
  return cut(text.replace(/("(?:token|uid|secret|password|jws)"\s*:\s*)"[^"]*"/gi, '$1"[redacted]"'));
}

function cut(text: string): string {
  return text.length <= MAX_DEAD_LETTER_EXCERPT ? text : `${text.slice(0, MAX_DEAD_LETTER_EXCERPT - 1)}…`;
}
