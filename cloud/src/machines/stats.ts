/**
 * Per-machine figures for staff, computed on request from what is stored:
 * - usage efficiency: utilisation (linked time ÷ window), link count, average link, links per day, wait times
 *   (served waits from `machine_waits`);
 * - performance: uptime (share of the window the machine was not `offline`, from its stored status changes),
 *   usage hours since its last service and a maintenance suggestion from them (`serviceEveryHours` by type class).
 */
import type { Db } from 'mongodb';
import type { Clock } from '../../../tools/runtime/clock.ts';
import { RECORD_COLLECTIONS } from '../ingest/store.ts';
import { LINK_HISTORY_COLLECTION, type LinkHistoryDoc } from './links.ts';
import { SERVICE_COLLECTION, type ServiceState } from './maintenance.ts';
import { WAITS_COLLECTION, type WaitDoc } from './waitlist.ts';

/** Usage hours between services, by machine class (a conservative default of common manufacturer schedules). */
export const SERVICE_EVERY_HOURS = { cardio: 500, strength: 1_000, functional: 750 } as const;

export interface MachineStats {
  machine: string;
  window: { from: number; to: number };
  usage: {
    links: number;
    linkedHours: number;
    utilisation: number;
    averageLinkMin: number;
    linksPerDay: number;
  };
  waits: { served: number; left: number; expired: number; averageWaitMin: number; maxWaitMin: number };
  performance: {
    uptime: number | null;
    usageHoursSinceService: number;
    serviceEveryHours: number;
    lastServicedAt: number | null;
    suggestion: 'ok' | 'soon' | 'due';
  };
}

export function classOf(type: string | undefined): keyof typeof SERVICE_EVERY_HOURS {
  if (type === 'selectorised' || type === 'plate-loaded') return 'strength';
  if (type === 'functional') return 'functional';
  return 'cardio';
}

function overlapMs(start: number, end: number, from: number, to: number): number {
  return Math.max(0, Math.min(end, to) - Math.max(start, from));
}

export async function machineStats(
  db: Db,
  clock: Clock,
  machine: string,
  { days, type }: { days: number; type?: string },
): Promise<MachineStats> {
  const to = clock.nowMs();
  const from = to - days * 86_400_000;
  const history = db.collection<LinkHistoryDoc>(LINK_HISTORY_COLLECTION);
  const links = await history
    .find({ machine, startedAt: { $lt: new Date(to) } })
    .sort({ startedAt: -1 })
    .limit(10_000)
    .toArray();
  let inWindow = 0;
  let linkedMs = 0;
  for (const l of links) {
    const end = l.endedAt?.getTime() ?? to;
    const ms = overlapMs(l.startedAt.getTime(), end, from, to);
    if (ms > 0 || (l.startedAt.getTime() >= from && l.startedAt.getTime() < to)) inWindow += 1;
    linkedMs += ms;
  }
  const waits = await db
    .collection<WaitDoc>(WAITS_COLLECTION)
    .find({ machine, endedAt: { $gte: new Date(from) } })
    .toArray();
  const served = waits.filter((w) => w.outcome === 'served');
  const waitMins = served.map((w) => (w.endedAt.getTime() - w.joinedAt.getTime()) / 60_000);

  // Uptime: walk the stored status changes in event-time order; time after an `offline` until the next other
  // status is down time. Without any status record in or before the window it is unknown.
  const statuses = await db
    .collection(RECORD_COLLECTIONS.status)
    .find({ source: machine, at: { $lt: new Date(to) } })
    .sort({ at: 1 })
    .toArray();
  let uptime: number | null = null;
  if (statuses.length > 0) {
    let downMs = 0;
    let state: string | undefined;
    let since = from;
    for (const s of statuses) {
      const at = (s['at'] as Date).getTime();
      if (state === 'offline') downMs += overlapMs(since, at, from, to);
      state = s['status'] as string;
      since = at;
    }
    if (state === 'offline') downMs += overlapMs(since, to, from, to);
    const firstAt = (statuses[0]!['at'] as Date).getTime();
    const known = to - Math.max(from, firstAt);
    uptime = known > 0 ? round(1 - downMs / known) : null;
  }

  const service = await db.collection<ServiceState>(SERVICE_COLLECTION).findOne({ _id: machine });
  const servicedAt = service?.servicedAt?.getTime() ?? null;
  let usageSinceMs = 0;
  for (const l of links) {
    const end = l.endedAt?.getTime() ?? to;
    usageSinceMs += overlapMs(l.startedAt.getTime(), end, servicedAt ?? 0, to);
  }
  const every = SERVICE_EVERY_HOURS[classOf(type)];
  const usageHours = usageSinceMs / 3_600_000;
  const windowMs = to - from;
  return {
    machine,
    window: { from, to },
    usage: {
      links: inWindow,
      linkedHours: round(linkedMs / 3_600_000),
      utilisation: round(linkedMs / windowMs),
      averageLinkMin: inWindow === 0 ? 0 : round(linkedMs / inWindow / 60_000),
      linksPerDay: round(inWindow / days),
    },
    waits: {
      served: served.length,
      left: waits.filter((w) => w.outcome === 'left').length,
      expired: waits.filter((w) => w.outcome === 'expired').length,
      averageWaitMin: waitMins.length === 0 ? 0 : round(waitMins.reduce((a, b) => a + b, 0) / waitMins.length),
      maxWaitMin: waitMins.length === 0 ? 0 : round(Math.max(...waitMins)),
    },
    performance: {
      uptime,
      usageHoursSinceService: round(usageHours),
      serviceEveryHours: every,
      lastServicedAt: servicedAt,
      suggestion: usageHours >= every ? 'due' : usageHours >= every * 0.8 ? 'soon' : 'ok',
    },
  };
}

function round(n: number): number {
  return Math.round(n * 1000) / 1000;
}
