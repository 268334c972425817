/**
 * Telemetry: one sample from a machine, published on `m/{machine}/telemetry` (QoS 0) and queued in the telemetry
 * lane.
 *
 * Cardio fields map one to one onto the Bluetooth Fitness Machine Service (FTMS 1.0) characteristics (Treadmill
 * Data 0x2ACD, Cross Trainer Data 0x2ACE, Rower Data 0x2AD1, Indoor Bike Data 0x2AD2); see FTMS.md. Differences
 * from the FTMS wire: flags are dropped, absent or "not available" fields (0xFFFF sentinels) are omitted, and
 * values are in SI units named in the key:
 * - speed in m/s (FTMS km/h ÷ 3.6), energy in kJ (FTMS kcal × 4.184), distance and elevation in m, time in s;
 * - rates keep their per-minute units (rpm, strokes/min, steps/min) and heart rate stays bpm, as every console
 *   shows them.
 * Strength machines (not covered by FTMS) add reps, load, range of motion and tempo; functional stations add
 * exercise, rounds and work/rest phase.
 *
 * Bounds: every FTMS field is bounded by the range of its FTMS wire type, converted to our unit (heart rate is a
 * uint8, so 0–255 bpm, and 0 is what a machine without chest-strap contact sends; power is a sint16, so
 * −32,768…32,767 W). A value the FTMS wire can carry is a value a real machine can report, so it must parse:
 * refusing it would drop a real reading for good (the gateway dead-letters a refused record). Only what no machine
 * could encode — wrong type, NaN, beyond the wire range — is refused. Whether a value is physically plausible for
 * this machine (against the ranges in its meta) is the cloud's job at ingest: it flags, never refuses. Fields
 * without an FTMS equivalent (strength, functional) are bounded by what such a sensor can measure, from 0.
 */
import * as v from 'valibot';
import { envelopeEntries } from '../envelope.ts';
import type { Envelope } from '../envelope.ts';
import { Code } from '../scalars.ts';
import type { MachineType, StrengthMachineType } from './machine-type.ts';

/** Unit, bounds and meaning of one numeric telemetry field. */
export interface MeasureSpec {
  readonly unit: string;
  readonly min: number;
  readonly max: number;
  readonly integer: boolean;
  readonly description: string;
  /** The FTMS wire type and resolution the bounds come from; absent for fields FTMS does not have. */
  readonly ftms?: string;
}

/**
 * Every numeric telemetry field: unit, bounds and meaning. The schemas below are built from this table, and the
 * docs' field table is rendered from it, so unit and bound are written down once.
 */
