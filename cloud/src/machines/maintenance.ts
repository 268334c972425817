/**
 * Maintenance: staff report a problem, take a machine out of order, and put it back in service. Every action is a
 * row of the machine's history (`machine_maintenance`); the current state is one document per machine
 * (`machine_service {_id: machineId}`) mirrored into the machine's Redis overlay, so apps see `maintenance` at once
 * (the retained availability is republished) and links are refused (`machine-unavailable`) — the member linked when
 * it goes out of order is unlinked.
 */
import { randomUUID } from 'node:crypto';
import type { Collection, Db } from 'mongodb';
import type { Clock } from '../../../tools/runtime/clock.ts';
import type { Logger } from '../../../tools/runtime/logger.ts';
import type { BranchId, MachineId } from '../../../protocol/index.ts';
import type { Links } from './links.ts';
import type { Overlays } from './overlay.ts';

export const MAINTENANCE_ACTIONS = ['report', 'out-of-order', 'back-in-service', 'serviced'] as const;
export type MaintenanceAction = (typeof MAINTENANCE_ACTIONS)[number];

export interface MaintenanceEntry {
  _id: string;
  machine: string;
  branch: string;
  action: MaintenanceAction;
  note?: string;
  by: string;
  at: Date;
}

export interface ServiceState {
  _id: string;
  branch: string;
  outOfOrder: boolean;
  since: Date;
  reason?: string;
  /** Last time the machine was serviced (a `serviced` or `back-in-service` entry). */
  servicedAt?: Date;
}

export interface MaintenanceView {
  id: string;
  machine: string;
  branch: string;
  action: MaintenanceAction;
  note?: string;
  by: string;
  at: string;
}

export interface Maintenance {
  record(input: {
    branch: BranchId;
    machine: MachineId;
    action: MaintenanceAction;
    note?: string;
    by: string;
  }): Promise<{ entry: MaintenanceView; outOfOrder: boolean }>;
  history(machine: string, limit?: number): Promise<MaintenanceView[]>;
  state(machine: string): Promise<ServiceState | undefined>;
  /** Rewrites the Redis overlay's out-of-order flags from MongoDB (after a Redis loss or a crash between writes). */
  reconcile(): Promise<number>;
}

export const MAINTENANCE_COLLECTION = 'machine_maintenance';
export const SERVICE_COLLECTION = 'machine_service';

export function createMaintenance({
  db,
  overlays,
  links,
  clock,
  log,
}: {
  db: Db;
  overlays: Overlays;
  links: Links;
  clock: Clock;
  log: Logger;
}): Maintenance {
  const entries: Collection<MaintenanceEntry> = db.collection<MaintenanceEntry>(MAINTENANCE_COLLECTION);
  const service: Collection<ServiceState> = db.collection<ServiceState>(SERVICE_COLLECTION);
  const view = (e: MaintenanceEntry): MaintenanceView => ({
    id: e._id,
    machine: e.machine,
    branch: e.branch,
    action: e.action,
    ...(e.note ? { note: e.note } : {}),
    by: e.by,
    at: e.at.toISOString(),
  });

  return {
    async record({ branch, machine, action, note, by }) {
      const at = clock.now();
      const entry: MaintenanceEntry = { _id: randomUUID(), machine, branch, action, ...(note ? { note } : {}), by, at };
      await entries.insertOne(entry);
      let outOfOrder = (await service.findOne({ _id: machine }))?.outOfOrder ?? false;
      if (action === 'out-of-order') {
        outOfOrder = true;
        await service.updateOne(
          { _id: machine },
          { $set: { branch, outOfOrder: true, since: at, ...(note ? { reason: note } : {}) } },
          { upsert: true },
        );
        await overlays.setOutOfOrder(branch, machine, true);
        await links.unlink({ machine, reason: 'out-of-order' });
      } else if (action === 'back-in-service' || action === 'serviced') {
        const wasOut = outOfOrder;
        outOfOrder = false;
        await service.updateOne(
          { _id: machine },
          {
            $set: { branch, outOfOrder: false, servicedAt: at, ...(wasOut ? { since: at } : {}) },
            $unset: { reason: '' },
          },
          { upsert: true },
        );
        await overlays.setOutOfOrder(branch, machine, false);
      }
      await links.republish(branch, machine).catch((err: unknown) => {
        log.warn({ machine, err: { message: (err as Error).message } }, 'availability not republished');
      });
      log.info({ machine, branch, action }, 'machine maintenance recorded');
      return { entry: view(entry), outOfOrder };
    },
    async history(machine, limit = 100) {
      return (await entries.find({ machine }).sort({ at: -1 }).limit(limit).toArray()).map(view);
    },
    async state(machine) {
      return (await service.findOne({ _id: machine })) ?? undefined;
    },
    async reconcile() {
      let fixed = 0;
      for (const s of await service.find({}).toArray()) {
        const overlay = await overlays.get(s.branch, s._id);
        if (overlay.outOfOrder !== s.outOfOrder) {
          await overlays.setOutOfOrder(s.branch, s._id, s.outOfOrder);
          fixed += 1;
        }
      }
      return fixed;
    },
  };
}
