/**
 * Gateway routes: staff of a branch create gateways (one-time enrolment token in the answer), see the fleet and
 * retire gateways; the gateway itself enrols with `POST /api/v1/gateways/enrol` (no account: the token is the
 * credential; a used, expired or unknown token is one 401; attempts are limited per client address).
 */
import type { Middleware } from 'koa';
import type { RateLimiterRedis } from 'rate-limiter-flexible';
import * as v from 'valibot';
import { BranchId, GatewayId } from '../../../protocol/ids.ts';
import { GatewayEnrolmentRequest, GatewayEnrolmentResponse } from '../../../protocol/messages/enrolment.ts';
import type { AuditLog } from '../audit/index.ts';
import type { RequireUserOptions } from '../auth/guard.ts';
import type { BranchesService } from '../branches/service.ts';
import { NotFound, TooManyRequests } from '../http/errors.ts';
import { defineRoute, type RouteSpec } from '../http/route.ts';
import type { AppState } from '../http/state.ts';
import { consumePoint } from '../ratelimit/limiter.ts';
import { caller } from '../users/routes.ts';
import type { GatewayDoc, GatewayStore } from './service.ts';

const security = [{ bearer: [] }];
const tags = ['gateways'];

const GatewayCreate = v.strictObject({
  id: GatewayId,
  name: v.optional(v.pipe(v.string(), v.trim(), v.minLength(1), v.maxLength(80))),
});
/**
 * GatewayEnrolmentRequest as a strict body. The host name is the protocol's "text without control characters",
 * written as the explicit ranges of Unicode's Cc category so the OpenAPI pattern is one every tool can use.
 */
const EnrolmentBody = v.strictObject({
  ...GatewayEnrolmentRequest.pipe[0].entries,
  hostname: v.optional(
    v.pipe(
      v.string(),
      v.minLength(1),
      v.maxLength(64),
      // eslint-disable-next-line no-control-regex -- refusing control characters is the point
      v.regex(/^[^\u0000-\u001f\u007f-\u009f]*$/, 'no control characters'),
      v.description('Host name of the gateway hardware, for the fleet view'),
    ),
  ),
});
const BranchParam = v.strictObject({ branchId: BranchId });
const GatewayParam = v.strictObject({ branchId: BranchId, gatewayId: GatewayId });
const Enrolment = v.object({ token: v.string(), expiresAt: v.string() });
const LaneView = v.object({ depth: v.number(), bytes: v.optional(v.number()), oldestAgeS: v.optional(v.number()) });
const FleetEntry = v.object({
  id: v.string(),
  branch: v.string(),
  name: v.nullable(v.string()),
  enrolled: v.boolean(),
  enrolledAt: v.nullable(v.string()),
  hostname: v.nullable(v.string()),
  online: v.boolean(),
  version: v.nullable(v.string()),
  lastSeenAt: v.nullable(v.string()),
  queue: v.nullable(
    v.object({
      depth: v.number(),
      full: v.boolean(),
      lanes: v.object({ access: LaneView, records: LaneView, telemetry: LaneView }),
      oldestBufferedAt: v.nullable(v.string()),
    }),
  ),
  offlineHoursLeft: v.nullable(v.number()),
  machinesConnected: v.nullable(v.number()),
  configRevision: v.object({ current: v.number(), inUse: v.nullable(v.number()) }),
  allowListRevision: v.object({ current: v.nullable(v.number()), inUse: v.nullable(v.number()) }),
});

export interface GatewayRoutesDeps {
  requireUser(options?: RequireUserOptions): Middleware<AppState>;
  branches: BranchesService;
  store: GatewayStore;
  audit: AuditLog;
  enrolLimiter: RateLimiterRedis;
  tokenTtlS: number;
  /** The gateway's fleet entry (figures from its births, revisions from the cloud's side). */
  fleetEntry(doc: GatewayDoc): Promise<v.InferOutput<typeof FleetEntry>>;
  /** What the enrolment answers besides the identity: broker URL and the configuration's verification keys. */
  enrolmentExtras(): Pick<GatewayEnrolmentResponse, 'configKeys'> & { url?: string };
  /** Revokes the machines of a gateway being retired and removes them and its readers from the registry. */
  retireEquipment(branch: string, gateway: string): Promise<{ machines: number; readers: number }>;
  /** A gateway just enrolled (its configuration revision starts). */
  onEnrolled(gateway: string): void;
}

