/**
 * The machines API:
 * - `GET /api/machines/availability?branchId=` — a branch's machines from live state (Redis), with the status apps
 *   see (`in_use` while linked, `maintenance` while out of order). Scoped like the MQTT topics: members see the
 *   branches they belong to (verified email, as app tokens), staff also the branches they are assigned to, admins
 *   all; anyone else gets 403.
 * - `POST /api/machines/link` / `unlink`, `GET /api/machines/links` — the member's machine links (links.ts).
 * - `POST /api/machines/heartbeat` and `POST /api/machines/workout-data` — equipment speaking HTTP, with the
 *   machine's own secret as a Bearer token (heartbeat.ts).
 * - `POST /api/machines/maintenance`, `GET /api/machines/{machineId}/maintenance`, `GET …/{machineId}/stats` — staff.
 * - `POST|GET|DELETE /api/machines/waitlist` — members' waitlists (waitlist.ts).
 */
import type { Middleware } from 'koa';
import * as v from 'valibot';
import {
  BranchId,
  GatewayId,
  MachineId,
  MachineStatusValue,
  MachineType,
  MACHINE_STATUSES,
} from '../../../protocol/index.ts';
import type { BranchId as BranchIdT, MachineId as MachineIdT } from '../../../protocol/index.ts';
import { AppError, Conflict, Forbidden, NotFound, ServiceUnavailable, Unauthorized } from '../http/errors.ts';
import { defineRoute, type RouteContext, type RouteSpec } from '../http/route.ts';
import type { AppState, AuthenticatedUser } from '../http/state.ts';
import type { Workouts } from '../workouts/service.ts';
import type { Heartbeats, MachineAuth } from './heartbeat.ts';
import type { Links } from './links.ts';
import type { LiveState } from './live-state.ts';
import { MAINTENANCE_ACTIONS, type Maintenance } from './maintenance.ts';
import { overlaidStatus, type Overlays } from './overlay.ts';
import { machineStats } from './stats.ts';
import type { Waitlists } from './waitlist.ts';
import type { Db } from 'mongodb';
import type { Clock } from '../../../tools/runtime/clock.ts';

export const AvailabilityQuery = v.strictObject({
  branchId: v.pipe(BranchId, v.description('The branch, e.g. `demo`')),
});

const Ms = v.pipe(v.number(), v.description('ms since the epoch'));

export const MachineAvailability = v.object({
  machine: MachineId,
  status: MachineStatusValue,
  since: v.pipe(
    Ms,
    v.description('When the machine’s own status began (for `unknown`: when the gateway went offline)'),
  ),
  type: v.optional(MachineType),
  displayName: v.optional(v.string()),
  gateway: v.optional(v.pipe(GatewayId, v.description('The gateway the machine’s records last came through'))),
  lastSeen: v.optional(v.pipe(Ms, v.description('Event time of the newest record from the machine'))),
  metrics: v.optional(
    v.pipe(
      v.record(v.string(), v.unknown()),
      v.description('The last telemetry sample’s measures (FTMS-style fields in SI units; see docs/protocol.md)'),
    ),
  ),
  metricsTs: v.optional(v.pipe(Ms, v.description('Event time of that sample'))),
  linked: v.optional(v.pipe(v.boolean(), v.description('A member is linked to it (no member data is shown)'))),
  outOfOrder: v.optional(v.pipe(v.boolean(), v.description('Taken out of order by staff'))),
});

export const BranchAvailability = v.object({
  branchId: BranchId,
  asOf: Ms,
  counts: v.pipe(
    v.record(MachineStatusValue, v.number()),
    v.description('Machines per status (every status listed, 0 included)'),
  ),
  machines: v.array(MachineAvailability),
});
export type BranchAvailability = v.InferOutput<typeof BranchAvailability>;

/** Who may see a branch's machines (and act on them). */
export interface MachineAccess {
  /** Authenticates the caller (auth.requireUser()). */
  guard: Middleware<AppState>;
  /** Staff and admin only. */
  staffGuard: Middleware<AppState>;
  /** Member of the branch (verified email), staff assigned to it, or admin. */
  canSee(user: AuthenticatedUser, branchId: string): Promise<boolean>;
  /** Staff assigned to the branch, or admin. */
  canManage(user: AuthenticatedUser, branchId: string): Promise<boolean>;
  /**
   * Observers (operators, dashboards: the broker's read-only identities) on the availability route, with HTTP Basic
   * `observer-id:secret`: the branches they may read, or undefined when the credentials are wrong.
   */
  observerBranches?: (id: string, secret: string) => Promise<readonly string[] | undefined>;
}

