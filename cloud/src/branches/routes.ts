/**
 * Branch routes: members list their branches (`GET /api/branches`); admins create, change and delete branches and
 * assign staff; staff read and change the hours of the branches they are assigned to. A branch the caller has no
 * part in is a 404 to read and a 403 to manage.
 */
import type { Middleware } from 'koa';
import * as v from 'valibot';
import { BranchId, UserId } from '../../../protocol/ids.ts';
import type { RequireUserOptions } from '../auth/guard.ts';
import { Conflict, NotFound } from '../http/errors.ts';
import { defineRoute, type RouteSpec } from '../http/route.ts';
import type { AppState, AuthenticatedUser } from '../http/state.ts';
import { caller } from '../users/routes.ts';
import { WEEKDAYS } from './hours.ts';
import type { BranchesService } from './service.ts';

const security = [{ bearer: [] }];
const tags = ['branches'];

const HHMM = /^(?:[01]\d|2[0-3]):[0-5]\d$/;
const Interval = v.strictObject({
  open: v.pipe(v.string(), v.regex(HHMM, 'expected HH:MM (00:00–23:59)')),
  close: v.pipe(v.string(), v.regex(/^(?:(?:[01]\d|2[0-3]):[0-5]\d|24:00)$/, 'expected HH:MM (00:00–24:00)')),
});
const Day = v.pipe(v.array(Interval), v.maxLength(4));
const OpeningHours = v.pipe(
  v.strictObject({
    monday: Day,
    tuesday: Day,
    wednesday: Day,
    thursday: Day,
    friday: Day,
    saturday: Day,
    sunday: Day,
  }),
  v.description(
    'Per weekday, local times in the branch’s time zone; close at or before open runs past midnight; [] = closed',
  ),
);
const Name = v.pipe(v.string(), v.trim(), v.minLength(1), v.maxLength(80));
const TimeZone = v.pipe(v.string(), v.minLength(1), v.maxLength(64), v.description('IANA zone, e.g. Europe/Berlin'));

const BranchCreate = v.strictObject({ id: BranchId, name: Name, timeZone: TimeZone, openingHours: OpeningHours });
const BranchPatch = v.strictObject({
  name: v.optional(Name),
  timeZone: v.optional(TimeZone),
  openingHours: v.optional(OpeningHours),
});
const BranchView = v.object({
  id: v.string(),
  name: v.string(),
  timeZone: v.string(),
  openingHours: v.record(v.picklist(WEEKDAYS), v.array(v.object({ open: v.string(), close: v.string() }))),
  createdAt: v.string(),
  updatedAt: v.string(),
});
export const BranchParam = v.strictObject({ branchId: BranchId });
const StaffParam = v.strictObject({ branchId: BranchId, userId: UserId });

