/**
 * The gateway's retained state on the cloud broker (`b/{branch}/gw/{gateway}/state`): the birth published after
 * every connect (and refreshed with current figures), the last will registered with every CONNECT, and the offline
 * state of a clean shutdown. Each carries `conn`, the connection number within this boot, so the cloud can order a
 * late will of an old connection behind a newer birth (protocol `gatewayStateSupersedes`).
 */
import { PROTOCOL_MINOR } from '../../../protocol/index.ts';
import type { BootId, GatewayState, Lane, LaneStats } from '../../../protocol/index.ts';
import type { QueueStats } from './queue.ts';

export interface BirthFigures {
  readonly bootId: BootId;
  readonly conn: number;
  readonly sinceMs: number;
  readonly nowMs: number;
  readonly version: string;
  readonly queue: QueueStats;
  readonly machinesConnected: number;
  /** Drain rate, forecast and why the queue is full (queue-monitor.ts), when known. */
  readonly queueExtras?: Partial<
    Pick<Extract<GatewayState, { online: true }>['queue'], 'offlineHoursLeft' | 'drainPerS' | 'fullReason'>
  >;
}

/** The birth: online, with the queue by lane. */
export function birthState(f: BirthFigures): Extract<GatewayState, { online: true }> {
  const lane = (name: Lane): LaneStats => {
    const s = f.queue.lanes[name];
    return {
      depth: s.depth,
      bytes: s.bytes,
      ...(s.oldestEnqueuedAtMs === undefined ? {} : { oldestAgeS: ageSeconds(f.nowMs, s.oldestEnqueuedAtMs) }),
      ...(name === 'telemetry' ? { evicted: s.evicted } : {}),
    };
  };
  return {
    online: true,
    v: PROTOCOL_MINOR,
    bootId: f.bootId,
    conn: f.conn,
    since: f.sinceMs,
    ts: f.nowMs,
    version: f.version,
    queue: {
      access: lane('access'),
      records: lane('records'),
      telemetry: lane('telemetry'),
      full: f.queue.full,
      capBytes: f.queue.capBytes,
      ...f.queueExtras,
    },
    readers: [],
    machinesConnected: f.machinesConnected,
  };
}

/** The last will registered at CONNECT: `ts` is when it was registered. */
export function willState(bootId: BootId, conn: number, nowMs: number): GatewayState {
  return { online: false, v: PROTOCOL_MINOR, bootId, conn, ts: nowMs, lastWill: true };
}

/** The offline state published before a clean disconnect. */
export function offlineState(bootId: BootId, conn: number, nowMs: number): GatewayState {
  return { online: false, v: PROTOCOL_MINOR, bootId, conn, ts: nowMs, since: nowMs };
}

/** Age in seconds (one decimal), never negative even if the clock stepped back. */
export function ageSeconds(nowMs: number, thenMs: number): number {
  return Math.max(0, Math.round((nowMs - thenMs) / 100) / 10);
}
