/**
 * The identity store's lookups: concurrent ones share one query (a CONNECT storm costs one round trip per batch),
 * lookups made while a query is out wait for the next one, and each caller still gets its own record, or undefined
 * for an unknown id; a failed query fails only its callers.
 */
import { expect } from 'chai';
import type { Connection } from 'mongoose';
import sinon from 'sinon';
import { connectMongoose, uniqueDbName } from '../../../test/helpers/services.ts';
import { createIdentityStore, type IdentityStore } from './identities.ts';

describe('identity store lookups', function () {
  let mongo: Connection;
  let store: IdentityStore;

  before(async function () {
    mongo = await connectMongoose(uniqueDbName('identities'));
    store = createIdentityStore(mongo);
    for (let i = 0; i < 30; i++) {
      await store.insert({
        id: `obs-${i}`,
        role: 'observer',
        branches: ['b1'],
        secretHash: `hash-${i}`,
        createdAt: new Date(0),
        disabled: i === 7,
      });
    }
  });

  after(async function () {
    await mongo.dropDatabase();
    await mongo.close();
  });

  afterEach(() => sinon.restore());

  it('answers concurrent lookups with one query, each with its own record (or undefined)', async function () {
    const find = sinon.spy(mongo.models.MqttIdentity!, 'find');
    const ids = [...Array.from({ length: 30 }, (_, i) => `obs-${i}`), 'obs-3', 'nobody'];
    const records = await Promise.all(ids.map((id) => store.find(id)));
    expect(find.callCount).to.equal(1);
    records.slice(0, 30).forEach((record, i) => {
      expect(record?.id).to.equal(`obs-${i}`);
      expect(record?.secretHash).to.equal(`hash-${i}`);
      expect(record?.disabled).to.equal(i === 7);
    });
    expect(records[30]?.id).to.equal('obs-3');
    expect(records[31]).to.equal(undefined);
    // Lookups in a later turn make a query of their own.
    expect((await store.find('obs-1'))?.id).to.equal('obs-1');
    expect(find.callCount).to.equal(2);
  });

  it('while a query is out, lookups of later turns gather into one next query', async function () {
    const model = mongo.models.MqttIdentity!;
    const original = model.find.bind(model);
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const find = sinon.stub(model, 'find');
    // The first query's answer is held back (a slow store); later calls go through untouched.
    find.onFirstCall().callsFake(((...args: Parameters<typeof original>) => {
      const query = original(...args);
      return { lean: () => gate.then(() => query.lean()) };
    }) as never);
    find.callsFake(((...args: Parameters<typeof original>) => original(...args)) as never);
    const turn = () => new Promise((resolve) => setImmediate(resolve));
    const first = store.find('obs-1');
    await turn();
    expect(find.callCount).to.equal(1);
    const later: ReturnType<IdentityStore['find']>[] = [];
    for (let i = 2; i < 12; i++) {
      later.push(store.find(`obs-${i}`));
      await turn();
    }
    expect(find.callCount, 'nothing more is sent while the first query is out').to.equal(1);
    release();
    const records = await Promise.all([first, ...later]);
    expect(records.map((r) => r?.id)).to.deep.equal(Array.from({ length: 11 }, (_, i) => `obs-${i + 1}`));
    expect(find.callCount).to.equal(2);
  });

  it('a failed query rejects its callers, and the next lookup queries again', async function () {
    const model = mongo.models.MqttIdentity!;
    const original = model.find.bind(model);
    const find = sinon.stub(model, 'find');
    find.onFirstCall().callsFake(() => ({ lean: () => Promise.reject(new Error('store down')) }) as never);
    find.callsFake(((...args: Parameters<typeof original>) => original(...args)) as never);
    const failed = await Promise.allSettled([store.find('obs-1'), store.find('obs-2')]);
    expect(failed.map((r) => r.status)).to.deep.equal(['rejected', 'rejected']);
    expect((await store.find('obs-2'))?.id).to.equal('obs-2');
  });
});
