/**
 * What a simulated machine model provides: its self-description (meta), what it reports while idle, and workout
 * sessions that advance in steps and report FTMS-style samples and finished segments. Bodies here carry no
 * envelope: the machine stamps it when the message goes out (machine.ts).
 */
import type { MachineType } from '../../../protocol/messages/machine-type.ts';
import type { Athlete } from './body.ts';

/** A payload without its envelope (and, for status, without `conn`). */
export type Body = Record<string, unknown>;

/** The meta payload without its envelope. */
export interface MetaBody extends Body {
  type: MachineType;
  manufacturer: string;
  model: string;
  firmware: string;
  serial: string;
  displayName: string;
  fields: string[];
  ranges?: Record<string, { min: number; max: number; step: number }>;
  displayUnits: 'metric' | 'imperial';
  telemetryIntervalMs?: number;
}

export interface SessionStep {
  /** Telemetry fields of this instant (without envelope). */
  readonly sample: Body;
  /** Segments (intervals, sets) that ended during this step, as workout bodies. */
  readonly finished: readonly Body[];
  /** The session is over (the member left the machine). */
  readonly done: boolean;
}

export interface Session {
  /** Advances the session by `dtS` seconds of simulated time; `nowMs` stamps segment start and end times. */
  step(dtS: number, nowMs: number): SessionStep;
}

export interface MachineModel {
  readonly type: MachineType;
  readonly meta: MetaBody;
  /** The sample a machine sends while nobody uses it. */
  idleSample(): Body;
  /** A member starts a workout at `nowMs`. */
  startSession(athlete: Athlete, nowMs: number): Session;
}
