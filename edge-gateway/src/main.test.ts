import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect } from 'chai';
import mqtt from 'mqtt';
import { topics } from '../../protocol/index.ts';
import type { GatewayState } from '../../protocol/index.ts';
import { spawnService, type ServiceProcess } from '../../tools/services/index.ts';
import { makeDevCertificates, type DevCertificates } from './testing/dev-ca.ts';
import { createTestSite, telemetryOf, workoutOf, type TestSite } from './testing/fixtures.ts';
import { eventually, startStandInCloud, type StandInCloud } from './testing/stand-in-cloud.ts';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

describe('edge gateway as a process (npm run gateway)', function () {
  this.timeout(30_000);
  let site: TestSite;
  let certs: DevCertificates;
  let cloud: StandInCloud;
  let gateway: ServiceProcess | undefined;

  before(async () => {
    site = await createTestSite(2);
    certs = await makeDevCertificates(site.dir);
    cloud = await startStandInCloud(
      { id: site.gatewayId, secret: site.gatewaySecret },
      { tls: { key: certs.key, cert: certs.cert, ca: certs.ca } },
    );
  });
  after(async () => {
    await gateway?.stop();
    await cloud.stop();
    await site.remove();
  });

  let gateways = 0;
  function spawnGateway(env: Record<string, string>): Promise<ServiceProcess> {
    return spawnService({
      name: 'gateway',
      command: process.execPath,
      args: ['edge-gateway/src/main.ts'],
      cwd: root,
      // A queue of its own per gateway process (never the repository's data/gateway).
      env: { PATH: process.env.PATH ?? '', GATEWAY_DATA_DIR: path.join(site.dir, `gateway-${++gateways}`), ...env },
    });
  }

  it('runs against a TLS cloud: machines in, batches acked, /health, then a clean SIGTERM with the offline state', async () => {
    const secretFile = path.join(site.dir, 'gateway.secret');
    await writeFile(secretFile, `${site.gatewaySecret}\n`, { mode: 0o600 });
    gateway = await spawnGateway({
      GATEWAY_MACHINES_FILE: site.machinesFile,
      GATEWAY_SECRET_FILE: secretFile,
      GATEWAY_MQTT_PORT: '0',
      GATEWAY_HEALTH_PORT: '0',
      GATEWAY_UPLINK_URL: cloud.url,
      GATEWAY_UPLINK_CA_FILE: certs.caFile,
      LOG_LEVEL: 'info',
    });
    const ready = await gateway.waitForLine(/"msg":"gateway ready"/, 15_000);
    const { mqtt: brokerUrl, health } = JSON.parse(ready.input) as { mqtt: string; health: string };
    expect(cloud.url).to.match(/^mqtts:/);

    const m = site.machines[0]!;
    const machine = await mqtt.connectAsync(brokerUrl, {
      clientId: m.id,
      username: m.id,
      password: m.secret,
      reconnectPeriod: 0,
    });
    const workouts = [workoutOf(m.id, 1), workoutOf(m.id, 2)];
    for (const w of workouts) {
      await machine.publishAsync(topics.machineWorkout(site.branch, m.id), JSON.stringify(w), { qos: 1 });
    }
    await machine.publishAsync(topics.machineTelemetry(site.branch, m.id), JSON.stringify(telemetryOf(m.id, 3)));
    await eventually(
      () => cloud.received.flatMap((b) => b.batch.records).length >= 3,
      'three records at the stand-in cloud',
      10_000,
    );
    let report: { status: string; uplink: string; queue: { depth: number }; machinesConnected: number } | undefined;
    await eventually(async () => {
      report = (await (await fetch(`${health}`)).json()) as typeof report;
      return report!.queue.depth === 0;
    }, 'the queue empty on /health');
    expect(report).to.deep.include({ status: 'ok', uplink: 'up', machinesConnected: 1 });
    await machine.endAsync();

    const exit = await gateway.stop(10_000);
    gateway = undefined;
    expect(exit).to.deep.equal({ code: 0, signal: null });
    const state = (await cloud.retained(topics.gatewayState(site.branch, site.gatewayId))) as GatewayState;
    expect(state).to.deep.include({ online: false, conn: 0 });
  });

  it('exits 78 naming the variable when the configuration is wrong', async () => {
    const bad = await spawnGateway({ GATEWAY_MACHINES_FILE: site.machinesFile, GATEWAY_MQTT_PORT: 'x' });
    const status = await bad.exited;
    expect(status.code).to.equal(78);
    expect(bad.recentOutput()).to.include('GATEWAY_MQTT_PORT: expected an integer');
    const noSecret = await spawnGateway({ GATEWAY_MACHINES_FILE: site.machinesFile });
    expect((await noSecret.exited).code).to.equal(78);
    expect(noSecret.recentOutput()).to.include('GATEWAY_SECRET: set exactly one');
  });

  it('exits 1 with a clear message when the machines file cannot be read', async () => {
    const bad = await spawnGateway({
      GATEWAY_MACHINES_FILE: path.join(site.dir, 'missing.json'),
      GATEWAY_SECRET: site.gatewaySecret,
      GATEWAY_MQTT_PORT: '0',
      GATEWAY_HEALTH_PORT: '0',
    });
    const status = await bad.exited;
    expect(status.code).to.equal(1);
    expect(bad.recentOutput()).to.include('machines file').and.include('ENOENT');
  });
});
