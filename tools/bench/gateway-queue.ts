/**
 * Part (1) of `npm run bench:gateway`: the durable queue's write rate at its sync policy (WAL, synchronous=FULL), with
 * group commit as the gateway runs it, against one row per transaction as the baseline, in the same run.
 *
 * Each run appends `records` prebuilt records (the mix of a busy branch: 4 telemetry samples to 1 record) to a fresh
 * SqliteQueue in a temporary directory, keeping `inFlight` appends open at once as machines awaiting their PUBACK do
 * (each resolved append starts the next). Reported: appends/s, rows per transaction, and the append → resolved
 * latency (what the PUBACK waits for).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import hdr from 'hdr-histogram-js';
import { newMsgId } from '../../protocol/index.ts';
import type { MachineId, UplinkRecord } from '../../protocol/index.ts';
import { recordOf } from '../../edge-gateway/src/testing/fixtures.ts';
import { SqliteQueue } from '../../edge-gateway/src/uplink/sqlite-queue.ts';

export interface QueueWriteResult {
  readonly label: string;
  readonly commitDelayMs: number;
  readonly commitMaxRows: number;
  readonly records: number;
  readonly perS: number;
  readonly rowsPerCommit: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
}

export interface QueueWriteOptions {
  readonly label: string;
  readonly records: number;
  readonly inFlight: number;
  readonly commitDelayMs: number;
  readonly commitMaxRows: number;
  readonly onProgress?: (done: number) => void;
}

/** Records of 200 machines, built (and validated) before the clock starts; each gets a fresh msgId. */
export function benchRecords(count: number): UplinkRecord[] {
  const templates: UplinkRecord[] = [];
  for (let m = 0; m < 200; m++) {
    const machine = `m-${String(m + 1).padStart(3, '0')}` as MachineId;
    templates.push(recordOf.telemetry(machine, m), recordOf.workout(machine, m));
  }
  const out: UplinkRecord[] = [];
  for (let i = 0; i < count; i++) {
    const t = templates[(i % 5 === 4 ? 1 : 0) + 2 * (i % 200)]!;
    out.push({ ...t, payload: { ...t.payload, msgId: newMsgId(), seq: i } } as UplinkRecord);
  }
  return out;
}

export async function measureQueueWrites(options: QueueWriteOptions): Promise<QueueWriteResult> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'nxg-bench-queue-'));
  const records = benchRecords(options.records);
  let commits = 0;
  let rows = 0;
  const queue = new SqliteQueue({
    file: path.join(dir, 'uplink-queue.sqlite'),
    capRecords: 100_000_000,
    capBytes: 64 * 1024 * 1024 * 1024,
    commitDelayMs: options.commitDelayMs,
    commitMaxRows: options.commitMaxRows,
    onCommit: (n) => {
      commits += 1;
      rows += n;
    },
  });
  const latency = hdr.build({
    lowestDiscernibleValue: 1,
    highestTrackableValue: 60_000_000,
    numberOfSignificantValueDigits: 3,
  });
  try {
    let next = 0;
    let done = 0;
    const started = performance.now();
    await new Promise<void>((resolve, reject) => {
      const startOne = (): void => {
        if (next >= records.length) return;
        const record = records[next++]!;
        const t0 = performance.now();
        queue.append(record, Date.now()).then(
          () => {
            latency.recordValue(Math.max(1, Math.round((performance.now() - t0) * 1000)));
            done += 1;
            if (done % 5_000 === 0) options.onProgress?.(done);
            if (done === records.length) resolve();
            else startOne();
          },
          (err: unknown) => reject(err instanceof Error ? err : new Error(String(err))),
        );
      };
      for (let k = 0; k < options.inFlight; k++) startOne();
    });
    const seconds = (performance.now() - started) / 1000;
    return {
      label: options.label,
      commitDelayMs: options.commitDelayMs,
      commitMaxRows: options.commitMaxRows,
      records: records.length,
      perS: Math.round(records.length / seconds),
      rowsPerCommit: commits > 0 ? Math.round((rows / commits) * 10) / 10 : 0,
      p50Ms: latency.getValueAtPercentile(50) / 1000,
      p99Ms: latency.getValueAtPercentile(99) / 1000,
    };
  } finally {
    await queue.close();
    latency.destroy();
    await rm(dir, { recursive: true, force: true });
  }
}
