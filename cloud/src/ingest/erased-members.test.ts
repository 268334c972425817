import { randomBytes } from 'node:crypto';
import { expect } from 'chai';
import type { Connection } from 'mongoose';
import { createManualClock } from '../../../tools/runtime/clock.ts';
import { asBranchId, asGatewayId, asMachineId, type UplinkRecord } from '../../../protocol/index.ts';
import { connectMongoose, connectTestRedis, uniqueDbName, type TestRedis } from '../../../test/helpers/services.ts';
import { createFieldCipher } from '../crypto/field-cipher.ts';
import { keyringOf } from '../crypto/keyring.ts';
import { createErasureCheck, TOMBSTONES } from '../privacy/index.ts';
import { RECORD_COLLECTIONS } from './store.ts';
import { T0, TestGateway, batchId, machineRecords, startIngestFixture, type IngestFixture } from './testing.ts';

const branch = asBranchId('demo');

// GDPR (RELIABILITY P1): a workout a gateway buffered offline must not bring an erased member back.
describe('ingest: records naming an erased member (real tombstones in MongoDB)', function () {
  this.timeout(30_000);
  const clock = createManualClock(T0 + 60_000);
  const cipher = createFieldCipher(keyringOf([{ kid: 'k1', key: randomBytes(32) }], 'k1', randomBytes(32)));
  let mongo: Connection;
  let redis: TestRedis;
  let fixture: IngestFixture;
  let gw: TestGateway;

  before(async () => {
    mongo = await connectMongoose(uniqueDbName('ingest_erased'));
    redis = await connectTestRedis();
    fixture = await startIngestFixture({
      mongo,
      redis: redis.client,
      clock,
      erasedMembers: createErasureCheck({ mongo, cipher }),
    });
    gw = await TestGateway.connect(fixture.url, branch, asGatewayId('gw-erased'));
  });
  after(async () => {
    await gw?.close();
    await fixture?.stop();
    await redis?.close();
    await mongo?.dropDatabase();
    await mongo?.close();
  });

  it('stores the workout of an erased member without the member, and a live member’s as it came', async () => {
    const erased = 'aaaaaaaaaaaaaaaaaaaaaaaa';
    const kept = 'bbbbbbbbbbbbbbbbbbbbbbbb';
    await mongo.db!.collection(TOMBSTONES).insertOne({ _id: cipher.pseudonym(erased) } as never);
    const m = machineRecords(asMachineId('row-09'));
    const linked = (userId: string): UplinkRecord => {
      const record = m.workout();
      return { ...record, payload: { ...record.payload, userId, sessionId: `s-${userId}` } } as UplinkRecord;
    };
    const records = [linked(erased), linked(kept)];
    const ack = await gw.send('records', { batchId: batchId(), records });
    expect(ack.acked).to.have.length(2);

    const workouts = mongo.db!.collection(RECORD_COLLECTIONS.workout);
    const [ofErased, ofKept] = await Promise.all(records.map((r) => workouts.findOne({ _id: r.payload.msgId })));
    expect(ofErased).to.include({ source: 'row-09', distanceM: 250 });
    expect(ofErased).to.not.have.any.keys('userId', 'sessionId');
    expect(ofKept).to.include({ userId: kept, sessionId: `s-${kept}` });
    expect(await workouts.countDocuments({ userId: erased })).to.equal(0);
  });
});
