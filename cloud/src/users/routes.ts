/**
 * The members API under /api/users. Every route but sign-up is the caller's own data: the member's id comes from
 * the verified token (ctx.state.user), never from the request, so member A can never name member B's data; an
 * object id in a path that belongs to someone else answers 404 exactly like a missing one (RELIABILITY c6).
 *
 * Access by account state: pending verification may manage profile, body metrics, settings, devices, activity and
 * feedback; asking for a branch membership (gym access; the branches domain's routes) needs a verified email; a
 * suspended account gets 403 everywhere except GET /api/auth/me (auth's), which says why.
 */
import * as v from 'valibot';
import { NotFound } from '../http/errors.ts';
import { defineRoute, type RouteContext, type RouteSpec } from '../http/route.ts';
import type { AuthenticatedUser } from '../http/state.ts';
import type { Privacy } from '../privacy/privacy.ts';
import type { UsersAuth, UsersContext } from './context.ts';
import { validateDateOfBirth } from './profile.ts';
import type { UsersServices } from './services.ts';
import * as s from './schemas.ts';

const security = [{ bearer: [] }];
const tags = ['users'];

/** The guard ran before the handler: a missing user is a wiring bug, not a client error. */
export function caller(ctx: RouteContext): AuthenticatedUser {
  const user = ctx.state.user;
  if (!user) throw new Error('route reached without an authenticated user: its guard is missing');
  return user;
}

const forbidden = { 403: { description: 'Suspended account, or email not verified where required' } };

