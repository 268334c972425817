/**
 * Branch memberships over HTTP. A membership is what admits a member at the door, shows them the branch's machines
 * and its live topics, so the gym grants it: staff of the branch or an admin (`PUT /api/branches/:id/members/:userId`,
 * optionally until `validUntil`; `DELETE` ends it). A member may only ASK to join (`POST /api/users/branches/:id`,
 * 202, status `requested`), which grants nothing until staff approve it with the PUT; they list their memberships
 * with status, and withdraw a request or leave (`DELETE /api/users/branches/:id`). The data and the meaning of
 * "active" live in the users domain (cloud/src/users/memberships.ts); the branch must exist here.
 */
import type { Middleware } from 'koa';
import * as v from 'valibot';
import { BranchId, UserId } from '../../../protocol/ids.ts';
import { MAX_TIMESTAMP_MS } from '../../../protocol/scalars.ts';
import type { AuditLog } from '../audit/index.ts';
import type { RequireUserOptions } from '../auth/guard.ts';
import { Invalid, NotFound } from '../http/errors.ts';
import { defineRoute, type RouteSpec } from '../http/route.ts';
import type { AppState } from '../http/state.ts';
import { caller } from '../users/routes.ts';
import { Limit } from '../users/schemas.ts';
import { MEMBERSHIP_STATUSES, type MembershipService } from '../users/memberships.ts';
import { BranchParam } from './routes.ts';
import type { BranchesService } from './service.ts';

const security = [{ bearer: [] }];

const Iso = v.pipe(v.string(), v.isoTimestamp());
const MembershipRecord = v.object({
  branchId: v.string(),
  status: v.pipe(v.picklist(['requested', 'active', 'expired']), v.description('Only `active` grants anything')),
  joinedAt: Iso,
  requestedAt: v.nullable(Iso),
  validUntil: v.nullable(Iso),
});
const BranchMember = v.object({
  userId: v.string(),
  status: v.picklist(['requested', 'active', 'expired']),
  joinedAt: Iso,
  requestedAt: v.nullable(Iso),
  validUntil: v.nullable(Iso),
  grantedBy: v.nullable(v.string()),
});
const MemberParam = v.strictObject({ branchId: BranchId, userId: UserId });
const Grant = v.strictObject({
  validUntil: v.optional(
    v.nullable(
      v.pipe(
        v.string(),
        v.isoTimestamp('expected an ISO 8601 timestamp with a zone, e.g. 2027-01-01T00:00:00Z'),
        v.description('End of the membership (exclusive); null or absent: open-ended'),
      ),
    ),
  ),
});
const MembersQuery = v.strictObject({
  limit: Limit(50),
  cursor: v.optional(
    v.pipe(v.string(), v.maxLength(63), v.description('The nextCursor of the previous page (a user id)')),
  ),
  status: v.optional(v.picklist(MEMBERSHIP_STATUSES)),
});

