import { once } from 'node:events';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Aedes } from 'aedes';
import { expect } from 'chai';
import * as prettier from 'prettier';
import { testServices } from '../../test/helpers/services.ts';
import type { StepResult } from './e2e.ts';
import { runFanIn } from './fan-in.ts';
import { appendToDoc, baselineRows, stepRows, summarize, summaryLines } from './ingest-report.ts';
import { recordInsertCeiling, samplePayloads, telemetryWriteCeiling } from './mongo-ceiling.ts';
import { meanMs, scrape } from './prometheus.ts';

describe('bench: ingest harness', function () {
  it('measures a QoS 1 fan-in and accounts for every message', async function () {
    const broker = await Aedes.createBroker();
    const server = net.createServer(broker.handle);
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    try {
      const { port } = server.address() as net.AddressInfo;
      let progress = 0;
      const result = await runFanIn({
        url: `mqtt://127.0.0.1:${port}`,
        publishers: 3,
        window: 20,
        warmupMs: 100,
        durationMs: 600,
        onProgress: () => (progress += 1),
      });
      expect(result.published).to.be.greaterThan(0);
      expect(result.lost).to.equal(0);
      expect(result.delivered).to.equal(result.published);
      expect(result.msgPerS).to.be.greaterThan(0);
      expect(result.p99Ms).to.be.at.least(result.p50Ms);
      expect(progress).to.be.greaterThan(0);
    } finally {
      await new Promise<void>((resolve) => broker.close(() => resolve()));
      server.close();
    }
  });

  it('measures the database ceilings with the documents ingest writes', async function () {
    const { records, telemetry } = samplePayloads(6, 300);
    expect(telemetry).to.have.length(6 * 300);
    expect(records.length).to.be.greaterThan(6); // metas are not in here: statuses, events, workouts
    const options = { mongoUrl: testServices().mongoUrl, warmupMs: 100, durationMs: 500, concurrency: 2, batch: 100 };
    const inserts = await recordInsertCeiling(options, records);
    expect(inserts.written).to.be.greaterThan(0);
    expect(inserts.written % 100).to.equal(0);
    expect(inserts.avgDocBytes).to.be.greaterThan(100);
    const buckets = await telemetryWriteCeiling(options, telemetry);
    expect(buckets.written).to.be.greaterThan(0);
    expect(buckets.perSecond).to.be.greaterThan(0);
  });

  it('splits latency into stages from Prometheus histograms', async function () {
    let text =
      'x_seconds_sum{lane="a"} 1\nx_seconds_count{lane="a"} 4\nx_seconds_sum{lane="b"} 1\nx_seconds_count{lane="b"} 4\n';
    const server = http.createServer((_req, res) => res.end(text));
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    try {
      const url = `http://127.0.0.1:${(server.address() as net.AddressInfo).port}/metrics`;
      const before = await scrape(url);
      text = text
        .replace('x_seconds_sum{lane="a"} 1', 'x_seconds_sum{lane="a"} 2')
        .replace('count{lane="a"} 4', 'count{lane="a"} 6');
      const after = await scrape(url);
      expect(meanMs(before, after, 'x_seconds')).to.equal(500); // 1 s over 2 observations
      expect(meanMs(after, after, 'x_seconds')).to.be.NaN;
      expect((await scrape('http://127.0.0.1:1/metrics')).size).to.equal(0);
    } finally {
      server.close();
    }
  });

  describe('report', function () {
    const step = (rateHz: number, p99Ms: number, passed: boolean): StepResult => ({
      machines: 10,
      rateHz,
      offeredPerS: rateHz * 10,
      persistedPerS: rateHz * 10,
      published: rateHz * 100,
      durable: rateHz * 100,
      missing: 0,
      p50Ms: p99Ms / 4,
      p99Ms,
      maxMs: p99Ms,
      recordsP99Ms: p99Ms,
      telemetryP99Ms: p99Ms,
      acked: rateHz * 100,
      notAcked: 0,
      pubackP99Ms: 2,
      reconnects: 0,
      dropped: 0,
      stagesMs: { intake: 1, uplinkAck: 20, cloudAck: 15 },
      drained: true,
      cpuUsPerMsg: { gateway: 100, cloud: 200, mongo: 300, redis: 10, 'sim+probe': 50 },
      cpuPct: { gateway: 20, cloud: 40, mongo: passed ? 50 : 95, redis: 1, 'sim+probe': 10 },
      passed,
    });

    it('names the knee, the busiest process past it and the ratios to the baselines', function () {
      const steps = [step(1, 20, true), step(2, 40, true), step(4, 1500, false)];
      const baselines = { records: { perSecond: 80, written: 1, p50Ms: 1, p99Ms: 1, avgDocBytes: 500 } };
      const summary = summarize(steps, {
        ...baselines,
        telemetry: { perSecond: 40, written: 1, p50Ms: 1, p99Ms: 1, avgDocBytes: 300 },
      });
      expect(summary.knee?.rateHz).to.equal(2);
      // p50 375 ms = 1 (append) + 20 (batch sent→ack, of which 15 in the cloud) + 354 waiting in the gateway queue
      expect(summary.limiter).to.equal(
        'gateway: waiting in the uplink queue (p50 − the other stages), 354 ms of the 375 ms median at 40 msg/s ' +
          'offered — the queue drains one batch per ack round trip (telemetry: two batches in flight), and a batch ' +
          'took 20 ms from sent to ack, 15 ms of it in the cloud from receipt to ack (MongoDB writes); busiest ' +
          'process mongo (95 % of a core)',
      );
      expect(summary.ratio).to.equal(0.5);
      expect(summary.insertRatio).to.equal(0.25);
      expect(summary.halfKnee?.rateHz).to.equal(1);
      const lines = summaryLines(summary, undefined, true).join('\n');
      expect(lines).to.match(/Knee: 20 msg\/s offered/);
      expect(lines).to.match(/p99 20 ms \(target ≤ 50 ms\)/);
      expect(stepRows(steps).map((row) => row.at(-1))).to.deep.equal(['ok', 'ok', 'p99 > 1 s']);
      expect(baselineRows(baselines)).to.have.length(1);
      expect(summaryLines({}, undefined, true)).to.deep.equal(['End to end: no rate step passed (see the table).']);
    });

    it('appends runs at the end of its own section of the benchmarks page, formatted', async function () {
      const dir = await mkdtemp(path.join(os.tmpdir(), 'nxg-bench-doc-'));
      try {
        const file = path.join(dir, 'benchmarks.md');
        await writeFile(file, '# Benchmarks\n\n## API (npm run bench:api)\n\nan API run\n');
        await appendToDoc(file, '### first\n\n| a | b |\n| --- | --- |\n| 1 | 22 |');
        await appendToDoc(file, '### second');
        // Another bench's section added after ours: our next run still goes into our section.
        await writeFile(file, `${await readFile(file, 'utf8')}\n## Later (npm run bench:later)\n\nlater run\n`);
        await appendToDoc(file, '### third');
        const text = await readFile(file, 'utf8');
        const order = ['## API', 'an API run', '## Ingest', '### first', '### second', '### third', '## Later'];
        const positions = order.map((marker) => text.indexOf(marker));
        expect(positions.every((p) => p >= 0)).to.equal(true);
        expect([...positions].sort((x, y) => x - y)).to.deep.equal(positions);
        expect(text.split('## Ingest (npm run bench:ingest)')).to.have.length(2);
        expect(await prettier.check(text, { filepath: file })).to.equal(true);
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    });
  });
});
