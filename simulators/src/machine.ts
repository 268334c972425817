/**
 * One simulated machine's behaviour, without any network: it alternates between idle and in-use sessions and, at
 * each tick, says what it would publish — status changes, FTMS machine-state events, a telemetry sample and the
 * workout segments that just finished. The fleet (fleet.ts) stamps envelopes and publishes; tests drive this
 * directly with a fixed clock.
 *
 * Everything it draws comes from a generator seeded by (run seed, machine id), and it advances by ticks of fixed
 * simulated length, so a machine's sequence of payloads depends on the seed alone, not on timer jitter.
 */
import type { EnvelopeStamper } from '../../protocol/envelope.ts';
import type { MachineType } from '../../protocol/messages/machine-type.ts';
import { DEFAULT_DAY, meanIdleS, utilisationAt, type DayProfile } from './day.ts';
import { drawAthlete } from './machines/body.ts';
import { createModel } from './machines/index.ts';
import type { Body, MachineModel, MetaBody, Session } from './machines/model.ts';
import { createRng, deriveSeed, type Rng } from './random.ts';

export type OutgoingKind = 'status' | 'telemetry' | 'workout' | 'event';

export interface Outgoing {
  readonly kind: OutgoingKind;
  readonly body: Body;
}

export type SimStatus = 'available' | 'in_use' | 'maintenance';

/** A member starts (link) or ends (unlink) a session on a machine: the hook check-in and linking build on. */
export interface MemberEvent {
  readonly type: 'link' | 'unlink';
  readonly machine: string;
  /** `member-000042`: one of the run's `members`. */
  readonly member: string;
  readonly atMs: number;
}

/** The gym's day the machine lives in: its members' arrivals follow the profile (day.ts). */
export interface MachineDay {
  readonly profile?: DayProfile;
  /** Simulated hour of day (0–24) when the machine starts. */
  readonly startHour: number;
  /** Mean session length used to turn the profile's utilisation into idle gaps (default 20 min). */
  readonly meanSessionS?: number;
}

/** Machine trouble, per simulated hour of idle time. */
export interface MachineTrouble {
  /** Faults per simulated hour: status `maintenance`, a fault event, cleared 5–30 simulated minutes later. */
  readonly faultsPerHour?: number;
  /** Power-offs per simulated hour: the machine disconnects cleanly and comes back 1–10 simulated minutes later. */
  readonly outagesPerHour?: number;
}

export interface SimMachineOptions {
  readonly id: string;
  readonly type: MachineType;
  /** Run seed; the machine's own generator is derived from it and the id. */
  readonly seed: number;
  /** 1-based number among machines of its type (display name). */
  readonly ordinal: number;
  /** Simulated seconds per tick: timeScale / rate. */
  readonly tickS: number;
  /** Interval between samples as the machine's meta states it (absent when outside the protocol's bounds). */
  readonly telemetryIntervalMs?: number | undefined;
  readonly nowMs: number;
  /** Members arrive following the day's profile; absent: a fixed 20–180 s idle gap (the spine's demo). */
  readonly day?: MachineDay | undefined;
  /** How many members the branch has (member ids drawn from them; default 500). */
  readonly members?: number | undefined;
  readonly trouble?: MachineTrouble | undefined;
  /** Told when a member starts or ends a session (check-in and linking will hang off it, issues 5 and 7). */
  readonly onMember?: ((event: MemberEvent) => void) | undefined;
}

export interface SimMachine {
  readonly id: string;
  readonly type: MachineType;
  readonly meta: MetaBody;
  readonly status: SimStatus;
  readonly statusSince: number;
  /** Advances one tick; returns what to publish, in order. */
  tick(nowMs: number): Outgoing[];
  /** A power-off the last tick decided: its length in simulated seconds (then cleared), or undefined. */
  takeOutage(): number | undefined;
}

const FAULTS = [
  { code: 'belt-overheat', severity: 'warning' },
  { code: 'motor-overcurrent', severity: 'critical' },
  { code: 'sensor-lost', severity: 'warning' },
  { code: 'console-reboot', severity: 'info' },
] as const;

/** Share of machines already in use when a fleet starts, as in an open gym (without a day profile). */
const IN_USE_AT_START = 0.35;

