import { expect } from 'chai';
import { LANES } from '../topics.ts';
import {
  RECORD_KINDS,
  RECORD_KIND_LANE,
  UplinkRecord,
  gatewayStateSupersedes,
  isRecordKind,
  laneOf,
} from './gateway.ts';

describe('protocol/messages/gateway lanes', () => {
  it('queues door scans in the access lane, samples in the telemetry lane and the rest in the records lane', () => {
    expect(laneOf('access-scan')).to.equal('access');
    expect(laneOf('telemetry')).to.equal('telemetry');
    for (const kind of ['meta', 'status', 'workout', 'event', 'offline-decision'] as const) {
      expect(laneOf(kind)).to.equal('records');
    }
    expect(new Set(Object.values(RECORD_KIND_LANE))).to.deep.equal(new Set(LANES));
  });

  it('finds no lane for a string that is not a record kind, Object.prototype members included', () => {
    for (const kind of ['__proto__', 'constructor', 'toString', 'hasOwnProperty', 'heartbeat', '']) {
      expect(laneOf(kind), kind).to.equal(undefined);
      expect(isRecordKind(kind), kind).to.equal(false);
    }
    expect(isRecordKind('telemetry')).to.equal(true);
  });

  it('has a lane for exactly the record kinds of UplinkRecord', () => {
    const kinds = UplinkRecord.options.map((option) => option.entries.kind.literal);
    expect(RECORD_KINDS).to.have.members(kinds);
    expect(RECORD_KINDS).to.have.length(kinds.length);
  });
});

const ts = Date.UTC(2026, 10, 24);
const birth = (bootId: string, conn: number, at = ts) => ({
  online: true as const,
  bootId: bootId as never,
  conn,
  ts: at,
});
const will = (bootId: string, conn: number, at = ts) => ({
  online: false as const,
  bootId: bootId as never,
  conn,
  ts: at,
});

describe('protocol/messages/gateway gatewayStateSupersedes', () => {
  it('applies anything over nothing', () => {
    expect(gatewayStateSupersedes(birth('b1', 0), undefined)).to.equal(true);
    expect(gatewayStateSupersedes(will('b1', 0), undefined)).to.equal(true);
  });

  it('ignores a late will of an earlier connection: it does not override a newer birth', () => {
    // Connection 1 dropped; the gateway reconnected (conn 2) and sent its birth before the broker published the
    // will of connection 1, which was registered earlier (its ts is connection 1's CONNECT).
    expect(gatewayStateSupersedes(will('b1', 1, ts - 60_000), birth('b1', 2, ts))).to.equal(false);
  });

  it('applies the will of the current connection over its birth', () => {
    // The will was composed at CONNECT, before the birth: its ts is older, yet it ends that connection.
    expect(gatewayStateSupersedes(will('b1', 2, ts - 1_000), birth('b1', 2, ts))).to.equal(true);
  });

  it('applies a newer connection’s birth over the previous connection’s will', () => {
    expect(gatewayStateSupersedes(birth('b1', 3, ts), will('b1', 2, ts - 1_000))).to.equal(true);
  });

  it('lets nothing of a connection override its own offline state', () => {
    expect(gatewayStateSupersedes(birth('b1', 2, ts + 5_000), will('b1', 2, ts))).to.equal(false);
    expect(gatewayStateSupersedes(will('b1', 2, ts), will('b1', 2, ts))).to.equal(false);
  });

  it('orders births of one connection by ts', () => {
    expect(gatewayStateSupersedes(birth('b1', 2, ts + 1), birth('b1', 2, ts))).to.equal(true);
    expect(gatewayStateSupersedes(birth('b1', 2, ts), birth('b1', 2, ts))).to.equal(false);
    expect(gatewayStateSupersedes(birth('b1', 2, ts - 1), birth('b1', 2, ts))).to.equal(false);
  });

  it('orders different boots by ts: a will of the previous boot does not override the new boot’s birth', () => {
    expect(gatewayStateSupersedes(will('b1', 7, ts - 300_000), birth('b2', 0, ts))).to.equal(false);
    expect(gatewayStateSupersedes(birth('b2', 0, ts), will('b1', 7, ts - 300_000))).to.equal(true);
  });
});
