import { expect } from 'chai';
import { statusSupersedes } from './status.ts';

const ts = Date.UTC(2026, 10, 24);
const status = (bootId: string, conn: number, seq: number, extra: { ts?: number; lastWill?: true } = {}) => ({
  bootId: bootId as never,
  conn,
  seq,
  ts: extra.ts ?? ts + seq,
  ...(extra.lastWill ? { lastWill: true as const } : {}),
});

describe('protocol/messages/status statusSupersedes', () => {
  it('applies anything over nothing', () => {
    expect(statusSupersedes(status('b1', 0, 0), undefined)).to.equal(true);
  });

  it('orders statuses of one connection by seq', () => {
    expect(statusSupersedes(status('b1', 0, 5), status('b1', 0, 4))).to.equal(true);
    expect(statusSupersedes(status('b1', 0, 4), status('b1', 0, 5))).to.equal(false);
  });

  it('applies the will of the current connection although its seq is older', () => {
    // Will registered at CONNECT with seq 10; statuses 11..15 followed on the same connection.
    expect(statusSupersedes(status('b1', 1, 10, { lastWill: true }), status('b1', 1, 15))).to.equal(true);
  });

  it('ignores a late will of an earlier connection', () => {
    expect(statusSupersedes(status('b1', 1, 10, { lastWill: true }), status('b1', 2, 16))).to.equal(false);
  });

  it('applies a new connection over the will of the previous one', () => {
    expect(statusSupersedes(status('b1', 2, 16), status('b1', 1, 10, { lastWill: true }))).to.equal(true);
  });

  it('lets nothing of a connection override its own will', () => {
    expect(statusSupersedes(status('b1', 1, 15), status('b1', 1, 10, { lastWill: true }))).to.equal(false);
  });

  it('orders different boots by event time', () => {
    expect(statusSupersedes(status('b2', 0, 0, { ts: ts + 1_000 }), status('b1', 3, 900, { ts }))).to.equal(true);
    expect(statusSupersedes(status('b1', 1, 10, { lastWill: true, ts }), status('b2', 0, 1, { ts: ts + 1 }))).to.equal(
      false,
    );
  });
});
