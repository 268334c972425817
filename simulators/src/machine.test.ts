import { expect } from 'chai';
import { createEnvelopeStamper } from '../../protocol/envelope.ts';
import { asMachineId } from '../../protocol/ids.ts';
import { parsePayload, type PayloadName } from '../../protocol/payloads.ts';
import { createSimMachine, toPayload, type OutgoingKind } from './machine.ts';
import { SIMULATED_MACHINE_TYPES, machineIdAt, typeAt } from './machines/index.ts';
import { createRng, deriveSeed } from './random.ts';

const PAYLOAD_OF: Record<OutgoingKind | 'meta', PayloadName> = {
  meta: 'MachineMeta',
  status: 'MachineStatus',
  telemetry: 'Telemetry',
  workout: 'Workout',
  event: 'MachineEvent',
};

const START = Date.UTC(2026, 10, 26, 7, 0, 0);

/** Runs one machine for `ticks` one-second ticks on a manual clock; every payload is parsed on the way. */
function run(index: number, seed: number, ticks: number) {
  let now = START;
  const id = machineIdAt(index);
  const machine = createSimMachine({
    id,
    type: typeAt(index),
    seed,
    ordinal: 1,
    tickS: 1,
    telemetryIntervalMs: 1000,
    nowMs: now,
  });
  const stamper = createEnvelopeStamper({ source: asMachineId(id), now: () => now });
  const out: { kind: OutgoingKind | 'meta'; payload: Record<string, unknown> }[] = [];
  const failures: string[] = [];
  const emit = (kind: OutgoingKind | 'meta', body: Record<string, unknown>) => {
    const payload = toPayload(stamper, kind, body, 0);
    const parsed = parsePayload(PAYLOAD_OF[kind], JSON.stringify(payload));
    if (!parsed.ok) failures.push(`${id} ${kind}: ${JSON.stringify(parsed)}`);
    else if (parsed.unknownKeys.length > 0) failures.push(`${id} ${kind}: unknown ${parsed.unknownKeys.join()}`);
    out.push({ kind, payload });
  };
  emit('meta', machine.meta);
  emit('status', { status: machine.status, since: machine.statusSince });
  for (let i = 0; i < ticks; i++) {
    now += 1000;
    for (const message of machine.tick(now)) emit(message.kind, message.body);
  }
  return { machine, out, failures };
}

const of = (out: ReturnType<typeof run>['out'], kind: OutgoingKind | 'meta') =>
  out.filter((m) => m.kind === kind).map((m) => m.payload);