export const TELEMETRY_MEASURES = {
  // Common to the FTMS machine types (and reused by strength and functional machines, hence the wider time bounds).
  elapsedS: {
    unit: 's',
    min: 0,
    max: 172_800,
    integer: true,
    ftms: 'uint16 s (wider here: non-FTMS machines send it too)',
    description: 'Elapsed time (FTMS Elapsed Time)',
  },
  remainingS: {
    unit: 's',
    min: 0,
    max: 172_800,
    integer: true,
    ftms: 'uint16 s (wider here: non-FTMS machines send it too)',
    description: 'Remaining time (FTMS Remaining Time)',
  },
  energyKj: {
    unit: 'kJ',
    min: 0,
    max: 274_200,
    integer: false,
    ftms: 'uint16 kcal',
    description: 'Total energy expended (FTMS Total Energy, kcal × 4.184)',
  },
  energyPerHourKj: {
    unit: 'kJ/h',
    min: 0,
    max: 274_200,
    integer: false,
    ftms: 'uint16 kcal/h',
    description: 'Energy rate per hour (FTMS Energy Per Hour, kcal × 4.184)',
  },
  energyPerMinuteKj: {
    unit: 'kJ/min',
    min: 0,
    max: 1_067,
    integer: false,
    ftms: 'uint8 kcal/min',
    description: 'Energy rate per minute (FTMS Energy Per Minute, kcal × 4.184)',
  },
  heartRateBpm: {
    unit: 'bpm',
    min: 0,
    max: 255,
    integer: true,
    ftms: 'uint8 bpm',
    description: 'Heart rate (FTMS Heart Rate); 0 means no contact with the sensor',
  },
  metabolicEquivalent: {
    unit: 'MET',
    min: 0,
    max: 25.5,
    integer: false,
    ftms: 'uint8, 0.1',
    description: 'Metabolic equivalent (FTMS Metabolic Equivalent, 0.1 resolution)',
  },
  powerW: {
    unit: 'W',
    min: -32_768,
    max: 32_767,
    integer: false,
    ftms: 'sint16 W',
    description: 'Instantaneous power (FTMS sint16; negative when the machine brakes, e.g. a treadmill downhill)',
  },
  avgPowerW: {
    unit: 'W',
    min: -32_768,
    max: 32_767,
    integer: false,
    ftms: 'sint16 W',
    description: 'Average power (FTMS Average Power)',
  },
  resistanceLevel: {
    unit: 'level',
    min: -32_768,
    max: 32_767,
    integer: false,
    ftms: 'sint16, 1 or 0.1 by machine type',
    description: 'Resistance level, unitless as in FTMS; the machine’s range is in its meta',
  },
  speedMps: {
    unit: 'm/s',
    min: 0,
    max: 182.05,
    integer: false,
    ftms: 'uint16, 0.01 km/h',
    description: 'Instantaneous speed (FTMS 0.01 km/h ÷ 3.6); virtual speed on bikes',
  },
  avgSpeedMps: {
    unit: 'm/s',
    min: 0,
    max: 182.05,
    integer: false,
    ftms: 'uint16, 0.01 km/h',
    description: 'Average speed (FTMS Average Speed)',
  },
  distanceM: {
    unit: 'm',
    min: 0,
    max: 16_777_215,
    integer: false,
    ftms: 'uint24 m',
    description: 'Total distance (FTMS uint24 m)',
  },
  // Treadmill (and cross-trainer where marked by FTMS).
  inclinePct: {
    unit: '%',
    min: -3_276.8,
    max: 3_276.7,
    integer: false,
    ftms: 'sint16, 0.1 %',
    description: 'Inclination (FTMS 0.1 %)',
  },
  rampAngleDeg: {
    unit: '°',
    min: -3_276.8,
    max: 3_276.7,
    integer: false,
    ftms: 'sint16, 0.1°',
    description: 'Ramp angle setting (FTMS 0.1°)',
  },
  elevationGainM: {
    unit: 'm',
    min: 0,
    max: 65_535,
    integer: false,
    ftms: 'uint16, 0.1 m (treadmill) or 1 m (cross trainer)',
    description: 'Positive elevation gain (FTMS)',
  },
  elevationLossM: {
    unit: 'm',
    min: 0,
    max: 65_535,
    integer: false,
    ftms: 'uint16, 0.1 m (treadmill) or 1 m (cross trainer)',
    description: 'Negative elevation gain, as a positive number (FTMS)',
  },
  paceSPerKm: {
    unit: 's/km',
    min: 0,
    max: 65_535,
    integer: false,
    ftms: 'uint16 s/km (FTMS 1.0: uint8 0.1 km/min)',
    description: 'Instantaneous pace (FTMS km/min normalised to s/km); omitted when standing still',
  },
  avgPaceSPerKm: {
    unit: 's/km',
    min: 0,
    max: 65_535,
    integer: false,
    ftms: 'uint16 s/km (FTMS 1.0: uint8 0.1 km/min)',
    description: 'Average pace (FTMS)',
  },
  beltForceN: {
    unit: 'N',
    min: -32_768,
    max: 32_767,
    integer: false,
    ftms: 'sint16 N',
    description: 'Force on belt (FTMS sint16 N)',
  },
  // Cross trainer.
  stepRateSpm: {
    unit: 'steps/min',
    min: 0,
    max: 65_535,
    integer: false,
    ftms: 'uint16 steps/min',
    description: 'Step rate (FTMS Step Per Minute)',
  },
  avgStepRateSpm: {
    unit: 'steps/min',
    min: 0,
    max: 65_535,
    integer: false,
    ftms: 'uint16 steps/min',
    description: 'Average step rate (FTMS Average Step Rate)',
  },
  strides: {
    unit: 'count',
    min: 0,
    max: 1_000_000,
    integer: true,
    ftms: 'uint16 (wider here: also an interval total)',
    description: 'Stride count (FTMS Stride Count)',
  },
  // Rower.
  strokeRateSpm: {
    unit: 'strokes/min',
    min: 0,
    max: 127.5,
    integer: false,
    ftms: 'uint8, 0.5 strokes/min',
    description: 'Stroke rate (FTMS 0.5 strokes/min)',
  },
  avgStrokeRateSpm: {
    unit: 'strokes/min',
    min: 0,
    max: 127.5,
    integer: false,
    ftms: 'uint8, 0.5 strokes/min',
    description: 'Average stroke rate (FTMS 0.5 strokes/min)',
  },
  strokes: {
    unit: 'count',
    min: 0,
    max: 1_000_000,
    integer: true,
    ftms: 'uint16 (wider here: also an interval total)',
    description: 'Stroke count (FTMS Stroke Count)',
  },
  paceSPer500m: {
    unit: 's/500 m',
    min: 0,
    max: 65_535,
    integer: false,
    ftms: 'uint16 s',
    description: 'Instantaneous pace per 500 m (FTMS uint16 s)',
  },
  avgPaceSPer500m: {
    unit: 's/500 m',
    min: 0,
    max: 65_535,
    integer: false,
    ftms: 'uint16 s',
    description: 'Average pace per 500 m (FTMS uint16 s)',
  },
  // Indoor bike.
  cadenceRpm: {
    unit: 'rpm',
    min: 0,
    max: 32_767.5,
    integer: false,
    ftms: 'uint16, 0.5 rpm',
    description: 'Cadence (FTMS 0.5 rpm)',
  },
  avgCadenceRpm: {
    unit: 'rpm',
    min: 0,
    max: 32_767.5,
    integer: false,
    ftms: 'uint16, 0.5 rpm',
    description: 'Average cadence (FTMS 0.5 rpm)',
  },
  // Strength and functional (no FTMS equivalent): bounded by what such a sensor can measure.
  reps: { unit: 'count', min: 0, max: 1_000, integer: true, description: 'Repetitions so far in the current set' },
  loadKg: {
    unit: 'kg',
    min: 0,
    max: 1_000,
    integer: false,
    description: 'Load being moved (selected stack weight; absent on plate-loaded machines without a load sensor)',
  },
  romCm: { unit: 'cm', min: 0, max: 300, integer: false, description: 'Range of motion of the last repetition' },
  positionCm: { unit: 'cm', min: 0, max: 300, integer: false, description: 'Current position within the range' },
  velocityMps: {
    unit: 'm/s',
    min: -10,
    max: 10,
    integer: false,
    description: 'Velocity of the load; positive while lifting (concentric), negative while lowering',
  },
  rounds: { unit: 'count', min: 0, max: 1_000, integer: true, description: 'Rounds completed in the current block' },
} as const satisfies Record<string, MeasureSpec>;