export function gatewayRoutes(deps: GatewayRoutesDeps): RouteSpec[] {
  const { branches, store, audit } = deps;
  const staff = deps.requireUser({ roles: ['staff', 'admin'] });
  const forbidden = { 403: { description: 'Not staff of this branch' }, 404: { description: 'No such branch' } };
  const enrolmentOf = (token: string, doc: GatewayDoc) => ({
    token,
    expiresAt: (doc.enrolment.expiresAt ?? new Date(0)).toISOString(),
  });
  return [
    defineRoute({
      method: 'post',
      path: '/api/branches/:branchId/gateways',
      summary: 'Create a gateway and its one-time enrolment token (shown once)',
      tags,
      security,
      guards: [staff],
      params: BranchParam,
      body: GatewayCreate,
      responses: {
        201: { description: 'Created', schema: v.object({ gateway: FleetEntry, enrolment: Enrolment }) },
        409: { description: 'The id is taken' },
        ...forbidden,
      },
      handler: async (ctx, { params, body }) => {
        const user = caller(ctx);
        await branches.assertManages(user, params.branchId);
        const { gateway, token } = await store.create({
          branch: params.branchId,
          id: body.id,
          by: user.id,
          ttlS: deps.tokenTtlS,
          ...(body.name ? { name: body.name } : {}),
        });
        await audit.record({
          actor: user.id,
          action: 'gateway_created',
          target: `gateway:${gateway._id}`,
          ip: ctx.ip,
          result: 'success',
          details: { branch: params.branchId },
        });
        return {
          status: 201,
          body: { gateway: await deps.fleetEntry(gateway), enrolment: enrolmentOf(token, gateway) },
          headers: { 'Cache-Control': 'no-store' },
        };
      },
    }),
    defineRoute({
      method: 'post',
      path: '/api/branches/:branchId/gateways/:gatewayId/enrolment-token',
      summary: 'A new one-time enrolment token for a gateway not yet enrolled (the previous one stops working)',
      tags,
      security,
      guards: [staff],
      params: GatewayParam,
      responses: {
        201: { description: 'Issued', schema: Enrolment },
        409: { description: 'Already enrolled' },
        ...forbidden,
      },
      handler: async (ctx, { params }) => {
        const user = caller(ctx);
        await branches.assertManages(user, params.branchId);
        const { gateway, token } = await store.reissueToken(params.branchId, params.gatewayId, deps.tokenTtlS);
        await audit.record({
          actor: user.id,
          action: 'gateway_token_issued',
          target: `gateway:${gateway._id}`,
          ip: ctx.ip,
          result: 'success',
          details: { branch: params.branchId },
        });
        return { status: 201, body: enrolmentOf(token, gateway), headers: { 'Cache-Control': 'no-store' } };
      },
    }),
    defineRoute({
      method: 'get',
      path: '/api/branches/:branchId/gateways',
      summary: 'The branch’s gateway fleet: online, version, queue depth, oldest buffered record, last seen',
      description:
        'offlineHoursLeft: how much longer the gateway may decide check-ins offline with the allow-list it holds ' +
        '(null when it does not hold the current one).',
      tags,
      security,
      guards: [staff],
      params: BranchParam,
      responses: { 200: { description: 'Fleet', schema: v.object({ items: v.array(FleetEntry) }) }, ...forbidden },
      handler: async (ctx, { params }) => {
        await branches.assertManages(caller(ctx), params.branchId);
        const docs = await store.ofBranch(params.branchId);
        return { status: 200, body: { items: await Promise.all(docs.map((d) => deps.fleetEntry(d))) } };
      },
    }),
    defineRoute({
      method: 'delete',
      path: '/api/branches/:branchId/gateways/:gatewayId',
      summary: 'Retire a gateway: its MQTT identity and those of its machines are revoked',
      description: 'Its machines and readers leave the registry; they are registered again on another gateway.',
      tags,
      security,
      guards: [staff],
      params: GatewayParam,
      responses: { 204: { description: 'Retired' }, ...forbidden },
      handler: async (ctx, { params }) => {
        const user = caller(ctx);
        await branches.assertManages(user, params.branchId);
        const gateway = await store.get(params.gatewayId);
        if (gateway?.branch !== params.branchId) throw new NotFound('no such gateway');
        // Equipment first: a retirement interrupted half-way leaves a gateway to retire again, not orphaned machines
        // whose identities stay valid.
        const retired = await deps.retireEquipment(params.branchId, params.gatewayId);
        await store.remove(params.branchId, params.gatewayId);
        await audit.record({
          actor: user.id,
          action: 'gateway_retired',
          target: `gateway:${params.gatewayId}`,
          ip: ctx.ip,
          result: 'success',
          details: { branch: params.branchId, ...retired },
        });
        return { status: 204 };
      },
    }),
    defineRoute({
      method: 'post',
      path: '/api/gateways/enrol',
      summary: 'Enrol a gateway: exchange its one-time token for its MQTT credentials (shown once)',
      description:
        'A used, expired or unknown token is refused with 401 without saying which. Rate-limited per address.',
      tags,
      body: EnrolmentBody,
      responses: {
        200: { description: 'The gateway’s identity and credentials', schema: GatewayEnrolmentResponse },
        401: { description: 'Token invalid, used or expired' },
        429: { description: 'Too many attempts' },
      },
      handler: async (ctx, { body }) => {
        const limit = await consumePoint(deps.enrolLimiter, ctx.ip);
        if (!limit.allowed) throw new TooManyRequests(limit.resetMs / 1000, 'too many attempts');
        let enrolled;
        try {
          enrolled = await store.enrol(body);
        } catch (err) {
          await audit.record({
            actor: null,
            action: 'gateway_enrolment_refused',
            target: 'gateway:?',
            ip: ctx.ip,
            result: 'refused',
            details: { reason: (err as Error).message },
          });
          throw err;
        }
        const { gateway, secret } = enrolled;
        await audit.record({
          actor: null,
          action: 'gateway_enrolled',
          target: `gateway:${gateway._id}`,
          ip: ctx.ip,
          result: 'success',
          details: { branch: gateway.branch, version: body.version },
        });
        deps.onEnrolled(gateway._id);
        const { url, configKeys } = deps.enrolmentExtras();
        const response: GatewayEnrolmentResponse = {
          branch: gateway.branch as BranchId,
          gateway: gateway._id as GatewayId,
          mqtt: { username: gateway._id as GatewayId, password: secret, ...(url ? { url } : {}) },
          configKeys,
        };
        return { status: 200, body: response, headers: { 'Cache-Control': 'no-store' } };
      },
    }),
  ];
}