export interface MachineRoutesDeps {
  live: LiveState;
  nowMs: () => number;
  access: MachineAccess;
  overlays?: Overlays;
  links?: Links;
  heartbeats?: Heartbeats;
  machineAuth?: MachineAuth;
  maintenance?: Maintenance;
  waitlists?: Waitlists;
  workouts?: Workouts;
  /** The provisioned machine identity's branches (404 for a machine not in the branch). */
  machineBranches?: (machine: string) => Promise<readonly string[] | undefined>;
  db?: Db;
  clock?: Clock;
}

const caller = (ctx: RouteContext): AuthenticatedUser => {
  if (!ctx.state.user) throw new Unauthorized();
  return ctx.state.user;
};

const BEARER = /^Bearer +([A-Za-z0-9._~+/=-]+) *$/i;
const BASIC = /^Basic +([A-Za-z0-9+/=]{1,512}) *$/i;

/** The branches an observer authenticated with on this request (availability route only). */
type ObserverState = AppState & { observerBranches?: readonly string[] };

const LinkBody = v.strictObject({ branchId: BranchId, machineId: MachineId });
const UnlinkBody = v.strictObject({ machineId: MachineId });
const LinkOut = v.object({
  linkId: v.string(),
  machineId: MachineId,
  branchId: BranchId,
  sessionId: v.string(),
  linkedAt: Ms,
});
const HeartbeatBody = v.strictObject({
  machineId: MachineId,
  status: v.optional(v.picklist(['available', 'in_use', 'maintenance', 'online'])),
  bootId: v.optional(v.pipe(v.string(), v.regex(/^[A-Za-z0-9_-]{1,64}$/))),
});
const MaintenanceBody = v.strictObject({
  branchId: BranchId,
  machineId: MachineId,
  action: v.picklist(MAINTENANCE_ACTIONS),
  note: v.optional(v.pipe(v.string(), v.maxLength(1_000))),
});
const MachineParams = v.strictObject({ machineId: MachineId });
const BranchQuery = v.strictObject({ branchId: BranchId });
const StatsQuery = v.strictObject({
  branchId: BranchId,
  days: v.optional(
    v.pipe(v.string(), v.regex(/^(?:[1-9]\d?|[12]\d\d|3[0-5]\d|36[0-5])$/, 'expected 1 to 365'), v.transform(Number)),
    '7',
  ),
});
const WaitBody = v.strictObject({ branchId: BranchId, machineId: MachineId });
const WaitQuery = v.strictObject({ branchId: BranchId, machineId: MachineId });
const WaitOut = v.object({
  machine: MachineId,
  branch: BranchId,
  position: v.number(),
  queueLength: v.number(),
  estimatedWaitMs: v.number(),
  heldUntil: v.optional(Ms),
});

/**
 * Every route behind the access-token guard may answer 403 before its handler: a suspended account (and, on staff
 * routes, a member). Documented on each, with the route's own 403 reason when it has one.
 */
const GUARD_403 = { description: 'Account suspended, or not allowed this operation' };

class LinkRefused extends AppError {
  constructor(code: string, detail: string) {
    super(code, 409, detail);
  }
}

/** How long a member's "may see this branch" is reused by the availability route (positive answers only). */
export const AVAILABILITY_ACCESS_CACHE_MS = 5_000;
const ACCESS_CACHE_MAX = 10_000;

