/**
 * The sessions API under /api/sessions. A member only ever sees their own sessions: the member's id comes from the
 * verified token, and another member's session id answers 404 exactly like a missing one (RELIABILITY c6). Branch
 * analytics are for the staff of that branch and for admins.
 */
import * as v from 'valibot';
import { BranchId, Credential, SessionId } from '../../../protocol/index.ts';
import { AppError, Forbidden, NotFound } from '../http/errors.ts';
import { defineRoute, type RouteContext, type RouteSpec } from '../http/route.ts';
import type { AuthenticatedUser } from '../http/state.ts';
import { Limit, Timestamp } from '../users/schemas.ts';
import type { Middleware } from 'koa';
import type { AppState } from '../http/state.ts';
import { END_REASONS, SESSION_ORIGINS, SESSION_STATUSES } from './model.ts';
import { WEEKDAYS } from '../branches/hours.ts';
import { HISTORY_CURSOR, type SessionService } from './service.ts';

const security = [{ bearer: [] }];
const tags = ['sessions'];
const DAY_MS = 86_400_000;
/** Longest analytics range. */
const MAX_ANALYTICS_DAYS = 366;

export const StartSession = v.strictObject({
  branchId: v.pipe(BranchId, v.description('Where the member checks in')),
  credential: v.pipe(
    Credential,
    v.description(
      'An NFC card UID or a member QR token (GET /api/access/qr-token). A member may only present their own; ' +
        'staff and admins of the branch may check in any member at the desk.',
    ),
  ),
});

export const EndSession = v.strictObject({
  sessionId: v.optional(v.pipe(SessionId, v.description('If given, the open session must be this one'))),
});

export const SessionOut = v.object({
  id: v.string(),
  userId: v.string(),
  branchId: v.string(),
  status: v.picklist(SESSION_STATUSES),
  startedAt: v.pipe(v.string(), v.isoTimestamp()),
  endedAt: v.optional(v.pipe(v.string(), v.isoTimestamp())),
  durationMs: v.optional(v.number()),
  endReason: v.optional(v.picklist(END_REASONS)),
  autoEndAt: v.pipe(v.string(), v.isoTimestamp(), v.description('When it ends by itself if nobody checks out')),
  autoEndReason: v.picklist(['auto-timeout', 'branch-closed']),
  origin: v.pipe(v.picklist(SESSION_ORIGINS), v.description('app, gateway (online door decision) or offline')),
  machinesUsed: v.array(v.string()),
  conflictWith: v.optional(
    v.pipe(v.string(), v.description('An offline check-in while this session was open: recorded, never counted')),
  ),
});

const SessionEnvelope = v.object({ session: SessionOut });
const CurrentOut = v.object({ session: v.nullable(SessionOut) });

export const HistoryQuery = v.strictObject({
  from: v.optional(v.pipe(Timestamp, v.description('Sessions that started at or after this'))),
  to: v.optional(v.pipe(Timestamp, v.description('Sessions that started before this'))),
  branchId: v.optional(BranchId),
  limit: Limit(20),
  cursor: v.optional(
    v.pipe(
      v.string(),
      v.description('The nextCursor of the previous page (epoch milliseconds, a dash, a session id)'),
      v.regex(HISTORY_CURSOR, 'expected a cursor returned by a previous page'),
    ),
  ),
});

const HistoryOut = v.object({
  items: v.array(SessionOut),
  nextCursor: v.nullable(v.string()),
  usage: v.object({
    visits: v.number(),
    totalDurationMs: v.number(),
    averageDurationMs: v.nullable(v.number()),
    machinesUsed: v.pipe(v.number(), v.description('Distinct machines')),
    conflicts: v.number(),
  }),
});

export const AnalyticsQuery = v.strictObject({
  branchId: BranchId,
  from: v.optional(v.pipe(Timestamp, v.description('Default: 30 days before `to`'))),
  to: v.optional(v.pipe(Timestamp, v.description('Default: now'))),
});

