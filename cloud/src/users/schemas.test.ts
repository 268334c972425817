import { expect } from 'chai';
import * as v from 'valibot';
import { Timestamp } from './schemas.ts';

describe('member schemas: dates', () => {
  it('accepts every real calendar day from 1900 to 2099 by pattern, and no impossible one', () => {
    const refused: string[] = [];
    for (let t = Date.UTC(1900, 0, 1); t < Date.UTC(2100, 0, 1); t += 86_400_000) {
      const day = new Date(t).toISOString().slice(0, 10);
      if (!v.safeParse(Timestamp, day).success) refused.push(day);
    }
    expect(refused).to.deep.equal([]);
    // Schemathesis generates from the pattern: a day the pattern allows must never be refused after it.
    for (const impossible of ['1999-06-31', '2031-02-31', '1900-02-29', '2001-02-29', '2023-04-31', '2100-01-01']) {
      expect(v.safeParse(Timestamp, impossible).success, impossible).to.equal(false);
    }
    for (const real of ['2000-02-29', '2024-02-29', '2026-11-26T07:00:00Z', '1965-06-01T10:00+02:00']) {
      expect(v.safeParse(Timestamp, real).success, real).to.equal(true);
    }
  });
});
