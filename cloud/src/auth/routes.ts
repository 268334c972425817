/**
 * The authentication routes under /api/auth, the JWKS, and the login-session routes under /api/users/sessions.
 * Thin: HTTP in, a flow of service.ts, HTTP out.
 */
import type { Middleware } from 'koa';
import type * as v from 'valibot';
import type { Account } from '../accounts/store.ts';
import { defineRoute, type RouteContext, type RouteSpec } from '../http/route.ts';
import { NotFound } from '../http/errors.ts';
import { PROBLEM_CONTENT_TYPE } from '../http/problem.ts';
import type { AppState, AuthenticatedUser } from '../http/state.ts';
import type { RequireUserOptions } from './guard.ts';
import type { Keyring } from './keyring.ts';
import type { RefreshSessions } from './refresh-sessions.ts';
import {
  Accepted,
  AccountView,
  ForgotBody,
  Jwks,
  LoginBody,
  LoginResponse,
  ProblemBody,
  RefreshBody,
  RegisterBody,
  ResetBody,
  SessionList,
  SessionParams,
  TokenBody,
  TokenResponse,
} from './schemas.ts';
import type { AuthFlows, Caller } from './service.ts';
import type { AccountStore } from '../accounts/store.ts';

export interface AuthRouteDeps {
  flows: AuthFlows;
  store: AccountStore;
  sessions: RefreshSessions;
  keyring: Keyring;
  requireUser: (options?: RequireUserOptions) => Middleware<AppState>;
}

const bearer = [{ bearer: [] }];
const tags = ['auth'];

export function callerOf(ctx: RouteContext): Caller {
  return { ip: ctx.ip, userAgent: ctx.get('User-Agent').slice(0, 300) };
}

/** The guard ran: the user is set (a route without the guard never calls this). */
function userOf(ctx: RouteContext): AuthenticatedUser {
  const user = ctx.state.user;
  if (!user) throw new Error('route without requireUser asked for the user');
  return user;
}

export function accountView(account: Account): v.InferOutput<typeof AccountView> {
  return {
    id: account.id,
    email: account.email,
    role: account.role,
    status: account.status,
    suspendedReason: account.suspendedReason,
    emailVerified: account.emailVerified,
    createdAt: account.createdAt.toISOString(),
  };
}

/** Token responses are never cached (RFC 6749 5.1). */
const NO_STORE = { 'Cache-Control': 'no-store' };

const accepted = (message: string) => ({ status: 202, body: { status: 'accepted' as const, message } });

const problem = (description: string) => ({ description, schema: ProblemBody, contentType: PROBLEM_CONTENT_TYPE });
const retryAfter = { 'Retry-After': { description: 'Seconds to wait', schema: { type: 'integer' as const } } };
/** What the guard answers besides 401 (which the document adds to every secured route). */
const guarded = { 403: problem('Account suspended, email not verified, or role not allowed') };

