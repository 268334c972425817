import { expect } from 'chai';
import { MongoClient } from 'mongodb';
import { testServices, uniqueDbName } from '../../../test/helpers/services.ts';
import type { MachineLedger } from '../fleet.ts';
import { nothingLost, noDuplicates, runChecks } from './checks.ts';
import { renderHtml, renderTable } from './output.ts';
import { countPersisted } from './persisted.ts';
import { mergeResults, type RunInfo, type WorkerResult } from './report.ts';
import { createSeries, encodeHistogram, latencyHistogram, mergeSeries } from './series.ts';

const info: RunInfo = {
  scenario: 'unit',
  description: 'report maths',
  seed: 1,
  startedAt: '2026-11-26T05:00:00.000Z',
  branches: 1,
  gateways: 1,
  members: 10,
  target: 'test',
  host: { cpuModel: 'test cpu', cores: 2, node: 'v24' },
  events: [{ t: 1, what: 'kill-gateway gw </script><script>alert(1)</script>' }],
};

function worker(worker: number, latenciesUs: number[], series = createSeries(1000)): WorkerResult {
  const h = latencyHistogram();
  for (const us of latenciesUs) h.recordValue(us);
  return {
    worker,
    machines: 10,
    durationMs: 2000,
    sent: { meta: 10, status: 10, telemetry: latenciesUs.length, workout: 0, event: 0 },
    sentBytes: 1000,
    acked: latenciesUs.length,
    pendingAtEnd: 0,
    dropped: 0,
    errors: 0,
    connects: 10,
    reconnects: 0,
    connectedAtEnd: 10,
    neverConnected: 0,
    flaps: 0,
    outages: 0,
    bad: { 'not-json': 0, invalid: 0, 'wrong-source': 0, oversized: 0 },
    links: 1,
    unlinks: 0,
    latency: encodeHistogram(h),
    series: series.points(10),
    rssBytes: 100 * 2 ** 20,
    heapUsedBytes: 50 * 2 ** 20,
    fleetBytes: 10 * 40 * 1024,
    cpuMs: 100,
  };
}

