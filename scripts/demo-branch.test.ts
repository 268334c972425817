import { mkdir, mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { testServices } from '../test/helpers/services.ts';
import { bearer, createTestAccount, startTestCloud, tokenFromEmail, type TestCloud } from '../test/helpers/accounts.ts';
import { createIdentityStore } from '../cloud/src/broker/identities.ts';
import { verifySecret } from '../tools/mqtt/secrets.ts';
import { loadEnrolment } from '../edge-gateway/src/enrolment/credentials.ts';
import { provisionDemoBranch } from './demo-branch.ts';

describe('npm start: the demo branch’s provisioning', function () {
  this.timeout(60_000);
  let dataDir: string;
  let tc: TestCloud;

  beforeEach(async () => {
    dataDir = await mkdtemp(path.join(os.tmpdir(), 'nxg-demo-branch-'));
    tc = await startTestCloud({ dbPrefix: 'demo_branch' });
  });
  afterEach(async () => {
    await tc.mongo.dropDatabase().catch(() => undefined);
    await tc.stop();
    await rm(dataDir, { recursive: true, force: true });
  });

  const provision = () =>
    provisionDemoBranch({
      mongoUrl: `${testServices().mongoUrl}/${tc.mongo.name}`,
      dataDir,
      apiUrl: tc.url,
      // The test cloud mails through an SMTP capture rather than into a folder.
      verificationToken: (email) => tokenFromEmail(tc, email, 'verify-email'),
      branch: 'demo',
      machines: 3,
    });

  it('sets up the branch, enrols the gateway, adds QR door readers and a member; resumes when interrupted', async () => {
    // The summary is written last; a directory in its place makes the first run fail right there, as a Ctrl-C
    // between the rest and the summary would.
    const summary = path.join(dataDir, 'demo-branch', 'credentials.json');
    await mkdir(summary, { recursive: true });
    let interrupted: unknown;
    await provision().catch((err: unknown) => (interrupted = err));
    expect(interrupted).to.be.instanceOf(Error);
    const store = createIdentityStore(tc.mongo);
    expect((await store.list()).map((i) => i.id)).to.include.members(['gw-demo', 'demo-observer']);

    await rm(summary, { recursive: true });
    const demo = await provision();
    expect(demo).to.deep.include({ fresh: true, gatewayId: 'gw-demo', machineCount: 3 });
    expect(demo.legacy).to.equal(undefined);

    // The branch document, with a time zone and opening hours, in C1's store.
    const branch = await tc.branches.get('demo');
    expect(branch?.timeZone).to.be.a('string');
    expect(branch?.openingHours.monday).to.deep.equal([{ open: '00:00', close: '24:00' }]);

    // The gateway enrolled once with its one-time token: its credentials are the broker identity's.
    const enrolment = await loadEnrolment(demo.gatewayDataDir);
    expect(enrolment).to.include({ gateway: 'gw-demo', branch: 'demo' });
    expect(verifySecret(enrolment!.secret, (await store.find('gw-demo'))!.secretHash)).to.equal(true);
    expect((await stat(path.join(demo.gatewayDataDir, 'enrolment.json'))).mode & 0o077).to.equal(0);

    // Every machine secret handed to the simulator matches what the store holds.
    expect(verifySecret(demo.observer.secret, (await store.find(demo.observer.id))!.secretHash)).to.equal(true);
    const machines = JSON.parse(await readFile(demo.simulatorCredentialsFile, 'utf8')) as {
      id: string;
      secret: string;
    }[];
    expect(machines).to.have.length(3);
    for (const m of machines) expect(verifySecret(m.secret, (await store.find(m.id))!.secretHash)).to.equal(true);

    // Two QR door readers on files, in the gateway's configuration.
    expect(demo.scanners.map((s) => [s.reader, s.action])).to.deep.equal([
      ['door-in', 'check-in'],
      ['door-out', 'check-out'],
    ]);
    for (const s of demo.scanners) expect((await stat(s.file)).isFile()).to.equal(true);
    const admin = await createTestAccount(tc, { role: 'admin' });
    const listed = await fetch(`${tc.url}/api/branches/demo/readers`, { headers: bearer(admin.accessToken) });
    const readers = ((await listed.json()) as { items: Record<string, string>[] }).items;
    expect(readers.map((r) => [r.reader, r.kind, r.action, r.gateway])).to.have.deep.members([
      ['door-in', 'qr', 'check-in', 'gw-demo'],
      ['door-out', 'qr', 'check-out', 'gw-demo'],
    ]);

    // The member logs in, belongs to the branch and gets a QR token.
    const login = await fetch(`${tc.url}/api/auth/login`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ email: demo.member!.email, password: demo.member!.password }),
    });
    expect(login.status).to.equal(200);
    const { accessToken } = (await login.json()) as { accessToken: string };
    const qr = await fetch(`${tc.url}/api/access/qr-token`, { headers: { Authorization: `Bearer ${accessToken}` } });
    expect(qr.status).to.equal(200);
    const mine = await fetch(`${tc.url}/api/users/branches`, { headers: { Authorization: `Bearer ${accessToken}` } });
    const demoMembership = ((await mine.json()) as { items: { branchId: string; status?: string }[] }).items.find(
      (m) => m.branchId === 'demo',
    );
    expect(demoMembership?.status ?? 'active', 'an active membership, granted').to.equal('active');
    expect((await stat(demo.member!.file)).mode & 0o077).to.equal(0);
    expect(await stat(path.join(dataDir, 'demo-branch', 'pending.json')).catch(() => 'gone')).to.equal('gone');

    // And a third start reuses it all.
    expect(await provision()).to.deep.include({ fresh: false, observer: demo.observer, member: demo.member });
  });

  it('says how to start afresh when an interrupted start spent the token but lost the answer', async () => {
    // A first run that fails at its very end (the summary's place taken), as if it had also stopped between the
    // cloud's enrolment answer and the enrolment file.
    const summary = path.join(dataDir, 'demo-branch', 'credentials.json');
    await mkdir(summary, { recursive: true });
    await provision().catch(() => undefined);
    await rm(summary, { recursive: true });
    await rm(path.join(dataDir, 'gateway', 'enrolment.json'));
    let error: unknown;
    await provision().catch((err: unknown) => (error = err));
    expect((error as Error).message).to.match(
      /gw-demo is enrolled but .* is missing.*remove the demo's data directory/,
    );
  });

  it('refuses, with a way out, identities an unknown earlier provisioning left with other secrets', async () => {
    const first = await provision();
    await rm(path.join(dataDir, 'demo-branch'), { recursive: true });
    let error: unknown;
    await provision().catch((err: unknown) => (error = err));
    expect((error as Error).message).to.match(/already exists with another secret: remove the demo's data directory/);
    expect(first.fresh).to.equal(true);
  });
});
