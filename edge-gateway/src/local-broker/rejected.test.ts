import { expect } from 'chai';
import { pino } from 'pino';
import { createManualClock } from '../../../tools/runtime/clock.ts';
import { MAX_KEPT_PAYLOAD_BYTES, REJECT_LOG_INTERVAL_MS, createRejectedList } from './rejected.ts';

function capturingLogger() {
  const lines: Record<string, unknown>[] = [];
  const log = pino(
    { level: 'warn' },
    { write: (line: string) => lines.push(JSON.parse(line) as Record<string, unknown>) },
  );
  return { log, lines };
}

describe('edge gateway: rejected list', () => {
  it('logs at most once per reason per interval, then reports how many lines it held back', () => {
    const clock = createManualClock();
    const { log, lines } = capturingLogger();
    const list = createRejectedList({ keep: 10, log, nowMs: () => clock.nowMs() });
    for (let i = 0; i < 5; i++) list.add({ origin: 'machine', reason: 'invalid', source: 'm-01', payload: '{}' });
    list.add({ origin: 'machine', reason: 'not-json', source: 'm-01', payload: 'x' });
    expect(lines.map((l) => l.reason)).to.deep.equal(['invalid', 'not-json']);
    clock.advance(REJECT_LOG_INTERVAL_MS);
    list.add({ origin: 'machine', reason: 'invalid', source: 'm-02', payload: '{}' });
    expect(lines).to.have.length(3);
    expect(lines[2]).to.deep.include({ reason: 'invalid', source: 'm-02', suppressed: 4 });
    expect(list.total).to.equal(7);
    expect(list.counts()).to.deep.equal({ 'machine:invalid': 6, 'machine:not-json': 1 });
  });

  it('keeps only the newest entries, truncates large payloads, and never logs a payload', () => {
    const { log, lines } = capturingLogger();
    const seen: string[] = [];
    const list = createRejectedList({ keep: 3, log, nowMs: () => 1, onRejected: (e) => seen.push(e.reason) });
    for (let i = 0; i < 5; i++) list.add({ origin: 'cloud', reason: `r${i}`, msgId: `id-${i}` });
    expect(list.entries().map((e) => e.reason)).to.deep.equal(['r2', 'r3', 'r4']);
    expect(seen).to.have.length(5);
    const big = Buffer.alloc(MAX_KEPT_PAYLOAD_BYTES + 10, 0x61);
    list.add({ origin: 'machine', reason: 'too-large', payload: big });
    const last = list.entries().at(-1)!;
    expect(last).to.deep.include({ bytes: MAX_KEPT_PAYLOAD_BYTES + 10, truncated: true });
    expect(last.payload).to.have.length(MAX_KEPT_PAYLOAD_BYTES);
    // A buffer of its own: a view into the received payload would keep all 64 KiB of it alive per entry.
    expect(last.payload!.buffer.byteLength).to.equal(MAX_KEPT_PAYLOAD_BYTES);
    expect(last.payload!.buffer).to.not.equal(big.buffer);
    big.fill(0x62);
    expect(last.payload!.every((b) => b === 0x61)).to.equal(true);
    expect(JSON.stringify(lines)).to.not.include('aaaa');
    const none = createRejectedList({ keep: 0, log, nowMs: () => 1 });
    none.add({ origin: 'machine', reason: 'invalid' });
    expect(none.entries()).to.deep.equal([]);
    expect(none.total).to.equal(1);
  });
});
