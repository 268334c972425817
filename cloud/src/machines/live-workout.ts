/**
 * The linked member's live workout: every telemetry sample ingest applies (live snapshots and stored batches) is
 * looked up against the machines' link mirrors in Redis (one pipelined HMGET per batch) and, for a linked machine,
 * published on `u/{user}/live/workout` as a `sample` — straight from the batch handler, so it reaches the app within
 * the same few milliseconds as the machine's retained availability.
 *
 * A sample no newer than the last one forwarded for that machine is skipped (the gateway's queue later sends again
 * what its live snapshot already carried, and a backlog is history, not "live"). Linked samples also mark activity on
 * the link (at most every `touchEveryMs`) and feed interval inference for telemetry-only machines.
 */
import type { Aedes } from 'aedes';
import type { Logger } from '../../../tools/runtime/logger.ts';
import type { Clock } from '../../../tools/runtime/clock.ts';
import { TOPIC_POLICY, topics } from '../../../protocol/index.ts';
import type { BranchId, MachineId, Telemetry, UserId, UserLiveWorkout } from '../../../protocol/index.ts';
import { publishChecked } from './links.ts';
import type { Overlays } from './overlay.ts';

export interface LiveWorkoutDeps {
  aedes: Aedes;
  overlays: Overlays;
  clock: Clock;
  log: Logger;
  /** Linked machines' samples, for interval inference. */
  onLinkedSamples?: (branch: string, samples: Telemetry[]) => Promise<void>;
  touchEveryMs?: number;
}

export interface LiveWorkout {
  /** ingest's onTelemetry: never throws, never holds the batch. */
  onTelemetry(branch: BranchId, samples: readonly Telemetry[]): void;
  idle(): Promise<void>;
}

export function createLiveWorkout(deps: LiveWorkoutDeps): LiveWorkout {
  const { aedes, overlays, clock, log } = deps;
  const touchEveryMs = deps.touchEveryMs ?? 10_000;
  const lastForwarded = new Map<string, number>();
  const lastTouched = new Map<string, number>();
  const inFlight = new Set<Promise<void>>();

  async function forward(branch: BranchId, samples: readonly Telemetry[]): Promise<void> {
    const newest = new Map<string, Telemetry[]>();
    for (const s of samples) {
      const list = newest.get(s.source) ?? [];
      list.push(s);
      newest.set(s.source, list);
    }
    const found = await overlays.getMany(branch, [...newest.keys()]);
    const linkedSamples: Telemetry[] = [];
    const publishes: Promise<void>[] = [];
    const now = clock.nowMs();
    for (const [machine, list] of newest) {
      const userId = found.get(machine)?.userId;
      if (!userId) continue;
      linkedSamples.push(...list);
      const key = `${branch}:${machine}`;
      for (const sample of list.sort((a, b) => a.ts - b.ts)) {
        if (sample.ts <= (lastForwarded.get(key) ?? 0)) continue;
        lastForwarded.set(key, sample.ts);
        const event: UserLiveWorkout = {
          type: 'sample',
          machine: sample.source as MachineId,
          ts: now,
          telemetry: sample,
        };
        publishes.push(
          publishChecked(
            aedes,
            topics.userLive(userId as UserId, 'workout'),
            'UserLiveWorkout',
            event,
            TOPIC_POLICY['user-live'],
          ),
        );
      }
      if (now - (lastTouched.get(key) ?? 0) >= touchEveryMs) {
        lastTouched.set(key, now);
        publishes.push(overlays.touch(branch, machine, now));
      }
    }
    const results = await Promise.allSettled(publishes);
    const failed = results.filter((r) => r.status === 'rejected').length;
    if (failed > 0) log.warn({ branch, failed }, 'live workout samples not published');
    if (linkedSamples.length > 0 && deps.onLinkedSamples) await deps.onLinkedSamples(branch, linkedSamples);
  }

  return {
    onTelemetry(branch, samples) {
      const work = forward(branch, samples).catch((err: unknown) => {
        log.warn({ branch, err: { message: (err as Error).message } }, 'live workout forwarding failed');
      });
      inFlight.add(work);
      void work.finally(() => inFlight.delete(work));
    },
    async idle() {
      while (inFlight.size > 0) await Promise.allSettled([...inFlight]);
    },
  };
}
