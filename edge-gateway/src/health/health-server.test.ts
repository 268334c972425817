import { expect } from 'chai';
import mqtt, { type MqttClient } from 'mqtt';
import { topics } from '../../../protocol/index.ts';
import { systemClock } from '../../../tools/runtime/clock.ts';
import { createLogger } from '../../../tools/runtime/logger.ts';
import { startGateway, type RunningGateway } from '../gateway.ts';
import { createTestSite, telemetryOf, testConfig, workoutOf, type TestSite } from '../testing/fixtures.ts';
import { eventually, ignoreAll, startStandInCloud, type StandInCloud } from '../testing/stand-in-cloud.ts';
import { healthReport, type HealthReport, type HealthSources } from './health-server.ts';

const log = createLogger({ name: 'test', level: 'silent' });

describe('edge gateway: health endpoint and metrics', function () {
  this.timeout(20_000);
  let site: TestSite;
  let cloud: StandInCloud;
  let gateway: RunningGateway;
  let machine: MqttClient;

  before(async () => {
    site = await createTestSite(2);
    cloud = await startStandInCloud({ id: site.gatewayId, secret: site.gatewaySecret });
    cloud.policy = ignoreAll; // records stay queued, so the queue figures are not zero
    gateway = await startGateway({
      config: testConfig(site, cloud.url, { ackTimeoutMs: 60_000 }),
      log,
      clock: systemClock,
    });
    const m = site.machines[0]!;
    machine = await mqtt.connectAsync(`mqtt://127.0.0.1:${gateway.brokerPort}`, {
      clientId: m.id,
      username: m.id,
      password: m.secret,
      reconnectPeriod: 0,
    });
    await machine.publishAsync(topics.machineWorkout(site.branch, m.id), JSON.stringify(workoutOf(m.id, 1)), {
      qos: 1,
    });
    await machine.publishAsync(topics.machineTelemetry(site.branch, m.id), JSON.stringify(telemetryOf(m.id, 2)));
    await machine.publishAsync(topics.machineWorkout(site.branch, m.id), '{"broken": true}', { qos: 1 });
    await eventually(() => gateway.queue.stats().depth === 2 && gateway.forwarder.status().up, 'queued, uplink up');
  });
  after(async () => {
    await machine.endAsync();
    await gateway.stop();
    await cloud.stop();
    await site.remove();
  });

  const url = (path: string) => `http://127.0.0.1:${gateway.healthPort}${path}`;

  it('GET /health reports the uplink, the queue per lane, machines and refusals', async () => {
    await new Promise((r) => setTimeout(r, 120));
    const res = await fetch(url('/health'));
    expect(res.status).to.equal(200);
    expect(res.headers.get('content-type')).to.equal('application/json');
    const body = (await res.json()) as HealthReport;
    expect(body).to.deep.include({
      status: 'ok',
      gateway: site.gatewayId,
      branch: site.branch,
      bootId: gateway.bootId,
      uplink: 'up',
      machinesConnected: 1,
      uplinkError: null,
    });
    expect(Date.parse(body.since)).to.be.at.most(Date.now());
    expect(body.queue).to.deep.include({ depth: 2, full: false });
    // The durability PRAGMAs as read back from the queue file at open (not fixed text).
    expect(body.queue.pragmas).to.deep.equal({ journalMode: 'wal', synchronous: 'FULL', lockingMode: 'exclusive' });
    expect(body.queue.lanes.records).to.deep.include({ depth: 1, evicted: 0, inFlightBatches: 1 });
    expect(body.queue.lanes.telemetry).to.deep.include({ depth: 1, inFlightBatches: 1 });
    expect(body.queue.lanes.access).to.deep.equal({
      depth: 0,
      bytes: 0,
      oldestAgeS: null,
      evicted: 0,
      inFlightBatches: 0,
    });
    expect(body.queue.lanes.records.bytes).to.be.greaterThan(100);
    expect(body.queue.oldestAgeS).to.be.a('number').and.at.least(0.1);
    expect(body.rejected).to.deep.equal({ total: 1, byReason: { 'machine:invalid': 1 } });
  });

  it('GET /metrics serves Prometheus text from the gateway registry, queue figures included', async () => {
    const res = await fetch(url('/metrics'));
    expect(res.status).to.equal(200);
    expect(res.headers.get('content-type')).to.match(/^text\/plain/);
    const text = await res.text();
    expect(text).to.match(/gateway_queue_depth\{lane="records",service="gateway"\} 1/);
    expect(text).to.match(/gateway_queue_depth\{lane="telemetry",service="gateway"\} 1/);
    expect(text).to.match(/gateway_uplink_up\{service="gateway"\} 1/);
    expect(text).to.match(/gateway_machines_connected\{service="gateway"\} 1/);
    expect(text).to.match(/gateway_intake_records_total\{kind="workout",service="gateway"\} 1/);
    expect(text).to.include('process_cpu_seconds_total');
  });

  it('answers 404 elsewhere and 405 to other methods', async () => {
    expect((await fetch(url('/nope'))).status).to.equal(404);
    expect((await fetch(url('/health'), { method: 'POST' })).status).to.equal(405);
    expect((await fetch(url('/health?verbose=1'))).status).to.equal(200);
  });

  it('is 503 when it cannot accept records or is stopping, and 200 degraded while only the uplink is down', () => {
    const base: HealthSources = {
      gatewayId: 'gw',
      branch: 'demo',
      bootId: 'b',
      version: '0.1.0',
      nowMs: () => 10_000,
      uplink: () => ({
        up: false,
        sinceMs: 5_000,
        connects: 0,
        conn: 3,
        lastError: 'connect ECONNREFUSED',
        inFlight: {
          access: { batches: 0, records: 0 },
          records: { batches: 0, records: 0 },
          telemetry: { batches: 0, records: 0 },
        },
      }),
      queue: () => gateway.queue.stats(),
      machinesConnected: () => 0,
      intakeListening: () => true,
      rejected: () => ({ total: 0, byReason: {} }),
      stopping: () => false,
    };
    expect(healthReport(base).status).to.equal(200);
    expect(healthReport(base).body).to.deep.include({ status: 'degraded', uplink: 'down' });
    expect(healthReport(base).body.uplinkError).to.equal('connect ECONNREFUSED');
    expect(healthReport({ ...base, intakeListening: () => false }).status).to.equal(503);
    const stopping = healthReport({ ...base, stopping: () => true });
    expect(stopping.status).to.equal(503);
    expect(stopping.body.status).to.equal('stopping');
  });
});