export function userRoutes({
  auth,
  services,
  privacy,
  context,
}: {
  auth: UsersAuth;
  services: UsersServices;
  privacy: Privacy;
  context: UsersContext;
}): RouteSpec[] {
  const member = auth.requireUser();
  const { profiles, bodyMetrics, settings, devices, feedback, activity } = services;

  return [
    defineRoute({
      method: 'post',
      path: '/api/users/register',
      summary: 'Sign up with a full profile',
      description:
        'Creates the account (the rules of POST /api/auth/register apply to email and password; a verification ' +
        'email is sent) and the member profile in one request. Always 202 for a valid request: an address that ' +
        'already has an account gets an email saying so, and nothing is created or changed (no enumeration).',
      tags,
      body: s.RegisterWithProfile,
      responses: { 202: { description: 'Check your email', schema: s.RegisterAccepted } },
      handler: async (ctx, { body }) => {
        const { email, password, units, role: _r, status: _s, emailVerified: _e, ...fields } = body;
        // Profile rules first: a refused date of birth must not leave an account without its profile behind.
        validateDateOfBirth(fields.dateOfBirth, context.clock.now());
        const result = await auth.accounts.register({
          email,
          password,
          ip: ctx.ip,
          userAgent: ctx.get('User-Agent').slice(0, 300),
        });
        if (result.created) {
          await profiles.create(result.userId, fields);
          if (units) await settings.updatePreferences(result.userId, { units });
        }
        return { status: 202, body: { status: 'accepted', message: 'check your email to continue' } };
      },
    }),
    defineRoute({
      method: 'delete',
      path: '/api/users/account',
      summary: 'Delete the account and all of the member’s data (GDPR Art. 17)',
      description:
        'Revokes every session and token, removes or anonymises the member’s data in every collection and in ' +
        'Redis, and keeps only a pseudonymised audit entry. 204 when complete; 202 when a part (e.g. object ' +
        'storage) is still being erased and will be retried.',
      tags,
      security,
      guards: [member],
      responses: {
        202: {
          description: 'Deleted; some parts are still being erased',
          schema: v.object({ status: v.literal('pending'), pendingHooks: v.array(v.string()) }),
        },
        204: { description: 'Deleted' },
        ...forbidden,
      },
      handler: async (ctx) => {
        const user = caller(ctx);
        const account = await context.Account.findById(user.id, { email: 1 }).lean();
        const outcome = await privacy.deleteUser(user.id, { email: account?.email ?? null, ip: ctx.ip });
        if (outcome.pendingHooks.length > 0) {
          return { status: 202, body: { status: 'pending', pendingHooks: outcome.pendingHooks } };
        }
        return { status: 204 };
      },
    }),
    defineRoute({
      method: 'get',
      path: '/api/users/export',
      summary: 'Everything stored about the member, as JSON (GDPR Art. 15, 20)',
      tags,
      security,
      guards: [member],
      responses: {
        200: { description: 'The export: one member per kind of data', schema: v.record(v.string(), v.unknown()) },
        ...forbidden,
      },
      handler: async (ctx) => {
        const body = await privacy.exportUser(caller(ctx).id);
        return {
          status: 200,
          body,
          headers: {
            'Cache-Control': 'no-store',
            'Content-Disposition': `attachment; filename="nxg-export-${context.clock.now().toISOString().slice(0, 10)}.json"`,
          },
        };
      },
    }),

    // Profile -------------------------------------------------------------------------------------------------
    defineRoute({
      method: 'get',
      path: '/api/users/profile',
      summary: 'The member’s profile',
      tags,
      security,
      guards: [member],
      responses: { 200: { description: 'The profile', schema: s.Profile }, ...forbidden },
      handler: async (ctx) => ({ status: 200, body: await profiles.get(caller(ctx).id) }),
    }),
    defineRoute({
      method: 'put',
      path: '/api/users/profile',
      summary: 'Change some profile fields',
      description:
        'Only the fields sent change; null clears one. role, status, emailVerified, email and password are not ' +
        'profile fields: sending them is refused with 400 naming each.',
      tags,
      security,
      guards: [member],
      body: s.ProfileUpdate,
      responses: { 200: { description: 'The updated profile', schema: s.Profile }, ...forbidden },
      handler: async (ctx, { body }) => {
        const userId = caller(ctx).id;
        const profile = await profiles.update(userId, body);
        // Macro targets depend on age and sex: keep the stored ones in step.
        if (body.dateOfBirth !== undefined || body.sex !== undefined) await bodyMetrics.refreshTargets(userId);
        return { status: 200, body: profile };
      },
    }),

    // Body metrics --------------------------------------------------------------------------------------------
    defineRoute({
      method: 'get',
      path: '/api/users/body-metrics',
      summary: 'Current body metrics, fitness profile, diet and macro targets',
      tags,
      security,
      guards: [member],
      responses: {
        200: { description: 'The body profile', schema: s.BodyMetrics },
        409: { description: 'Stored data failed its integrity check (reported; never a 500)' },
        ...forbidden,
      },
      handler: async (ctx) => ({ status: 200, body: await bodyMetrics.get(caller(ctx).id) }),
    }),
    defineRoute({
      method: 'put',
      path: '/api/users/body-metrics',
      summary: 'Record measurements and change the fitness profile or diet',
      description:
        'Measurements are checked against physiological ranges; the BMI and the macro targets (Mifflin-St Jeor ' +
        'BMR × activity factor, adjusted for the goal) are computed by the server. A measurement is added to ' +
        'the history; the current values follow the newest measuredAt.',
      tags,
      security,
      guards: [member],
      body: s.BodyMetricsUpdate,
      responses: {
        200: { description: 'The updated body profile', schema: s.BodyMetrics },
        409: { description: 'Stored data failed its integrity check, or a concurrent change: retry' },
        ...forbidden,
      },
      handler: async (ctx, { body }) => ({ status: 200, body: await bodyMetrics.update(caller(ctx).id, body) }),
    }),
    defineRoute({
      method: 'get',
      path: '/api/users/body-metrics/history',
      summary: 'Past measurements, newest first',
      tags,
      security,
      guards: [member],
      query: s.HistoryQuery,
      responses: { 200: { description: 'A page of measurements', schema: s.History }, ...forbidden },
      handler: async (ctx, { query }) => ({
        status: 200,
        body: await bodyMetrics.history(caller(ctx).id, {
          limit: query.limit,
          ...(query.from ? { from: query.from } : {}),
          ...(query.to ? { to: query.to } : {}),
          ...(query.cursor ? { cursor: query.cursor } : {}),
        }),
      }),
    }),

    // Preferences and privacy ---------------------------------------------------------------------------------
    defineRoute({
      method: 'get',
      path: '/api/users/preferences',
      summary: 'Units, language, time zone and notification switches',
      tags,
      security,
      guards: [member],
      responses: { 200: { description: 'The preferences', schema: s.Preferences }, ...forbidden },
      handler: async (ctx) => ({ status: 200, body: await settings.preferences(caller(ctx).id) }),
    }),
    defineRoute({
      method: 'put',
      path: '/api/users/preferences',
      summary: 'Change some preferences (only the keys sent change)',
      tags,
      security,
      guards: [member],
      body: s.PreferencesUpdate,
      responses: { 200: { description: 'The preferences', schema: s.Preferences }, ...forbidden },
      handler: async (ctx, { body }) => ({
        status: 200,
        body: await settings.updatePreferences(caller(ctx).id, body),
      }),
    }),
    defineRoute({
      method: 'get',
      path: '/api/users/privacy',
      summary: 'What other members may see of this member',
      tags,
      security,
      guards: [member],
      responses: { 200: { description: 'The privacy controls', schema: s.Privacy }, ...forbidden },
      handler: async (ctx) => ({ status: 200, body: await settings.privacyOf(caller(ctx).id) }),
    }),
    defineRoute({
      method: 'put',
      path: '/api/users/privacy',
      summary: 'Change privacy controls (only the keys sent change)',
      tags,
      security,
      guards: [member],
      body: s.PrivacyUpdate,
      responses: { 200: { description: 'The privacy controls', schema: s.Privacy }, ...forbidden },
      handler: async (ctx, { body }) => ({ status: 200, body: await settings.updatePrivacy(caller(ctx).id, body) }),
    }),

    // Devices ----------------------------------------------------------------------------------------------------
    defineRoute({
      method: 'get',
      path: '/api/users/devices',
      summary: 'Devices registered for push notifications',
      tags,
      security,
      guards: [member],
      responses: { 200: { description: 'The devices', schema: v.object({ items: v.array(s.Device) }) }, ...forbidden },
      handler: async (ctx) => ({ status: 200, body: { items: await devices.list(caller(ctx).id) } }),
    }),
    defineRoute({
      method: 'post',
      path: '/api/users/devices',
      summary: 'Register a push token (FCM, APNs or Web Push) for this member',
      tags,
      security,
      guards: [member],
      body: s.DeviceRegistration,
      responses: {
        200: { description: 'Already registered; refreshed', schema: s.Device },
        201: { description: 'Registered', schema: s.Device },
        409: { description: 'Too many devices' },
        ...forbidden,
      },
      handler: async (ctx, { body }) => {
        const { device, created } = await devices.register(caller(ctx).id, body);
        return { status: created ? 201 : 200, body: device };
      },
    }),
    defineRoute({
      method: 'delete',
      path: '/api/users/devices/:deviceId',
      summary: 'Unregister a device',
      tags,
      security,
      guards: [member],
      params: s.DeviceIdParam,
      responses: {
        204: { description: 'Removed' },
        404: { description: 'No such device of this member' },
        ...forbidden,
      },
      handler: async (ctx, { params }) => {
        const user = caller(ctx);
        const outcome = await devices.remove(user.id, params.deviceId);
        if (outcome === 'removed') return { status: 204 };
        if (outcome === 'not-owner') await auditRefusal(context, ctx, user, 'device', params.deviceId);
        throw new NotFound('no such device');
      },
    }),

    // Feedback ---------------------------------------------------------------------------------------------------
    defineRoute({
      method: 'post',
      path: '/api/users/feedback',
      summary: 'Send feedback about the app or the gym',
      tags,
      security,
      guards: [member],
      body: s.FeedbackSubmission,
      responses: { 201: { description: 'Received', schema: s.Feedback }, ...forbidden },
      handler: async (ctx, { body }) => ({ status: 201, body: await feedback.submit(caller(ctx).id, body) }),
    }),
    defineRoute({
      method: 'get',
      path: '/api/users/feedback',
      summary: 'The member’s feedback, newest first',
      tags,
      security,
      guards: [member],
      query: v.strictObject({ limit: s.Limit(50) }),
      responses: { 200: { description: 'Feedback', schema: v.object({ items: v.array(s.Feedback) }) }, ...forbidden },
      handler: async (ctx, { query }) => ({
        status: 200,
        body: { items: await feedback.list(caller(ctx).id, query.limit) },
      }),
    }),

    // Activity ---------------------------------------------------------------------------------------------------
    defineRoute({
      method: 'post',
      path: '/api/users/activity',
      summary: 'Report feature-usage and activity events (up to 100 per request)',
      description:
        'Events may be reported late (apps buffer offline); an `at` more than 5 minutes ahead of the server is ' +
        'taken as the time of receipt. An eventId makes retries idempotent.',
      tags,
      security,
      guards: [member],
      body: s.ActivityBatch,
      responses: { 202: { description: 'Stored', schema: s.ActivityAccepted }, ...forbidden },
      handler: async (ctx, { body }) => ({ status: 202, body: await activity.record(caller(ctx).id, body) }),
    }),
    defineRoute({
      method: 'get',
      path: '/api/users/activity/summary',
      summary: 'Daily, weekly (ISO weeks) or monthly activity summary, in UTC',
      description:
        'Defaults: the last 30 days, 12 weeks or 12 months up to now; `to` is exclusive. Empty buckets are ' +
        'included. At most 366 days, 106 weeks or 60 months: an earlier `from` is moved forward (clamped).',
      tags,
      security,
      guards: [member],
      query: s.SummaryQuery,
      responses: { 200: { description: 'The summary', schema: s.ActivitySummary }, ...forbidden },
      handler: async (ctx, { query }) => ({
        status: 200,
        body: await activity.summary(caller(ctx).id, {
          period: query.period,
          ...(query.from ? { from: query.from } : {}),
          ...(query.to ? { to: query.to } : {}),
        }),
      }),
    }),

    // Branch memberships (request, leave, list) are routes of the branches domain, which knows the branches:
    // cloud/src/branches/membership-routes.ts.
  ];
}

/** A member reaching for someone else's object: 404 to them, an audit entry for us (RELIABILITY c, preamble). */
export async function auditRefusal(
  context: UsersContext,
  ctx: RouteContext,
  user: AuthenticatedUser,
  kind: string,
  objectId: string,
): Promise<void> {
  await context.audit
    .record({
      actor: user.id,
      action: 'access_denied',
      target: `${kind}:${objectId}`,
      ip: ctx.ip,
      result: 'refused',
      details: { method: ctx.method, route: ctx.path, reason: 'not the owner' },
    })
    .catch((err: unknown) => ctx.state.log.warn({ err }, 'audit entry not written'));
}