export function machineRoutes(deps: MachineRoutesDeps): RouteSpec[] {
  const { live, nowMs, access } = deps;

  /**
   * The availability route is read by apps every few seconds: its membership check (a MongoDB read per request,
   * queued behind ingest's writes under load) is reused for AVAILABILITY_ACCESS_CACHE_MS. Only "yes" is kept, in
   * this process, by performance.now(): a member who leaves still sees machine states (no member data) for at most
   * that long — as an open MQTT connection does until the app-token recheck. Links and waitlists always check anew.
   */
  const seen = new Map<string, number>();
  async function canSeeRecently(user: AuthenticatedUser, branchId: string): Promise<boolean> {
    const key = `${user.id}\u0000${user.role}\u0000${branchId}`;
    const at = seen.get(key);
    const now = performance.now();
    if (at !== undefined && now - at < AVAILABILITY_ACCESS_CACHE_MS) return true;
    const ok = await access.canSee(user, branchId);
    if (ok) {
      if (seen.size >= ACCESS_CACHE_MAX) seen.clear();
      seen.set(key, now);
    } else {
      seen.delete(key);
    }
    return ok;
  }

  async function requireSee(ctx: RouteContext, branchId: string): Promise<AuthenticatedUser> {
    const user = caller(ctx);
    if (!(await access.canSee(user, branchId))) throw new Forbidden('not a member or staff of this branch');
    return user;
  }
  async function requireManage(ctx: RouteContext, branchId: string): Promise<AuthenticatedUser> {
    const user = caller(ctx);
    if (!(await access.canManage(user, branchId))) throw new Forbidden('not staff of this branch');
    return user;
  }
  async function requireMachineIn(machine: string, branchId: string): Promise<void> {
    const branches = await deps.machineBranches?.(machine);
    if (!branches?.includes(branchId)) throw new NotFound(`no machine ${machine} in branch ${branchId}`);
  }
  async function machineCaller(ctx: RouteContext, machine: string) {
    const match = BEARER.exec(ctx.get('authorization'));
    const found = await deps.machineAuth!.authenticate(machine, match?.[1]);
    if (!found) throw new Unauthorized('machine credentials (its secret as a Bearer token) are required');
    return found;
  }

  /** Members, staff and admins with their access token; observers with Basic credentials when enabled. */
  const availabilityGuard: Middleware<AppState> = async (ctx, next) => {
    const basic = access.observerBranches ? BASIC.exec(ctx.get('authorization')) : null;
    if (!basic) {
      await access.guard(ctx, next);
      return;
    }
    const decoded = Buffer.from(basic[1]!, 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    const branches =
      colon > 0 ? await access.observerBranches!(decoded.slice(0, colon), decoded.slice(colon + 1)) : undefined;
    if (!branches) throw new Unauthorized('unknown observer credentials');
    (ctx.state as ObserverState).observerBranches = branches;
    await next();
  };

  const routes: RouteSpec[] = [
    defineRoute({
      method: 'get',
      path: '/api/machines/availability',
      summary: 'Availability of a branch’s machines',
      description:
        'Every machine of the branch with the status apps see (`in_use` while a member is linked, `maintenance` ' +
        'while out of order, `unknown` while its gateway is offline), since when, last seen, type, display name and ' +
        'last measures, plus counts by status — from live state, not the database. Members see the branches they ' +
        'belong to (verified email), staff also those they are assigned to, admins all — as over MQTT. Observers ' +
        '(read-only broker identities) may read their branches with HTTP Basic `observer-id:secret`.',
      tags: ['machines'],
      security: [{ bearer: [] }],
      guards: [availabilityGuard],
      query: AvailabilityQuery,
      responses: {
        200: { description: 'The branch’s machines (empty if none is known)', schema: BranchAvailability },
        401: { description: 'No valid access token' },
        403: { description: 'Not a member or staff of this branch (or account suspended)' },
        503: { description: 'Live state (Redis) is unavailable' },
      },
      handler: async (ctx, { query }) => {
        const observer = (ctx.state as ObserverState).observerBranches;
        if (observer) {
          if (!observer.includes(query.branchId)) throw new Forbidden('not an observer of this branch');
        } else if (!(await canSeeRecently(caller(ctx), query.branchId))) {
          throw new Forbidden('not a member or staff of this branch');
        }
        let machines;
        let overlays;
        try {
          machines = await live.listBranch(query.branchId);
          overlays = await deps.overlays?.getMany(
            query.branchId,
            machines.map((m) => m.machine),
          );
        } catch (err) {
          ctx.state.log.warn({ err: { message: (err as Error).message } }, 'live machine state unavailable');
          throw new ServiceUnavailable('live machine state is unavailable, try again shortly');
        }
        const counts = Object.fromEntries(MACHINE_STATUSES.map((s) => [s, 0])) as Record<MachineStatusValue, number>;
        const shown = machines.map((m) => {
          const overlay = overlays?.get(m.machine);
          const status = overlaidStatus(m.status, overlay);
          counts[status] += 1;
          return {
            ...m,
            status,
            ...(overlay?.userId ? { linked: true } : {}),
            ...(overlay?.outOfOrder ? { outOfOrder: true } : {}),
          };
        });
        ctx.set('Cache-Control', 'no-store');
        const body: BranchAvailability = { branchId: query.branchId, asOf: nowMs(), counts, machines: shown };
        return { status: 200, body };
      },
    }),
  ];

  const { links } = deps;
  if (links) {
    routes.push(
      defineRoute({
        method: 'post',
        path: '/api/machines/link',
        summary: 'Link the caller to a machine',
        description:
          'Exclusive: one member per machine. The member needs an open gym session at the branch. Linking a machine ' +
          'one is already linked to is a no-op (200). Apps see the machine `in_use` and the member’s ' +
          '`u/{user}/live/workout` gets a `link` event; the machine gets `cmd/link` through its gateway.',
        tags: ['machines'],
        security: [{ bearer: [] }],
        guards: [access.guard],
        body: LinkBody,
        responses: {
          201: { description: 'Linked', schema: LinkOut },
          200: { description: 'Already linked to this machine', schema: LinkOut },
          403: { description: 'Not a member of this branch (or account suspended)' },
          404: { description: 'No such machine in the branch' },
          409: { description: '`machine-busy`, `machine-unavailable` or `not-checked-in`' },
        },
        handler: async (ctx, { body }) => {
          const user = await requireSee(ctx, body.branchId);
          const result = await links.link({
            branch: body.branchId,
            machine: body.machineId,
            userId: user.id,
            via: 'app',
          });
          if (!result.ok) {
            if (result.reason === 'unknown-machine') throw new NotFound(result.detail);
            throw new LinkRefused(result.reason, result.detail);
          }
          const current = await links.current(body.machineId);
          return {
            status: result.created ? 201 : 200,
            body: {
              linkId: result.linkId,
              machineId: body.machineId,
              branchId: body.branchId,
              sessionId: result.sessionId,
              linkedAt: current?.linkedAt ?? nowMs(),
            },
          };
        },
      }),
      defineRoute({
        method: 'post',
        path: '/api/machines/unlink',
        summary: 'Release the caller’s link to a machine (staff: any link in their branch)',
        tags: ['machines'],
        security: [{ bearer: [] }],
        guards: [access.guard],
        body: UnlinkBody,
        responses: {
          200: { description: 'Unlinked', schema: v.object({ machineId: MachineId, unlinked: v.literal(true) }) },
          403: GUARD_403,
          404: { description: 'The caller is not linked to this machine' },
        },
        handler: async (ctx, { body }) => {
          const user = caller(ctx);
          const current = await links.current(body.machineId);
          const asStaff =
            current !== undefined && current.userId !== user.id && (await access.canManage(user, current.branch));
          const result = await links.unlink({
            machine: body.machineId,
            ...(asStaff ? {} : { userId: user.id }),
            reason: asStaff ? 'staff' : 'member',
          });
          if (!result.ok) throw new NotFound('you are not linked to this machine');
          return { status: 200, body: { machineId: body.machineId, unlinked: true } };
        },
      }),
      defineRoute({
        method: 'get',
        path: '/api/machines/links',
        summary: 'The caller’s current machine links',
        tags: ['machines'],
        security: [{ bearer: [] }],
        guards: [access.guard],
        responses: {
          200: { description: 'Current links', schema: v.object({ items: v.array(LinkOut) }) },
          403: GUARD_403,
        },
        handler: async (ctx) => {
          const items = (await links.ofUser(caller(ctx).id)).map((l) => ({
            linkId: l.linkId,
            machineId: l.machine as MachineIdT,
            branchId: l.branch as BranchIdT,
            sessionId: l.sessionId,
            linkedAt: l.linkedAt,
          }));
          return { status: 200, body: { items } };
        },
      }),
    );
  }

  const { heartbeats, machineAuth } = deps;
  if (heartbeats && machineAuth) {
    routes.push(
      defineRoute({
        method: 'post',
        path: '/api/machines/heartbeat',
        summary: 'Heartbeat of a machine that speaks HTTP',
        description:
          'With the machine’s secret as a Bearer token. Applied to live state as the machine’s status (default ' +
          '`available`); a machine silent for MACHINE_HEARTBEAT_TIMEOUT_S is marked offline.',
        tags: ['machines'],
        security: [{ bearer: [] }],
        body: HeartbeatBody,
        responses: {
          200: {
            description: 'Recorded',
            schema: v.object({ status: MachineStatusValue, nextBeforeMs: Ms }),
          },
          401: { description: 'Not this machine’s credentials' },
        },
        handler: async (ctx, { body }) => {
          const found = await machineCaller(ctx, body.machineId);
          const result = await heartbeats.beat({
            branch: found.branch,
            machine: body.machineId,
            ...(found.gateway ? { gateway: found.gateway } : {}),
            status: body.status ?? 'available',
            ...(body.bootId ? { bootId: body.bootId } : {}),
          });
          return { status: 200, body: result };
        },
      }),
    );
  }

  const { workouts } = deps;
  if (workouts && machineAuth) {
    routes.push(
      defineRoute({
        method: 'post',
        path: '/api/machines/workout-data',
        summary: 'A finished workout segment from a machine that speaks HTTP',
        description:
          'The same `Workout` payload as the MQTT `workout` topic (docs/protocol.md), with the machine’s secret as a ' +
          'Bearer token; `source` must be the machine. Attached to the member linked at its event time; a repeated ' +
          'msgId is a no-op (200).',
        tags: ['machines', 'workouts'],
        security: [{ bearer: [] }],
        // The protocol's Workout (validated, unknown keys dropped, by validatePayload in the pipeline: the stored
        // segment is the schema's output, never the raw body), so the body is taken as a record here.
        body: v.record(v.string(), v.unknown()),
        responses: {
          201: { description: 'Stored' },
          200: { description: 'Already stored (same msgId)' },
          400: { description: 'Not a valid Workout payload' },
          401: { description: 'Not this machine’s credentials' },
        },
        handler: async (ctx, { body }) => {
          const source = typeof body['source'] === 'string' ? body['source'] : '';
          const found = await machineCaller(ctx, source);
          const result = await workouts.accept(body, { branch: found.branch, origin: 'http' });
          if (!result.ok) {
            throw new AppError('invalid-request', 400, 'not a valid Workout payload', {
              extensions: {
                errors: [{ in: 'body', field: result.path ?? '(root)', reason: result.issue ?? 'invalid' }],
              },
            });
          }
          return {
            status: result.stored ? 201 : 200,
            body: { id: result.segment.id, flags: result.segment.flags, sessionId: result.segment.sessionId },
          };
        },
      }),
    );
  }

  const { maintenance } = deps;
  if (maintenance) {
    routes.push(
      defineRoute({
        method: 'post',
        path: '/api/machines/maintenance',
        summary: 'Report a problem, take a machine out of order, or put it back in service (staff)',
        tags: ['machines'],
        security: [{ bearer: [] }],
        guards: [access.staffGuard],
        body: MaintenanceBody,
        responses: {
          201: { description: 'Recorded' },
          403: { description: 'Not staff of this branch (or account suspended)' },
          404: { description: 'No such machine in the branch' },
        },
        handler: async (ctx, { body }) => {
          const user = await requireManage(ctx, body.branchId);
          await requireMachineIn(body.machineId, body.branchId);
          const result = await maintenance.record({
            branch: body.branchId,
            machine: body.machineId,
            action: body.action,
            ...(body.note ? { note: body.note } : {}),
            by: user.id,
          });
          return { status: 201, body: result };
        },
      }),
      defineRoute({
        method: 'get',
        path: '/api/machines/:machineId/maintenance',
        summary: 'A machine’s maintenance history and current state (staff)',
        tags: ['machines'],
        security: [{ bearer: [] }],
        guards: [access.staffGuard],
        params: MachineParams,
        query: BranchQuery,
        responses: {
          200: { description: 'History, newest first' },
          403: { description: 'Not staff of this branch (or account suspended)' },
          404: { description: 'No such machine in the branch' },
        },
        handler: async (ctx, { params, query }) => {
          await requireManage(ctx, query.branchId);
          await requireMachineIn(params.machineId, query.branchId);
          const state = await maintenance.state(params.machineId);
          return {
            status: 200,
            body: {
              machineId: params.machineId,
              outOfOrder: state?.outOfOrder ?? false,
              items: await maintenance.history(params.machineId),
            },
          };
        },
      }),
    );
  }

  const { db, clock } = deps;
  if (db && clock) {
    routes.push(
      defineRoute({
        method: 'get',
        path: '/api/machines/:machineId/stats',
        summary: 'Usage efficiency and performance of a machine (staff)',
        description:
          'Utilisation, links, average link, links per day and wait times over the last `days`; uptime from its ' +
          'status history; usage hours since its last service with a maintenance suggestion.',
        tags: ['machines'],
        security: [{ bearer: [] }],
        guards: [access.staffGuard],
        params: MachineParams,
        query: StatsQuery,
        responses: {
          200: { description: 'Figures' },
          403: { description: 'Not staff of this branch (or account suspended)' },
          404: { description: 'No such machine in the branch' },
        },
        handler: async (ctx, { params, query }) => {
          await requireManage(ctx, query.branchId);
          await requireMachineIn(params.machineId, query.branchId);
          const type = (await live.listBranch(query.branchId)).find((m) => m.machine === params.machineId)?.type;
          const stats = await machineStats(db, clock, params.machineId, {
            days: query.days,
            ...(type ? { type } : {}),
          });
          return { status: 200, body: stats };
        },
      }),
    );
  }

  const { waitlists } = deps;
  if (waitlists) {
    routes.push(
      defineRoute({
        method: 'post',
        path: '/api/machines/waitlist',
        summary: 'Join a machine’s waitlist',
        description:
          'Position and an estimated wait from the machine’s recent links. When the machine frees up the first ' +
          'member is notified (`u/{user}/live/notification`, `waitlist-ready`) and the machine is held for them for ' +
          'MACHINE_WAITLIST_HOLD_S.',
        tags: ['machines'],
        security: [{ bearer: [] }],
        guards: [access.guard],
        body: WaitBody,
        responses: {
          200: { description: 'Queued', schema: WaitOut },
          403: { description: 'Not a member of this branch (or account suspended)' },
          404: { description: 'No such machine in the branch' },
          409: { description: '`already-linked`: the caller is using this machine' },
        },
        handler: async (ctx, { body }) => {
          const user = await requireSee(ctx, body.branchId);
          await requireMachineIn(body.machineId, body.branchId);
          const current = await links?.current(body.machineId);
          if (current?.userId === user.id) throw new Conflict('already-linked', 'you are using this machine');
          const position = await waitlists.join(body.branchId, body.machineId, user.id);
          if (!current) await waitlists.advance(body.branchId, body.machineId);
          return {
            status: 200,
            body: (await waitlists.position(body.branchId, body.machineId, user.id)) ?? position,
          };
        },
      }),
      defineRoute({
        method: 'get',
        path: '/api/machines/waitlist',
        summary: 'The caller’s position on a machine’s waitlist',
        tags: ['machines'],
        security: [{ bearer: [] }],
        guards: [access.guard],
        query: WaitQuery,
        responses: {
          200: { description: 'Position', schema: WaitOut },
          403: GUARD_403,
          404: { description: 'Not waiting' },
        },
        handler: async (ctx, { query }) => {
          const user = caller(ctx);
          const position = await waitlists.position(query.branchId, query.machineId, user.id);
          if (!position) throw new NotFound('you are not on this waitlist');
          return { status: 200, body: position };
        },
      }),
      defineRoute({
        method: 'delete',
        path: '/api/machines/waitlist',
        summary: 'Leave a machine’s waitlist',
        tags: ['machines'],
        security: [{ bearer: [] }],
        guards: [access.guard],
        query: WaitQuery,
        responses: { 204: { description: 'Left' }, 403: GUARD_403, 404: { description: 'Not waiting' } },
        handler: async (ctx, { query }) => {
          const user = caller(ctx);
          if (!(await waitlists.leave(query.branchId, query.machineId, user.id))) {
            throw new NotFound('you are not on this waitlist');
          }
          return { status: 204 };
        },
      }),
    );
  }
  return routes;
}
