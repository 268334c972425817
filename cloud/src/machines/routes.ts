/**
 * GET /api/machines/availability?branchId= — a branch's machines as live state in Redis holds them.
 *
 * Access (decided for now, see README): public, read-only. It holds no member data — which machine is free, its
 * type and name, when it was last heard from and its last measures, which are the machine's and not linked to
 * anyone — the same as the retained `live/machines/…` topics every app of the branch reads. It is rate-limited with
 * the rest of the API; scoping it to the caller's branches comes with the sessions work.
 */
import * as v from 'valibot';
import {
  BranchId,
  GatewayId,
  MachineId,
  MachineStatusValue,
  MachineType,
  MACHINE_STATUSES,
} from '../../../protocol/index.ts';
import { ServiceUnavailable } from '../http/errors.ts';
import { defineRoute } from '../http/route.ts';
import type { LiveState } from './live-state.ts';

export const AvailabilityQuery = v.strictObject({
  branchId: v.pipe(BranchId, v.description('The branch, e.g. `demo`')),
});

const Ms = v.pipe(v.number(), v.description('ms since the epoch'));

export const MachineAvailability = v.object({
  machine: MachineId,
  status: MachineStatusValue,
  since: v.pipe(Ms, v.description('When this status began (for `unknown`: when the gateway went offline)')),
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

export function machineRoutes({ live, nowMs }: { live: LiveState; nowMs: () => number }) {
  return [
    defineRoute({
      method: 'get',
      path: '/api/machines/availability',
      summary: 'Availability of a branch’s machines',
      description:
        'Every machine of the branch with its status (`unknown` while its gateway is offline), since when, last ' +
        'seen, type, display name and last measures, plus counts by status — from live state, not the database. ' +
        'Public read-only data with no member data in it (the same as the retained `live/machines/…` topics); ' +
        'rate-limited like the rest of the API. Scoping to the caller’s branches comes with member sessions.',
      tags: ['machines'],
      query: AvailabilityQuery,
      responses: {
        200: { description: 'The branch’s machines (empty if none is known)', schema: BranchAvailability },
        503: { description: 'Live state (Redis) is unavailable' },
      },
      handler: async (ctx, { query }) => {
        let machines;
        try {
          machines = await live.listBranch(query.branchId);
        } catch (err) {
          ctx.state.log.warn({ err: { message: (err as Error).message } }, 'live machine state unavailable');
          throw new ServiceUnavailable('live machine state is unavailable, try again shortly');
        }
        const counts = Object.fromEntries(MACHINE_STATUSES.map((s) => [s, 0])) as Record<MachineStatusValue, number>;
        for (const m of machines) counts[m.status] += 1;
        ctx.set('Cache-Control', 'no-store');
        const body: BranchAvailability = { branchId: query.branchId, asOf: nowMs(), counts, machines };
        return { status: 200, body };
      },
    }),
  ];
}
