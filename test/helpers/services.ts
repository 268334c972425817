/**
 * The real MongoDB (stand-in) and Redis shared by the whole mocha run, started once by root-hooks.ts, and small
 * helpers so that suites never see each other's data: a database of their own, a Redis key prefix of their own.
 */
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import mongoose, { type Connection } from 'mongoose';

export interface TestServices {
  /** `mongodb://host:port` with no database: append `/${uniqueDbName(…)}`, or use connectMongoose. */
  readonly mongoUrl: string;
  readonly redisUrl: string;
}

let current: TestServices | undefined;

/** Called by root-hooks.ts only. */
export function setTestServices(services: TestServices | undefined): void {
  current = services;
}

export function testServices(): TestServices {
  if (!current) {
    throw new Error(
      'test services are not started: run mocha with .mocharc.cjs (it requires test/helpers/root-hooks.ts)',
    );
  }
  return current;
}

let dbCounter = 0;

/**
 * A database name no other suite or run uses. MongoDB allows 63 bytes and none of `/\. "$`; the random part keeps
 * two runs against one MONGO_URL apart.
 */
export function uniqueDbName(prefix: string): string {
  const clean = prefix.replace(/[^A-Za-z0-9_-]/g, '_').slice(0, 30) || 'test';
  return `${clean}_${process.pid}_${++dbCounter}_${randomBytes(3).toString('hex')}`;
}

/** A dedicated mongoose connection to `dbName`; the caller closes it (and may drop the database first). */
export async function connectMongoose(dbName: string): Promise<Connection> {
  const connection = mongoose.createConnection(testServices().mongoUrl, {
    dbName,
    serverSelectionTimeoutMS: 5_000,
  });
  return connection.asPromise();
}

export interface TestRedis {
  /** Every key this client touches is prefixed with `prefix` (ioredis keyPrefix). */
  readonly client: Redis;
  readonly prefix: string;
  /** Deletes this client's keys only: other suites share the server. */
  flush(): Promise<void>;
  /** flush, then quit. */
  close(): Promise<void>;
}

let redisCounter = 0;

/**
 * An ioredis client of the run's Redis with a key prefix of its own. Named apart from production's connectRedis
 * (cloud/src/db/redis.ts, with fail-fast options) so that an import can never pick up the wrong one.
 */
export async function connectTestRedis(): Promise<TestRedis> {
  const prefix = `test:${process.pid}:${++redisCounter}:${randomBytes(3).toString('hex')}:`;
  const client = new Redis(testServices().redisUrl, { keyPrefix: prefix, lazyConnect: true, maxRetriesPerRequest: 1 });
  await client.connect();
  const flush = async () => {
    // keyPrefix is not applied to SCAN's MATCH, but it is to DEL's arguments: strip it from what SCAN returns.
    let cursor = '0';
    do {
      const [next, keys] = await client.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 500);
      cursor = next;
      if (keys.length > 0) await client.del(...keys.map((key) => key.slice(prefix.length)));
    } while (cursor !== '0');
  };
  return {
    client,
    prefix,
    flush,
    close: async () => {
      await flush();
      await client.quit();
    },
  };
}