export function membershipRoutes(deps: {
  requireUser: (options?: RequireUserOptions) => Middleware<AppState>;
  branches: BranchesService;
  memberships: MembershipService;
  accounts: { findById(id: string): Promise<{ status: string } | undefined> };
  audit: AuditLog;
  clock: { now(): Date };
  /** The branch's active members changed: its allow-list is rebuilt. */
  onMembersChanged: (branchId: string) => void;
}): RouteSpec[] {
  const { requireUser, branches, memberships, accounts, audit, clock, onMembersChanged } = deps;
  const member = requireUser();
  const verifiedMember = requireUser({ verified: true });
  const staffOrAdmin = requireUser({ roles: ['staff', 'admin'] });
  const memberForbidden = { 403: { description: 'Suspended account, or email not verified' } };
  const record = (actor: string, action: string, branchId: string, ip: string, details: Record<string, unknown>) =>
    audit.record({ actor, action, target: `branch:${branchId}`, ip, result: 'success', details });

  return [
    // The member's side ------------------------------------------------------------------------------------------
    defineRoute({
      method: 'get',
      path: '/api/users/branches',
      summary: 'The member’s branch memberships and requests, with their status',
      description: 'Only `active` memberships admit the member, show machines and live topics.',
      tags: ['users'],
      security,
      guards: [member],
      responses: {
        200: { description: 'Memberships', schema: v.object({ items: v.array(MembershipRecord) }) },
        ...memberForbidden,
      },
      handler: async (ctx) => ({ status: 200, body: { items: await memberships.listAll(caller(ctx).id) } }),
    }),
    defineRoute({
      method: 'post',
      path: '/api/users/branches/:branchId',
      summary: 'Ask to join a branch (verified email required); staff of the branch approve it',
      description:
        'Creates a membership REQUEST (status `requested`), which grants nothing — no door access, no machines, ' +
        'no live topics — until staff of the branch or an admin approve it (PUT /api/branches/{branchId}/members/' +
        '{userId}). Asking again answers the membership as it is.',
      tags: ['users'],
      security,
      guards: [verifiedMember],
      params: BranchParam,
      responses: {
        200: { description: 'Already a member', schema: MembershipRecord },
        202: { description: 'Requested (or still pending)', schema: MembershipRecord },
        404: { description: 'No such branch' },
        409: { description: 'Too many branches' },
        ...memberForbidden,
      },
      handler: async (ctx, { params }) => {
        const user = caller(ctx);
        if (!(await branches.get(params.branchId))) throw new NotFound('no such branch');
        const { membership, created } = await memberships.request(user.id, params.branchId);
        if (created) {
          await record(user.id, 'branch_membership_requested', params.branchId, ctx.ip, { userId: user.id });
        }
        return { status: membership.status === 'requested' ? 202 : 200, body: membership };
      },
    }),
    defineRoute({
      method: 'delete',
      path: '/api/users/branches/:branchId',
      summary: 'Leave a branch, or withdraw a request (verified email required)',
      tags: ['users'],
      security,
      guards: [verifiedMember],
      params: BranchParam,
      responses: {
        204: { description: 'Left' },
        404: { description: 'Not a member of that branch' },
        ...memberForbidden,
      },
      handler: async (ctx, { params }) => {
        const user = caller(ctx);
        if (!(await memberships.leave(user.id, params.branchId))) throw new NotFound('not a member of that branch');
        await record(user.id, 'branch_membership_left', params.branchId, ctx.ip, { userId: user.id });
        onMembersChanged(params.branchId);
        return { status: 204 };
      },
    }),

    // The gym's side -------------------------------------------------------------------------------------------
    defineRoute({
      method: 'get',
      path: '/api/branches/:branchId/members',
      summary: 'A branch’s memberships and pending requests (admins, or its staff)',
      tags: ['branches'],
      security,
      guards: [staffOrAdmin],
      params: BranchParam,
      query: MembersQuery,
      responses: {
        200: {
          description: 'Members by user id, keyset paged',
          schema: v.object({ items: v.array(BranchMember), nextCursor: v.nullable(v.string()) }),
        },
        403: { description: 'Not staff of this branch' },
        404: { description: 'No such branch' },
      },
      handler: async (ctx, { params, query }) => {
        await branches.assertManages(caller(ctx), params.branchId);
        return {
          status: 200,
          body: await memberships.page(params.branchId, {
            limit: query.limit,
            ...(query.cursor ? { cursor: query.cursor } : {}),
            ...(query.status ? { status: query.status } : {}),
          }),
        };
      },
    }),
    defineRoute({
      method: 'put',
      path: '/api/branches/:branchId/members/:userId',
      summary: 'Grant a membership or approve a request, optionally until a date (admins, or the branch’s staff)',
      description:
        'Makes the membership `active` (creating it, or approving the member’s request). `validUntil` sets its end ' +
        '(null: open-ended); absent leaves an existing end as it is. The branch’s allow-list is rebuilt at once.',
      tags: ['branches'],
      security,
      guards: [staffOrAdmin],
      params: MemberParam,
      body: Grant,
      responses: {
        200: { description: 'Already active (end updated if given)', schema: MembershipRecord },
        201: { description: 'Granted', schema: MembershipRecord },
        400: { description: 'validUntil is not in the future (or not before 2100)' },
        403: { description: 'Not staff of this branch' },
        404: { description: 'No such branch or account' },
        409: { description: 'The member belongs to the most branches allowed' },
      },
      handler: async (ctx, { params, body }) => {
        const user = caller(ctx);
        await branches.assertManages(user, params.branchId);
        // Account ids are ObjectIds: anything else names no account (and never reaches the query).
        const account = /^[a-f0-9]{24}$/.test(params.userId) ? await accounts.findById(params.userId) : undefined;
        if (!account) throw new NotFound('no such account');
        let validUntil: Date | null | undefined;
        if (body.validUntil !== undefined) {
          validUntil = body.validUntil === null ? null : new Date(body.validUntil);
          if (validUntil && validUntil.getTime() <= clock.now().getTime()) {
            throw new Invalid([{ in: 'body', field: 'validUntil', reason: 'must lie in the future' }]);
          }
          // The signed allow-list carries it as a protocol Timestamp (before 2100).
          if (validUntil && validUntil.getTime() > MAX_TIMESTAMP_MS) {
            throw new Invalid([{ in: 'body', field: 'validUntil', reason: 'must lie before 2100-01-01' }]);
          }
        }
        const { created } = await memberships.join(params.userId, params.branchId, {
          by: user.id,
          ...(validUntil !== undefined ? { validUntil } : {}),
        });
        const now = (await memberships.get(params.userId, params.branchId))!;
        await record(user.id, 'branch_membership_granted', params.branchId, ctx.ip, {
          userId: params.userId,
          validUntil: now.validUntil,
          created,
        });
        onMembersChanged(params.branchId);
        return {
          status: created ? 201 : 200,
          body: {
            branchId: now.branchId,
            status: now.status,
            joinedAt: now.joinedAt,
            requestedAt: now.requestedAt,
            validUntil: now.validUntil,
          },
        };
      },
    }),
    defineRoute({
      method: 'delete',
      path: '/api/branches/:branchId/members/:userId',
      summary: 'End a membership or refuse a request (admins, or the branch’s staff)',
      tags: ['branches'],
      security,
      guards: [staffOrAdmin],
      params: MemberParam,
      responses: {
        204: { description: 'Ended' },
        403: { description: 'Not staff of this branch' },
        404: { description: 'No such branch, or no membership of it' },
      },
      handler: async (ctx, { params }) => {
        const user = caller(ctx);
        await branches.assertManages(user, params.branchId);
        if (!(await memberships.leave(params.userId, params.branchId))) {
          throw new NotFound('no membership of this branch');
        }
        await record(user.id, 'branch_membership_ended', params.branchId, ctx.ip, { userId: params.userId });
        onMembersChanged(params.branchId);
        return { status: 204 };
      },
    }),
  ];
}