export type TelemetryMeasure = keyof typeof TELEMETRY_MEASURES;

/**
 * The optional schema of one measure, built from its row in `TELEMETRY_MEASURES`. Workout totals reuse a
 * measure's unit and bounds under their own description (`measure('heartRateBpm', 'Average heart rate')`).
 */
export function measure(name: TelemetryMeasure, meaning?: string) {
  const spec: MeasureSpec = TELEMETRY_MEASURES[name];
  const description = `${meaning ?? spec.description}, ${spec.unit}`;
  return v.optional(
    spec.integer
      ? v.pipe(v.number(), v.safeInteger(), v.minValue(spec.min), v.maxValue(spec.max), v.description(description))
      : v.pipe(v.number(), v.minValue(spec.min), v.maxValue(spec.max), v.description(description)),
  );
}

/** FTMS Training Status (0x2AD3) values, kebab-cased. */
export const TRAINING_STATUSES = [
  'other',
  'idle',
  'warming-up',
  'low-intensity-interval',
  'high-intensity-interval',
  'recovery-interval',
  'isometric',
  'heart-rate-control',
  'fitness-test',
  'speed-below-control-region',
  'speed-above-control-region',
  'cool-down',
  'watt-control',
  'manual-mode',
  'pre-workout',
  'post-workout',
] as const;
export const TrainingStatus = v.pipe(v.picklist(TRAINING_STATUSES), v.description('FTMS Training Status'));

