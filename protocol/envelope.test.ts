import { expect } from 'chai';
import * as v from 'valibot';
import { Envelope, ENVELOPE_FIELDS, createEnvelopeStamper, isNewer } from './envelope.ts';
import { examples } from './examples.ts';
import { asBootId, asMsgId, asSourceId } from './ids.ts';
import { PROTOCOL_MINOR } from './version.ts';

const base = {
  msgId: '01JD8Z3K4M5N6P7Q8R9S0T1V2W',
  source: 'row-03',
  bootId: 'b7',
  seq: 0,
  ts: Date.UTC(2026, 10, 24),
  v: 0,
};

function failingPath(input: unknown): string | null {
  const result = v.safeParse(Envelope, input);
  expect(result.success, JSON.stringify(input)).to.equal(false);
  return result.issues?.[0] ? v.getDotPath(result.issues[0]) : null;
}

describe('protocol/envelope', () => {
  it('is carried by every record example', () => {
    const records = [
      ...examples.MachineMeta,
      ...examples.MachineStatus,
      ...examples.Telemetry,
      ...examples.Workout,
      ...examples.MachineEvent,
      ...examples.AccessScan,
      ...examples.OfflineDecision,
    ];
    for (const record of records) {
      const envelope = v.parse(Envelope, record);
      expect(Object.keys(envelope)).to.deep.equal([...ENVELOPE_FIELDS]);
    }
  });

  it('accepts a minimal envelope and the largest seq', () => {
    expect(v.safeParse(Envelope, base).success).to.equal(true);
    expect(v.safeParse(Envelope, { ...base, seq: Number.MAX_SAFE_INTEGER }).success).to.equal(true);
  });

  it('accepts msgIds of 16–64 characters: a UUID, a ULID, 128 random bits in base64url', () => {
    for (const msgId of [
      '7b1e0c52-3f4a-4d8e-9a61-2c5b8f0e4d17',
      '01JD8Z3K4M5N6P7Q8R9S0T1V2W',
      Buffer.alloc(16, 0xfb).toString('base64url'),
      'x'.repeat(16),
      'x'.repeat(64),
    ]) {
      expect(v.safeParse(Envelope, { ...base, msgId }).success, msgId).to.equal(true);
    }
  });

  it('normalises seq -0 to 0', () => {
    const parsed = v.parse(Envelope, { ...base, seq: -0 });
    expect(Object.is(parsed.seq, 0)).to.equal(true);
  });

  const invalid: [string, Record<string, unknown>, string][] = [
    ['a missing msgId', { msgId: undefined }, 'msgId'],
    ['a msgId with a space', { msgId: 'a b' }, 'msgId'],
    ['a 65-character msgId', { msgId: 'x'.repeat(65) }, 'msgId'],
    ['a 15-character msgId (too short to be globally unique)', { msgId: 'x'.repeat(15) }, 'msgId'],
    ['a per-source counter as msgId', { msgId: 'm-1' }, 'msgId'],
    ['an upper-case source', { source: 'Row-03' }, 'source'],
    ['a source with a wildcard', { source: 'row+' }, 'source'],
    ['a bootId with a slash', { bootId: 'b/7' }, 'bootId'],
    ['a negative seq', { seq: -1 }, 'seq'],
    ['a fractional seq', { seq: 1.5 }, 'seq'],
    ['an unsafe seq', { seq: 2 ** 53 }, 'seq'],
    ['a seq as string', { seq: '1' }, 'seq'],
    ['ts NaN', { ts: Number.NaN }, 'ts'],
    ['ts Infinity', { ts: Number.POSITIVE_INFINITY }, 'ts'],
    ['ts in 1970 (unset clock)', { ts: 0 }, 'ts'],
    ['ts in seconds', { ts: 1_795_549_200 }, 'ts'],
    ['ts before 2020', { ts: Date.UTC(2019, 11, 31) }, 'ts'],
    ['ts after 2100', { ts: Date.UTC(2100, 0, 2) }, 'ts'],
    ['a fractional ts', { ts: Date.UTC(2026, 0, 1) + 0.5 }, 'ts'],
    ['an ISO ts', { ts: '2026-11-24T19:40:01.250Z' }, 'ts'],
    ['a negative v', { v: -1 }, 'v'],
    ['a fractional v', { v: 0.1 }, 'v'],
  ];
  for (const [what, change, path] of invalid) {
    it(`refuses ${what}`, () => {
      expect(failingPath({ ...base, ...change })).to.equal(path);
    });
  }

  describe('isNewer', () => {
    const held = v.parse(Envelope, { ...base, seq: 10 });
    it('orders by seq within a boot, whatever the clock says', () => {
      expect(isNewer({ ...held, seq: 11, ts: held.ts - 5_000 }, held)).to.equal(true);
      expect(isNewer({ ...held, seq: 10 }, held)).to.equal(false);
      expect(isNewer({ ...held, seq: 9, ts: held.ts + 5_000 }, held)).to.equal(false);
    });
    it('orders by event time across boots', () => {
      const rebooted = { ...held, bootId: asBootId('b8'), seq: 0 };
      expect(isNewer({ ...rebooted, ts: held.ts + 1 }, held)).to.equal(true);
      expect(isNewer({ ...rebooted, ts: held.ts - 1 }, held)).to.equal(false);
    });
  });

  describe('createEnvelopeStamper', () => {
    it('counts seq from 0, stamps time and version, and makes valid, unique envelopes', () => {
      let now = Date.UTC(2026, 10, 24);
      const stamper = createEnvelopeStamper({ source: asSourceId('row-03'), now: () => now });
      const first = stamper.stamp();
      now += 250;
      const second = stamper.stamp();
      const third = stamper.stamp(now + 1_000);
      expect([first.seq, second.seq, third.seq]).to.deep.equal([0, 1, 2]);
      expect(stamper.nextSeq).to.equal(3);
      expect([second.ts, third.ts]).to.deep.equal([now, now + 1_000]);
      expect(new Set([first.msgId, second.msgId, third.msgId]).size).to.equal(3);
      for (const envelope of [first, second, third]) {
        expect(envelope.v).to.equal(PROTOCOL_MINOR);
        expect(envelope.bootId).to.equal(stamper.bootId);
        expect(v.safeParse(Envelope, envelope).success).to.equal(true);
      }
    });

    it('uses the given boot id and id generator', () => {
      let n = 0;
      const stamper = createEnvelopeStamper({
        source: asSourceId('gw-demo-1'),
        bootId: asBootId('boot-1'),
        now: () => Date.UTC(2026, 0, 1),
        newId: () => asMsgId(`gw-demo-1-boot-1-${n++}`),
      });
      expect(stamper.stamp()).to.deep.include({
        msgId: 'gw-demo-1-boot-1-0',
        bootId: 'boot-1',
        source: 'gw-demo-1',
        seq: 0,
      });
    });
  });
});
