/**
 * Machine types. The type decides which telemetry fields a machine can send and which workout segment it
 * produces: cardio machines (the four FTMS machine types) finish intervals, strength machines finish sets,
 * functional stations finish blocks.
 */
import * as v from 'valibot';

/** The four Bluetooth FTMS machine types. */
export const CARDIO_MACHINE_TYPES = ['treadmill', 'indoor-bike', 'rower', 'cross-trainer'] as const;
/** Strength machines: a weight stack with a selector pin, or plates loaded by hand (load may be unknown). */
export const STRENGTH_MACHINE_TYPES = ['selectorised', 'plate-loaded'] as const;
/** Functional stations (rig, cable tower, sled track) with a sensor or console of their own. */
export const FUNCTIONAL_MACHINE_TYPES = ['functional'] as const;

export const MACHINE_TYPES = [...CARDIO_MACHINE_TYPES, ...STRENGTH_MACHINE_TYPES, ...FUNCTIONAL_MACHINE_TYPES] as const;

export type CardioMachineType = (typeof CARDIO_MACHINE_TYPES)[number];
export type StrengthMachineType = (typeof STRENGTH_MACHINE_TYPES)[number];
export type FunctionalMachineType = (typeof FUNCTIONAL_MACHINE_TYPES)[number];

/** The kind of machine. */
export const MachineType = v.pipe(v.picklist(MACHINE_TYPES), v.description('Machine type'));
export type MachineType = v.InferOutput<typeof MachineType>;

export type MachineCategory = 'cardio' | 'strength' | 'functional';

/** Cardio, strength or functional. */
export function machineCategory(type: MachineType): MachineCategory {
  if ((CARDIO_MACHINE_TYPES as readonly string[]).includes(type)) return 'cardio';
  if ((STRENGTH_MACHINE_TYPES as readonly string[]).includes(type)) return 'strength';
  return 'functional';
}