/** Phase of a strength repetition. */
export const STRENGTH_PHASES = ['concentric', 'eccentric', 'hold', 'rest'] as const;

/**
 * Time under tension of one repetition, split by phase (e.g. 2 s up, 3 s down). Also the timing part of a
 * workout set's `RepDetail`.
 */
export const Tempo = v.object({
  concentricS: v.pipe(v.number(), v.minValue(0), v.maxValue(60), v.description('Lifting phase, s')),
  eccentricS: v.pipe(v.number(), v.minValue(0), v.maxValue(60), v.description('Lowering phase, s')),
});
export type Tempo = v.InferOutput<typeof Tempo>;

// Fields every machine type may send (FTMS "common" fields plus the training status).
const commonEntries = {
  ...envelopeEntries,
  trainingStatus: v.optional(TrainingStatus),
  energyKj: measure('energyKj'),
  energyPerHourKj: measure('energyPerHourKj'),
  energyPerMinuteKj: measure('energyPerMinuteKj'),
  heartRateBpm: measure('heartRateBpm'),
  metabolicEquivalent: measure('metabolicEquivalent'),
  elapsedS: measure('elapsedS'),
  remainingS: measure('remainingS'),
};

/** Treadmill Data (FTMS 0x2ACD). */
export const TreadmillTelemetry = v.object({
  ...commonEntries,
  type: v.literal('treadmill'),
  speedMps: measure('speedMps'),
  avgSpeedMps: measure('avgSpeedMps'),
  distanceM: measure('distanceM'),
  inclinePct: measure('inclinePct'),
  rampAngleDeg: measure('rampAngleDeg'),
  elevationGainM: measure('elevationGainM'),
  elevationLossM: measure('elevationLossM'),
  paceSPerKm: measure('paceSPerKm'),
  avgPaceSPerKm: measure('avgPaceSPerKm'),
  beltForceN: measure('beltForceN'),
  powerW: measure('powerW'),
});

/** Cross Trainer Data (FTMS 0x2ACE). */
export const CrossTrainerTelemetry = v.object({
  ...commonEntries,
  type: v.literal('cross-trainer'),
  speedMps: measure('speedMps'),
  avgSpeedMps: measure('avgSpeedMps'),
  distanceM: measure('distanceM'),
  stepRateSpm: measure('stepRateSpm'),
  avgStepRateSpm: measure('avgStepRateSpm'),
  strides: measure('strides'),
  elevationGainM: measure('elevationGainM'),
  elevationLossM: measure('elevationLossM'),
  inclinePct: measure('inclinePct'),
  rampAngleDeg: measure('rampAngleDeg'),
  resistanceLevel: measure('resistanceLevel'),
  powerW: measure('powerW'),
  avgPowerW: measure('avgPowerW'),
  direction: v.optional(
    v.pipe(v.picklist(['forward', 'backward']), v.description('Movement direction (FTMS flag bit 15)')),
  ),
});

/** Rower Data (FTMS 0x2AD1). */
export const RowerTelemetry = v.object({
  ...commonEntries,
  type: v.literal('rower'),
  strokeRateSpm: measure('strokeRateSpm'),
  strokes: measure('strokes'),
  avgStrokeRateSpm: measure('avgStrokeRateSpm'),
  distanceM: measure('distanceM'),
  paceSPer500m: measure('paceSPer500m'),
  avgPaceSPer500m: measure('avgPaceSPer500m'),
  powerW: measure('powerW'),
  avgPowerW: measure('avgPowerW'),
  resistanceLevel: measure('resistanceLevel'),
});

