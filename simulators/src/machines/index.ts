/** The machine models by type, the fleet's type mix and machine ids. */
import { machineCategory, type MachineType } from '../../../protocol/messages/machine-type.ts';
import type { CardioMachineType, StrengthMachineType } from '../../../protocol/messages/machine-type.ts';
import type { Rng } from '../random.ts';
import { CARDIO_PREFIXES, cardioMachine } from './cardio.ts';
import type { MachineModel } from './model.ts';
import { STRENGTH_PREFIXES, strengthMachine } from './strength.ts';

/** The machine types the simulator models (functional stations come with the full simulator, issue 8). */
export type SimulatedMachineType = CardioMachineType | StrengthMachineType;

export const SIMULATED_MACHINE_TYPES: readonly SimulatedMachineType[] = [
  'treadmill',
  'indoor-bike',
  'rower',
  'cross-trainer',
  'selectorised',
  'plate-loaded',
];

/**
 * A gym floor's mix in a repeating pattern of 20: 5 treadmills, 4 bikes, 2 rowers, 3 cross trainers, 4
 * selectorised and 2 plate-loaded machines. Machine n gets pattern[n mod 20], so any fleet size has a mix and
 * machine ids are stable whatever the seed.
 */
const MIX: readonly SimulatedMachineType[] = [
  'treadmill',
  'indoor-bike',
  'selectorised',
  'cross-trainer',
  'treadmill',
  'rower',
  'indoor-bike',
  'selectorised',
  'treadmill',
  'plate-loaded',
  'cross-trainer',
  'indoor-bike',
  'selectorised',
  'treadmill',
  'rower',
  'cross-trainer',
  'selectorised',
  'indoor-bike',
  'treadmill',
  'plate-loaded',
];

export function typeAt(index: number): SimulatedMachineType {
  return MIX[index % MIX.length]!;
}

export function isSimulatedType(type: string): type is SimulatedMachineType {
  return (SIMULATED_MACHINE_TYPES as readonly string[]).includes(type);
}

const PREFIXES: Record<SimulatedMachineType, string> = { ...CARDIO_PREFIXES, ...STRENGTH_PREFIXES };

/** `tread-001`, `bike-002`, …: the type's prefix and the 1-based position in the fleet. */
export function machineIdAt(index: number, type: SimulatedMachineType = typeAt(index)): string {
  return `${PREFIXES[type]}-${String(index + 1).padStart(3, '0')}`;
}

/** A model of `type`; `ordinal` (1-based, per type) names it on its console ("Treadmill 3"). */
export function createModel(type: MachineType, ordinal: number, rng: Rng): MachineModel {
  if (!isSimulatedType(type)) throw new Error(`machine type ${type} is not simulated yet`);
  return machineCategory(type) === 'cardio'
    ? cardioMachine(type as CardioMachineType, ordinal, rng)
    : strengthMachine(type as StrengthMachineType, ordinal, rng);
}
