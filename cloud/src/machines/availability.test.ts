/**
 * The whole path inside the cloud process: a provisioned gateway publishes batches to the cloud broker over MQTT,
 * ingest stores and acks them, and GET /api/machines/availability shows the branch's machines.
 */
import { expect } from 'chai';
import { createManualClock } from '../../../tools/runtime/clock.ts';
import { asBranchId, asGatewayId, asMachineId, topics } from '../../../protocol/index.ts';
import { createTestAccount, startTestCloud, type TestAccount, type TestCloud } from '../../../test/helpers/accounts.ts';
import { createIdentityStore } from '../broker/identities.ts';
import { addGateway, addMachine, addObserver } from '../broker/provisioning.ts';
import { RECORD_COLLECTIONS } from '../ingest/store.ts';
import { T0, TestGateway, batchId, machineRecords } from '../ingest/testing.ts';
import type { BranchAvailability } from './routes.ts';

const branch = asBranchId('demo');
const gatewayId = asGatewayId('gw-avail-1');

describe('GET /api/machines/availability (startCloud: broker, ingest, Redis live state)', function () {
  this.timeout(40_000);
  const clock = createManualClock(T0 + 120_000);
  let cloud: TestCloud;
  let gw: TestGateway;
  let member: TestAccount;
  let outsider: TestAccount;

  before(async () => {
    // A Redis key prefix of its own: live state from another run or suite never shows up here.
    cloud = await startTestCloud({ clock, dbPrefix: 'availability', env: { AUTH_ACCESS_TOKEN_TTL_S: '3600' } });
    member = await createTestAccount(cloud);
    for (const b of ['demo', 'nowhere']) await cloud.users.services.memberships.join(member.userId, b);
    outsider = await createTestAccount(cloud);
    await cloud.users.services.memberships.join(outsider.userId, 'other');
    const store = createIdentityStore(cloud.mongo);
    const { secret } = await addGateway({ store }, { id: gatewayId, branch });
    for (const id of ['row-03', 'bike-02']) await addMachine({ store }, { id, branch, gateway: gatewayId });
    // Provisioned, but for another branch's gateway: this gateway may not write its records.
    await addGateway({ store }, { id: 'gw-elsewhere', branch: 'other' });
    await addMachine({ store }, { id: 'row-99', branch: 'other', gateway: 'gw-elsewhere' });
    // A TestGateway over the broker's plain listener, with the gateway's credentials.
    gw = await TestGateway.connect(cloud.broker.tcp.url, branch, gatewayId, { username: gatewayId, password: secret });
  });
  after(async () => {
    await gw?.close();
    await cloud?.stop();
  });

  async function availability(
    query: string,
    as: TestAccount | null = member,
  ): Promise<{ status: number; body: unknown }> {
    const res = await fetch(`${cloud.url}/api/machines/availability?${query}`, {
      headers: as ? { Authorization: `Bearer ${as.accessToken}` } : {},
    });
    return { status: res.status, body: await res.json() };
  }

  it('shows a branch only to its members (and staff, admins): 401 without a token, 403 for another branch', async () => {
    expect((await availability('branchId=demo', null)).status).to.equal(401);
    const refused = await availability('branchId=demo', outsider);
    expect(refused.status).to.equal(403);
    expect((refused.body as { machines?: unknown }).machines).to.equal(undefined);
    expect((await availability('branchId=other', outsider)).status).to.equal(200);
    const admin = await createTestAccount(cloud, { role: 'admin' });
    expect((await availability('branchId=demo', admin)).status).to.equal(200);
    // Observers (read-only broker identities) read their branches with HTTP Basic.
    const { secret } = await addObserver(
      { store: createIdentityStore(cloud.mongo) },
      { id: 'ops-1', branches: ['demo'] },
    );
    const basic = (user: string, pass: string) =>
      fetch(`${cloud.url}/api/machines/availability?branchId=demo`, {
        headers: { Authorization: `Basic ${Buffer.from(`${user}:${pass}`).toString('base64')}` },
      }).then((res) => res.status);
    expect(await basic('ops-1', secret)).to.equal(200);
    expect(await basic('ops-1', 'x'.repeat(43))).to.equal(401);
    expect(await basic(gatewayId, 'x'.repeat(43))).to.equal(401);
    const other = await fetch(`${cloud.url}/api/machines/availability?branchId=other`, {
      headers: { Authorization: `Basic ${Buffer.from(`ops-1:${secret}`).toString('base64')}` },
    });
    expect(other.status).to.equal(403);
  });

  it('answers from live state: every machine of the branch, its status, type, name, last seen, metrics and counts', async () => {
    const rower = machineRecords(asMachineId('row-03'));
    const bike = machineRecords(asMachineId('bike-02'));
    const records = [rower.meta('Rower 3'), rower.status('in_use'), bike.status('available')];
    const ack = await gw.send('records', { batchId: batchId(), records });
    expect(ack.acked).to.have.length(3);
    // Durable before acknowledged: the documents are there.
    expect(await cloud.mongo.db!.collection(RECORD_COLLECTIONS.status).countDocuments({ branch })).to.equal(2);
    const sample = rower.telemetry(245);
    await gw.send('telemetry', { batchId: batchId(), records: [sample] });

    const { status, body } = await availability('branchId=demo');
    expect(status).to.equal(200);
    const result = body as BranchAvailability;
    expect(result).to.include({ branchId: 'demo', asOf: clock.nowMs() });
    expect(result.counts).to.deep.equal({ online: 0, offline: 0, available: 1, in_use: 1, maintenance: 0, unknown: 0 });
    expect(result.machines.map((m) => m.machine)).to.deep.equal(['bike-02', 'row-03']);
    const row = result.machines.find((m) => m.machine === 'row-03')!;
    expect(row).to.deep.include({
      status: 'in_use',
      since: records[1]!.payload.ts,
      type: 'rower',
      displayName: 'Rower 3',
      gateway: gatewayId,
      lastSeen: sample.payload.ts,
      metricsTs: sample.payload.ts,
    });
    expect(row.metrics).to.deep.include({ powerW: 245, type: 'rower' });
    expect(row.metrics).to.not.have.property('msgId');

    // Ingest metrics are on the cloud's /metrics.
    const metrics = await (await fetch(`${cloud.url}/metrics`)).text();
    expect(metrics).to.match(/ingest_batches_total\{lane="records",outcome="acked",service="cloud"\} 1/);
    expect(metrics).to.include('ingest_ack_latency_seconds_bucket');
  });

  it('refuses records of machines not provisioned for this gateway (another branch’s, or none at all)', async () => {
    const foreign = machineRecords(asMachineId('row-99')).status('available');
    const unknown = machineRecords(asMachineId('ghost-01')).status('available');
    const own = machineRecords(asMachineId('bike-02')).workout();
    const ack = await gw.send('records', { batchId: batchId(), records: [foreign, unknown, own] });
    expect(ack.acked).to.deep.equal([own.payload.msgId]);
    expect(ack.rejected.map((r) => [r.index, r.reason])).to.deep.equal([
      [0, 'wrong-source'],
      [1, 'wrong-source'],
    ]);
    const machines = ((await availability('branchId=demo')).body as BranchAvailability).machines.map((m) => m.machine);
    expect(machines).to.not.include.members(['row-99', 'ghost-01']);
  });

  it('shows the machines unknown as soon as their gateway’s will arrives', async () => {
    const will = { online: false, v: 0, bootId: 'gw-boot', conn: 0, ts: T0, lastWill: true };
    await gw.client.publishAsync(topics.gatewayState(branch, gatewayId), JSON.stringify(will), {
      qos: 1,
      retain: true,
    });
    const deadline = Date.now() + 5_000;
    let result: BranchAvailability;
    do {
      result = (await availability('branchId=demo')).body as BranchAvailability;
    } while ((result.counts.unknown ?? 0) < 2 && Date.now() < deadline);
    expect(result.counts).to.include({ unknown: 2, in_use: 0, available: 0 });
  });

  it('answers an unknown branch with no machines, and refuses a malformed branch id with 400', async () => {
    const empty = await availability('branchId=nowhere');
    expect(empty.status).to.equal(200);
    expect((empty.body as BranchAvailability).machines).to.deep.equal([]);
    for (const query of ['branchId=Demo!', 'branchId=', '', 'branchId=demo&extra=1', 'branchId[$ne]=x']) {
      const refused = await availability(query);
      expect(refused.status, query).to.equal(400);
    }
  });
});
