import { expect } from 'chai';
import { MACHINE_TYPES, machineCategory } from './machine-type.ts';
import { TELEMETRY_FIELDS, TELEMETRY_FIELDS_BY_TYPE, TELEMETRY_MEASURES } from './telemetry.ts';

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
