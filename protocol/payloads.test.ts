import { expect } from 'chai';
import { EXAMPLE_TOPICS, examples } from './examples.ts';
import { MAX_BATCH_BYTES, MAX_BATCH_RECORDS } from './messages/gateway.ts';
import {
  PAYLOADS,
  PAYLOAD_NAMES,
  parsePayload,
  parseUplinkBatch,
  payloadNameFor,
  rejectionOf,
  validatePayload,
} from './payloads.ts';
import type { PayloadName, RecordResult } from './payloads.ts';
import type { ParseResult } from './parse.ts';
import { TOPIC_KINDS } from './topics.ts';

const REASONS = ['empty', 'too-large', 'not-utf8', 'not-json', 'invalid'];

/** mulberry32: a tiny seeded PRNG, so a fuzz failure reproduces. */
function prng(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function expectWellFormed(result: ParseResult<unknown>): void {
  expect(result.ok).to.be.a('boolean');
  if (!result.ok) expect(REASONS).to.include(result.reason);
}

/** Replaces random leaves of a JSON value with hostile values of other types. */
function mutate(value: unknown, random: () => number): unknown {
  const hostile = [null, -1, 1e308, -0, '', 'x'.repeat(300), '$where', [], {}, true, [[[]]], { __proto__: 1 }];
  if (Array.isArray(value)) return value.map((item) => mutate(item, random));
  if (value !== null && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const [key, item] of Object.entries(value)) {
      const roll = random();
      if (roll < 0.1) continue;
      out[key] = roll < 0.25 ? hostile[Math.floor(random() * hostile.length)] : mutate(item, random);
    }
    return out;
  }
  return random() < 0.2 ? hostile[Math.floor(random() * hostile.length)] : value;
}

