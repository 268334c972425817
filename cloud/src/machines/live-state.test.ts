import { expect } from 'chai';
import fc from 'fast-check';
import {
  asBranchId,
  asGatewayId,
  asMachineId,
  gatewayStateSupersedes,
  isNewer,
  statusSupersedes,
} from '../../../protocol/index.ts';
import type {
  BootId,
  GatewayState,
  MachineId,
  MachineMeta,
  MachineStatus,
  MsgId,
  SourceId,
  Telemetry,
} from '../../../protocol/index.ts';
import { connectTestRedis, type TestRedis } from '../../../test/helpers/services.ts';
import { createLiveState, liveKeys, type LiveState } from './live-state.ts';

const branch = asBranchId('demo');
const gateway = asGatewayId('gw-demo-1');
const T0 = Date.UTC(2026, 10, 24, 19, 40, 0);

type Order = { bootId: string; seq: number; ts: number; conn: number; lastWill: boolean };

function status(o: Order, value: MachineStatus['status'] = 'available', since?: number): MachineStatus {
  return {
    msgId: `msg-${o.bootId}-${o.seq}-xxxxxxxx` as MsgId,
    source: 'row-03' as SourceId,
    bootId: o.bootId as BootId,
    seq: o.seq,
    ts: o.ts,
    v: 0,
    status: o.lastWill ? 'offline' : value,
    conn: o.conn,
    ...(o.lastWill ? { lastWill: true as const } : since === undefined ? {} : { since }),
  };
}

function meta(o: { bootId: string; seq: number; ts: number }, displayName: string): MachineMeta {
  return {
    msgId: `meta-${o.bootId}-${o.seq}-xxxxxxx` as MsgId,
    source: 'row-03' as SourceId,
    bootId: o.bootId as BootId,
    seq: o.seq,
    ts: o.ts,
    v: 0,
    type: 'rower',
    manufacturer: 'Concept2',
    model: 'RowErg',
    firmware: '1.0.0',
    displayName,
    fields: ['powerW'],
  };
}

function sample(o: { bootId: string; seq: number; ts: number }, powerW: number): Telemetry {
  return {
    msgId: `tel-${o.bootId}-${o.seq}-xxxxxxxx` as MsgId,
    source: 'row-03' as SourceId,
    bootId: o.bootId as BootId,
    seq: o.seq,
    ts: o.ts,
    v: 0,
    type: 'rower',
    powerW,
  };
}

// Small ranges, so that equal boots, seqs, times and connections are common.
const order = fc.record({
  bootId: fc.constantFrom('boot-a', 'boot-b'),
  seq: fc.integer({ min: 0, max: 4 }),
  ts: fc.integer({ min: T0, max: T0 + 4 }),
  conn: fc.integer({ min: 0, max: 2 }),
  lastWill: fc.boolean(),
});

