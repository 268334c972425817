/**
 * Which machines may appear as the source of a gateway's records: those provisioned for that gateway in that
 * branch (`npm run hub -- machine add … --branch … --gateway …`). The broker's ACL already keeps a gateway inside
 * its own branch's topics; this keeps it to its own machines, so a gateway cannot write records (or live state)
 * for another gateway's or another branch's machines.
 *
 * The directory is read through a small per-gateway cache: a batch costs no lookup while its machines are known.
 * A machine the cache does not know always causes a fresh read before it is refused: a refusal dead-letters a
 * record the gateway already acknowledged to the machine, so a machine provisioned a moment ago must never be
 * refused from a stale cache. Concurrent misses share one read; the price is one read per batch while a gateway
 * still sends for a revoked machine, which lasts until the gateway's configuration drops it.
 */
import type { Clock } from '../../../tools/runtime/clock.ts';
import type { BranchId, GatewayId } from '../../../protocol/index.ts';

/** Where the provisioned machines come from (the cloud's identity store; wired in cloud.ts). */
export interface MachineDirectory {
  /** The enabled machines provisioned for `gateway` in `branch`. */
  machinesOf(branch: BranchId, gateway: GatewayId): Promise<ReadonlySet<string>>;
}

export interface SourceCheck {
  /** Of `machines`, those that are not provisioned for this gateway; rejects if the directory cannot be read. */
  unknownAmong(branch: BranchId, gateway: GatewayId, machines: ReadonlySet<string>): Promise<Set<string>>;
}

export function createSourceCheck({
  directory,
  clock,
  ttlMs = 30_000,
}: {
  directory: MachineDirectory;
  clock: Clock;
  /** How long a gateway's machine list is used before it is read again. */
  ttlMs?: number;
}): SourceCheck {
  const cache = new Map<string, { machines: ReadonlySet<string>; readAtMs: number }>();
  const reading = new Map<string, Promise<ReadonlySet<string>>>();

  const read = (key: string, branch: BranchId, gateway: GatewayId) => {
    let pending = reading.get(key);
    if (!pending) {
      pending = directory.machinesOf(branch, gateway).then(
        (machines) => {
          cache.set(key, { machines, readAtMs: clock.nowMs() });
          reading.delete(key);
          return machines;
        },
        (err: unknown) => {
          reading.delete(key);
          throw err;
        },
      );
      reading.set(key, pending);
    }
    return pending;
  };

  return {
    async unknownAmong(branch, gateway, machines) {
      if (machines.size === 0) return new Set();
      const key = `${branch}/${gateway}`;
      const now = clock.nowMs();
      let entry = cache.get(key);
      let readNow = false;
      if (!entry || now - entry.readAtMs >= ttlMs) {
        await read(key, branch, gateway);
        entry = cache.get(key)!;
        readNow = true;
      }
      let unknown = [...machines].filter((m) => !entry.machines.has(m));
      if (unknown.length > 0 && !readNow) {
        const fresh = await read(key, branch, gateway);
        unknown = unknown.filter((m) => !fresh.has(m));
      }
      return new Set(unknown);
    },
  };
}
