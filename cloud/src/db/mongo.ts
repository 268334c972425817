/**
 * The MongoDB connection (mongoose). One connection per process, created in main.ts and passed to the domains that
 * define their models on it — no global `mongoose.connect`, so tests can hold several apps side by side.
 *
 * Must work on real MongoDB 7 and on the stand-in used here (ARCHITECTURE.md): no `serverApi` (the stand-in does not
 * know `hello` under it), no transactions.
 */
import mongoose, { type Connection } from 'mongoose';
import type { Logger } from '../../../tools/runtime/logger.ts';
import type { HealthCheck } from '../health/health.ts';

/** MongoDB's duplicate-key error code: for claim documents and idempotent inserts it means "already there". */
export const DUPLICATE_KEY = 11000;

/** True when `err` is a duplicate-key error (the insert or upsert found the unique key taken). */
export function isDuplicateKey(err: unknown): boolean {
  return typeof err === 'object' && err !== null && (err as { code?: unknown }).code === DUPLICATE_KEY;
}

export interface MongoOptions {
  url: string;
  timeoutMs: number;
  log: Logger;
}

export async function connectMongo({ url, timeoutMs, log }: MongoOptions): Promise<Connection> {
  // A filter naming a path the schema does not have is refused instead of silently dropped (an unknown key
  // turned into `{}` means "match everything"). Mongoose reads this option globally or per schema, not per
  // connection; it is process-wide policy, so it is set here where the process's only connection is made.
  mongoose.set('strictQuery', 'throw');
  const connection = mongoose.createConnection(url, {
    serverSelectionTimeoutMS: timeoutMs,
    // Filters from user input are validated before they get here (route.ts); this is the second line.
    sanitizeFilter: true,
    autoIndex: true,
    autoCreate: true,
    maxPoolSize: 20,
  });
  connection.on('disconnected', () => log.warn('mongodb disconnected'));
  connection.on('reconnected', () => log.info('mongodb reconnected'));
  connection.on('error', (err: Error) => log.error({ err: { name: err.name, message: err.message } }, 'mongodb error'));
  await connection.asPromise();
  log.info({ db: connection.name }, 'mongodb connected');
  return connection;
}

export function mongoHealthCheck(connection: Connection): HealthCheck {
  return {
    name: 'mongo',
    async check() {
      const db = connection.db;
      if (!db || connection.readyState !== mongoose.ConnectionStates.connected) throw new Error('not connected');
      await db.command({ ping: 1 });
    },
  };
}