const AnalyticsOut = v.object({
  branchId: v.string(),
  from: v.string(),
  to: v.string(),
  visits: v.number(),
  members: v.pipe(v.number(), v.description('Distinct members')),
  averageDurationMs: v.nullable(v.number()),
  checkInsByHour: v.array(v.object({ hour: v.number(), visits: v.number() })),
  peakHours: v.pipe(v.array(v.number()), v.description('Busiest local hours, most check-ins first (up to 3)')),
  visitsByWeekday: v.array(v.object({ weekday: v.picklist(WEEKDAYS), visits: v.number() })),
});

const SessionParams = v.strictObject({ id: v.pipe(v.string(), v.maxLength(64)) });

/** HTTP status per deny reason of a check-in; any other reason is a 403 with that code. */
const DENY_STATUS: Record<string, number> = {
  'already-checked-in': 409,
  'unknown-branch': 404,
  'rate-limited': 429,
};

const DENY_DETAIL: Record<string, string> = {
  'already-checked-in': 'the member already has an open session',
  'unknown-branch': 'there is no such branch',
  'outside-opening-hours': 'the branch is closed now',
  'membership-inactive': 'the member has no active membership of this branch',
  'credential-of-another-member': 'the credential belongs to another member',
  'not-checked-in': 'there is no open session',
};

const suspended = { 403: { description: 'Suspended account' } };

/** No open session to end: 404, like any resource that is not there. */
const notCheckedIn = (detail: string) => new AppError('not-checked-in', 404, detail);

function denied(reason: string): AppError {
  return new AppError(reason, DENY_STATUS[reason] ?? 403, DENY_DETAIL[reason] ?? `check-in refused: ${reason}`);
}

function caller(ctx: RouteContext): AuthenticatedUser {
  const user = ctx.state.user;
  if (!user) throw new Error('route reached without an authenticated user: its guard is missing');
  return user;
}

export interface SessionRoutesDeps {
  sessions: SessionService;
  requireUser: (options?: { verified?: boolean; roles?: ('member' | 'staff' | 'admin')[] }) => Middleware<AppState>;
  /** Whether the caller may see and manage a branch (C1: admins everywhere, staff where assigned). */
  canManage: (user: AuthenticatedUser, branchId: string) => Promise<boolean>;
  nowMs: () => number;
}

