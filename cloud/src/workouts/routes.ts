/**
 * The member's workout records: `GET /api/workouts` (segments grouped by gym session, newest first, totals computed
 * on read) and `GET /api/workouts/{sessionId}`. Only the caller's own: another member's session is a 404, never a 403
 * (no existence leak).
 */
import type { Middleware } from 'koa';
import * as v from 'valibot';
import { NotFound, Unauthorized } from '../http/errors.ts';
import { defineRoute, type RouteSpec } from '../http/route.ts';
import type { AppState } from '../http/state.ts';
import type { Workouts } from './service.ts';

/**
 * ms since the epoch, or an ISO date (optionally with a time and zone). The pattern is the documented contract: every
 * value it admits parses (a day past the month's end rolls over, as Date does), so schema-valid input is never
 * refused.
 */
const ISO_OR_MS =
  /^(?:\d{1,15}|\d{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])(?:T(?:[01]\d|2[0-3]):[0-5]\d(?::[0-5]\d(?:\.\d{1,3})?)?(?:Z|[+-](?:[01]\d|2[0-3]):[0-5]\d)?)?)$/;

const IsoOrMs = v.pipe(
  v.string(),
  v.regex(ISO_OR_MS, 'expected ms since the epoch or an ISO 8601 date, e.g. 2026-11-26 or 2026-11-26T06:00:00Z'),
  v.transform((s) => (/^\d+$/.test(s) ? Number(s) : Date.parse(s))),
  v.number(),
  v.check((n) => Number.isFinite(n), 'expected an ISO date or ms since the epoch'),
);

const ListQuery = v.strictObject({
  from: v.optional(IsoOrMs),
  to: v.optional(IsoOrMs),
  limit: v.optional(v.pipe(v.string(), v.regex(/^(?:[1-9]\d?|100)$/, 'expected 1 to 100'), v.transform(Number))),
});

export function workoutRoutes({ workouts, guard }: { workouts: Workouts; guard: Middleware<AppState> }): RouteSpec[] {
  return [
    defineRoute({
      method: 'get',
      path: '/api/workouts',
      summary: 'The caller’s workout records',
      description:
        'Finished segments (sets, intervals, blocks — published by machines or inferred from telemetry) grouped by ' +
        'gym session and ordered by event time, with totals; values outside the machine’s supported ranges are ' +
        'listed in each segment’s `flags`.',
      tags: ['workouts'],
      security: [{ bearer: [] }],
      guards: [guard],
      query: ListQuery,
      responses: {
        200: { description: 'Records, newest first' },
        403: { description: 'Account suspended' },
      },
      handler: async (ctx, { query }) => {
        const user = ctx.state.user;
        if (!user) throw new Unauthorized();
        const items = await workouts.records(user.id, {
          ...(query.from === undefined ? {} : { fromMs: query.from }),
          ...(query.to === undefined ? {} : { toMs: query.to }),
          ...(query.limit === undefined ? {} : { limit: query.limit }),
        });
        return { status: 200, body: { items } };
      },
    }),
    defineRoute({
      method: 'get',
      path: '/api/workouts/:sessionId',
      summary: 'One of the caller’s workout records, by gym session',
      tags: ['workouts'],
      security: [{ bearer: [] }],
      guards: [guard],
      params: v.strictObject({ sessionId: v.pipe(v.string(), v.regex(/^[A-Za-z0-9_-]{1,64}$/)) }),
      responses: {
        200: { description: 'The record' },
        403: { description: 'Account suspended' },
        404: { description: 'No such record of yours' },
      },
      handler: async (ctx, { params }) => {
        const user = ctx.state.user;
        if (!user) throw new Unauthorized();
        const record = await workouts.record(user.id, params.sessionId);
        if (!record) throw new NotFound('no such workout');
        return { status: 200, body: record };
      },
    }),
  ];
}
