import { mkdir, mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import type { Connection } from 'mongoose';
import { connectMongoose, testServices, uniqueDbName } from '../test/helpers/services.ts';
import { createIdentityStore } from '../cloud/src/broker/identities.ts';
import { verifySecret } from '../tools/mqtt/secrets.ts';
import { provisionDemoBranch } from './demo-branch.ts';

describe('npm start: the demo branch’s provisioning', function () {
  this.timeout(30_000);
  let dataDir: string;
  let dbName: string;
  let mongo: Connection;

  beforeEach(async () => {
    dataDir = await mkdtemp(path.join(os.tmpdir(), 'nxg-demo-branch-'));
    dbName = uniqueDbName('demo_branch');
    mongo = await connectMongoose(dbName);
  });
  afterEach(async () => {
    await mongo.dropDatabase();
    await mongo.close();
    await rm(dataDir, { recursive: true, force: true });
  });

  const provision = () =>
    provisionDemoBranch({ mongoUrl: `${testServices().mongoUrl}/${dbName}`, dataDir, branch: 'demo', machines: 3 });

  it('finishes on the next start a provisioning interrupted after its identities were stored', async () => {
    // The summary is written last; a directory in its place makes the first run fail right there, as a Ctrl-C
    // between the identities and the summary would.
    const summary = path.join(dataDir, 'demo-branch', 'credentials.json');
    await mkdir(summary, { recursive: true });
    let interrupted: unknown;
    await provision().catch((err: unknown) => (interrupted = err));
    expect(interrupted).to.be.instanceOf(Error);
    const store = createIdentityStore(mongo);
    expect((await store.list()).map((i) => i.id)).to.include.members(['gw-demo', 'demo-observer']);

    await rm(summary, { recursive: true });
    const demo = await provision();
    expect(demo).to.deep.include({ fresh: true, gatewayId: 'gw-demo', machineCount: 3 });
    // Every secret handed out matches what the store holds (the same secrets as the interrupted run drew).
    const gatewaySecret = (await readFile(demo.gatewaySecretFile, 'utf8')).trim();
    expect(verifySecret(gatewaySecret, (await store.find('gw-demo'))!.secretHash)).to.equal(true);
    expect(verifySecret(demo.observer.secret, (await store.find(demo.observer.id))!.secretHash)).to.equal(true);
    const machines = JSON.parse(await readFile(demo.simulatorCredentialsFile, 'utf8')) as {
      id: string;
      secret: string;
    }[];
    expect(machines).to.have.length(3);
    for (const m of machines) expect(verifySecret(m.secret, (await store.find(m.id))!.secretHash)).to.equal(true);
    // Secrets files are private, and the pending secrets are gone once the summary stands.
    expect((await stat(demo.gatewaySecretFile)).mode & 0o077).to.equal(0);
    expect(await stat(path.join(dataDir, 'demo-branch', 'pending.json')).catch(() => 'gone')).to.equal('gone');

    // And a third start reuses it all.
    expect(await provision()).to.deep.include({ fresh: false, observer: demo.observer });
  });

  it('refuses, with a way out, identities an unknown earlier provisioning left with other secrets', async () => {
    const first = await provision();
    await rm(path.join(dataDir, 'demo-branch'), { recursive: true });
    let error: unknown;
    await provision().catch((err: unknown) => (error = err));
    expect((error as Error).message).to.match(/gw-demo already exists with another secret/);
    expect(first.fresh).to.equal(true);
  });
});