export function branchRoutes(deps: {
  requireUser: (options?: RequireUserOptions) => Middleware<AppState>;
  branches: BranchesService;
  memberships: { list(userId: string): Promise<{ branchId: string }[]> };
  accounts: { findById(id: string): Promise<{ role: string } | undefined> };
  /** Whether the branch still has gateways (a branch with equipment is not deleted). */
  hasGateways: (branchId: string) => Promise<boolean>;
}): RouteSpec[] {
  const { requireUser, branches, memberships, accounts } = deps;
  const anyone = requireUser();
  const admin = requireUser({ roles: ['admin'] });
  const staffOrAdmin = requireUser({ roles: ['staff', 'admin'] });

  /** The ids of the branches a caller may see: all (admin), assigned ones (staff) and their memberships. */
  const visibleIds = async (user: AuthenticatedUser): Promise<string[] | undefined> => {
    if (user.role === 'admin') return undefined;
    const own = (await memberships.list(user.id)).map((m) => m.branchId);
    const assigned = user.role === 'staff' ? await branches.staff.branchesOf(user.id) : [];
    return [...new Set([...own, ...assigned])];
  };

  return [
    defineRoute({
      method: 'get',
      path: '/api/branches',
      summary: 'The branches the caller belongs to (members), is assigned to (staff), or all (admins)',
      tags,
      security,
      guards: [anyone],
      responses: {
        200: { description: 'Branches', schema: v.object({ items: v.array(BranchView) }) },
        403: { description: 'Suspended account' },
      },
      handler: async (ctx) => ({ status: 200, body: { items: await branches.list(await visibleIds(caller(ctx))) } }),
    }),
    defineRoute({
      method: 'get',
      path: '/api/branches/:branchId',
      summary: 'One branch the caller belongs to, manages, or (admins) any',
      tags,
      security,
      guards: [anyone],
      params: BranchParam,
      responses: {
        200: { description: 'The branch', schema: BranchView },
        403: { description: 'Suspended account' },
        404: { description: 'No such branch' },
      },
      handler: async (ctx, { params }) => {
        const ids = await visibleIds(caller(ctx));
        if (ids && !ids.includes(params.branchId)) throw new NotFound('no such branch');
        return { status: 200, body: await branches.view(params.branchId) };
      },
    }),
    defineRoute({
      method: 'post',
      path: '/api/branches',
      summary: 'Create a branch (admins)',
      tags,
      security,
      guards: [admin],
      body: BranchCreate,
      responses: {
        201: { description: 'Created', schema: BranchView },
        403: { description: 'Not an administrator' },
        409: { description: 'The id is taken' },
      },
      handler: async (ctx, { body }) => {
        const { id, ...input } = body;
        return { status: 201, body: await branches.create(caller(ctx).id, id, input) };
      },
    }),
    defineRoute({
      method: 'patch',
      path: '/api/branches/:branchId',
      summary: 'Change a branch’s name, time zone or opening hours (admins, or its staff)',
      tags,
      security,
      guards: [staffOrAdmin],
      params: BranchParam,
      body: BranchPatch,
      responses: {
        200: { description: 'Changed', schema: BranchView },
        403: { description: 'Not staff of this branch' },
        404: { description: 'No such branch' },
      },
      handler: async (ctx, { params, body }) => {
        const user = caller(ctx);
        await branches.assertManages(user, params.branchId);
        return { status: 200, body: await branches.update(user.id, params.branchId, body) };
      },
    }),
    defineRoute({
      method: 'delete',
      path: '/api/branches/:branchId',
      summary: 'Delete a branch (admins)',
      tags,
      security,
      guards: [admin],
      params: BranchParam,
      responses: {
        204: { description: 'Deleted' },
        403: { description: 'Not an administrator' },
        404: { description: 'No such branch' },
        409: { description: 'The branch still has gateways: retire them first' },
      },
      handler: async (ctx, { params }) => {
        if (await deps.hasGateways(params.branchId)) {
          throw new Conflict('branch-in-use', 'the branch still has gateways: retire them first');
        }
        await branches.remove(caller(ctx).id, params.branchId);
        return { status: 204 };
      },
    }),
    defineRoute({
      method: 'get',
      path: '/api/branches/:branchId/staff',
      summary: 'The staff assigned to a branch (admins, or its staff)',
      tags,
      security,
      guards: [staffOrAdmin],
      params: BranchParam,
      responses: {
        200: {
          description: 'Staff',
          schema: v.object({ items: v.array(v.object({ userId: v.string(), assignedAt: v.string() })) }),
        },
        403: { description: 'Not staff of this branch' },
        404: { description: 'No such branch' },
      },
      handler: async (ctx, { params }) => {
        await branches.assertManages(caller(ctx), params.branchId);
        return { status: 200, body: { items: await branches.staff.of(params.branchId) } };
      },
    }),
    defineRoute({
      method: 'put',
      path: '/api/branches/:branchId/staff/:userId',
      summary: 'Assign a staff account to a branch (admins)',
      tags,
      security,
      guards: [admin],
      params: StaffParam,
      responses: {
        201: { description: 'Assigned' },
        204: { description: 'Already assigned' },
        403: { description: 'Not an administrator' },
        404: { description: 'No such branch or account' },
        409: { description: 'The account does not have the staff role' },
      },
      handler: async (ctx, { params }) => {
        // Account ids are ObjectIds: anything else names no account (and never reaches the query).
        const account = /^[a-f0-9]{24}$/.test(params.userId) ? await accounts.findById(params.userId) : undefined;
        if (!account) throw new NotFound('no such account');
        if (account.role !== 'staff') throw new Conflict('not-staff', 'only staff accounts are assigned to branches');
        const { created } = await branches.staff.assign(caller(ctx).id, params.userId, params.branchId);
        return { status: created ? 201 : 204 };
      },
    }),
    defineRoute({
      method: 'delete',
      path: '/api/branches/:branchId/staff/:userId',
      summary: 'Remove a staff account from a branch (admins)',
      tags,
      security,
      guards: [admin],
      params: StaffParam,
      responses: {
        204: { description: 'Removed' },
        403: { description: 'Not an administrator' },
        404: { description: 'Not assigned' },
      },
      handler: async (ctx, { params }) => {
        if (!(await branches.staff.unassign(caller(ctx).id, params.userId, params.branchId))) {
          throw new NotFound('not assigned to this branch');
        }
        return { status: 204 };
      },
    }),
  ];
}