describe('protocol/payloads', () => {
  describe('parsePayload', () => {
    it('refuses a payload over its size limit before decoding it', () => {
      const tooBig = Buffer.alloc(PAYLOADS.Telemetry.maxBytes + 1, 0x20);
      expect(parsePayload('Telemetry', tooBig)).to.deep.equal({ ok: false, reason: 'too-large' });
      expect(parsePayload('Telemetry', ' '.repeat(PAYLOADS.Telemetry.maxBytes + 1))).to.deep.equal({
        ok: false,
        reason: 'too-large',
      });
      // 1,400 three-byte characters are 4,200 bytes although the string is only 1,400 long.
      expect(parsePayload('Telemetry', `"${'€'.repeat(1_400)}"`)).to.deep.equal({ ok: false, reason: 'too-large' });
    });

    it('refuses bytes that are not UTF-8, and text that is not JSON', () => {
      expect(parsePayload('CloudState', Buffer.from([0x7b, 0xff, 0xfe, 0x7d]))).to.deep.equal({
        ok: false,
        reason: 'not-utf8',
      });
      expect(parsePayload('CloudState', '{"online": tru')).to.deep.equal({ ok: false, reason: 'not-json' });
      expect(parsePayload('CloudState', ' ')).to.deep.equal({ ok: false, reason: 'not-json' });
      expect(parsePayload('CloudState', 42 as unknown as string)).to.deep.equal({ ok: false, reason: 'not-json' });
    });

    it('answers `empty` for a zero-length payload: a retained message was cleared', () => {
      for (const name of PAYLOAD_NAMES) {
        expect(parsePayload(name, ''), name).to.deep.equal({ ok: false, reason: 'empty' });
        expect(parsePayload(name, Buffer.alloc(0)), name).to.deep.equal({ ok: false, reason: 'empty' });
        expect(parsePayload(name, new Uint8Array(0)), name).to.deep.equal({ ok: false, reason: 'empty' });
      }
      expect(parseUplinkBatch('')).to.deep.equal({ ok: false, reason: 'empty' });
    });

    it('lists the top-level keys the schema does not know, such as FTMS.md-style keys', () => {
      const [rower] = examples.Telemetry;
      const withFtmsKeys = { ...rower, totalEnergyKcal: 97, speedKmh: 12 };
      const result = parsePayload('Telemetry', JSON.stringify(withFtmsKeys));
      expect(result).to.deep.equal({ ok: true, value: rower, unknownKeys: ['totalEnergyKcal', 'speedKmh'] });
      // A key of another machine type is unknown to this one: a rower has no speed.
      expect(parsePayload('Telemetry', JSON.stringify({ ...rower, speedMps: 3 }))).to.deep.include({
        unknownKeys: ['speedMps'],
      });
      expect(parsePayload('Telemetry', JSON.stringify(rower))).to.deep.include({ unknownKeys: [] });
      expect(validatePayload('CloudState', { ...examples.CloudState[0], uptimeS: 5 })).to.deep.include({
        unknownKeys: ['uptimeS'],
      });
    });

    it('finds no payload behind a name that is not one (own-property lookup)', () => {
      for (const name of ['__proto__', 'constructor', 'toString', 'hasOwnProperty', 'Nope']) {
        const result = parsePayload(name as PayloadName, '{}');
        expect(result, name).to.deep.include({ ok: false, reason: 'invalid', issue: 'payload-name' });
        expect(validatePayload(name as PayloadName, {}), name).to.deep.include({ ok: false, issue: 'payload-name' });
      }
    });

    it('reports the failing path and check, never the received value', () => {
      const token = 'secret-token-value';
      const result = parsePayload(
        'CheckOutRequest',
        JSON.stringify({ ...examples.CheckOutRequest[0], credential: { kind: 'qr', token } }),
      );
      expect(result).to.include({ ok: false, reason: 'invalid', path: 'credential.token', issue: 'jws_compact' });
      expect(JSON.stringify(result)).not.to.include(token);
      expect(parsePayload('CloudState', '"text"')).to.deep.equal({
        ok: false,
        reason: 'invalid',
        issue: 'object',
        expected: 'Object',
      });
    });

    it('accepts a string or any Uint8Array', () => {
      const json = JSON.stringify(examples.CloudState[0]);
      expect(parsePayload('CloudState', json).ok).to.equal(true);
      expect(parsePayload('CloudState', new TextEncoder().encode(json)).ok).to.equal(true);
    });

    it('never throws on random bytes, for any payload kind', () => {
      const random = prng(20261124);
      let checked = 0;
      for (let i = 0; i < 400; i++) {
        const bytes = Buffer.alloc(Math.floor(random() * 600));
        for (let j = 0; j < bytes.length; j++) bytes[j] = Math.floor(random() * 256);
        // Half of them start like JSON, so the parser gets past the first byte.
        if (i % 2 === 0 && bytes.length > 0) bytes[0] = 0x7b;
        const name = PAYLOAD_NAMES[i % PAYLOAD_NAMES.length]!;
        const result = parsePayload(name, bytes);
        expectWellFormed(result);
        expect(result.ok).to.equal(false);
        checked++;
      }
      expect(checked).to.equal(400);
    });

    it('never throws on mutated examples, for any payload kind', () => {
      const random = prng(42);
      for (let round = 0; round < 10; round++) {
        for (const name of PAYLOAD_NAMES) {
          for (const example of examples[name]) {
            expectWellFormed(parsePayload(name, JSON.stringify(mutate(example, random))));
          }
        }
      }
    });

    it('never throws on hostile JSON shapes', () => {
      const hostile = [
        'null',
        '0',
        '"string"',
        '[]',
        '{}',
        '1e999',
        '{"__proto__":{"x":1}}',
        '{"constructor":{"prototype":{"x":1}}}',
        '['.repeat(20_000) + ']'.repeat(20_000),
        '{"a":'.repeat(10_000) + '1' + '}'.repeat(10_000),
        `{"records":[${'{},'.repeat(5_000)}{}]}`,
        `{"batchId":"b","sentAt":1795549200000,"records":${JSON.stringify(Array.from({ length: 600 }, () => ({ kind: 'x', payload: { msgId: 'm' } })))}}`,
        `{"batchId":"b","sentAt":0,"records":[]}`,
      ];
      for (const name of PAYLOAD_NAMES) {
        for (const input of hostile) expectWellFormed(parsePayload(name, input));
      }
      for (const input of hostile) expect(parseUplinkBatch(input).ok).to.equal(false);
      expect(({} as Record<string, unknown>).x).to.equal(undefined);
    });
  });

  describe('validatePayload', () => {
    it('checks an already decoded value (e.g. a verified JWS payload)', () => {
      expect(validatePayload('GatewayConfigDocument', examples.GatewayConfigDocument[0]).ok).to.equal(true);
      expect(validatePayload('GatewayConfigDocument', { branch: 'demo' })).to.include({ ok: false, path: 'gateway' });
    });
  });

  describe('payloadNameFor', () => {
    it('names the payload of every topic kind', () => {
      for (const kind of TOPIC_KINDS) expect(PAYLOADS).to.have.property(payloadNameFor(EXAMPLE_TOPICS[kind]));
      expect(payloadNameFor({ ...EXAMPLE_TOPICS['gateway-request'], name: 'unlink' })).to.equal('UnlinkRequest');
      expect(payloadNameFor({ ...EXAMPLE_TOPICS['machine-command'], name: 'display' })).to.equal('DisplayCommand');
      expect(payloadNameFor({ ...EXAMPLE_TOPICS['gateway-command'], name: 'allow-list' })).to.equal('AllowListCommand');
      expect(payloadNameFor({ ...EXAMPLE_TOPICS['user-live'], topic: 'notification' })).to.equal('UserNotification');
      expect(payloadNameFor(EXAMPLE_TOPICS['machine-command-response'])).to.equal('CommandResponse');
    });
  });

  describe('parseUplinkBatch', () => {
    const [batch] = examples.UplinkBatch;

    const goodMsgId = '0b9c8d7e-6f5a-4b3c-9d2e-1f0a9b8c7d6e';

    it('parses a valid batch record by record', () => {
      const result = parseUplinkBatch(Buffer.from(JSON.stringify(batch)));
      expect(result.ok).to.equal(true);
      if (!result.ok) return;
      expect(result.batchId).to.equal(batch.batchId);
      expect(result.live).to.equal(false);
      expect(result.unknownKeys).to.deep.equal([]);
      expect(result.records.map((r) => r.ok && r.record)).to.deep.equal(batch.records);
      expect(result.records.map((r) => r.index)).to.deep.equal([0, 1]);
    });

    it('rejects a bad record alone, by index and msgId, and keeps its neighbours', () => {
      const [first, second] = batch.records;
      if (first === undefined || second === undefined) throw new Error('the example batch has two records');
      const records = structuredClone(batch.records) as unknown as Record<string, Record<string, unknown>>[];
      records[0]!.payload!.status = 'exploded';
      const unknownKind = { kind: 'heartbeat', payload: { msgId: goodMsgId, beats: 3 } };
      const input = JSON.stringify({ ...batch, records: [...records, unknownKind] });
      const result = parseUplinkBatch(input);
      expect(result.ok).to.equal(true);
      if (!result.ok) return;
      const [bad, good, unknown] = result.records as [RecordResult, RecordResult, RecordResult];
      expect(bad).to.deep.include({
        ok: false,
        index: 0,
        msgId: first.payload.msgId,
        reason: 'invalid',
        path: 'payload.status',
      });
      expect(good).to.deep.equal({ ok: true, index: 1, record: second, unknownKeys: [] });
      expect(unknown).to.deep.include({ ok: false, index: 2, msgId: goodMsgId, reason: 'unknown-kind', path: 'kind' });
      if (bad.ok || unknown.ok) return;
      expect(rejectionOf(bad)).to.deep.equal({
        msgId: first.payload.msgId,
        index: 0,
        reason: 'invalid',
        path: 'payload.status',
      });
      expect(rejectionOf(unknown)).to.deep.equal({ msgId: goodMsgId, index: 2, reason: 'unknown-kind', path: 'kind' });
    });

    it('rejects a record without a readable msgId by its position, and keeps the rest of the batch', () => {
      const broken = [
        { kind: 'telemetry', payload: { type: 'rower' } },
        { kind: 'telemetry', payload: { ...examples.Telemetry[0], msgId: 'm-1' } },
        'not a record',
        null,
        [],
      ];
      const input = JSON.stringify({ ...batch, records: [...batch.records, ...broken] });
      const result = parseUplinkBatch(input);
      expect(result.ok).to.equal(true);
      if (!result.ok) return;
      expect(result.records).to.have.length(7);
      expect(result.records.slice(0, 2).every((r) => r.ok)).to.equal(true);
      const rejected = result.records.slice(2);
      for (const [i, record] of rejected.entries()) {
        expect(record, JSON.stringify(record)).to.deep.include({ ok: false, index: 2 + i, reason: 'invalid' });
        expect(record).not.to.have.property('msgId');
      }
      expect(rejected[0]).to.deep.include({ path: 'payload.msgId' });
      expect(rejected[1]).to.deep.include({ path: 'payload.msgId' });
      const ack = { batchId: result.batchId, acked: [], rejected: rejected.map((r) => !r.ok && rejectionOf(r)) };
      expect(validatePayload('UplinkAck', ack).ok, JSON.stringify(ack)).to.equal(true);
      expect(ack.rejected[0]).to.deep.equal({ index: 2, reason: 'invalid', path: 'payload.msgId' });
    });

    it('rejects a second record with a msgId already seen in the batch as duplicate-in-batch, keeping the first', () => {
      const [first, second] = batch.records;
      if (first === undefined || second === undefined) throw new Error('the example batch has two records');
      const copy = structuredClone(second) as unknown as { payload: { msgId: string; seq: number } };
      copy.payload.msgId = first.payload.msgId;
      copy.payload.seq += 1;
      const input = JSON.stringify({ ...batch, records: [first, second, copy, first] });
      const result = parseUplinkBatch(input);
      expect(result.ok).to.equal(true);
      if (!result.ok) return;
      const [kept, other, dup, again] = result.records as [RecordResult, RecordResult, RecordResult, RecordResult];
      expect(kept).to.deep.include({ ok: true, index: 0, record: first });
      expect(other).to.deep.include({ ok: true, index: 1 });
      for (const [record, index] of [
        [dup, 2],
        [again, 3],
      ] as const) {
        expect(record).to.deep.equal({
          ok: false,
          index,
          msgId: first.payload.msgId,
          reason: 'duplicate-in-batch',
        });
        if (!record.ok) {
          expect(rejectionOf(record)).to.deep.equal({
            msgId: first.payload.msgId,
            index,
            reason: 'duplicate-in-batch',
          });
        }
      }
    });

    it('reports unknown keys per record, payload keys prefixed, and of the batch itself', () => {
      const telemetry = { ...examples.Telemetry[0], totalEnergyKcal: 97, speedKmh: 12 };
      const input = JSON.stringify({
        ...batch,
        compression: 'none',
        records: [{ kind: 'telemetry', lane: 'telemetry', payload: telemetry }, ...batch.records],
      });
      const result = parseUplinkBatch(input);
      expect(result.ok).to.equal(true);
      if (!result.ok) return;
      expect(result.unknownKeys).to.deep.equal(['compression']);
      expect(result.records[0]).to.deep.include({
        ok: true,
        unknownKeys: ['lane', 'payload.totalEnergyKcal', 'payload.speedKmh'],
      });
      expect(result.records[1]).to.deep.include({ ok: true, unknownKeys: [] });
    });

    it('never refuses a batch or a record for its diagnostic clocks, even with an unset clock', () => {
      const records = batch.records.map((record) => ({ ...record, receivedAt: 1_000 }));
      const result = parseUplinkBatch(JSON.stringify({ ...batch, sentAt: 0, records }));
      expect(result).to.deep.include({ ok: true, sentAt: 0 });
      if (!result.ok) return;
      expect(result.records.every((r) => r.ok && r.record.receivedAt === 1_000)).to.equal(true);
      expect(parseUplinkBatch(JSON.stringify({ ...batch, sentAt: -1 }))).to.deep.include({ ok: false, path: 'sentAt' });
    });

    it('fails the whole batch only for an unreadable shell, naming the batch when it can', () => {
      expect(parseUplinkBatch('{"batchId": ')).to.deep.equal({ ok: false, reason: 'not-json' });
      const noRecords = parseUplinkBatch(JSON.stringify({ ...batch, records: 'none' }));
      expect(noRecords).to.deep.include({ ok: false, reason: 'invalid', path: 'records', batchId: batch.batchId });
      const empty = parseUplinkBatch(JSON.stringify({ ...batch, records: [] }));
      expect(empty).to.deep.include({ ok: false, path: 'records', batchId: batch.batchId });
    });

    it('fails without a batch id when none can be read', () => {
      const result = parseUplinkBatch(JSON.stringify({ batchId: 'no/slashes', records: [] }));
      expect(result.ok).to.equal(false);
      expect(result).not.to.have.property('batchId');
      const inherited = parseUplinkBatch(JSON.stringify({ __proto__: { batchId: 'b-1' }, records: [] }));
      expect(inherited).not.to.have.property('batchId');
    });

    it('enforces the record count and byte limits', () => {
      const many = { ...batch, records: Array.from({ length: MAX_BATCH_RECORDS + 1 }, () => batch.records[0]) };
      expect(parseUplinkBatch(JSON.stringify(many))).to.deep.include({
        ok: false,
        path: 'records',
        batchId: batch.batchId,
      });
      expect(parseUplinkBatch(' '.repeat(MAX_BATCH_BYTES + 1))).to.deep.equal({ ok: false, reason: 'too-large' });
    });

    it('reports a live snapshot', () => {
      const result = parseUplinkBatch(JSON.stringify({ ...examples.UplinkBatch[1], live: true }));
      expect(result).to.include({ ok: true, live: true });
    });
  });
});
