/**
 * The machines domain's environment variables (spread into cloud/src/config.ts, which parses the environment once).
 */
import { envInt } from '../../../tools/runtime/env-config.ts';

export const MachinesEnv = {
  /** A member–machine link without activity (telemetry, workout data) for this long is released. */
  MACHINE_LINK_IDLE_S: envInt(600, 10, 86_400),
  /** An HTTP machine (`POST /api/machines/heartbeat`) silent for this long is marked offline. */
  MACHINE_HEARTBEAT_TIMEOUT_S: envInt(90, 5, 3_600),
  /** How long a freed machine is held for the next member of its waitlist. */
  MACHINE_WAITLIST_HOLD_S: envInt(120, 10, 3_600),
  /** How often the machines' sweeps run (heartbeats, waitlist holds, onStored retries use their own). */
  MACHINE_SWEEP_INTERVAL_S: envInt(10, 1, 600),
};

export interface MachinesConfig {
  linkIdleMs: number;
  heartbeatTimeoutMs: number;
  waitlistHoldMs: number;
  sweepIntervalMs: number;
}

type Parsed = { [K in keyof typeof MachinesEnv]: number };

export function machinesConfigFrom(e: Parsed): MachinesConfig {
  return {
    linkIdleMs: e.MACHINE_LINK_IDLE_S * 1000,
    heartbeatTimeoutMs: e.MACHINE_HEARTBEAT_TIMEOUT_S * 1000,
    waitlistHoldMs: e.MACHINE_WAITLIST_HOLD_S * 1000,
    sweepIntervalMs: e.MACHINE_SWEEP_INTERVAL_S * 1000,
  };
}
