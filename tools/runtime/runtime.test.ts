import { expect } from 'chai';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { createManualClock, systemClock } from './clock.ts';
import { redactedPaths } from './logger.ts';

describe('runtime: clock', () => {
  it('the system clock reads real time', () => {
    const before = Date.now();
    const now = systemClock.nowMs();
    expect(now).to.be.within(before, Date.now());
    expect(systemClock.now()).to.be.instanceOf(Date);
  });

  it('a manual clock moves only when told, and only forward', () => {
    const clock = createManualClock(new Date('2026-11-26T10:00:00Z'));
    expect(clock.now().toISOString()).to.equal('2026-11-26T10:00:00.000Z');
    clock.advance(4 * 3600_000);
    expect(clock.now().toISOString()).to.equal('2026-11-26T14:00:00.000Z');
    clock.set(0);
    expect(clock.nowMs()).to.equal(0);
    expect(() => clock.advance(-1)).to.throw(RangeError);
  });
});

describe('runtime: logger redaction', () => {
  it('never writes passwords, tokens or authorization headers', () => {
    const lines: string[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _enc, done) {
        lines.push(chunk.toString());
        done();
      },
    });
    const log = pino({ redact: { paths: redactedPaths, censor: '[redacted]' } }, sink);
    log.info(
      {
        password: 'hunter2',
        user: { token: 'tok-123', refreshToken: 'r-1' },
        req: { headers: { authorization: 'Bearer abc' } },
      },
      'x',
    );
    log.info(
      { body: { user: { password: 'deep-pass' } }, config: { headers: { Authorization: 'Bearer axios' } } },
      'y',
    );
    log.error({ err: { keyValue: { email: 'member@nxg.test' } } }, 'duplicate key');
    const line = lines.join('');
    for (const secret of ['hunter2', 'tok-123', 'r-1', 'Bearer abc', 'deep-pass', 'Bearer axios', 'member@nxg.test']) {
      expect(line).to.not.include(secret);
    }
    expect(line).to.include('[redacted]');
  });
});