export function createSimMachine(options: SimMachineOptions): SimMachine {
  const rng: Rng = createRng(deriveSeed(options.seed, options.id));
  const model: MachineModel = createModel(options.type, options.ordinal, rng);
  const meta: MetaBody = {
    ...model.meta,
    ...(options.telemetryIntervalMs === undefined ? {} : { telemetryIntervalMs: options.telemetryIntervalMs }),
  };
  const members = Math.max(1, options.members ?? 500);
  const day = options.day;
  const faultChance = ((options.trouble?.faultsPerHour ?? 0) * options.tickS) / 3600;
  const outageChance = ((options.trouble?.outagesPerHour ?? 0) * options.tickS) / 3600;
  let status: SimStatus = 'available';
  let since = options.nowMs;
  let session: Session | undefined;
  let member: string | undefined;
  /** Simulated seconds since the machine started (the day's clock). */
  let simS = 0;
  let faultLeftS = 0;
  let faultCode = '';
  let outage: number | undefined;

  const nextIdleS = (): number => {
    if (day === undefined) return rng.between(20, 180);
    const hour = day.startHour + simS / 3600;
    const mean = meanIdleS(day.profile ?? DEFAULT_DAY, hour, day.meanSessionS ?? 1200);
    // Exponential gaps (arrivals as a Poisson process at the hour's rate), at least a few seconds.
    return Math.max(3, -mean * Math.log(1 - rng.next()));
  };
  let idleLeftS = day === undefined ? rng.between(2, 60) : Math.max(2, nextIdleS() * rng.next()); // part-way into a gap

  const startSession = (nowMs: number) => {
    session = model.startSession(drawAthlete(rng), nowMs);
    member = `member-${String(rng.int(1, members)).padStart(6, '0')}`;
    status = 'in_use';
    options.onMember?.({ type: 'link', machine: options.id, member, atMs: nowMs });
  };

  const begin = (nowMs: number): Outgoing[] => {
    startSession(nowMs);
    since = nowMs;
    return [
      { kind: 'status', body: { status, since } },
      { kind: 'event', body: { type: 'machine-state', state: 'started', by: 'user' } },
    ];
  };

  const inUseAtStart = day === undefined ? IN_USE_AT_START : utilisationAt(day.profile ?? DEFAULT_DAY, day.startHour);
  if (rng.chance(inUseAtStart)) {
    // The first tick reports it; the status published on connect already says in_use.
    startSession(options.nowMs);
  }

  /** Idle time: faults and power-offs happen to machines nobody is using. */
  const idleTick = (nowMs: number): Outgoing[] | undefined => {
    if (faultLeftS > 0) {
      faultLeftS -= options.tickS;
      if (faultLeftS > 0) return [{ kind: 'telemetry', body: { type: options.type, ...model.idleSample() } }];
      status = 'available';
      since = nowMs;
      idleLeftS = nextIdleS();
      return [
        { kind: 'event', body: { type: 'fault-cleared', code: faultCode } },
        { kind: 'status', body: { status, since } },
      ];
    }
    if (faultChance > 0 && rng.chance(faultChance)) {
      const fault = rng.pick(FAULTS);
      faultCode = fault.code;
      faultLeftS = rng.between(300, 1800);
      status = 'maintenance';
      since = nowMs;
      return [
        { kind: 'event', body: { type: 'fault', code: fault.code, severity: fault.severity } },
        { kind: 'status', body: { status, since } },
      ];
    }
    if (outageChance > 0 && rng.chance(outageChance)) {
      // Powered off now: nobody starts a session on it in this tick.
      outage = rng.between(60, 600);
      return [];
    }
    return undefined;
  };

  return {
    id: options.id,
    type: options.type,
    meta,
    get status() {
      return status;
    },
    get statusSince() {
      return since;
    },
    takeOutage() {
      const taken = outage;
      outage = undefined;
      return taken;
    },
    tick(nowMs) {
      simS += options.tickS;
      const out: Outgoing[] = [];
      if (session === undefined) {
        const trouble = idleTick(nowMs);
        if (trouble) return trouble;
        idleLeftS -= options.tickS;
        if (idleLeftS > 0) return [{ kind: 'telemetry', body: { type: options.type, ...model.idleSample() } }];
        out.push(...begin(nowMs));
      }
      const step = session!.step(options.tickS, nowMs);
      out.push({ kind: 'telemetry', body: { type: options.type, ...step.sample } });
      for (const segment of step.finished) out.push({ kind: 'workout', body: segment });
      if (step.done) {
        session = undefined;
        status = 'available';
        since = nowMs;
        idleLeftS = nextIdleS();
        if (member !== undefined) options.onMember?.({ type: 'unlink', machine: options.id, member, atMs: nowMs });
        member = undefined;
        out.push({ kind: 'event', body: { type: 'machine-state', state: 'stopped', by: 'user' } });
        out.push({ kind: 'status', body: { status, since } });
      }
      return out;
    },
  };
}

/** The payload of a message: envelope first, then the body; statuses also carry the connection number. */
export function toPayload(stamper: EnvelopeStamper, kind: OutgoingKind | 'meta', body: Body, conn: number): Body {
  const envelope = stamper.stamp();
  return kind === 'status' ? { ...envelope, ...body, conn } : { ...envelope, ...body };
}
