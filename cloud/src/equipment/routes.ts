/**
 * The equipment registry's routes under /api/branches/:branchId/{machines,readers}: staff of the branch and admins.
 * A new machine's MQTT secret is in the 201 answer only (stored as its SHA-256; never shown again).
 */
import type { Middleware } from 'koa';
import * as v from 'valibot';
import { BranchId, GatewayId, MachineId, ReaderId } from '../../../protocol/ids.ts';
import { ACCESS_ACTIONS, CREDENTIAL_KINDS } from '../../../protocol/messages/access.ts';
import { MachineType } from '../../../protocol/messages/machine-type.ts';
import type { AuditLog } from '../audit/index.ts';
import type { RequireUserOptions } from '../auth/guard.ts';
import type { BranchesService } from '../branches/service.ts';
import { defineRoute, type RouteContext, type RouteSpec } from '../http/route.ts';
import type { AppState } from '../http/state.ts';
import { caller } from '../users/routes.ts';
import type { Equipment } from './service.ts';

const security = [{ bearer: [] }];
const tags = ['equipment'];

const Text = (max: number) => v.pipe(v.string(), v.trim(), v.minLength(1), v.maxLength(max));
const Capabilities = v.pipe(
  v.array(v.pipe(v.string(), v.regex(/^[a-z0-9][a-z0-9-]{0,39}$/, 'expected a lowercase capability name'))),
  v.maxLength(32),
  v.description('e.g. ftms, heart-rate, incline, resistance-control'),
);
const MachineCreate = v.strictObject({
  id: MachineId,
  gateway: GatewayId,
  kind: MachineType,
  model: Text(80),
  capabilities: v.optional(Capabilities, []),
  location: v.optional(Text(80)),
  displayName: v.optional(Text(64)),
});
const MachinePatch = v.strictObject({
  model: v.optional(Text(80)),
  capabilities: v.optional(Capabilities),
  location: v.optional(Text(80)),
  displayName: v.optional(Text(64)),
});
const MachineView = v.object({
  id: v.string(),
  branch: v.string(),
  gateway: v.string(),
  type: v.picklist(['cardio', 'strength', 'functional']),
  kind: v.string(),
  model: v.string(),
  capabilities: v.array(v.string()),
  location: v.nullable(v.string()),
  displayName: v.nullable(v.string()),
  createdAt: v.string(),
  updatedAt: v.string(),
});
const ReaderCreate = v.strictObject({
  reader: ReaderId,
  gateway: GatewayId,
  kind: v.picklist(CREDENTIAL_KINDS),
  action: v.picklist([...ACCESS_ACTIONS, 'link']),
  machine: v.optional(MachineId),
  location: v.optional(Text(80)),
});
const ReaderView = v.object({
  reader: v.string(),
  kind: v.string(),
  action: v.string(),
  machine: v.optional(v.string()),
  branch: v.string(),
  gateway: v.string(),
  location: v.nullable(v.string()),
});
const BranchParam = v.strictObject({ branchId: BranchId });
const MachineParam = v.strictObject({ branchId: BranchId, machineId: MachineId });
const ReaderParam = v.strictObject({ branchId: BranchId, readerId: ReaderId });

