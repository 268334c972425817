import { expect } from 'chai';
import { runEndToEnd } from './e2e.ts';

describe('bench: end to end (machines → gateway → cloud → MongoDB)', function () {
  this.timeout(120_000);

  it('stores every record the gateway acknowledged, and accounts for it per process', async function () {
    const lines: string[] = [];
    let progressed = false;
    const { steps, pids } = await runEndToEnd({
      machines: 6,
      ratesHz: [2],
      stepMs: 3_000,
      warmupMs: 1_000,
      drainMs: 30_000,
      p99LimitMs: 60_000,
      onProgress: () => (progressed = true),
      log: (line) => lines.push(line),
    });
    expect(Object.keys(pids)).to.deep.equal(['gateway', 'cloud', 'mongo', 'redis', 'sim+probe']);
    expect(steps).to.have.length(1);
    const [step] = steps;
    expect(step!.drained, lines.join('\n')).to.equal(true);
    expect(step!.missing).to.equal(0);
    expect(step!.notAcked).to.equal(0);
    // Everything published (samples, metas, statuses, events, workouts) was found in MongoDB.
    expect(step!.durable).to.equal(step!.published);
    expect(step!.acked).to.be.greaterThan(6 * 2);
    expect(step!.p99Ms).to.be.at.least(step!.p50Ms);
    expect(step!.cpuPct.cloud).to.be.a('number');
    expect(progressed).to.equal(true);
    expect(lines.some((line) => line.startsWith('gateway ready'))).to.equal(true);
  });
});