describe('simulator report', function () {
  it('merges the processes’ latency histograms exactly: percentiles of all values, not of percentiles', function () {
    const a = Array.from({ length: 900 }, (_, i) => 1000 + i); // 1.000–1.899 ms
    const b = Array.from({ length: 100 }, (_, i) => 50_000 + i * 100); // 50–59.9 ms
    const report = mergeResults(info, [worker(0, a), worker(1, b)]);
    expect(report.latencyUs.count).to.equal(1000);
    // The 500th value is a's 500th (1.499 ms); the 950th and 990th are b's 50th and 90th; the max b's last (HDR
    // keeps 3 significant digits).
    expect(report.latencyUs.p50).to.be.within(1497, 1501);
    expect(report.latencyUs.p95).to.be.within(54_850, 54_950);
    expect(report.latencyUs.p99).to.be.within(58_850, 58_950);
    expect(report.latencyUs.max).to.be.within(59_850, 59_950);
    // The average of the two processes' p99 would be ~30 ms: the merge must not do that.
    expect(report.counts.sentTotal).to.equal(20 + 20 + 1000);
    expect(report.machines).to.equal(20);
    expect(report.memory.perMachineKiB).to.equal(40);
  });

  it('sums series interval by interval and keeps each interval’s latency', function () {
    const s1 = createSeries(1000);
    const s2 = createSeries(1000);
    s1.sent(5);
    s1.acked(1000);
    s2.sent(3);
    s2.acked(3000);
    s1.advance(1000, 4);
    s2.advance(1000, 6);
    s1.sent(2);
    const merged = mergeSeries([s1.points(4), s2.points(6)]);
    expect(merged.map((p) => [p.atMs, p.sent, p.acked, p.connected])).to.deep.equal([
      [0, 8, 2, 10],
      [1000, 2, 0, 10],
    ]);
    const report = mergeResults(info, [
      { ...worker(0, []), series: s1.points(4) },
      { ...worker(1, []), series: s2.points(6) },
    ]);
    expect(report.series[0]!.p99Ms).to.be.within(2.99, 3.01);
    expect(report.series[1]!.p99Ms).to.equal(null);
  });

  it('merges the wait for MongoDB: the longest wait, and what the gateways still held at its end (late, not lost)', function () {
    const report = mergeResults(info, [
      { ...worker(0, []), drain: { waitedS: 40, stillStoring: false, queuedAtEnd: 5 } },
      { ...worker(1, []), drain: { waitedS: 42, stillStoring: true, queuedAtEnd: 7 } },
    ]);
    expect(report.drain).to.deep.equal({ waitedS: 42, stillStoring: true, queuedAtEnd: 7 });
    // The table wraps long cells: read its text without the borders and line breaks.
    const text = renderTable(report, { color: false }).replace(/[│\s]+/g, ' ');
    expect(text).to.include('42 s, still storing at the end; 7 still queued at the gateways (late, not lost)');
    // Gateways that could not be asked (a run attached to a broker): no figure rather than a made-up 0.
    const attached = mergeResults(info, [{ ...worker(0, []), drain: { waitedS: 3, stillStoring: false } }]);
    expect(attached.drain).to.deep.equal({ waitedS: 3, stillStoring: false });
  });

  it('writes one self-contained HTML page: the chart library inlined, the data embedded, nothing fetched', function () {
    const report = runChecks(mergeResults(info, [worker(0, [1000, 2000, 3000])]), [nothingLost]);
    const html = renderHtml(report);
    expect(html).to.match(/^<!doctype html>/);
    expect(html).to.include('uPlot'); // the library's code itself
    expect(html).not.to.match(/<script[^>]+src=/i);
    expect(html).not.to.match(/<link[^>]+href=/i);
    expect(html).not.to.match(/https?:\/\/(cdn|unpkg|jsdelivr)/i);
    // The event text cannot close the data element early.
    expect(html.match(/<\/script>/g)!.length).to.equal(3);
    const data = /<script id="report-data" type="application\/json">(.*?)<\/script>/s.exec(html)![1]!;
    const parsed = JSON.parse(data) as typeof report;
    expect(parsed.latencyUs.count).to.equal(3);
    expect(parsed.events[0]!.what).to.include('</script>');
    // Without MongoDB the read-back check fails rather than passing silently.
    expect(report.checks[0]!.ok).to.equal(false);
    expect(renderTable(report, { color: false })).to.match(/checks: 0 passed, 1 failed/);
  });

  describe('persisted count (documented collections only)', function () {
    let client: MongoClient;
    const dbName = uniqueDbName('sim_report');

    before(async function () {
      client = await MongoClient.connect(`${testServices().mongoUrl}/${dbName}`);
    });
    after(async function () {
      await client.db().dropDatabase();
      await client.close();
    });

    it('counts stored, lost (acked, not stored), unacked, duplicated, and stored bad payloads', async function () {
      const db = client.db();
      const boot = 'boot-a';
      const ts = Date.UTC(2026, 10, 26, 5, 0, 30);
      const ledger: MachineLedger = {
        branch: 'b1',
        bootId: boot,
        sent: ['w1', 'w2', 'w3', 's1'],
        kinds: ['workout', 'workout', 'workout', 'status'],
        acked: new Set(['w1', 'w2', 's1']),
        telemetry: { seqs: [10, 11, 12, 13], ts: [ts, ts + 1000, ts + 40_000, ts + 41_000], acked: new Set([12]) },
        bad: ['bad1'],
      };
      await db.collection('workouts').insertMany([
        { _id: 'w1', source: 'm1', bootId: boot, seq: 1 },
        // w2 acknowledged and missing: lost. w3 not acknowledged, missing: unacked.
        // The same record (boot, seq) stored under another id: a duplicate.
        { _id: 'w1-again', source: 'm1', bootId: boot, seq: 1 },
      ] as never);
      await db.collection('machine_status_changes').insertOne({ _id: 's1', bootId: boot, seq: 4 } as never);
      await db.collection('machine_events').insertOne({ _id: 'bad1', bootId: 'other', seq: 1 } as never);
      // Samples 10 and 11 in one bucket of the machine; 12 (acked) and 13 in another — only 13 stored. A bucket of
      // another machine holding the same keys counts for nothing.
      await db.collection('telemetry_buckets').insertMany([
        { _id: 'bucket-1', branch: 'b1', machine: 'm1', samples: { [`${boot}:10`]: {}, [`${boot}:11`]: {} } },
        { _id: 'bucket-2', branch: 'b1', machine: 'm1', samples: { [`${boot}:13`]: {} } },
        { _id: 'bucket-3', branch: 'b1', machine: 'm2', samples: { [`${boot}:12`]: {} } },
      ] as never);
      const counts = await countPersisted(db, new Map([['m1', ledger]]));
      expect(counts.records).to.deep.equal({ sent: 4, acked: 3, persisted: 2, lost: 1, unacked: 1, duplicated: 1 });
      expect(counts.telemetry).to.deep.equal({ sent: 4, acked: 1, persisted: 3, lost: 1, notStored: 0 });
      expect(counts.bad).to.deep.equal({ withMsgId: 1, stored: 1 });
      expect(counts.lostExamples).to.include('w2');
      const report = runChecks(mergeResults(info, [{ ...worker(0, [1000]), persisted: counts }]), [
        nothingLost,
        noDuplicates,
      ]);
      expect(report.lost).to.equal(2);
      expect(report.checks.map((c) => c.ok)).to.deep.equal([false, false]);
    });
  });
});
