import { expect } from 'chai';
import type { Connection } from 'mongoose';
import { createManualClock } from '../../../tools/runtime/clock.ts';
import { asBranchId, asGatewayId } from '../../../protocol/index.ts';
import { connectMongoose, uniqueDbName } from '../../../test/helpers/services.ts';
import { createIdentityStore, type IdentityStore } from '../broker/identities.ts';
import { addGateway, addMachine, revokeIdentity } from '../broker/provisioning.ts';
import { createSourceCheck, type MachineDirectory } from './sources.ts';

const branch = asBranchId('demo');
const gateway = asGatewayId('gw-src-1');

describe('ingest source check (machines provisioned for the gateway, from the identity store)', () => {
  const clock = createManualClock();
  let mongo: Connection;
  let store: IdentityStore;
  let reads = 0;
  // The identity store as cloud.ts hands it to ingest, counting its reads.
  const directory: MachineDirectory = {
    async machinesOf(b, g) {
      reads += 1;
      const machines = await store.list({ role: 'machine', gateway: g });
      return new Set(machines.filter((m) => !m.disabled && m.branches.includes(b)).map((m) => m.id));
    },
  };

  before(async () => {
    mongo = await connectMongoose(uniqueDbName('ingest_sources'));
    store = createIdentityStore(mongo);
    await addGateway({ store }, { id: gateway, branch });
    await addMachine({ store }, { id: 'tm-01', branch, gateway });
  });
  after(async () => {
    await mongo.dropDatabase();
    await mongo.close();
  });

  it('reads a gateway’s machines once per ttl, re-reads at once for a newcomer, and forgets revoked ones', async () => {
    const check = createSourceCheck({ directory, clock, ttlMs: 30_000 });
    expect(await check.unknownAmong(branch, gateway, new Set(['tm-01']))).to.deep.equal(new Set());
    expect(await check.unknownAmong(branch, gateway, new Set(['tm-01']))).to.deep.equal(new Set());
    expect(reads).to.equal(1);

    // Provisioned a moment ago: not in the cached list, so it is read again at once — refusing it would
    // dead-letter records the gateway already acknowledged to the machine.
    await addMachine({ store }, { id: 'tm-02', branch, gateway });
    expect(await check.unknownAmong(branch, gateway, new Set(['tm-02']))).to.deep.equal(new Set());
    expect(reads).to.equal(2);
    // A machine nobody provisioned costs a read per batch, and is refused.
    expect(await check.unknownAmong(branch, gateway, new Set(['tm-01', 'tm-02', 'tm-99']))).to.deep.equal(
      new Set(['tm-99']),
    );
    expect(reads).to.equal(3);

    await revokeIdentity({ store }, 'tm-01');
    clock.advance(30_000);
    expect(await check.unknownAmong(branch, gateway, new Set(['tm-01']))).to.deep.equal(new Set(['tm-01']));
    // Another branch's view of the same gateway id holds nothing.
    expect(await check.unknownAmong(asBranchId('other'), gateway, new Set(['tm-02']))).to.deep.equal(
      new Set(['tm-02']),
    );
  });

  it('fails (so the batch is not acked) when the directory cannot be read, and reads again next time', async () => {
    let fail = true;
    const flaky: MachineDirectory = {
      machinesOf: (b, g) => (fail ? Promise.reject(new Error('mongo down')) : directory.machinesOf(b, g)),
    };
    const check = createSourceCheck({ directory: flaky, clock });
    let error: unknown;
    await check.unknownAmong(branch, gateway, new Set(['tm-02'])).catch((err: unknown) => {
      error = err;
    });
    expect((error as Error).message).to.equal('mongo down');
    fail = false;
    expect(await check.unknownAmong(branch, gateway, new Set(['tm-02']))).to.deep.equal(new Set());
  });
});
