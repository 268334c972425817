import { expect } from 'chai';
import { LANES } from '../../../protocol/index.ts';
import type { Lane } from '../../../protocol/index.ts';
import { createLogger } from '../../../tools/runtime/logger.ts';
import { createManualClock } from '../../../tools/runtime/clock.ts';
import { createQueueMonitor } from './queue-monitor.ts';
import type { QueueLaneStats, QueueStats } from './queue.ts';

const log = createLogger({ name: 'test', level: 'silent' });

/** Queue figures a test moves by hand: cumulative counters per lane, depth and bytes. */
function fakeStats(capRecords: number, capBytes: number) {
  const lanes = Object.fromEntries(
    LANES.map((lane) => [
      lane,
      { depth: 0, bytes: 0, oldestEnqueuedAtMs: undefined, evicted: 0, appended: 0, appendedBytes: 0, deleted: 0 },
    ]),
  ) as Record<Lane, { -readonly [K in keyof QueueLaneStats]: QueueLaneStats[K] }>;
  return {
    lanes,
    append(lane: Lane, records: number, bytesEach: number) {
      lanes[lane].appended += records;
      lanes[lane].appendedBytes += records * bytesEach;
      lanes[lane].depth += records;
      lanes[lane].bytes += records * bytesEach;
    },
    drain(lane: Lane, records: number, bytesEach: number) {
      lanes[lane].deleted += records;
      lanes[lane].depth -= records;
      lanes[lane].bytes -= records * bytesEach;
    },
    stats(): QueueStats {
      let depth = 0;
      let bytes = 0;
      for (const lane of LANES) {
        depth += lanes[lane].depth;
        bytes += lanes[lane].bytes;
      }
      return { lanes: structuredClone(lanes), depth, bytes, full: false, capRecords, capBytes };
    },
  };
}

describe('uplink queue monitor: drain rate and offline-hours forecast', () => {
  it('forecasts hours left from the intake rate and the free room, by records or by bytes', () => {
    const clock = createManualClock(Date.UTC(2026, 10, 26));
    const q = fakeStats(1_000_000, 10 * 1024 * 1024 * 1024);
    const monitor = createQueueMonitor({ stats: () => q.stats(), nowMs: () => clock.nowMs(), log, minOfflineHours: 4 });
    expect(monitor.insight().offlineHoursLeft, 'no intake yet').to.equal(null);
    // 100 records/s of 200 bytes: the record cap binds (1,000,000 / 100 s ≈ 2.78 h), below the 4 h minimum.
    for (let s = 0; s < 60; s++) {
      clock.advance(1_000);
      q.append('telemetry', 80, 200);
      q.append('records', 20, 200);
      monitor.sample();
    }
    let insight = monitor.insight();
    expect(insight.intake.telemetry.recordsPerS).to.be.closeTo(80, 0.5);
    expect(insight.intake.records.recordsPerS).to.be.closeTo(20, 0.5);
    const free = 1_000_000 - 6_000;
    expect(insight.offlineHoursLeft).to.be.closeTo(free / 100 / 3600, 0.02);
    expect(insight.forecastLow).to.equal(true);

    // Bytes bind when records are large: same rate, 1 MiB each → 10 GiB / (100 MiB/s) ≈ 0.03 h.
    const big = fakeStats(100_000_000, 10 * 1024 * 1024 * 1024);
    const m2 = createQueueMonitor({ stats: () => big.stats(), nowMs: () => clock.nowMs(), log, minOfflineHours: 0 });
    clock.advance(1_000);
    big.append('records', 100, 1024 * 1024);
    m2.sample();
    const hours = m2.insight().offlineHoursLeft!;
    expect(hours).to.be.closeTo((10 * 1024 - 100) / 100 / 3600, 0.01);
    expect(m2.insight().forecastLow, 'no minimum configured').to.equal(false);
    insight = monitor.insight();
    expect(insight.minOfflineHours).to.equal(4);
  });

  it('averages the intake over minutes (a burst barely moves it) and the drain over seconds', () => {
    const clock = createManualClock(Date.UTC(2026, 10, 26));
    const q = fakeStats(10_000_000, 64 * 1024 * 1024 * 1024);
    const monitor = createQueueMonitor({ stats: () => q.stats(), nowMs: () => clock.nowMs(), log, minOfflineHours: 1 });
    for (let s = 0; s < 30; s++) {
      clock.advance(1_000);
      q.append('telemetry', 10, 100);
      monitor.sample();
    }
    clock.advance(1_000);
    q.append('telemetry', 1_000, 100); // one second at 100× the rate
    monitor.sample();
    expect(monitor.insight().intake.telemetry.recordsPerS).to.be.lessThan(20);
    // Draining 2,000 records/s for 30 s: the drain rate follows within seconds.
    for (let s = 0; s < 30; s++) {
      clock.advance(1_000);
      q.drain('telemetry', 2_000, 100);
      monitor.sample();
    }
    expect(monitor.insight().drainPerS).to.be.closeTo(2_000, 100);
    for (let s = 0; s < 60; s++) {
      clock.advance(1_000);
      monitor.sample();
    }
    expect(monitor.insight().drainPerS).to.be.lessThan(10);
  });

  it('bounds the forecast by the free disk space of the data directory', () => {
    const clock = createManualClock(Date.UTC(2026, 10, 26));
    // Caps far beyond any disk here: the disk decides.
    const q = fakeStats(100_000_000_000, 1024 ** 5);
    const monitor = createQueueMonitor({
      stats: () => q.stats(),
      nowMs: () => clock.nowMs(),
      log,
      minOfflineHours: 0,
      dataDir: process.cwd(),
    });
    clock.advance(1_000);
    q.append('records', 1_000, 1024 * 1024);
    monitor.sample();
    const hours = monitor.insight().offlineHoursLeft!;
    // 1 GiB/s against the disk's free space ÷ 2: well under a day on any disk this runs on, above 0.
    expect(hours).to.be.greaterThan(0);
    expect(hours).to.be.lessThan(1024 ** 5 / 2 / 1024 ** 3 / 3600);
  });
});
