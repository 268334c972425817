import { expect } from 'chai';
import { closingAfter, isOpenAt, isValidTimeZone, zonedInstant, type OpeningHours } from './hours.ts';

const week = (intervals: { open: string; close: string }[]): OpeningHours => ({
  monday: intervals,
  tuesday: intervals,
  wednesday: intervals,
  thursday: intervals,
  friday: intervals,
  saturday: intervals,
  sunday: intervals,
});
const at = (iso: string) => Date.parse(iso);

describe('branch opening hours (IANA zones, DST)', () => {
  const berlin = { timeZone: 'Europe/Berlin', openingHours: week([{ open: '06:00', close: '22:00' }]) };

  it('knows IANA zones and refuses anything else', () => {
    expect(isValidTimeZone('Europe/Berlin')).to.equal(true);
    expect(isValidTimeZone('UTC')).to.equal(true);
    expect(isValidTimeZone('Mars/Olympus')).to.equal(false);
    expect(isValidTimeZone('+02:00')).to.equal(false);
  });

  it('opens and closes at local time, in winter (UTC+1) and summer (UTC+2)', () => {
    // Winter: 06:00 Berlin = 05:00Z.
    expect(isOpenAt(berlin, at('2026-01-14T04:59:00Z'))).to.equal(false);
    expect(isOpenAt(berlin, at('2026-01-14T05:00:00Z'))).to.equal(true);
    expect(closingAfter(berlin, at('2026-01-14T12:00:00Z'))).to.equal(at('2026-01-14T21:00:00Z'));
    // Summer: 06:00 Berlin = 04:00Z, 22:00 = 20:00Z.
    expect(isOpenAt(berlin, at('2026-07-14T04:00:00Z'))).to.equal(true);
    expect(isOpenAt(berlin, at('2026-07-14T20:00:00Z'))).to.equal(false);
    expect(closingAfter(berlin, at('2026-07-14T12:00:00Z'))).to.equal(at('2026-07-14T20:00:00Z'));
    expect(closingAfter(berlin, at('2026-07-14T21:00:00Z'))).to.equal(undefined);
  });

  it('handles the days the clocks change (23- and 25-hour days)', () => {
    // 29 March 2026: 02:00 → 03:00. Opens 06:00 CEST (04:00Z), closes 22:00 CEST (20:00Z).
    expect(closingAfter(berlin, at('2026-03-29T05:00:00Z'))).to.equal(at('2026-03-29T20:00:00Z'));
    expect(isOpenAt(berlin, at('2026-03-29T03:59:00Z'))).to.equal(false);
    expect(isOpenAt(berlin, at('2026-03-29T04:00:00Z'))).to.equal(true);
    // 25 October 2026: 03:00 → 02:00. Opens 06:00 CET (05:00Z).
    expect(isOpenAt(berlin, at('2026-10-25T04:30:00Z'))).to.equal(false);
    expect(isOpenAt(berlin, at('2026-10-25T05:00:00Z'))).to.equal(true);
    // A skipped local time lands after the gap; an ambiguous one is its earlier instant.
    expect(zonedInstant(2026, 3, 29, 2 * 60 + 30, 'Europe/Berlin')).to.equal(at('2026-03-29T01:30:00Z'));
    expect(zonedInstant(2026, 10, 25, 2 * 60 + 30, 'Europe/Berlin')).to.equal(at('2026-10-25T00:30:00Z'));
  });

  it('runs past midnight, merges adjacent openings, and never closes when open around the clock', () => {
    const late = {
      timeZone: 'America/New_York',
      openingHours: { ...week([]), friday: [{ open: '18:00', close: '02:00' }] },
    };
    // Friday 16 Jan 2026 18:00 EST = 23:00Z; Saturday 02:00 EST = 07:00Z.
    expect(isOpenAt(late, at('2026-01-17T06:00:00Z'))).to.equal(true);
    expect(closingAfter(late, at('2026-01-17T06:00:00Z'))).to.equal(at('2026-01-17T07:00:00Z'));
    expect(isOpenAt(late, at('2026-01-17T07:00:00Z'))).to.equal(false);

    const split = {
      timeZone: 'UTC',
      openingHours: {
        ...week([]),
        monday: [{ open: '20:00', close: '24:00' }],
        tuesday: [{ open: '00:00', close: '03:00' }],
      },
    };
    // Monday 12 Jan 2026.
    expect(closingAfter(split, at('2026-01-12T21:00:00Z'))).to.equal(at('2026-01-13T03:00:00Z'));

    const always = { timeZone: 'Asia/Tokyo', openingHours: week([{ open: '00:00', close: '24:00' }]) };
    expect(isOpenAt(always, at('2026-05-05T12:00:00Z'))).to.equal(true);
    expect(closingAfter(always, at('2026-05-05T12:00:00Z'))).to.equal(undefined);
  });
});
