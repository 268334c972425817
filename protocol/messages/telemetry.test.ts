import { expect } from 'chai';
import { MACHINE_TYPES, machineCategory } from './machine-type.ts';
import { TELEMETRY_FIELDS, TELEMETRY_FIELDS_BY_TYPE, TELEMETRY_MEASURES } from './telemetry.ts';
import type { MeasureSpec } from './telemetry.ts';

describe('protocol/messages/telemetry', () => {
  it('lists the FTMS fields of each cardio machine type and none of the others', () => {
    expect(TELEMETRY_FIELDS_BY_TYPE.rower).to.include.members(['strokeRateSpm', 'strokes', 'paceSPer500m']);
    expect(TELEMETRY_FIELDS_BY_TYPE.rower).not.to.include('speedMps');
    expect(TELEMETRY_FIELDS_BY_TYPE['indoor-bike']).to.include.members(['cadenceRpm', 'powerW', 'resistanceLevel']);
    expect(TELEMETRY_FIELDS_BY_TYPE.treadmill).to.include.members(['speedMps', 'inclinePct', 'beltForceN']);
    expect(TELEMETRY_FIELDS_BY_TYPE['cross-trainer']).to.include.members(['stepRateSpm', 'strides', 'direction']);
    expect(TELEMETRY_FIELDS_BY_TYPE.selectorised).to.include.members(['reps', 'loadKg', 'romCm', 'tempo']);
    expect(TELEMETRY_FIELDS_BY_TYPE.functional).to.include.members(['exercise', 'rounds']);
    for (const type of MACHINE_TYPES) {
      expect(TELEMETRY_FIELDS_BY_TYPE[type]).to.include.members(['heartRateBpm', 'energyKj', 'elapsedS']);
      expect(TELEMETRY_FIELDS_BY_TYPE[type]).not.to.include.members(['msgId', 'type']);
    }
  });

  it('has a unit and sane bounds for every numeric field, and every field belongs to a type', () => {
    for (const [field, spec] of Object.entries(TELEMETRY_MEASURES)) {
      expect(spec.unit, field).to.not.equal('');
      expect(spec.min, field).to.be.below(spec.max);
      expect(TELEMETRY_FIELDS, field).to.include(field);
    }
  });

  it('lets every numeric field be 0, so a machine reporting 0 (e.g. heart rate without contact) is never refused', () => {
    for (const [field, spec] of Object.entries(TELEMETRY_MEASURES)) expect(spec.min, field).to.be.at.most(0);
  });

  it('bounds FTMS fields by their wire type’s range', () => {
    expect(TELEMETRY_MEASURES.heartRateBpm).to.include({ min: 0, max: 255 });
    expect(TELEMETRY_MEASURES.powerW).to.include({ min: -32_768, max: 32_767 });
    expect(TELEMETRY_MEASURES.strokeRateSpm).to.include({ min: 0, max: 127.5 });
    expect(TELEMETRY_MEASURES.metabolicEquivalent).to.include({ min: 0, max: 25.5 });
    // uint16 in 0.01 km/h, in m/s: 655.35 / 3.6.
    expect(TELEMETRY_MEASURES.speedMps.max).to.be.at.least(655.35 / 3.6);
    // uint16 kcal in kJ.
    expect(TELEMETRY_MEASURES.energyKj.max).to.be.at.least(65_535 * 4.184);
    for (const [field, spec] of Object.entries(TELEMETRY_MEASURES) as [string, MeasureSpec][]) {
      if (spec.ftms === undefined)
        expect(['reps', 'loadKg', 'romCm', 'positionCm', 'velocityMps', 'rounds']).to.include(field);
    }
  });

  it('sorts machine types into categories', () => {
    expect(MACHINE_TYPES.map(machineCategory)).to.deep.equal([
      'cardio',
      'cardio',
      'cardio',
      'cardio',
      'strength',
      'strength',
      'functional',
    ]);
  });
});
