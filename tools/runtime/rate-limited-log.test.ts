import { expect } from 'chai';
import { pino } from 'pino';
import { createManualClock } from './clock.ts';
import { createRateLimitedLog } from './rate-limited-log.ts';

function capturingLogger() {
  const lines: Record<string, unknown>[] = [];
  const log = pino(
    { level: 'warn' },
    { write: (line: string) => lines.push(JSON.parse(line) as Record<string, unknown>) },
  );
  return { log, lines };
}

describe('runtime: rate-limited log', () => {
  it('logs a reason at most once per interval, then says how many lines it held back', () => {
    const clock = createManualClock();
    const { log, lines } = capturingLogger();
    const rlog = createRateLimitedLog({ log, clock, intervalMs: 1_000 });
    for (let i = 0; i < 3; i++) rlog.warn('bad', { n: i }, 'bad input');
    rlog.warn('other', {}, 'other input');
    expect(lines.map((l) => [l.reason, l.n, l.msg])).to.deep.equal([
      ['bad', 0, 'bad input'],
      ['other', undefined, 'other input'],
    ]);
    clock.advance(999);
    rlog.warn('bad', { n: 3 }, 'bad input');
    expect(lines).to.have.length(2);
    clock.advance(1);
    rlog.warn('bad', { n: 4 }, 'bad input');
    expect(lines[2]).to.deep.include({ reason: 'bad', n: 4, suppressed: 3 });
    clock.advance(1_000);
    rlog.warn('bad', { n: 5 }, 'bad input');
    expect(lines[3]).to.not.have.property('suppressed');
  });

  it('forgets the reasons it tracks once there are more than its bound', () => {
    const { log, lines } = capturingLogger();
    const rlog = createRateLimitedLog({ log, clock: { nowMs: () => 0 }, maxReasons: 2 });
    rlog.warn('a', {}, 'm');
    rlog.warn('b', {}, 'm');
    rlog.warn('a', {}, 'm');
    expect(lines).to.have.length(2);
    // A third reason clears the table: `a` is logged again within the interval.
    rlog.warn('c', {}, 'm');
    rlog.warn('a', {}, 'm');
    expect(lines.map((l) => l.reason)).to.deep.equal(['a', 'b', 'c', 'a']);
  });
});