export function authRoutes({ flows, store, sessions, keyring, requireUser }: AuthRouteDeps): RouteSpec[] {
  const jwksRoute = (path: string) =>
    defineRoute({
      method: 'get',
      path,
      summary: 'Public keys that verify access tokens (JWKS)',
      description: 'ES256 keys by `kid`: the active signing key first, then keys still accepted after a rotation.',
      tags,
      rateLimit: false,
      responses: { 200: { description: 'The key set', schema: Jwks } },
      handler: () => ({ status: 200, body: keyring.jwks(), headers: { 'Cache-Control': 'public, max-age=300' } }),
    });

  return [
    defineRoute({
      method: 'post',
      path: '/api/auth/register',
      summary: 'Create an account (email + password)',
      description:
        'Always 202 for a valid request: a new address gets a verification email, an address that already has an ' +
        'account gets an email saying so (the answer does not tell them apart). Password: 12 to 128 characters, not ' +
        'a commonly used one. The account may log in at once, pending verification.',
      tags,
      body: RegisterBody,
      responses: { 202: { description: 'Check your email', schema: Accepted } },
      handler: async (ctx, { body }) => {
        await flows.register({ ...body, ...callerOf(ctx) });
        return accepted('check your email to continue');
      },
    }),
    defineRoute({
      method: 'post',
      path: '/api/auth/login',
      summary: 'Log in: an access token and a refresh token (a new login session)',
      description:
        '5 failed attempts per account per 15 minutes (and a per-address budget) answer 429 with Retry-After. A wrong ' +
        'password and an unknown email get the same 401.',
      tags,
      body: LoginBody,
      responses: {
        200: { description: 'Logged in', schema: LoginResponse },
        401: problem('Invalid email or password'),
        429: { ...problem('Too many failed attempts for this account or address'), headers: retryAfter },
        503: { ...problem('Login is unavailable (fails closed while the limiter store is down)'), headers: retryAfter },
      },
      handler: async (ctx, { body }) => {
        const { account, ...pair } = await flows.login({ ...body, ...callerOf(ctx) });
        return { status: 200, body: { ...pair, user: accountView(account) }, headers: NO_STORE };
      },
    }),
    defineRoute({
      method: 'post',
      path: '/api/auth/refresh',
      summary: 'Exchange a refresh token for a new access token and a new refresh token (rotation)',
      description:
        'The refresh token used is spent. Presenting a spent token again revokes its whole login session, except ' +
        'within a few seconds from the same device (a response lost on a bad network).',
      tags,
      body: RefreshBody,
      responses: {
        200: { description: 'New tokens', schema: TokenResponse },
        401: problem('Invalid, expired, spent or revoked refresh token'),
      },
      handler: async (ctx, { body }) => ({
        status: 200,
        body: await flows.refresh({ ...body, ...callerOf(ctx) }),
        headers: NO_STORE,
      }),
    }),
    defineRoute({
      method: 'post',
      path: '/api/auth/logout',
      summary: 'Log out: revoke this access token and its login session',
      tags,
      security: bearer,
      guards: [requireUser({ allowSuspended: true })],
      responses: { 204: { description: 'Logged out' }, ...guarded },
      handler: async (ctx) => {
        const user = userOf(ctx);
        await flows.logout({
          userId: user.id,
          jti: user.tokenId,
          expiresAt: user.expiresAt,
          sessionId: user.sessionId,
          ...callerOf(ctx),
        });
        return { status: 204 };
      },
    }),
    defineRoute({
      method: 'get',
      path: '/api/auth/me',
      summary: 'The calling account: role, status and, when suspended, why',
      description: 'The one route a suspended account may use.',
      tags,
      security: bearer,
      guards: [requireUser({ allowSuspended: true })],
      responses: { 200: { description: 'The account', schema: AccountView }, ...guarded },
      handler: async (ctx) => {
        const account = await store.findById(userOf(ctx).id);
        if (!account) throw new NotFound('the account no longer exists');
        ctx.set('Cache-Control', 'no-store');
        return { status: 200, body: accountView(account) };
      },
    }),
    defineRoute({
      method: 'post',
      path: '/api/auth/verify-email',
      summary: 'Confirm the email address with the token from the verification email',
      tags,
      body: TokenBody,
      responses: {
        200: { description: 'Verified', schema: AccountView },
        400: problem('Invalid, used or expired token'),
      },
      handler: async (ctx, { body }) => ({
        status: 200,
        body: accountView(await flows.verifyEmail({ ...body, ...callerOf(ctx) })),
      }),
    }),
    defineRoute({
      method: 'post',
      path: '/api/auth/verify-email/resend',
      summary: 'Send the verification email again',
      description: 'No email when already verified, or after a few per hour.',
      tags,
      security: bearer,
      guards: [requireUser()],
      responses: { 202: { description: 'Sent if needed', schema: Accepted }, ...guarded },
      handler: async (ctx) => {
        await flows.resendVerification({ userId: userOf(ctx).id, ...callerOf(ctx) });
        return accepted('if your address still needs confirming, an email is on its way');
      },
    }),
    defineRoute({
      method: 'post',
      path: '/api/auth/forgot',
      summary: 'Ask for a password-reset email',
      description: 'Always 202: the answer does not tell whether the address has an account.',
      tags,
      body: ForgotBody,
      responses: { 202: { description: 'Sent if the address has an account', schema: Accepted } },
      handler: async (ctx, { body }) => {
        await flows.forgotPassword({ ...body, ...callerOf(ctx) });
        return accepted('if this address has an account, an email with a reset link is on its way');
      },
    }),
    defineRoute({
      method: 'post',
      path: '/api/auth/reset',
      summary: 'Set a new password with the token from the reset email',
      description: 'The token works once. Every login session of the account is revoked.',
      tags,
      body: ResetBody,
      responses: {
        204: { description: 'Password changed; log in again' },
        400: problem('Invalid, used or expired token, or a password that is not allowed'),
      },
      handler: async (ctx, { body }) => {
        await flows.resetPassword({ ...body, ...callerOf(ctx) });
        return { status: 204 };
      },
    }),
    jwksRoute('/api/auth/jwks'),
    jwksRoute('/.well-known/jwks.json'),

    defineRoute({
      method: 'get',
      path: '/api/users/sessions',
      summary: 'My login sessions (devices), most recently used first',
      tags: ['sessions'],
      security: bearer,
      guards: [requireUser()],
      responses: { 200: { description: 'The sessions', schema: SessionList }, ...guarded },
      handler: async (ctx) => {
        const user = userOf(ctx);
        const list = await sessions.list(user.id);
        ctx.set('Cache-Control', 'no-store');
        return {
          status: 200,
          body: {
            sessions: list.map((s) => ({
              id: s.id,
              userAgent: s.userAgent,
              ip: s.ip,
              createdAt: s.createdAt.toISOString(),
              lastUsedAt: s.lastUsedAt.toISOString(),
              current: s.id === user.sessionId,
            })),
          },
        };
      },
    }),
    defineRoute({
      method: 'delete',
      path: '/api/users/sessions/:id',
      summary: 'Revoke one of my login sessions (that device is signed out at once)',
      tags: ['sessions'],
      security: bearer,
      guards: [requireUser()],
      params: SessionParams,
      responses: { 204: { description: 'Revoked' }, 404: problem('No such session of yours'), ...guarded },
      handler: async (ctx, { params }) => {
        const user = userOf(ctx);
        // Someone else's session is "not found": no existence leak (RELIABILITY c6).
        if (!(await flows.revokeSession(user.id, params.id, callerOf(ctx)))) throw new NotFound('no such session');
        return { status: 204 };
      },
    }),
    defineRoute({
      method: 'delete',
      path: '/api/users/sessions',
      summary: 'Revoke all my login sessions, this one included',
      tags: ['sessions'],
      security: bearer,
      guards: [requireUser()],
      responses: { 204: { description: 'All revoked' }, ...guarded },
      handler: async (ctx) => {
        await flows.revokeAllSessions(userOf(ctx).id, 'user-request', callerOf(ctx));
        return { status: 204 };
      },
    }),
  ];
}
