/**
 * Machine events, published on `m/{machine}/event` and queued in the records lane: faults, maintenance, a member
 * presenting a credential at the machine (which the gateway turns into a `link` request), and FTMS Fitness
 * Machine Status changes (0x2ADA).
 */
import * as v from 'valibot';
import { envelopeEntries } from '../envelope.ts';
import { Code, label, text } from '../scalars.ts';
import { NfcUid, QrToken } from './access.ts';
import { TELEMETRY_MEASURES } from './telemetry.ts';

export const FAULT_SEVERITIES = ['info', 'warning', 'critical'] as const;

/** A fault the machine detected. `critical` means it cannot be used safely. */
export const FaultEvent = v.object({
  ...envelopeEntries,
  type: v.literal('fault'),
  code: v.pipe(Code, v.description('Fault code, e.g. belt-overheat, motor-overcurrent, sensor-lost')),
  severity: v.pipe(v.picklist(FAULT_SEVERITIES), v.description('critical: unsafe to use')),
  vendorCode: v.optional(label(32, 'Manufacturer’s own fault code, as shown on the console')),
  message: v.optional(text(256, 'Human-readable detail')),
});

/** A fault that is no longer present. */
export const FaultClearedEvent = v.object({
  ...envelopeEntries,
  type: v.literal('fault-cleared'),
  code: v.pipe(Code, v.description('The fault code that cleared')),
});

/** Maintenance started or finished at the machine (a technician's key or service menu). */
export const MaintenanceEvent = v.object({
  ...envelopeEntries,
  type: v.literal('maintenance'),
  phase: v.pipe(v.picklist(['started', 'finished']), v.description('Maintenance started or finished')),
  ticket: v.optional(label(64, 'Work-order reference')),
  note: v.optional(text(256, 'Technician’s note')),
});

/** A member's app QR token read by the machine's camera: the gateway asks the cloud to `link` them. */
export const QrScannedEvent = v.object({
  ...envelopeEntries,
  type: v.literal('qr-scanned'),
  token: QrToken,
});

/** A member's NFC card tapped on the machine's reader: the gateway asks the cloud to `link` them. */
export const NfcTappedEvent = v.object({
  ...envelopeEntries,
  type: v.literal('nfc-tapped'),
  uid: NfcUid,
});

/** FTMS Fitness Machine Status state changes. */
export const MACHINE_STATES = ['reset', 'started', 'resumed', 'paused', 'stopped', 'stopped-by-safety-key'] as const;

export const MachineStateEvent = v.object({
  ...envelopeEntries,
  type: v.literal('machine-state'),
  state: v.pipe(v.picklist(MACHINE_STATES), v.description('FTMS Fitness Machine Status')),
  by: v.optional(v.pipe(v.picklist(['user', 'control']), v.description('Who caused it: the person or a command'))),
});

/** Targets a machine can be set to (FTMS Control Point), with the telemetry field that carries each. */
export const TARGETS = ['speedMps', 'inclinePct', 'resistanceLevel', 'powerW', 'heartRateBpm'] as const;

/** A target changed, on the console or by a command (FTMS "target … changed" status notices). */
export const TargetChangedEvent = v.pipe(
  v.object({
    ...envelopeEntries,
    type: v.literal('target-changed'),
    target: v.pipe(v.picklist(TARGETS), v.description('Which target, named like its telemetry field')),
    value: v.pipe(v.number(), v.description('New target, in the unit of that telemetry field')),
  }),
  v.forward(
    v.partialCheck(
      [['target'], ['value']],
      (event) => {
        const { min, max } = TELEMETRY_MEASURES[event.target];
        return event.value >= min && event.value <= max;
      },
      'Invalid value: outside the bounds of that field',
    ),
    ['value'],
  ),
);

/** A machine event, discriminated by `type`. */
export const MachineEvent = v.pipe(
  v.variant('type', [
    FaultEvent,
    FaultClearedEvent,
    MaintenanceEvent,
    QrScannedEvent,
    NfcTappedEvent,
    MachineStateEvent,
    TargetChangedEvent,
  ]),
  v.title('MachineEvent'),
  v.description(
    'Something that happened at a machine: fault, fault cleared, maintenance, a QR token or NFC card presented ' +
      'at the machine, an FTMS machine state change or target change.',
  ),
);
export type MachineEvent = v.InferOutput<typeof MachineEvent>;
export type MachineEventType = MachineEvent['type'];
