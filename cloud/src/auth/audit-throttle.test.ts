import { expect } from 'chai';
import { createManualClock } from '../../../tools/runtime/clock.ts';
import { createAuditThrottle } from './audit-throttle.ts';

describe('audit throttle for refusals', () => {
  it('writes the first N per kind and address a minute, then counts, and reports the count on the next write', () => {
    const clock = createManualClock();
    const throttle = createAuditThrottle(() => clock.nowMs(), 3);
    const decisions = Array.from({ length: 5 }, () => throttle('token_refused', '10.0.0.1'));
    expect(decisions.map((d) => d.write)).to.deep.equal([true, true, true, false, false]);
    expect(throttle('token_refused', '10.0.0.2').write, 'another address has its own budget').to.equal(true);
    expect(throttle('login_locked', '10.0.0.1').write, 'another kind too').to.equal(true);
    clock.advance(60_000);
    expect(throttle('token_refused', '10.0.0.1')).to.deep.equal({ write: true, suppressedBefore: 2 });
    expect(throttle('token_refused', '10.0.0.2')).to.deep.equal({ write: true, suppressedBefore: 0 });
  });

  it('reports how many were suppressed on the first entry written in the next minute', () => {
    const clock = createManualClock();
    const throttle = createAuditThrottle(() => clock.nowMs(), 1);
    expect(throttle('k', 'ip').write).to.equal(true);
    expect(throttle('k', 'ip').write).to.equal(false);
    expect(throttle('k', 'ip').write).to.equal(false);
    clock.advance(61_000);
    expect(throttle('k', 'ip')).to.deep.equal({ write: true, suppressedBefore: 2 });
    expect(throttle('k', 'ip')).to.deep.equal({ write: false, suppressedBefore: 0 });
  });
});
