/**
 * Administration of members under /api/admin/users: administrators only (others get 403, RELIABILITY c6).
 * Query parameters are plain values: `email[$regex]=…` is refused with 400 before any schema (route.ts), and the
 * email filter is a literal, escaped prefix — never a pattern from the request (RELIABILITY c8).
 */
import { defineRoute, type RouteContext, type RouteSpec } from '../http/route.ts';
import type { UsersAuth } from './context.ts';
import { caller } from './routes.ts';
import type { AdminService, AdminUserView } from './admin.ts';
import * as s from './schemas.ts';

const security = [{ bearer: [] }];
const tags = ['admin'];

export function adminUserRoutes({ auth, admin }: { auth: UsersAuth; admin: AdminService }): RouteSpec[] {
  const adminOnly = auth.requireUser({ roles: ['admin'] });
  const forbidden = { 403: { description: 'Not an administrator' } };
  /** POST /api/admin/users/:userId/{suspend,reactivate} with a reason. */
  const statusRoute = (r: {
    action: 'suspend' | 'reactivate';
    summary: string;
    description?: string;
    done: string;
    conflict: string;
    change: (ctx: RouteContext, userId: string, reason: string) => Promise<AdminUserView>;
  }) =>
    defineRoute({
      method: 'post',
      path: `/api/admin/users/:userId/${r.action}`,
      summary: r.summary,
      ...(r.description ? { description: r.description } : {}),
      tags,
      security,
      guards: [adminOnly],
      params: s.UserIdParam,
      body: s.StatusChange,
      responses: {
        200: { description: r.done, schema: s.AdminUser },
        404: { description: 'No such user' },
        409: { description: r.conflict },
        ...forbidden,
      },
      handler: async (ctx, { params, body }) => ({
        status: 200,
        body: await r.change(ctx, params.userId, body.reason),
      }),
    });
  return [
    defineRoute({
      method: 'get',
      path: '/api/admin/users',
      summary: 'Search members: email prefix, role, status, branch; keyset pagination',
      description: 'limit: values above 100 are clamped to 100.',
      tags,
      security,
      guards: [adminOnly],
      query: s.AdminUserQuery,
      responses: { 200: { description: 'A page of members', schema: s.AdminUserPage }, ...forbidden },
      handler: async (_ctx, { query }) => ({ status: 200, body: await admin.search(query) }),
    }),
    defineRoute({
      method: 'get',
      path: '/api/admin/users/:userId',
      summary: 'One member',
      tags,
      security,
      guards: [adminOnly],
      params: s.UserIdParam,
      responses: {
        200: { description: 'The member', schema: s.AdminUser },
        404: { description: 'No such user' },
        ...forbidden,
      },
      handler: async (_ctx, { params }) => ({ status: 200, body: await admin.get(params.userId) }),
    }),
    statusRoute({
      action: 'suspend',
      summary: 'Suspend an account, with the reason shown to the member (audited)',
      description: 'A suspended account can do nothing but read why (GET /api/auth/me).',
      done: 'Suspended',
      conflict: 'Already suspended, or the administrator’s own account',
      change: (ctx, userId, reason) => admin.suspend(caller(ctx), userId, reason, ctx.ip),
    }),
    statusRoute({
      action: 'reactivate',
      summary: 'Lift a suspension (audited)',
      done: 'Reactivated',
      conflict: 'Not suspended',
      change: (ctx, userId, reason) => admin.reactivate(caller(ctx), userId, reason, ctx.ip),
    }),
  ];
}
