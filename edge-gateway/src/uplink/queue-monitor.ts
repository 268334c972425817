/**
 * What the queue's figures mean for an operator: the drain rate, the intake rate per lane, and the forecast of how
 * many more hours of outage the queue can absorb before it must evict anything ("offline hours left").
 *
 * Sampled once a second from the queue's cumulative counters (`appended`, `appendedBytes`, `deleted` per lane):
 * - intake per lane, records/s and bytes/s: an EWMA with a time constant of minutes (`intakeTauS`, default 300 s),
 *   so a burst does not swing the forecast and a new steady rate shows within a few minutes;
 * - drain, records/s deleted after the cloud's ack: an EWMA over `drainTauS` (default 10 s).
 * Forecast: with the uplink down, everything appended stays. Room left before eviction must start is the smaller of
 * the records and the bytes still free under the caps, and of the disk's free space (a row takes more room on disk
 * than its JSON: `diskBytesPerJsonByte`); hours left = room / intake rate. `null` while nothing comes in.
 * Alarm (`forecastLow`) below `minOfflineHours`; a warning in the log when it starts and when it ends. While a
 * backlog waits (a record older than 10 s), its figures are logged once a minute (`logIntervalMs`).
 */
import { statfsSync } from 'node:fs';
import { LANES } from '../../../protocol/index.ts';
import type { Lane } from '../../../protocol/index.ts';
import type { Logger } from '../../../tools/runtime/logger.ts';
import type { QueueStats } from './queue.ts';

export interface QueueInsight {
  /** Records/s deleted after the cloud's ack (EWMA over seconds). */
  readonly drainPerS: number;
  /** Records/s and bytes/s appended, per lane (EWMA over minutes). */
  readonly intake: Readonly<Record<Lane, { readonly recordsPerS: number; readonly bytesPerS: number }>>;
  /** Hours of outage the queue absorbs at the current intake before it must evict; null: no intake. */
  readonly offlineHoursLeft: number | null;
  /** offlineHoursLeft is below the configured minimum. */
  readonly forecastLow: boolean;
  readonly minOfflineHours: number;
}

export interface QueueMonitorOptions {
  readonly stats: () => QueueStats;
  readonly nowMs: () => number;
  readonly log: Logger;
  readonly minOfflineHours: number;
  /** The directory the queue's file lives in (free disk space bounds the forecast); undefined: caps only. */
  readonly dataDir?: string;
  readonly intakeTauS?: number;
  readonly drainTauS?: number;
  readonly sampleMs?: number;
  /** Disk bytes a JSON byte takes in SQLite (row, indexes, WAL); default 2. */
  readonly diskBytesPerJsonByte?: number;
  /** While records wait, their figures are logged at most this often (default 60 s). */
  readonly logIntervalMs?: number;
}

export interface QueueMonitor {
  start(): void;
  stop(): void;
  /** Takes a sample now (the timer does it every `sampleMs`). */
  sample(): void;
  insight(): QueueInsight;
}

interface Counters {
  readonly atMs: number;
  readonly appended: Record<Lane, number>;
  readonly appendedBytes: Record<Lane, number>;
  readonly deleted: number;
}