export function equipmentRoutes(deps: {
  requireUser(options?: RequireUserOptions): Middleware<AppState>;
  branches: BranchesService;
  equipment: Equipment;
  audit: AuditLog;
}): RouteSpec[] {
  const { branches, equipment, audit } = deps;
  const audited = (ctx: RouteContext, action: string, target: string, branch: string) =>
    audit.record({ actor: caller(ctx).id, action, target, ip: ctx.ip, result: 'success', details: { branch } });
  const staff = deps.requireUser({ roles: ['staff', 'admin'] });
  const forbidden = { 403: { description: 'Not staff of this branch' }, 404: { description: 'No such branch' } };
  const manages = (ctx: RouteContext, branch: string) => branches.assertManages(caller(ctx), branch);
  return [
    defineRoute({
      method: 'post',
      path: '/api/branches/:branchId/machines',
      summary: 'Register a machine and issue its MQTT secret (shown once)',
      tags,
      security,
      guards: [staff],
      params: BranchParam,
      body: MachineCreate,
      responses: {
        201: {
          description: 'Registered; `mqtt.password` is the only copy of the secret',
          schema: v.object({
            machine: MachineView,
            mqtt: v.object({ username: v.string(), password: v.string() }),
          }),
        },
        409: { description: 'The id is taken, or the gateway is not enrolled yet' },
        ...forbidden,
      },
      handler: async (ctx, { params, body }) => {
        await manages(ctx, params.branchId);
        const { machine, secret } = await equipment.addMachine(params.branchId, body);
        await audited(ctx, 'machine_registered', `machine:${machine.id}`, params.branchId);
        return {
          status: 201,
          body: { machine, mqtt: { username: machine.id, password: secret } },
          headers: { 'Cache-Control': 'no-store' },
        };
      },
    }),
    defineRoute({
      method: 'get',
      path: '/api/branches/:branchId/machines',
      summary: 'The branch’s machine registry',
      tags,
      security,
      guards: [staff],
      params: BranchParam,
      responses: { 200: { description: 'Machines', schema: v.object({ items: v.array(MachineView) }) }, ...forbidden },
      handler: async (ctx, { params }) => {
        await manages(ctx, params.branchId);
        return { status: 200, body: { items: await equipment.machines(params.branchId) } };
      },
    }),
    defineRoute({
      method: 'get',
      path: '/api/branches/:branchId/machines/:machineId',
      summary: 'One registered machine',
      tags,
      security,
      guards: [staff],
      params: MachineParam,
      responses: { 200: { description: 'The machine', schema: MachineView }, ...forbidden },
      handler: async (ctx, { params }) => {
        await manages(ctx, params.branchId);
        return { status: 200, body: await equipment.machine(params.branchId, params.machineId) };
      },
    }),
    defineRoute({
      method: 'patch',
      path: '/api/branches/:branchId/machines/:machineId',
      summary: 'Change a machine’s model, capabilities, location or display name',
      tags,
      security,
      guards: [staff],
      params: MachineParam,
      body: MachinePatch,
      responses: { 200: { description: 'Changed', schema: MachineView }, ...forbidden },
      handler: async (ctx, { params, body }) => {
        await manages(ctx, params.branchId);
        return { status: 200, body: await equipment.updateMachine(params.branchId, params.machineId, body) };
      },
    }),
    defineRoute({
      method: 'delete',
      path: '/api/branches/:branchId/machines/:machineId',
      summary: 'Retire a machine: its MQTT identity is revoked and it leaves its gateway’s configuration',
      tags,
      security,
      guards: [staff],
      params: MachineParam,
      responses: { 204: { description: 'Retired' }, ...forbidden },
      handler: async (ctx, { params }) => {
        await manages(ctx, params.branchId);
        await equipment.removeMachine(params.branchId, params.machineId);
        await audited(ctx, 'machine_retired', `machine:${params.machineId}`, params.branchId);
        return { status: 204 };
      },
    }),
    defineRoute({
      method: 'post',
      path: '/api/branches/:branchId/readers',
      summary: 'Add a reader: at a door (check-in/check-out) or mounted on a machine (link)',
      tags,
      security,
      guards: [staff],
      params: BranchParam,
      body: ReaderCreate,
      responses: {
        201: { description: 'Added', schema: ReaderView },
        409: { description: 'The reader id is taken in this branch, or the gateway has 32 readers' },
        ...forbidden,
      },
      handler: async (ctx, { params, body }) => {
        await manages(ctx, params.branchId);
        const reader = await equipment.addReader(params.branchId, body);
        // Readers decide who gets in: adding or removing one is audited like a machine.
        await audited(ctx, 'reader_added', `reader:${params.branchId}/${reader.reader}`, params.branchId);
        return { status: 201, body: reader };
      },
    }),
    defineRoute({
      method: 'get',
      path: '/api/branches/:branchId/readers',
      summary: 'The branch’s readers',
      tags,
      security,
      guards: [staff],
      params: BranchParam,
      responses: { 200: { description: 'Readers', schema: v.object({ items: v.array(ReaderView) }) }, ...forbidden },
      handler: async (ctx, { params }) => {
        await manages(ctx, params.branchId);
        return { status: 200, body: { items: await equipment.readers(params.branchId) } };
      },
    }),
    defineRoute({
      method: 'delete',
      path: '/api/branches/:branchId/readers/:readerId',
      summary: 'Remove a reader',
      tags,
      security,
      guards: [staff],
      params: ReaderParam,
      responses: { 204: { description: 'Removed' }, ...forbidden },
      handler: async (ctx, { params }) => {
        await manages(ctx, params.branchId);
        await equipment.removeReader(params.branchId, params.readerId);
        await audited(ctx, 'reader_removed', `reader:${params.branchId}/${params.readerId}`, params.branchId);
        return { status: 204 };
      },
    }),
  ];
}