/** Indoor Bike Data (FTMS 0x2AD2). */
export const IndoorBikeTelemetry = v.object({
  ...commonEntries,
  type: v.literal('indoor-bike'),
  speedMps: measure('speedMps'),
  avgSpeedMps: measure('avgSpeedMps'),
  cadenceRpm: measure('cadenceRpm'),
  avgCadenceRpm: measure('avgCadenceRpm'),
  distanceM: measure('distanceM'),
  resistanceLevel: measure('resistanceLevel'),
  powerW: measure('powerW'),
  avgPowerW: measure('avgPowerW'),
});

function strengthTelemetry<T extends StrengthMachineType>(type: T) {
  return v.object({
    ...commonEntries,
    type: v.literal(type),
    phase: v.optional(v.pipe(v.picklist(STRENGTH_PHASES), v.description('Current phase of the repetition'))),
    reps: measure('reps'),
    loadKg: measure('loadKg'),
    romCm: measure('romCm'),
    positionCm: measure('positionCm'),
    velocityMps: measure('velocityMps'),
    tempo: v.optional(Tempo),
    powerW: measure('powerW'),
  });
}

/** A selectorised (pin-stack) strength machine. */
export const SelectorisedTelemetry = strengthTelemetry('selectorised');
/** A plate-loaded strength machine; `loadKg` only when it has a load sensor. */
export const PlateLoadedTelemetry = strengthTelemetry('plate-loaded');

/** A functional station: the exercise in progress, work/rest phase, reps and rounds. */
export const FunctionalTelemetry = v.object({
  ...commonEntries,
  type: v.literal('functional'),
  exercise: v.optional(v.pipe(Code, v.description('Exercise in progress, e.g. kettlebell-swing'))),
  phase: v.optional(v.pipe(v.picklist(['work', 'rest']), v.description('Work or rest phase of the block'))),
  reps: measure('reps'),
  rounds: measure('rounds'),
  loadKg: measure('loadKg'),
  powerW: measure('powerW'),
});

const TELEMETRY_OPTIONS = [
  TreadmillTelemetry,
  CrossTrainerTelemetry,
  RowerTelemetry,
  IndoorBikeTelemetry,
  SelectorisedTelemetry,
  PlateLoadedTelemetry,
  FunctionalTelemetry,
] as const;

/**
 * One telemetry sample: the envelope, the machine `type` (the discriminator) and the fields that machine type
 * supports, each optional, in SI units.
 */
export const Telemetry = v.pipe(
  v.variant('type', TELEMETRY_OPTIONS),
  v.title('Telemetry'),
  v.description(
    'One sample from a machine: envelope, machine type and the FTMS-style fields it supports (SI units, see the ' +
      'field table). Omitted fields are not supported or not available.',
  ),
);
export type Telemetry = v.InferOutput<typeof Telemetry>;

type KeysOfUnion<T> = T extends unknown ? keyof T : never;
/** The name of a telemetry field (any machine type). */
export type TelemetryField = Exclude<KeysOfUnion<Telemetry>, keyof Envelope | 'type'>;

const NOT_FIELDS = new Set<string>([...Object.keys(envelopeEntries), 'type']);

/** The telemetry fields each machine type may send, derived from the schemas above. */
export const TELEMETRY_FIELDS_BY_TYPE: { readonly [T in MachineType]: readonly TelemetryField[] } = Object.fromEntries(
  TELEMETRY_OPTIONS.map((option) => [
    option.entries.type.literal,
    Object.keys(option.entries).filter((key) => !NOT_FIELDS.has(key)) as TelemetryField[],
  ]),
) as { [T in MachineType]: TelemetryField[] };

/** Every telemetry field name, in first-seen order. */
export const TELEMETRY_FIELDS = [...new Set(Object.values(TELEMETRY_FIELDS_BY_TYPE).flat())] as [
  TelemetryField,
  ...TelemetryField[],
];
