import { expect } from 'chai';
import { Redis } from 'ioredis';
import mongoose from 'mongoose';
import { connectMongoose, connectTestRedis, testServices, uniqueDbName } from './services.ts';

describe('test harness: shared services (root hooks)', () => {
  it('exposes the MongoDB and Redis URLs of the run', () => {
    const { mongoUrl, redisUrl } = testServices();
    expect(mongoUrl).to.match(/^mongodb(\+srv)?:\/\/[^/]+$/);
    expect(redisUrl).to.match(/^rediss?:\/\//);
  });

  it('uniqueDbName gives distinct names MongoDB accepts', () => {
    const names = new Set(Array.from({ length: 100 }, () => uniqueDbName('a.b/c d$e-with-a-rather-long-prefix')));
    expect(names.size).to.equal(100);
    for (const name of names) {
      expect(name).to.match(/^[A-Za-z0-9_-]+$/);
      expect(name.length).to.be.below(64);
    }
  });

  it('connectMongoose opens a connection to its own database', async () => {
    const dbName = uniqueDbName('harness');
    const conn = await connectMongoose(dbName);
    try {
      expect(conn.db?.databaseName).to.equal(dbName);
      const Thing = conn.model('Thing', new mongoose.Schema({ name: String }));
      await Thing.create({ name: 'x' });
      expect(await Thing.countDocuments()).to.equal(1);
      await conn.dropDatabase();
    } finally {
      await conn.close();
    }
  });

  it("connectTestRedis prefixes its keys and flushes only its own, never another suite's", async () => {
    const mine = await connectTestRedis();
    const other = await connectTestRedis();
    const raw = new Redis(testServices().redisUrl);
    try {
      await mine.client.set('k', 'mine');
      await other.client.set('k', 'other');
      expect(await raw.get(`${mine.prefix}k`)).to.equal('mine');

      await mine.flush();
      expect(await mine.client.get('k')).to.equal(null);
      expect(await other.client.get('k')).to.equal('other');
    } finally {
      raw.disconnect();
      await Promise.all([mine.close(), other.close()]);
    }
  });
});
