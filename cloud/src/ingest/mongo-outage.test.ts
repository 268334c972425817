/**
 * RELIABILITY C2, in small: MongoDB goes away while a gateway sends. Ingest stops acking — the broker link stays
 * up — and acks the resent batch once MongoDB is back, with every record stored exactly once.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import type { Connection } from 'mongoose';
import { pino } from 'pino';
import { systemClock } from '../../../tools/runtime/clock.ts';
import { findFreePort, startMongo, type MongoService } from '../../../tools/services/index.ts';
import { asBranchId, asGatewayId, asMachineId } from '../../../protocol/index.ts';
import { connectTestRedis, type TestRedis } from '../../../test/helpers/services.ts';
import { connectMongo } from '../db/mongo.ts';
import { RECORD_COLLECTIONS } from './store.ts';
import { TestGateway, batchId, machineRecords, startIngestFixture, type IngestFixture } from './testing.ts';

const branch = asBranchId('demo');
const gatewayId = asGatewayId('gw-demo-1');

describe('ingest during a MongoDB outage (a dedicated stand-in, stopped and restarted)', function () {
  this.timeout(60_000);
  let dataDir: string;
  let port: number;
  let mongoService: MongoService | undefined;
  let mongo: Connection;
  let redis: TestRedis;
  let fixture: IngestFixture;
  let gw: TestGateway;

  // On an H2 file, so that what was stored before the outage is still there after the restart.
  const startStandIn = () => startMongo({ storage: { kind: 'h2', file: path.join(dataDir, 'mongo.h2') }, port });

  before(async () => {
    dataDir = await mkdtemp(path.join(os.tmpdir(), 'nxg-ingest-outage-'));
    port = await findFreePort();
    mongoService = await startStandIn();
    mongo = await connectMongo({ url: `${mongoService.url}/outage`, timeoutMs: 1_000, log: pino({ level: 'silent' }) });
    redis = await connectTestRedis();
    fixture = await startIngestFixture({
      mongo,
      redis: redis.client,
      clock: systemClock,
      config: { writeTimeoutMs: 1_000 },
    });
    gw = await TestGateway.connect(fixture.url, branch, gatewayId);
  });
  after(async () => {
    await gw?.close();
    await fixture?.stop();
    await redis?.close();
    await mongo?.close();
    await mongoService?.stop();
    await rm(dataDir, { recursive: true, force: true });
  });

  it('sends no ack while MongoDB is down, keeps the link, and acks the resent batch when it returns', async () => {
    const m = machineRecords(asMachineId('row-03'));
    const before = [m.workout(), m.status('available')];
    expect((await gw.send('records', { batchId: batchId(), records: before })).acked).to.have.length(2);

    await mongoService!.stop();
    mongoService = undefined;
    const during = [m.workout(), m.status('in_use'), m.workout()];
    const id = batchId();
    // The write's deadline is 1 s: waiting 4 s for an ack that must not come.
    const outcome = await gw.send('records', { batchId: id, records: during }, 4_000).then(
      () => 'acked',
      () => 'no ack',
    );
    expect(outcome).to.equal('no ack');
    const failures = (await fixture.registry.getSingleMetric('ingest_mongo_write_failures_total')?.get())?.values ?? [];
    expect(failures.reduce((n, v) => n + v.value, 0)).to.be.at.least(1);
    expect(gw.client.connected, 'the broker link stays up').to.equal(true);

    mongoService = await startStandIn();
    // The gateway resends the unanswered batch (same batchId, same records) until it is answered.
    let ack;
    const deadline = Date.now() + 30_000;
    while (!ack) {
      ack = await gw.send('records', { batchId: id, records: during }, 3_000).catch(() => undefined);
      if (!ack && Date.now() > deadline) throw new Error('no ack within 30 s of MongoDB returning');
    }
    expect(ack.acked).to.deep.equal(during.map((r) => r.payload.msgId));
    const ids = [...before, ...during].map((r) => r.payload.msgId);
    const workouts = await mongo
      .db!.collection(RECORD_COLLECTIONS.workout)
      .countDocuments({ _id: { $in: ids } as never });
    const statuses = await mongo
      .db!.collection(RECORD_COLLECTIONS.status)
      .countDocuments({ _id: { $in: ids } as never });
    expect({ workouts, statuses }).to.deep.equal({ workouts: 3, statuses: 2 });
  });
});