describe('live machine state in Redis (real redis-server, Lua compare-and-set)', function () {
  let redis: TestRedis;
  let live: LiveState;
  let n = 0;
  // A fresh machine per property run, so runs never see each other's state.
  const nextMachine = () => asMachineId(`m-${++n}`);
  const applyStatus = (machine: MachineId, s: MachineStatus, nowMs: number) =>
    live.applyMachine({ branch, machine, gateway, status: s }, nowMs);

  before(async () => {
    redis = await connectTestRedis();
    live = createLiveState(redis.client);
  });
  after(() => redis.close());

  it('applies a status exactly when statusSupersedes says so (the Lua script mirrors protocol/)', async () => {
    await fc.assert(
      fc.asyncProperty(order, order, async (held, incoming) => {
        const machine = nextMachine();
        await live.applyMachine({ branch, machine, gateway, status: status(held) }, T0);
        const result = await live.applyMachine({ branch, machine, gateway, status: status(incoming) }, T0);
        expect(result.statusApplied).to.equal(statusSupersedes(status(incoming), status(held)));
      }),
      { numRuns: 300 },
    );
  });

  it('applies meta and samples exactly when isNewer says so', async () => {
    const envelope = fc.record({
      bootId: fc.constantFrom('boot-a', 'boot-b'),
      seq: fc.integer({ min: 0, max: 3 }),
      ts: fc.integer({ min: T0, max: T0 + 3 }),
    });
    await fc.assert(
      fc.asyncProperty(envelope, envelope, async (held, incoming) => {
        const machine = nextMachine();
        await live.applyMachine({ branch, machine, gateway, meta: meta(held, 'Old'), telemetry: sample(held, 1) }, T0);
        const result = await live.applyMachine(
          { branch, machine, gateway, meta: meta(incoming, 'New'), telemetry: sample(incoming, 2) },
          T0,
        );
        const expected = isNewer(meta(incoming, 'New'), meta(held, 'Old'));
        expect(result.metaApplied).to.equal(expected);
        expect(result.sampleApplied).to.equal(expected);
        const [view] = await live.listBranch(branch).then((all) => all.filter((v) => v.machine === machine));
        expect(view!.displayName).to.equal(expected ? 'New' : 'Old');
        expect(view!.metrics).to.deep.equal({ type: 'rower', powerW: expected ? 2 : 1 });
      }),
      { numRuns: 100 },
    );
  });

  it('applies a gateway state exactly when gatewayStateSupersedes says so', async () => {
    const gwOrder = fc.record({
      online: fc.boolean(),
      bootId: fc.constantFrom('boot-a', 'boot-b'),
      conn: fc.integer({ min: 0, max: 2 }),
      ts: fc.integer({ min: T0, max: T0 + 3 }),
    });
    const stateOf = (o: { online: boolean; bootId: string; conn: number; ts: number }): GatewayState =>
      o.online
        ? ({
            online: true,
            v: 0,
            bootId: o.bootId,
            conn: o.conn,
            since: T0 - 1,
            ts: o.ts,
            version: '0.1.0',
            queue: { access: { depth: 0 }, records: { depth: 0 }, telemetry: { depth: 0 }, full: false },
            readers: [],
            machinesConnected: 0,
          } as unknown as GatewayState)
        : ({ online: false, v: 0, bootId: o.bootId, conn: o.conn, ts: o.ts } as unknown as GatewayState);
    await fc.assert(
      fc.asyncProperty(gwOrder, gwOrder, async (held, incoming) => {
        const gw = asGatewayId(`gw-${++n}`);
        await live.applyGateway(branch, gw, stateOf(held), T0);
        const result = await live.applyGateway(branch, gw, stateOf(incoming), T0);
        expect(result.applied).to.equal(gatewayStateSupersedes(stateOf(incoming), stateOf(held)));
        expect(result.onlineChanged).to.equal(result.applied && held.online !== incoming.online);
      }),
      { numRuns: 200 },
    );
  });

  it('ignores an older status after a newer one, and lets a new boot with a later time win', async () => {
    const machine = nextMachine();
    const newer = await applyStatus(
      machine,
      status({ bootId: 'b1', seq: 5, ts: T0 + 5, conn: 1, lastWill: false }, 'in_use', T0 + 5),
      T0 + 10,
    );
    expect(newer).to.include({ changed: true, statusApplied: true });
    const older = await applyStatus(
      machine,
      status({ bootId: 'b1', seq: 4, ts: T0 + 4, conn: 1, lastWill: false }, 'available', T0 + 4),
      T0 + 11,
    );
    expect(older).to.include({ changed: false, statusApplied: false });
    expect(older.availability).to.include({ status: 'in_use', since: T0 + 5 });
    // The machine restarted: a new boot id, seq from 0, a later event time.
    const rebooted = await applyStatus(
      machine,
      status({ bootId: 'b2', seq: 0, ts: T0 + 20, conn: 0, lastWill: false }, 'available', T0 + 20),
      T0 + 21,
    );
    expect(rebooted).to.include({ changed: true, statusApplied: true });
    expect(rebooted.availability).to.include({ status: 'available', since: T0 + 20 });
  });

  it('never lets two writers regress a machine: many statuses applied concurrently end at the newest', async () => {
    const machine = nextMachine();
    const all = Array.from({ length: 60 }, (_, seq) =>
      status({ bootId: 'b1', seq, ts: T0 + seq, conn: 0, lastWill: false }, seq % 2 ? 'in_use' : 'available', T0 + seq),
    );
    // Two "cloud nodes": two connections with the same key prefix, applying the statuses in opposite orders at once.
    const second = redis.client.duplicate();
    try {
      const otherNode = createLiveState(second);
      await Promise.all([
        ...all.map((s) => otherNode.applyMachine({ branch, machine, gateway, status: s }, T0)),
        ...[...all].reverse().map((s) => live.applyMachine({ branch, machine, gateway, status: s }, T0)),
      ]);
      const view = (await live.listBranch(branch)).find((v) => v.machine === machine);
      expect(view).to.include({ status: 'in_use', since: T0 + 59 });
    } finally {
      second.disconnect();
    }
  });

  it('keeps the since of an unchanged status, and dates a last will by its fallback', async () => {
    const machine = nextMachine();
    await applyStatus(
      machine,
      status({ bootId: 'b', seq: 1, ts: T0 + 1, conn: 0, lastWill: false }, 'available', T0),
      T0,
    );
    const same = await applyStatus(
      machine,
      { ...status({ bootId: 'b', seq: 2, ts: T0 + 2, conn: 0, lastWill: false }, 'available') },
      T0 + 2,
    );
    expect(same.availability).to.include({ status: 'available', since: T0 });
    const will = await live.applyMachine(
      {
        branch,
        machine,
        gateway,
        status: status({ bootId: 'b', seq: 0, ts: T0 - 100, conn: 0, lastWill: true }),
        statusFallbackSince: T0 + 50,
      },
      T0 + 60,
    );
    expect(will).to.include({ changed: true, statusApplied: true });
    expect(will.availability).to.include({ status: 'offline', since: T0 + 50 });
  });

  it('shows a machine unknown while its gateway is offline, and its own status again when it returns', async () => {
    const machine = nextMachine();
    const gw = asGatewayId('gw-unknown-test');
    await live.applyMachine(
      {
        branch,
        machine,
        gateway: gw,
        seenTs: T0 + 3,
        status: status({ bootId: 'b', seq: 1, ts: T0 + 1, conn: 0, lastWill: false }, 'in_use', T0),
      },
      T0 + 3,
    );
    const online = {
      online: true,
      v: 0,
      bootId: 'g1',
      conn: 1,
      since: T0,
      ts: T0,
      version: '0.1.0',
      queue: { access: { depth: 0 }, records: { depth: 0 }, telemetry: { depth: 0 }, full: false },
      readers: [],
      machinesConnected: 1,
    } as unknown as GatewayState;
    expect(await live.applyGateway(branch, gw, online, T0)).to.deep.equal({ applied: true, onlineChanged: false });
    const offline = { online: false, v: 0, bootId: 'g1', conn: 1, ts: T0, lastWill: true } as unknown as GatewayState;
    expect(await live.applyGateway(branch, gw, offline, T0 + 100)).to.deep.equal({
      applied: true,
      onlineChanged: true,
    });
    let [view] = await live.listBranch(branch, gw);
    expect(view).to.include({ machine, status: 'unknown', since: T0 + 100, gateway: gw, lastSeen: T0 + 3 });
    // A late will of the same connection changes nothing; a new connection's birth brings the machine back.
    expect((await live.applyGateway(branch, gw, offline, T0 + 200)).applied).to.equal(false);
    const reborn = { ...online, conn: 2, ts: T0 + 300, since: T0 + 300 } as GatewayState;
    expect(await live.applyGateway(branch, gw, reborn, T0 + 300)).to.deep.equal({ applied: true, onlineChanged: true });
    [view] = await live.listBranch(branch, gw);
    expect(view).to.include({ status: 'in_use', since: T0 });
    // A cleared retained state removes the gateway's state.
    await live.applyGateway(branch, gw, undefined, T0 + 400);
    expect(await redis.client.exists(liveKeys.gateway(branch, gw))).to.equal(0);
  });
});