export function sessionRoutes({ sessions, requireUser, canManage, nowMs }: SessionRoutesDeps): RouteSpec[] {
  // Gym access needs a verified email (as branch membership does).
  const member = requireUser({ verified: true });
  const reader = requireUser();
  const staff = requireUser({ roles: ['staff', 'admin'] });

  return [
    defineRoute({
      method: 'post',
      path: '/api/sessions/start',
      summary: 'Check in',
      description:
        'Validates the credential and the member’s right to use the branch (membership, opening hours) and opens ' +
        'a session. One open session per member: a second check-in is 409 `already-checked-in`. The session ends ' +
        'by itself after 4 hours or at the branch’s closing time, whichever is first.',
      tags,
      security,
      guards: [member],
      body: StartSession,
      responses: {
        201: { description: 'The session opened', schema: SessionEnvelope },
        403: {
          description:
            'Refused: the problem type names the reason (e.g. outside-opening-hours, credential-of-another-member — ' +
            'also for staff presenting a member’s credential at a branch they do not manage), or a suspended account ' +
            'or unverified email',
        },
        404: { description: 'No such branch' },
        409: { description: 'already-checked-in' },
      },
      handler: async (ctx, { body }) => {
        const user = caller(ctx);
        // At the desk of a branch they manage, staff check in any member; anywhere else they are members like
        // everyone (their own credential only), so a staff member may still train at another branch.
        const atDesk = user.role !== 'member' && (await canManage(user, body.branchId));
        const result = await sessions.checkIn({
          credential: body.credential,
          branchId: body.branchId,
          via: { origin: 'app' },
          ...(atDesk ? {} : { expectUserId: user.id }),
        });
        if (!result.ok) throw denied(result.reason);
        return { status: 201, body: { session: result.session } };
      },
    }),
    defineRoute({
      method: 'post',
      path: '/api/sessions/end',
      summary: 'Check out',
      description: 'Closes the caller’s open session, with its duration and the machines used.',
      tags,
      security,
      guards: [reader],
      body: EndSession,
      responses: {
        200: { description: 'The session closed', schema: SessionEnvelope },
        403: suspended[403],
        404: { description: 'not-checked-in: no open session (or not the one named)' },
      },
      handler: async (ctx, { body }) => {
        const user = caller(ctx);
        if (body.sessionId !== undefined) {
          const open = await sessions.current(user.id);
          if (open?.id !== body.sessionId) throw notCheckedIn('that session is not open');
        }
        const result = await sessions.checkOut({ userId: user.id, via: { origin: 'app' }, reason: 'member' });
        if (!result.ok) throw notCheckedIn('there is no open session');
        return { status: 200, body: { session: result.session } };
      },
    }),
    defineRoute({
      method: 'get',
      path: '/api/sessions/current',
      summary: 'The caller’s open session',
      tags,
      security,
      guards: [reader],
      responses: { 200: { description: 'The open session, or null', schema: CurrentOut }, ...suspended },
      handler: async (ctx) => {
        ctx.set('Cache-Control', 'no-store');
        return { status: 200, body: { session: (await sessions.current(caller(ctx).id)) ?? null } };
      },
    }),
    defineRoute({
      method: 'get',
      path: '/api/sessions/history',
      summary: 'The caller’s past and current sessions',
      description:
        'Newest first, with cursor pagination, date range (by check-in time) and branch filters, and usage figures ' +
        'over the whole filtered range (visits, total and average duration, distinct machines, offline conflicts).',
      tags,
      security,
      guards: [reader],
      query: HistoryQuery,
      responses: { 200: { description: 'A page of sessions', schema: HistoryOut }, ...suspended },
      handler: async (ctx, { query }) => {
        const page = await sessions.history(caller(ctx).id, {
          limit: query.limit,
          ...(query.from ? { from: query.from } : {}),
          ...(query.to ? { to: query.to } : {}),
          ...(query.branchId ? { branchId: query.branchId } : {}),
          ...(query.cursor ? { cursor: query.cursor } : {}),
        });
        return { status: 200, body: page };
      },
    }),
    defineRoute({
      method: 'get',
      path: '/api/sessions/analytics',
      summary: 'Session analytics of a branch',
      description:
        'Check-ins per local hour (peak hours), average duration and visits per day of the week, in the branch’s ' +
        `time zone, over [from, to) (default: the last 30 days; a longer range than ${MAX_ANALYTICS_DAYS} days is ` +
        'clamped to its last ' +
        `${MAX_ANALYTICS_DAYS} days, and the answer names the range used). Staff of the ` +
        'branch and admins.',
      tags,
      security,
      guards: [staff],
      query: AnalyticsQuery,
      responses: {
        200: { description: 'The figures', schema: AnalyticsOut },
        403: { description: 'Not staff of this branch (or not staff at all)' },
      },
      handler: async (ctx, { query }) => {
        if (!(await canManage(caller(ctx), query.branchId))) throw new Forbidden('not staff of this branch');
        const to = query.to ?? new Date(nowMs());
        // Clamped, never refused: a longer range starts MAX_ANALYTICS_DAYS before `to` (the answer names the range
        // used); `from` at or after `to` is an empty range.
        const earliest = to.getTime() - MAX_ANALYTICS_DAYS * DAY_MS;
        const from = new Date(Math.max(query.from?.getTime() ?? to.getTime() - 30 * DAY_MS, earliest));
        return { status: 200, body: await sessions.analytics(query.branchId, { from, to }) };
      },
    }),
    defineRoute({
      method: 'get',
      path: '/api/sessions/:id',
      summary: 'One of the caller’s sessions',
      tags,
      security,
      guards: [reader],
      params: SessionParams,
      responses: {
        200: { description: 'The session', schema: SessionEnvelope },
        ...suspended,
        404: { description: 'No such session of the caller' },
      },
      handler: async (ctx, { params }) => {
        const session = await sessions.get(caller(ctx).id, params.id);
        if (!session) throw new NotFound('no such session');
        return { status: 200, body: { session } };
      },
    }),
  ];
}