export function createQueueMonitor(options: QueueMonitorOptions): QueueMonitor {
  const intakeTauS = options.intakeTauS ?? 300;
  const drainTauS = options.drainTauS ?? 10;
  const sampleMs = options.sampleMs ?? 1_000;
  const perByte = options.diskBytesPerJsonByte ?? 2;
  const zero = () => ({ access: 0, records: 0, telemetry: 0 }) as Record<Lane, number>;
  const intakeRecords = zero();
  const intakeBytes = zero();
  let drainPerS = 0;
  let seeded = false;
  let last: Counters = read();
  let timer: NodeJS.Timeout | undefined;
  let low = false;
  let lastLogMs = Number.NEGATIVE_INFINITY;

  function read(): Counters {
    const s = options.stats();
    const appended = zero();
    const appendedBytes = zero();
    let deleted = 0;
    for (const lane of LANES) {
      appended[lane] = s.lanes[lane].appended;
      appendedBytes[lane] = s.lanes[lane].appendedBytes;
      deleted += s.lanes[lane].deleted;
    }
    return { atMs: options.nowMs(), appended, appendedBytes, deleted };
  }

  const ewma = (prev: number, value: number, dtS: number, tauS: number) =>
    prev + (1 - Math.exp(-dtS / tauS)) * (value - prev);

  function sample(): void {
    const now = read();
    const dtS = (now.atMs - last.atMs) / 1000;
    if (dtS <= 0) return;
    for (const lane of LANES) {
      const r = Math.max(0, now.appended[lane] - last.appended[lane]) / dtS;
      const b = Math.max(0, now.appendedBytes[lane] - last.appendedBytes[lane]) / dtS;
      // The first sample seeds the average: a gateway that just started forecasts from what it sees, not from 0.
      intakeRecords[lane] = seeded ? ewma(intakeRecords[lane], r, dtS, intakeTauS) : r;
      intakeBytes[lane] = seeded ? ewma(intakeBytes[lane], b, dtS, intakeTauS) : b;
    }
    const d = Math.max(0, now.deleted - last.deleted) / dtS;
    drainPerS = seeded ? ewma(drainPerS, d, dtS, drainTauS) : d;
    seeded = true;
    last = now;
    const current = insight();
    logFigures(now.atMs, current);
    if (current.forecastLow !== low) {
      low = current.forecastLow;
      if (low) {
        options.log.warn(
          { offlineHoursLeft: current.offlineHoursLeft, minOfflineHours: options.minOfflineHours },
          'uplink queue forecast: fewer offline hours left than the minimum before telemetry must be evicted',
        );
      } else {
        options.log.info(
          { offlineHoursLeft: current.offlineHoursLeft },
          'uplink queue forecast back above the minimum',
        );
      }
    }
  }

  /** A backlog is worth a line now and then: depth, bytes and oldest age per lane, drain rate, forecast. */
  function logFigures(nowMs: number, current: QueueInsight): void {
    const s = options.stats();
    if (s.depth === 0 || nowMs - lastLogMs < (options.logIntervalMs ?? 60_000)) return;
    const oldest = LANES.map((lane) => s.lanes[lane].oldestEnqueuedAtMs).filter((t) => t !== undefined);
    if (oldest.length === 0 || nowMs - Math.min(...oldest) < 10_000) return; // records passing through, no backlog
    lastLogMs = nowMs;
    options.log.info(
      {
        depth: s.depth,
        bytes: s.bytes,
        lanes: Object.fromEntries(
          LANES.map((lane) => {
            const l = s.lanes[lane];
            const ageS = l.oldestEnqueuedAtMs === undefined ? null : Math.round((nowMs - l.oldestEnqueuedAtMs) / 1000);
            return [lane, { depth: l.depth, bytes: l.bytes, oldestAgeS: ageS, evicted: l.evicted }];
          }),
        ),
        full: s.full,
        drainPerS: current.drainPerS,
        offlineHoursLeft: current.offlineHoursLeft,
      },
      'uplink queue backlog',
    );
  }

  function freeDiskBytes(): number | undefined {
    if (options.dataDir === undefined) return undefined;
    try {
      const fs = statfsSync(options.dataDir);
      return fs.bavail * fs.bsize;
    } catch {
      return undefined;
    }
  }

  function insight(): QueueInsight {
    const s = options.stats();
    let recordsPerS = 0;
    let bytesPerS = 0;
    for (const lane of LANES) {
      recordsPerS += intakeRecords[lane];
      bytesPerS += intakeBytes[lane];
    }
    let freeBytes = Math.max(0, s.capBytes - s.bytes);
    const disk = freeDiskBytes();
    if (disk !== undefined) freeBytes = Math.min(freeBytes, disk / perByte);
    const freeRecords = Math.max(0, s.capRecords - s.depth);
    const seconds = Math.min(
      recordsPerS > 1e-9 ? freeRecords / recordsPerS : Infinity,
      bytesPerS > 1e-9 ? freeBytes / bytesPerS : Infinity,
    );
    const hours = Number.isFinite(seconds) ? Math.round((seconds / 3600) * 100) / 100 : null;
    const intake = Object.fromEntries(
      LANES.map((lane) => [lane, { recordsPerS: round(intakeRecords[lane]), bytesPerS: round(intakeBytes[lane]) }]),
    ) as Record<Lane, { recordsPerS: number; bytesPerS: number }>;
    return {
      drainPerS: round(drainPerS),
      intake,
      offlineHoursLeft: hours,
      forecastLow: hours !== null && hours < options.minOfflineHours,
      minOfflineHours: options.minOfflineHours,
    };
  }

  return {
    start() {
      if (timer !== undefined) return;
      last = read();
      timer = setInterval(sample, sampleMs);
      timer.unref();
    },
    stop() {
      clearInterval(timer);
      timer = undefined;
    },
    sample,
    insight,
  };
}

function round(x: number): number {
  return Math.round(x * 10) / 10;
}
