/**
 * Retention: deletes telemetry buckets and dead letters past their horizon. An explicit job, because the stand-in
 * ignores TTL indexes (ARCHITECTURE "Persistence"); the horizon comes from the injected clock, so tests move time
 * without fake timers.
 */
import type { Db } from 'mongodb';
import type { Clock } from '../../../tools/runtime/clock.ts';
import { DEAD_LETTER_COLLECTION, TELEMETRY_COLLECTION } from '../ingest/store.ts';

export const DAY_MS = 86_400_000;

export interface RetentionSettings {
  telemetryRetentionDays: number;
  deadLetterRetentionDays: number;
}

export interface RetentionResult {
  telemetryBuckets: number;
  deadLetters: number;
  /** Everything whose time is before these was deleted. */
  telemetryHorizon: Date;
  deadLetterHorizon: Date;
}

export async function runRetention({
  db,
  clock,
  settings,
}: {
  db: Db;
  clock: Clock;
  settings: RetentionSettings;
}): Promise<RetentionResult> {
  const now = clock.nowMs();
  const telemetryHorizon = new Date(now - settings.telemetryRetentionDays * DAY_MS);
  const deadLetterHorizon = new Date(now - settings.deadLetterRetentionDays * DAY_MS);
  // A bucket goes once all of its minute is past the horizon (its `end` is exclusive).
  const buckets = await db.collection(TELEMETRY_COLLECTION).deleteMany({ end: { $lte: telemetryHorizon } });
  const letters = await db.collection(DEAD_LETTER_COLLECTION).deleteMany({ receivedAt: { $lt: deadLetterHorizon } });
  return {
    telemetryBuckets: buckets.deletedCount,
    deadLetters: letters.deletedCount,
    telemetryHorizon,
    deadLetterHorizon,
  };
}