describe('simulated machine behaviour', function () {
  it('produces only payloads the protocol schemas accept, for every machine type, over an hour each', function () {
    // One machine of every simulated type; 1 h of 1 Hz samples each.
    const indices = SIMULATED_MACHINE_TYPES.map((type) => [...Array(20).keys()].find((i) => typeAt(i) === type)!);
    for (const index of indices) {
      const { machine, out, failures } = run(index, 99, 3600);
      expect(failures, machine.id).to.deep.equal([]);
      const fields = new Set(machine.meta.fields);
      for (const sample of of(out, 'telemetry')) {
        for (const key of Object.keys(sample)) {
          if (!['msgId', 'source', 'bootId', 'seq', 'ts', 'v', 'type'].includes(key)) {
            expect(fields.has(key), `${machine.id}: ${key} not in meta.fields`).to.equal(true);
          }
        }
      }
      // Sessions alternate with idle time, each one announced by a status and a machine-state event.
      const statuses = of(out, 'status').map((s) => s.status);
      expect(statuses.filter((s) => s === 'in_use').length, machine.id).to.be.at.least(2);
      expect(of(out, 'workout').length, machine.id).to.be.at.least(3);
      expect(new Set(of(out, 'event').map((e) => e.state))).to.deep.equal(new Set(['started', 'stopped']));
    }
  });

  it('keeps cardio figures within the machine’s ranges and physically consistent', function () {
    const index = [...Array(20).keys()].find((i) => typeAt(i) === 'treadmill')!;
    const { machine, out } = run(index, 3, 7200);
    const speedRange = machine.meta.ranges!.speedMps!;
    let lastDistance = 0;
    for (const sample of of(out, 'telemetry')) {
      if (sample.trainingStatus === 'idle') {
        lastDistance = 0;
        continue;
      }
      const speed = sample.speedMps as number;
      expect(speed).to.be.at.most(speedRange.max);
      expect(sample.heartRateBpm).to.be.within(40, 210);
      // distance never runs backwards within a session, and grows by at most one second at top speed
      const distance = sample.distanceM as number;
      expect(distance).to.be.at.least(lastDistance);
      expect(distance - lastDistance).to.be.at.most(Math.ceil(speedRange.max) + 1);
      lastDistance = distance;
    }
    for (const interval of of(out, 'workout')) {
      expect(interval.segment).to.equal('interval');
      const durationS = ((interval.endedAt as number) - (interval.startedAt as number)) / 1000;
      expect(durationS).to.be.greaterThan(0);
      // average speed × duration ≈ distance (within a metre per second of rounding)
      const implied = (interval.avgSpeedMps as number) * durationS;
      expect(Math.abs(implied - (interval.distanceM as number))).to.be.below(durationS * 0.02 + 2);
      expect(interval.maxHeartRateBpm).to.be.at.least(interval.avgHeartRateBpm as number);
    }
  });

  it('reports strength sets whose repetitions, tempo and load match the telemetry', function () {
    const index = [...Array(20).keys()].find((i) => typeAt(i) === 'selectorised')!;
    const { machine, out } = run(index, 8, 3600);
    const stack = machine.meta.ranges!.loadKg!;
    const sets = of(out, 'workout');
    expect(sets.length).to.be.at.least(3);
    for (const set of sets) {
      expect(set.segment).to.equal('set');
      const details = set.repDetails as { romCm: number; concentricS: number; eccentricS: number }[];
      expect(details).to.have.length(set.reps as number);
      expect(set.loadKg).to.be.within(stack.min, stack.max);
      expect(((set.loadKg as number) - stack.min) % stack.step).to.equal(0);
      const avgConcentric = details.reduce((sum, rep) => sum + rep.concentricS, 0) / details.length;
      expect((set.tempo as { concentricS: number }).concentricS).to.be.closeTo(avgConcentric, 0.01);
    }
    // Fatigue: in most sets the last lift is slower than the first.
    const slowing = sets.filter((set) => {
      const details = set.repDetails as { concentricS: number }[];
      return details.at(-1)!.concentricS > details[0]!.concentricS;
    });
    expect(slowing.length / sets.length).to.be.greaterThan(0.5);
    const lifting = of(out, 'telemetry').filter((s) => s.phase === 'concentric');
    expect(lifting.every((s) => (s.velocityMps as number) >= 0 && s.loadKg !== undefined)).to.equal(true);
  });

  it('repeats itself for one seed and differs for another', function () {
    const strip = (index: number, seed: number) =>
      run(index, seed, 900).out.map(({ kind, payload }) => {
        const { msgId: _m, bootId: _b, ...rest } = payload;
        return { kind, rest };
      });
    for (const index of [0, 2, 5]) {
      expect(strip(index, 77)).to.deep.equal(strip(index, 77));
      expect(strip(index, 77)).to.not.deep.equal(strip(index, 78));
    }
  });

  it('derives unrelated generators from neighbouring seeds and names', function () {
    const first = (seed: number, name: string) => createRng(deriveSeed(seed, name)).next();
    const values = [first(1, 'a'), first(2, 'a'), first(1, 'b'), first(2, 'b')];
    expect(new Set(values).size).to.equal(4);
    const rng = createRng(5);
    const draws = Array.from({ length: 10_000 }, () => rng.int(1, 6));
    expect(Math.min(...draws)).to.equal(1);
    expect(Math.max(...draws)).to.equal(6);
    const normals = Array.from({ length: 10_000 }, () => rng.normal(10, 2));
    const mean = normals.reduce((a, b) => a + b, 0) / normals.length;
    expect(mean).to.be.closeTo(10, 0.1);
  });
});
