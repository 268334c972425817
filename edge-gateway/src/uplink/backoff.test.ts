import { expect } from 'chai';
import { createBackoff } from './backoff.ts';

describe('edge gateway: reconnect backoff', () => {
  it('doubles from the minimum to the maximum with jitter between half and all of each step, and resets', () => {
    const low = createBackoff(100, 1_000, () => 0);
    expect([low.next(), low.next(), low.next(), low.next(), low.next()]).to.deep.equal([50, 100, 200, 400, 500]);
    const high = createBackoff(100, 1_000, () => 1);
    expect([high.next(), high.next(), high.next(), high.next(), high.next()]).to.deep.equal([
      100, 200, 400, 800, 1_000,
    ]);
    expect(high.attempts).to.equal(5);
    high.reset();
    expect(high.attempts).to.equal(0);
    expect(high.next()).to.equal(100);
    const many = createBackoff(10, 60_000);
    for (let i = 0; i < 100; i++) expect(many.next()).to.be.within(5, 60_000);
  });
});
