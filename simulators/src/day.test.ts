import { expect } from 'chai';
import { createEnvelopeStamper } from '../../protocol/envelope.ts';
import { asMachineId } from '../../protocol/ids.ts';
import { parsePayload, type PayloadName } from '../../protocol/payloads.ts';
import { DEFAULT_DAY, busynessAt, hourAt, meanIdleS, utilisationAt } from './day.ts';
import { createSimMachine, toPayload, type MemberEvent, type OutgoingKind } from './machine.ts';
import { machineIdAt, typeAt } from './machines/index.ts';

const PAYLOAD_OF: Record<OutgoingKind, PayloadName> = {
  status: 'MachineStatus',
  telemetry: 'Telemetry',
  workout: 'Workout',
  event: 'MachineEvent',
};

/** One machine for `hours` simulated hours in 1 s ticks from `startHour`, with faults and power-offs. */
function day(index: number, seed: number, startHour: number, hours: number) {
  let now = Date.UTC(2026, 10, 26, 0, 0, 0) + startHour * 3_600_000;
  const id = machineIdAt(index);
  const members: MemberEvent[] = [];
  const machine = createSimMachine({
    id,
    type: typeAt(index),
    seed,
    ordinal: 1,
    tickS: 1,
    nowMs: now,
    day: { startHour },
    members: 50,
    trouble: { faultsPerHour: 0.5, outagesPerHour: 0.5 },
    onMember: (event) => members.push(event),
  });
  const stamper = createEnvelopeStamper({ source: asMachineId(id), now: () => now });
  const out: { kind: OutgoingKind; payload: Record<string, unknown> }[] = [];
  const outages: number[] = [];
  const invalid: string[] = [];
  let busyS = 0;
  for (let i = 0; i < hours * 3600; i++) {
    now += 1000;
    for (const message of machine.tick(now)) {
      const payload = toPayload(stamper, message.kind, message.body, 0);
      const parsed = parsePayload(PAYLOAD_OF[message.kind], JSON.stringify(payload));
      if (!parsed.ok) invalid.push(`${message.kind}: ${JSON.stringify(parsed)}`);
      out.push({ kind: message.kind, payload });
    }
    const outage = machine.takeOutage();
    if (outage !== undefined) outages.push(outage);
    if (machine.status === 'in_use') busyS += 1;
  }
  return { out, members, outages, invalid, busyShare: busyS / (hours * 3600) };
}

describe('the gym’s day', function () {
  it('is busiest in the evening rush, busy in the morning, quiet at night', function () {
    const at = (h: number) => utilisationAt(DEFAULT_DAY, h);
    expect(at(18.25)).to.be.above(at(7.25));
    expect(at(7.25)).to.be.above(at(10));
    expect(at(10)).to.be.above(at(3));
    expect(at(18.25)).to.be.at.most(DEFAULT_DAY.max);
    expect(at(3)).to.be.at.least(DEFAULT_DAY.min);
    expect(busynessAt(DEFAULT_DAY, 23.9)).to.be.closeTo(busynessAt(DEFAULT_DAY, -0.1), 1e-9);
    // Idle gaps shrink as the floor fills: S·(1 − u)/u.
    expect(meanIdleS(DEFAULT_DAY, 18.25, 1200)).to.be.below(meanIdleS(DEFAULT_DAY, 10, 1200));
    expect(hourAt({ startHour: 23, timeScale: 60 }, 120)).to.be.closeTo(1, 1e-9);
  });

  it('fills the machines as the day says: the rush hour much busier than the night', function () {
    const busy = (startHour: number) =>
      [0, 1, 2, 3, 4, 5].reduce((sum, i) => sum + day(i, 3, startHour, 1).busyShare, 0) / 6;
    const rush = busy(17.75);
    const night = busy(2);
    expect(rush).to.be.above(0.5);
    expect(night).to.be.below(0.35);
    expect(rush).to.be.above(night + 0.3);
  });

  it('links and unlinks members, reports faults and power-offs, all valid, and replays exactly for a seed', function () {
    const a = day(0, 11, 17, 3);
    const b = day(0, 11, 17, 3);
    const c = day(0, 12, 17, 3);
    expect(a.invalid).to.deep.equal([]);
    const links = a.members.filter((e) => e.type === 'link');
    const unlinks = a.members.filter((e) => e.type === 'unlink');
    expect(links.length).to.be.greaterThan(1);
    expect(unlinks.length).to.be.within(links.length - 1, links.length);
    // Each unlink closes the link before it, for the same member.
    unlinks.forEach((u, i) => expect(u.member).to.equal(links[i]!.member));
    const events = a.out.filter((m) => m.kind === 'event').map((m) => m.payload.type);
    expect(events).to.include('machine-state');
    const faults = events.filter((t) => t === 'fault').length;
    const cleared = events.filter((t) => t === 'fault-cleared').length;
    expect(cleared).to.be.within(faults - 1, faults);
    const statuses = a.out.filter((m) => m.kind === 'status').map((m) => m.payload.status);
    if (faults > 0) expect(statuses).to.include('maintenance');
    // Same seed: the same members, the same payload bodies (envelopes differ: msgIds are never drawn).
    const bodies = (r: typeof a) =>
      r.out.map(({ kind, payload }) => {
        const { msgId: _m, bootId: _b, ts: _t, ...rest } = payload;
        return [kind, rest];
      });
    expect(b.members).to.deep.equal(a.members);
    expect(b.outages).to.deep.equal(a.outages);
    expect(bodies(b)).to.deep.equal(bodies(a));
    expect(bodies(c)).not.to.deep.equal(bodies(a));
  });
});
