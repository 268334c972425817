/**
 * The cloud's own services for setting a branch up from a script, without a running cloud process: npm start's demo
 * branch (scripts/demo-branch.ts) and the simulator's branches (simulators/src/provision.ts). They write what the
 * cloud's API would, with its rules; the gateways they configure are not running yet, so a configuration change
 * needs no push (their first birth fetches it).
 */
import type { Connection } from 'mongoose';
import type { IdentityStore } from '../../cloud/src/broker/identities.ts';
import { createEquipment, type Equipment } from '../../cloud/src/equipment/service.ts';
import { createGatewayStore } from '../../cloud/src/gateways/service.ts';
import type { UsersContext } from '../../cloud/src/users/context.ts';
import { createMembershipService, type MembershipService } from '../../cloud/src/users/memberships.ts';
import { userModels } from '../../cloud/src/users/models.ts';
import { systemClock } from '../runtime/clock.ts';

/** The equipment registry (readers, machines), checking gateways against the gateways store. */
export async function equipmentForSetup(mongo: Connection, identities: IdentityStore): Promise<Equipment> {
  const gateways = await createGatewayStore({ mongo, clock: systemClock, identities });
  return createEquipment({
    mongo,
    clock: systemClock,
    identities,
    gatewayOf: async (branch, gateway) => {
      const doc = await gateways.get(gateway);
      return doc && doc.branch === branch ? { enrolled: doc.enrolledAt !== null } : undefined;
    },
    // The gateway is not running yet: its first birth gets the configuration with these changes.
    onConfigChange: () => undefined,
  });
}

/** Memberships, as the branch's staff grant them (`PUT /api/branches/:id/members/:userId`). */
export async function membershipsForSetup(mongo: Connection): Promise<MembershipService> {
  return createMembershipService({
    models: await userModels(mongo),
    clock: systemClock,
  } as Pick<UsersContext, 'models' | 'clock'> as UsersContext);
}
