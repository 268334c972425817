import { expect } from 'chai';
import type { Connection } from 'mongoose';
import { connectMongoose, uniqueDbName } from '../../../test/helpers/services.ts';
import { createAuditLog } from './index.ts';

describe('audit log (append-only, real MongoDB-compatible server)', () => {
  let mongo: Connection;
  before(async () => {
    mongo = await connectMongoose(uniqueDbName('audit'));
  });
  after(async () => {
    await mongo.dropDatabase();
    await mongo.close();
  });

  it('appends entries with time, actor, action, target, ip, result and details', async () => {
    const audit = createAuditLog(mongo, { now: () => new Date('2026-05-01T10:00:00Z') });
    await audit.record({
      actor: 'u1',
      action: 'login',
      target: 'u1',
      ip: '10.0.0.1',
      result: 'success',
      details: { sessionId: 's1' },
    });
    await audit.record({ actor: null, action: 'login_failed', result: 'failure' });
    const entries = await mongo
      .collection('audit_log')
      .find({}, { projection: { _id: 0 } })
      .sort({ action: 1 })
      .toArray();
    expect(entries).to.deep.equal([
      {
        at: new Date('2026-05-01T10:00:00Z'),
        actor: 'u1',
        action: 'login',
        target: 'u1',
        ip: '10.0.0.1',
        result: 'success',
        details: { sessionId: 's1' },
      },
      {
        at: new Date('2026-05-01T10:00:00Z'),
        actor: null,
        action: 'login_failed',
        target: null,
        ip: null,
        result: 'failure',
      },
    ]);
  });

  it('never stores secret-looking details, and defuses operator and dotted keys', async () => {
    const audit = createAuditLog(mongo);
    await audit.record({
      actor: 'u2',
      action: 'password_reset',
      result: 'success',
      details: {
        password: 'hunter2hunter2',
        refreshToken: 'abc',
        authorization: 'Bearer x',
        $where: '1',
        'a.b': 2,
        reason: 'ok',
      },
    });
    const entry = await mongo.collection('audit_log').findOne({ actor: 'u2' });
    expect(entry!.details).to.deep.equal({ _where: '1', a_b: 2, reason: 'ok' });
  });

  it('refuses updates and deletes through the model', async () => {
    createAuditLog(mongo);
    const Audit = mongo.models.AuditEntry!;
    for (const attempt of [
      () => Audit.updateOne({ actor: 'u1' }, { $set: { result: 'failure' } }),
      () => Audit.deleteMany({}),
      () => Audit.findOneAndDelete({ actor: 'u1' }),
    ]) {
      let error: unknown;
      try {
        await attempt();
      } catch (err) {
        error = err;
      }
      expect((error as Error | undefined)?.message).to.match(/append-only/);
    }
    expect(await mongo.collection('audit_log').countDocuments({ actor: 'u1' })).to.equal(1);
  });
});
