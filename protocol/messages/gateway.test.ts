import { expect } from 'chai';
import { LANES } from '../topics.ts';
import { RECORD_KINDS, RECORD_KIND_LANE, UplinkRecord, laneOf } from './gateway.ts';

describe('protocol/messages/gateway lanes', () => {
  it('queues door scans in the access lane, samples in the telemetry lane and the rest in the records lane', () => {
    expect(laneOf('access-scan')).to.equal('access');
    expect(laneOf('telemetry')).to.equal('telemetry');
    for (const kind of ['meta', 'status', 'workout', 'event', 'offline-decision'] as const) {
      expect(laneOf(kind)).to.equal('records');
    }
    expect(new Set(Object.values(RECORD_KIND_LANE))).to.deep.equal(new Set(LANES));
  });

  it('has a lane for exactly the record kinds of UplinkRecord', () => {
    const kinds = UplinkRecord.options.map((option) => option.entries.kind.literal);
    expect(RECORD_KINDS).to.have.members(kinds);
    expect(RECORD_KINDS).to.have.length(kinds.length);
  });
});
