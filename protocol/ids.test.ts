import { expect } from 'chai';
import * as v from 'valibot';
import {
  BatchId,
  BootId,
  BranchId,
  GatewayId,
  MSG_ID_MIN_LENGTH,
  MSG_ID_PATTERN,
  MachineId,
  MsgId,
  ReaderId,
  ReqId,
  SessionId,
  SourceId,
  UserId,
  asBranchId,
  asMachineId,
  asMsgId,
  isTopicLevelId,
  newBatchId,
  newBootId,
  newMsgId,
  newReqId,
} from './ids.ts';

describe('protocol/ids', () => {
  const topicLevelSchemas = { BranchId, GatewayId, MachineId, ReaderId, UserId, SourceId };

  it('accepts topic-level ids that follow ^[a-z0-9][a-z0-9-]{0,62}$', () => {
    for (const [name, schema] of Object.entries(topicLevelSchemas)) {
      for (const id of ['demo', 'row-03', '0', 'a-', '665f1c2ab3d4e5f601234567', 'a'.repeat(63)]) {
        expect(v.safeParse(schema, id).success, `${name} ${id}`).to.equal(true);
      }
    }
  });

  it('refuses ids that could widen a topic or an ACL pattern', () => {
    const bad = [
      '',
      '-demo',
      'Demo',
      'de mo',
      'de/mo',
      '+',
      '#',
      '$SYS',
      'a+b',
      'a#',
      'a'.repeat(64),
      'démo',
      'a\u0000',
    ];
    for (const [name, schema] of Object.entries(topicLevelSchemas)) {
      for (const id of bad) {
        expect(v.safeParse(schema, id).success, `${name} ${JSON.stringify(id)}`).to.equal(false);
        expect(isTopicLevelId(id)).to.equal(false);
      }
      expect(v.safeParse(schema, 42).success).to.equal(false);
    }
  });

  it('accepts opaque ids of 1–64 [A-Za-z0-9_-] and refuses anything else', () => {
    for (const schema of [BatchId, BootId, ReqId, SessionId]) {
      for (const id of [
        'a',
        '01JD8Z3K4M5N6P7Q8R9S0T1V2W',
        '7b1e0c52-3f4a-4d8e-9a61-2c5b8f0e4d17',
        'A_b-9',
        'x'.repeat(64),
      ]) {
        expect(v.safeParse(schema, id).success, id).to.equal(true);
      }
      for (const id of ['', 'x'.repeat(65), 'a b', 'a/b', 'a.b', 'ä', '$where']) {
        expect(v.safeParse(schema, id).success, id).to.equal(false);
      }
    }
  });

  it('accepts only msgIds long enough to be globally unique: 16–64 [A-Za-z0-9_-]', () => {
    for (const id of [
      '01JD8Z3K4M5N6P7Q8R9S0T1V2W',
      '7b1e0c52-3f4a-4d8e-9a61-2c5b8f0e4d17',
      'AAECAwQFBgcICQoLDA0ODw',
      'A_b-9'.repeat(4),
      'x'.repeat(MSG_ID_MIN_LENGTH),
      'x'.repeat(64),
    ]) {
      expect(v.safeParse(MsgId, id).success, id).to.equal(true);
    }
    for (const id of [
      '',
      'a',
      'm-1',
      'x'.repeat(MSG_ID_MIN_LENGTH - 1),
      'x'.repeat(65),
      `${'a'.repeat(20)} b`,
      'ä'.repeat(20),
    ]) {
      expect(v.safeParse(MsgId, id).success, id).to.equal(false);
    }
    expect(MSG_ID_PATTERN.test(newMsgId())).to.equal(true);
  });

  it('brands trusted literals and throws on invalid ones', () => {
    const branch: BranchId = asBranchId('demo');
    expect(branch).to.equal('demo');
    expect(() => asBranchId('Demo')).to.throw();
    expect(() => asMachineId('row/03')).to.throw();
    expect(() => asMsgId('')).to.throw();
    expect(() => asMsgId('m-1')).to.throw();
  });

  it('generates valid, distinct random ids', () => {
    const made = new Set<string>();
    for (let i = 0; i < 100; i++) {
      for (const id of [newMsgId(), newBootId(), newReqId(), newBatchId()]) {
        expect(v.safeParse(MsgId, id).success).to.equal(true);
        made.add(id);
      }
    }
    expect(made.size).to.equal(400);
  });

  it('lets a machine id be compared with and used as a record source', () => {
    const machine = asMachineId('row-03');
    const source: SourceId = machine;
    expect(source === machine).to.equal(true);
  });
});
