/**
 * The machines the local broker accepts, switchable at run time: the machines file (or an empty set for an
 * enrolled gateway) at start, then each signed configuration's machines and their secrets' hashes replace it. The
 * broker asks this registry on every CONNECT, so a new machine can connect as soon as the configuration is
 * applied, without a restart; a machine removed from the configuration is refused from its next CONNECT on.
 */
import type { BranchId, GatewayConfigDocument, GatewayId } from '../../../protocol/index.ts';
import { createMachineRegistry, type MachineRegistry } from '../machines-file.ts';

export interface SwitchableMachines extends MachineRegistry {
  /** Replaces the machine set with the signed configuration's. */
  replace(machines: GatewayConfigDocument['machines']): void;
}

export function createSwitchableMachines(initial: MachineRegistry): SwitchableMachines {
  let current = initial;
  const { gatewayId, branch } = initial;
  return {
    gatewayId,
    branch,
    get size() {
      return current.size;
    },
    has: (id) => current.has(id),
    verify: (id, secret) => current.verify(id, secret),
    replace(machines) {
      current = createMachineRegistry(
        { gatewayId, branch, machines: machines.map((m) => ({ id: m.machine, secretHash: m.secretSha256 })) },
        'signed configuration',
      );
    },
  };
}

/** An empty machine set for a gateway that has its identity from its enrolment and no machines file. */
export function emptyMachines(gatewayId: GatewayId, branch: BranchId): MachineRegistry {
  return createMachineRegistry({ gatewayId, branch, machines: [] }, 'enrolment');
}
