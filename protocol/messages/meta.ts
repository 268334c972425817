/**
 * Machine self-description, published retained on `m/{machine}/meta` after every connect and whenever it changes
 * (the FTMS Fitness Machine Feature and Supported Range characteristics, in JSON).
 */
import * as v from 'valibot';
import { envelopeEntries } from '../envelope.ts';
import { Version, label } from '../scalars.ts';
import { MachineType } from './machine-type.ts';
import { TELEMETRY_FIELDS, TELEMETRY_FIELDS_BY_TYPE, TELEMETRY_MEASURES } from './telemetry.ts';
import type { TelemetryMeasure } from './telemetry.ts';

/** Fields with a supported range: the five FTMS Supported … Range characteristics, plus the load of a stack. */
export const RANGED_FIELDS = ['speedMps', 'inclinePct', 'resistanceLevel', 'heartRateBpm', 'powerW', 'loadKg'] as const;

/** Bounds are those of the telemetry field itself, so a range can never promise a value the schema refuses. */
function supportedRange(field: TelemetryMeasure, ftms: string) {
  const spec = TELEMETRY_MEASURES[field];
  const bound = v.pipe(v.number(), v.minValue(spec.min), v.maxValue(spec.max));
  return v.optional(
    v.pipe(
      v.object({
        min: bound,
        max: bound,
        step: v.pipe(v.number(), v.gtValue(0), v.maxValue(spec.max - spec.min), v.description('Smallest increment')),
      }),
      v.forward(
        v.partialCheck([['min'], ['max']], (range) => range.min <= range.max, 'Invalid range: max is below min'),
        ['max'],
      ),
      v.description(`Supported ${field} range (${ftms}), ${spec.unit}`),
    ),
  );
}

/** Supported ranges, for consumers to scale displays and for simulators to draw values within. */
export const SupportedRanges = v.object({
  speedMps: supportedRange('speedMps', 'FTMS Supported Speed Range 0x2AD4'),
  inclinePct: supportedRange('inclinePct', 'FTMS Supported Inclination Range 0x2AD5'),
  resistanceLevel: supportedRange('resistanceLevel', 'FTMS Supported Resistance Level Range 0x2AD6'),
  heartRateBpm: supportedRange('heartRateBpm', 'FTMS Supported Heart Rate Range 0x2AD7'),
  powerW: supportedRange('powerW', 'FTMS Supported Power Range 0x2AD8'),
  loadKg: supportedRange('loadKg', 'weight stack or load sensor'),
});
export type SupportedRanges = v.InferOutput<typeof SupportedRanges>;

/**
 * Interval between telemetry samples, ms: what a machine reports in its meta and what `config` commands and the
 * gateway configuration set.
 */
export const TelemetryIntervalMs = v.pipe(
  v.number(),
  v.safeInteger(),
  v.minValue(100),
  v.maxValue(60_000),
  v.description('Interval between telemetry samples, ms'),
);

/** Units a console shows to people. The wire always carries the SI units of the telemetry field table. */
export const DISPLAY_UNITS = ['metric', 'imperial'] as const;

/**
 * A machine's self-description: what it is, what it sends and within which ranges. Sent retained with an
 * envelope, so the newest meta wins by `(bootId, seq)` like any other record.
 */
export const MachineMeta = v.pipe(
  v.object({
    ...envelopeEntries,
    type: MachineType,
    manufacturer: label(64, 'Manufacturer'),
    model: label(64, 'Model'),
    firmware: Version,
    serial: v.optional(label(64, 'Serial number')),
    displayName: v.optional(label(64, 'Name shown to members, e.g. "Rower 3"')),
    fields: v.pipe(
      v.array(v.picklist(TELEMETRY_FIELDS)),
      v.maxLength(TELEMETRY_FIELDS.length),
      v.description('Telemetry fields this machine sends (FTMS Fitness Machine Feature); all belong to its type'),
    ),
    ranges: v.optional(SupportedRanges),
    displayUnits: v.optional(v.pipe(v.picklist(DISPLAY_UNITS), v.description('Units shown on the console only'))),
    telemetryIntervalMs: v.optional(TelemetryIntervalMs),
  }),
  v.forward(
    v.partialCheck(
      [['type'], ['fields']],
      (meta) => meta.fields.every((field) => TELEMETRY_FIELDS_BY_TYPE[meta.type].includes(field)),
      'Invalid fields: a field does not belong to this machine type',
    ),
    ['fields'],
  ),
  v.forward(
    v.partialCheck(
      [['fields']],
      (meta) => new Set(meta.fields).size === meta.fields.length,
      'Invalid fields: listed twice',
    ),
    ['fields'],
  ),
  v.forward(
    v.partialCheck(
      [['fields'], ['ranges']],
      (meta) =>
        Object.entries(meta.ranges ?? {}).every(
          ([field, range]) => range === undefined || (meta.fields as readonly string[]).includes(field),
        ),
      'Invalid ranges: a range is given for a field the machine does not send',
    ),
    ['ranges'],
  ),
  v.title('MachineMeta'),
  v.description(
    'Machine self-description: type, manufacturer, model, firmware, supported telemetry fields and FTMS-style ' +
      'supported ranges. Retained; republished after every connect and on `rebirth`.',
  ),
);
export type MachineMeta = v.InferOutput<typeof MachineMeta>;
