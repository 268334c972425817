/**
 * Feature-usage and activity events from the apps, and daily / weekly / monthly summaries of them.
 *
 * Events may arrive late (apps buffer offline); one dated in the future (a phone's clock ahead) is taken as
 * received now. An event with the app's eventId is stored once however often it is retried. Summaries group by UTC day in MongoDB ($dateToString, which
 * the MongoDB-compatible stand-in supports — $dateTrunc it does not) and fold days into ISO weeks or months here.
 */
import { DUPLICATE_KEY } from '../db/mongo.ts';
import { randomUUID } from 'node:crypto';
import type { UsersContext } from './context.ts';
import type { ActivityDoc } from './models.ts';
import type { ActivityBatch } from './schemas.ts';

const DAY_MS = 86_400_000;
const MAX_FUTURE_MS = 5 * 60_000;

export type SummaryPeriod = 'daily' | 'weekly' | 'monthly';

/** Default span and the widest allowed, in buckets. */
const SPAN: Record<SummaryPeriod, { default: number; max: number }> = {
  daily: { default: 30, max: 366 },
  weekly: { default: 12, max: 106 },
  monthly: { default: 12, max: 60 },
};

export interface SummaryBucket {
  start: string;
  events: number;
  activeDays: number;
  durationS: number;
  byType: Record<string, number>;
}

export interface ActivitySummary {
  period: SummaryPeriod;
  from: string;
  to: string;
  timezone: 'UTC';
  buckets: SummaryBucket[];
  totals: { events: number; activeDays: number; durationS: number };
}

export interface ActivityService {
  record(userId: string, batch: ActivityBatch): Promise<{ accepted: number; duplicates: number }>;
  summary(userId: string, query: { period: SummaryPeriod; from?: Date; to?: Date }): Promise<ActivitySummary>;
}

const utcDay = (d: Date) => new Date(Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate()));

/** The first day of the bucket a day belongs to: itself, its ISO week's Monday, or its month's first day. */
export function bucketStart(day: Date, period: SummaryPeriod): Date {
  if (period === 'daily') return utcDay(day);
  if (period === 'monthly') return new Date(Date.UTC(day.getUTCFullYear(), day.getUTCMonth(), 1));
  const d = utcDay(day);
  return new Date(d.getTime() - ((d.getUTCDay() + 6) % 7) * DAY_MS);
}

function nextBucket(start: Date, period: SummaryPeriod): Date {
  if (period === 'daily') return new Date(start.getTime() + DAY_MS);
  if (period === 'weekly') return new Date(start.getTime() + 7 * DAY_MS);
  return new Date(Date.UTC(start.getUTCFullYear(), start.getUTCMonth() + 1, 1));
}

/** The first of `buckets` buckets ending with the bucket of `end`. */
function backFrom(end: Date, period: SummaryPeriod, buckets: number): Date {
  const back = buckets - 1;
  const last = bucketStart(end, period);
  if (period === 'daily') return new Date(last.getTime() - back * DAY_MS);
  if (period === 'weekly') return new Date(last.getTime() - back * 7 * DAY_MS);
  return new Date(Date.UTC(last.getUTCFullYear(), last.getUTCMonth() - back, 1));
}

const isoDay = (d: Date) => d.toISOString().slice(0, 10);

export function createActivityService({ models, clock }: UsersContext): ActivityService {
  const { Activity } = models;

  return {
    async record(userId, { events }) {
      const now = clock.now();
      const docs: ActivityDoc[] = events.map((event) => {
        // A phone whose clock runs ahead must not put events into the future of every summary: beyond a few
        // minutes of skew, the time of receipt stands in for `at`.
        const at = event.at && event.at.getTime() <= now.getTime() + MAX_FUTURE_MS ? event.at : now;
        return {
          _id: `${userId}:${event.eventId ?? randomUUID()}`,
          userId,
          type: event.type,
          feature: event.feature ?? null,
          at,
          durationS: event.durationS ?? null,
          properties: event.properties ?? null,
          receivedAt: now,
        };
      });
      // Unordered: one duplicate (a retried event) must not stop the others. What happened to each is read from
      // writeErrors, never from the counts (the stand-in miscounts them, ARCHITECTURE.md).
      let duplicates = 0;
      try {
        await Activity.collection.insertMany(docs as never[], { ordered: false });
      } catch (err) {
        const writeErrors = (err as { writeErrors?: { code?: number }[] | { code?: number } }).writeErrors;
        const list = Array.isArray(writeErrors) ? writeErrors : writeErrors ? [writeErrors] : undefined;
        if (!list || list.some((e) => e.code !== DUPLICATE_KEY)) throw err;
        duplicates = list.length;
      }
      return { accepted: docs.length - duplicates, duplicates };
    },

    async summary(userId, { period, from, to }) {
      const now = clock.now();
      const end = to ?? now;
      // A span wider than the maximum is cut at its start (like a page size, clamped rather than refused); a
      // `from` at or after `to` is an empty summary.
      const earliest = backFrom(end, period, SPAN[period].max);
      let first = bucketStart(from ?? backFrom(end, period, SPAN[period].default), period);
      if (first.getTime() < earliest.getTime()) first = earliest;
      const starts: Date[] = [];
      for (let s = first; s.getTime() < end.getTime(); s = nextBucket(s, period)) starts.push(s);

      const rows = await Activity.aggregate<{ _id: { day: string; type: string }; count: number; durationS: number }>([
        { $match: { userId, at: { $gte: first, $lt: end } } },
        {
          $group: {
            _id: { day: { $dateToString: { format: '%Y-%m-%d', date: '$at' } }, type: '$type' },
            count: { $sum: 1 },
            durationS: { $sum: '$durationS' },
          },
        },
      ]);

      const buckets = new Map<string, SummaryBucket & { days: Set<string> }>(
        starts.map((s) => [
          isoDay(s),
          {
            start: isoDay(s),
            events: 0,
            activeDays: 0,
            durationS: 0,
            // No prototype: an event type such as "constructor" is a count like any other, not Object's member.
            byType: Object.create(null) as Record<string, number>,
            days: new Set<string>(),
          },
        ]),
      );
      for (const row of rows) {
        const key = isoDay(bucketStart(new Date(`${row._id.day}T00:00:00Z`), period));
        const bucket = buckets.get(key);
        if (!bucket) continue;
        bucket.events += row.count;
        bucket.durationS += row.durationS ?? 0;
        bucket.byType[row._id.type] = (bucket.byType[row._id.type] ?? 0) + row.count;
        bucket.days.add(row._id.day);
      }
      const out: SummaryBucket[] = [...buckets.values()].map(({ days, ...bucket }) => ({
        ...bucket,
        activeDays: days.size,
        durationS: Math.round(bucket.durationS),
      }));
      return {
        period,
        from: first.toISOString(),
        to: end.toISOString(),
        timezone: 'UTC',
        buckets: out,
        totals: {
          events: out.reduce((n, b) => n + b.events, 0),
          activeDays: out.reduce((n, b) => n + b.activeDays, 0),
          durationS: out.reduce((n, b) => n + b.durationS, 0),
        },
      };
    },
  };
}
