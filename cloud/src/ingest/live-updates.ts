/**
 * From stored records to live state: per machine of a batch, its superseding status, newest meta and newest sample
 * go to Redis in one compare-and-set (machines/live-state.ts); when what apps see changed, the machine's retained
 * live topic is republished. A Redis or broker failure here never costs an ack: the records are durable already,
 * and the next status or sample brings live state up to date.
 */
import type { Clock } from '../../../tools/runtime/clock.ts';
import { isNewer, statusSupersedes } from '../../../protocol/index.ts';
import type { BranchId, GatewayId, MachineId } from '../../../protocol/index.ts';
import type { LivePublisher } from '../machines/live-publisher.ts';
import type { LiveState, MachineUpdate } from '../machines/live-state.ts';
import type { AcceptedRecord } from './batch.ts';
import type { IngestMetrics } from './metrics.ts';
import type { RateLimitedLog } from '../../../tools/runtime/rate-limited-log.ts';

export type ApplyLive = (branch: BranchId, gateway: GatewayId, records: readonly AcceptedRecord[]) => Promise<void>;

export function createLiveUpdater({
  live,
  publisher,
  metrics,
  rlog,
  clock,
}: {
  live: LiveState;
  publisher: LivePublisher;
  metrics: IngestMetrics;
  rlog: RateLimitedLog;
  clock: Clock;
}): ApplyLive {
  return async (branch, gateway, records) => {
    const now = clock.nowMs();
    const updates = machineUpdates(branch, gateway, records, now);
    await Promise.all(
      updates.map(async (update) => {
        let stage = 'redis';
        try {
          const result = await live.applyMachine(update, now);
          if (!result.changed) return;
          stage = 'publish';
          await publisher.publish(branch, result.availability, now);
          metrics.livePublished.inc();
        } catch (err) {
          metrics.liveFailures.inc({ stage });
          rlog.warn(
            `live-${stage}-failed`,
            { branch, machine: update.machine, err: { message: (err as Error).message } },
            'live machine state not updated',
          );
        }
      }),
    );
  };
}

/** Per machine: the record that supersedes the others of the batch, for status, meta and telemetry. */
export function machineUpdates(
  branch: BranchId,
  gateway: GatewayId,
  records: readonly AcceptedRecord[],
  nowMs: number,
): MachineUpdate[] {
  const updates = new Map<string, MachineUpdate>();
  for (const { record } of records) {
    if (record.kind === 'access-scan' || record.kind === 'offline-decision') continue;
    const machine = record.payload.source as MachineId;
    let u = updates.get(machine);
    if (!u) {
      u = { branch, machine, gateway };
      updates.set(machine, u);
    }
    u.seenTs = Math.max(u.seenTs ?? 0, record.payload.ts);
    switch (record.kind) {
      case 'status':
        if (statusSupersedes(record.payload, u.status)) {
          u.status = record.payload;
          // A last will has no `since`: it began about when the gateway queued it (its clock is only a hint,
          // so it is kept between the record's own time and now).
          u.statusFallbackSince = Math.max(record.payload.ts, Math.min(record.receivedAt ?? nowMs, nowMs));
        }
        break;
      case 'meta':
        if (!u.meta || isNewer(record.payload, u.meta)) u.meta = record.payload;
        break;
      case 'telemetry':
        if (!u.telemetry || isNewer(record.payload, u.telemetry)) u.telemetry = record.payload;
        break;
      default:
        break;
    }
  }
  return [...updates.values()];
}
