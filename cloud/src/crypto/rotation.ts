/**
 * Key rotation: re-encrypts every sealed field whose key is not the active one. Documents keep their sealed fields
 * under `sealed.<field>`; each collection that has some is declared once (SealedCollection) by the domain that owns
 * it, so this job needs no knowledge of what the fields mean.
 *
 * Safe beside live traffic and on several nodes at once: each update is a compare-and-set on the IVs it read (a
 * value re-sealed by a request in between is left alone and counted as raced, then picked up by the next pass).
 * Retire an old key only once a run reports `complete`.
 */
import type { Connection } from 'mongoose';
import type { Logger } from '../../../tools/runtime/logger.ts';
import { isSealedValue, UnreadableField, type FieldCipher, type SealedValue } from './field-cipher.ts';

export interface SealedCollection {
  collection: string;
  /** The document field holding the member's id (bound into each value's AAD). */
  userIdField: string;
}

export interface CollectionRotation {
  scanned: number;
  /** Documents re-encrypted with the active key. */
  rotated: number;
  /** Documents whose sealed values are already on the active key. */
  current: number;
  /** Documents with a value that cannot be decrypted (tampered, or its key already gone): left as they are. */
  unreadable: number;
  /** Documents changed by someone else between read and write; retried in the next pass. */
  raced: number;
}

export interface RotationReport {
  activeKeyId: string;
  collections: Record<string, CollectionRotation>;
  /** True when no document holds a value under another key any more (unreadable ones excepted: see above). */
  complete: boolean;
  passes: number;
}

interface SealedDoc {
  _id: unknown;
  sealed?: Record<string, unknown>;
  [field: string]: unknown;
}

async function rotateCollection(
  connection: Connection,
  target: SealedCollection,
  cipher: FieldCipher,
  batchSize: number,
  dryRun: boolean,
  log: Logger,
): Promise<CollectionRotation> {
  const collection = connection.db!.collection<SealedDoc>(target.collection);
  const result: CollectionRotation = { scanned: 0, rotated: 0, current: 0, unreadable: 0, raced: 0 };
  let after: unknown;
  for (;;) {
    // Paging by _id keeps each batch an index range scan and makes the job resumable.
    const batch = await collection
      .find((after === undefined ? {} : { _id: { $gt: after } }) as never, {
        projection: { _id: 1, sealed: 1, [target.userIdField]: 1 },
      })
      .sort({ _id: 1 })
      .limit(batchSize)
      .toArray();
    if (batch.length === 0) return result;
    after = batch.at(-1)!._id;
    const updates: { filter: Record<string, unknown>; update: Record<string, SealedValue> }[] = [];
    for (const doc of batch) {
      result.scanned += 1;
      const sealed = doc.sealed ?? {};
      const stale = Object.entries(sealed).filter(
        (entry): entry is [string, SealedValue] => isSealedValue(entry[1]) && cipher.needsRotation(entry[1]),
      );
      if (stale.length === 0) {
        result.current += 1;
        continue;
      }
      const userId = String(doc[target.userIdField]);
      const filter: Record<string, unknown> = { _id: doc._id };
      const update: Record<string, SealedValue> = {};
      try {
        for (const [field, value] of stale) {
          const context = { collection: target.collection, userId, field };
          filter[`sealed.${field}.iv`] = value.iv;
          update[`sealed.${field}`] = cipher.seal(cipher.open(value, context), context);
        }
      } catch (err) {
        if (!(err instanceof UnreadableField)) throw err;
        result.unreadable += 1;
        log.error(
          { collection: target.collection, id: String(doc._id), field: err.field, kid: err.kid },
          'sealed value cannot be decrypted; left as is',
        );
        continue;
      }
      updates.push({ filter, update });
    }
    if (updates.length === 0) continue;
    if (dryRun) {
      result.rotated += updates.length;
      continue;
    }
    // One round trip per batch; each update is still its own compare-and-set.
    const { matchedCount } = await collection.bulkWrite(
      updates.map(({ filter, update }) => ({
        updateOne: { filter: filter as never, update: { $set: update } as never },
      })),
      { ordered: false },
    );
    result.rotated += matchedCount;
    result.raced += updates.length - matchedCount;
  }
}

export interface RotationOptions {
  connection: Connection;
  cipher: FieldCipher;
  targets: readonly SealedCollection[];
  log: Logger;
  batchSize?: number;
  /** Count what would be re-encrypted without writing. */
  dryRun?: boolean;
  /** Passes over everything until nothing is left to rotate (raced documents are retried). */
  maxPasses?: number;
}

export async function rotateSealedFields({
  connection,
  cipher,
  targets,
  log,
  batchSize = 500,
  dryRun = false,
  maxPasses = 3,
}: RotationOptions): Promise<RotationReport> {
  const collections: Record<string, CollectionRotation> = {};
  let passes = 0;
  let complete = false;
  // Pass after pass until one finds nothing left to re-encrypt: that last pass is the proof of 100 %.
  while (passes < maxPasses && !complete) {
    passes += 1;
    let stale = 0;
    for (const target of targets) {
      const pass = await rotateCollection(connection, target, cipher, batchSize, dryRun, log);
      const total = (collections[target.collection] ??= { ...pass, rotated: 0 });
      total.rotated += pass.rotated;
      total.raced = pass.raced;
      total.unreadable = pass.unreadable;
      stale += pass.rotated + pass.raced;
    }
    complete = stale === 0;
    if (dryRun) break;
  }
  log.info({ activeKeyId: cipher.activeKeyId, collections, complete, passes, dryRun }, 'field key rotation finished');
  return { activeKeyId: cipher.activeKeyId, collections, complete, passes };
}
