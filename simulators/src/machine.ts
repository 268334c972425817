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
import { drawAthlete } from './machines/body.ts';
import { createModel } from './machines/index.ts';
import type { Body, MachineModel, MetaBody, Session } from './machines/model.ts';
import { createRng, deriveSeed, type Rng } from './random.ts';

export type OutgoingKind = 'status' | 'telemetry' | 'workout' | 'event';

export interface Outgoing {
  readonly kind: OutgoingKind;
  readonly body: Body;
}

export type SimStatus = 'available' | 'in_use';

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
}

export interface SimMachine {
  readonly id: string;
  readonly type: MachineType;
  readonly meta: MetaBody;
  readonly status: SimStatus;
  readonly statusSince: number;
  /** Advances one tick; returns what to publish, in order. */
  tick(nowMs: number): Outgoing[];
}

/** Share of machines already in use when a fleet starts, as in an open gym. */
const IN_USE_AT_START = 0.35;

export function createSimMachine(options: SimMachineOptions): SimMachine {
  const rng: Rng = createRng(deriveSeed(options.seed, options.id));
  const model: MachineModel = createModel(options.type, options.ordinal, rng);
  const meta: MetaBody = {
    ...model.meta,
    ...(options.telemetryIntervalMs === undefined ? {} : { telemetryIntervalMs: options.telemetryIntervalMs }),
  };
  let status: SimStatus = 'available';
  let since = options.nowMs;
  let session: Session | undefined;
  let idleLeftS = rng.between(2, 60);

  const begin = (nowMs: number): Outgoing[] => {
    session = model.startSession(drawAthlete(rng), nowMs);
    status = 'in_use';
    since = nowMs;
    return [
      { kind: 'status', body: { status, since } },
      { kind: 'event', body: { type: 'machine-state', state: 'started', by: 'user' } },
    ];
  };

  if (rng.chance(IN_USE_AT_START)) {
    // The first tick reports it; the status published on connect already says in_use.
    session = model.startSession(drawAthlete(rng), options.nowMs);
    status = 'in_use';
  }

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
    tick(nowMs) {
      const out: Outgoing[] = [];
      if (session === undefined) {
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
        idleLeftS = rng.between(20, 180);
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
