import { writeFile } from 'node:fs/promises';
import { expect } from 'chai';
import { ConfigError } from '../../tools/runtime/env-config.ts';
import { loadGatewayConfig } from './config.ts';
import { createMachineRegistry, loadMachinesFile, MachinesFileError } from './machines-file.ts';
import { createTestSite } from './testing/fixtures.ts';
import { hashSecret, newSecret } from '../../tools/mqtt/secrets.ts';

const minimal = { GATEWAY_MACHINES_FILE: '/etc/nxg/machines.json', GATEWAY_SECRET: 'x'.repeat(43) };

function problemsOf(env: Record<string, string>): string[] {
  try {
    loadGatewayConfig(env);
  } catch (err) {
    if (err instanceof ConfigError) return [...err.problems];
    throw err;
  }
  return [];
}

describe('edge gateway: configuration', () => {
  it('has the documented defaults', () => {
    const config = loadGatewayConfig(minimal);
    expect(config.broker).to.deep.equal({
      host: '127.0.0.1',
      port: 1884,
      maxPacketBytes: 65_536,
      connectTimeoutMs: 5_000,
    });
    expect(config.health).to.deep.equal({ host: '127.0.0.1', port: 8081 });
    expect(config.uplink).to.deep.include({
      url: 'mqtts://127.0.0.1:8883',
      caFile: undefined,
      keepaliveS: 15,
      ackTimeoutMs: 15_000,
      windowBatches: 4,
      reconnectMinMs: 500,
      reconnectMaxMs: 30_000,
      stateIntervalMs: 30_000,
    });
    expect(config.dataDir).to.equal('data/gateway');
    expect(config.queue).to.deep.equal({
      file: 'data/gateway/uplink-queue.sqlite',
      capRecords: 2_000_000,
      capBytes: 1024 * 1024 * 1024,
      commitDelayMs: 5,
      commitMaxRows: 100,
      minOfflineHours: 4,
    });
    expect(config.uplink).to.deep.include({ drainMaxPerS: 10_000, live: true });
    expect(config.secret).to.deep.equal({ value: 'x'.repeat(43) });
    expect(config.log).to.deep.equal({ level: 'info', pretty: false });
    expect(config.rejectedKeep).to.equal(1_000);
  });

  it('reads every variable, empty meaning unset', () => {
    const config = loadGatewayConfig({
      GATEWAY_MACHINES_FILE: '/m.json',
      GATEWAY_SECRET: '',
      GATEWAY_SECRET_FILE: '/secret',
      GATEWAY_MQTT_HOST: '0.0.0.0',
      GATEWAY_MQTT_PORT: '0',
      GATEWAY_HEALTH_PORT: '9000',
      GATEWAY_UPLINK_URL: 'mqtt://cloud.internal:1883',
      GATEWAY_UPLINK_CA_FILE: '/ca.pem',
      GATEWAY_UPLINK_WINDOW_BATCHES: '8',
      GATEWAY_QUEUE_MAX_RECORDS: '5000',
      GATEWAY_DATA_DIR: '/var/lib/nxg-gateway',
      GATEWAY_QUEUE_MIN_OFFLINE_HOURS: '12',
      GATEWAY_UPLINK_DRAIN_MAX_PER_S: '0',
      GATEWAY_UPLINK_LIVE: 'false',
      LOG_FORMAT: 'pretty',
      LOG_LEVEL: 'debug',
    });
    expect(config.secret).to.deep.equal({ file: '/secret' });
    expect(config.broker).to.deep.include({ host: '0.0.0.0', port: 0 });
    expect(config.health.port).to.equal(9000);
    expect(config.uplink).to.deep.include({ url: 'mqtt://cloud.internal:1883', caFile: '/ca.pem', windowBatches: 8 });
    expect(config.queue).to.deep.include({
      capRecords: 5_000,
      file: '/var/lib/nxg-gateway/uplink-queue.sqlite',
      minOfflineHours: 12,
    });
    expect(config.uplink).to.deep.include({ drainMaxPerS: 0, live: false });
    expect(config.log).to.deep.equal({ level: 'debug', pretty: true });
  });

  it('names each bad variable and never echoes a secret', () => {
    const problems = problemsOf({
      GATEWAY_SECRET: 'short',
      GATEWAY_MQTT_PORT: '70000',
      GATEWAY_UPLINK_URL: 'http://cloud',
      GATEWAY_UPLINK_WINDOW_BATCHES: 'many',
    });
    const text = problems.join('\n');
    for (const name of [
      'GATEWAY_MACHINES_FILE',
      'GATEWAY_SECRET',
      'GATEWAY_MQTT_PORT',
      'GATEWAY_UPLINK_URL',
      'GATEWAY_UPLINK_WINDOW_BATCHES',
    ]) {
      expect(text).to.include(name);
    }
    expect(text).to.not.include('short');
  });

  it('needs neither secret nor machines file once enrolled, and reads the access variables', () => {
    const enrolled = loadGatewayConfig(
      {
        GATEWAY_DATA_DIR: '/var/lib/nxg-gateway',
        GATEWAY_QR_READERS: 'door-in=/dev/ttyACM0, door-out=/run/qr-out.fifo',
        GATEWAY_NFC_READERS: 'desk=ACS ACR122U PICC Interface 00 00',
        GATEWAY_ACCESS_TIMEOUT_MS: '400',
      },
      { enrolled: (dir) => dir === '/var/lib/nxg-gateway' },
    );
    expect(enrolled.secret).to.equal(undefined);
    expect(enrolled.machinesFile).to.equal(undefined);
    expect(enrolled.access).to.deep.include({ requestTimeoutMs: 400 });
    expect(enrolled.access?.qrReaders).to.deep.equal([
      { reader: 'door-in', path: '/dev/ttyACM0' },
      { reader: 'door-out', path: '/run/qr-out.fifo' },
    ]);
    expect(enrolled.access?.nfcReaders).to.deep.equal([
      { reader: 'desk', pcscName: 'ACS ACR122U PICC Interface 00 00' },
    ]);
    expect(problemsOf({ ...minimal, GATEWAY_QR_READERS: 'door in=/dev/x' }).join()).to.include('GATEWAY_QR_READERS');
    expect(problemsOf({ ...minimal, GATEWAY_QR_READERS: 'a=/x,a=/y' }).join()).to.include('twice');
  });

  it('wants exactly one of the secret and the secret file, and a sane reconnect range', () => {
    expect(problemsOf({ GATEWAY_MACHINES_FILE: '/m' }).join()).to.include('exactly one');
    expect(problemsOf({ ...minimal, GATEWAY_SECRET_FILE: '/s' }).join()).to.include('exactly one');
    expect(
      problemsOf({ ...minimal, GATEWAY_UPLINK_RECONNECT_MIN_MS: '5000', GATEWAY_UPLINK_RECONNECT_MAX_MS: '100' }),
    ).to.have.length(1);
  });
});

describe('edge gateway: machines file', () => {
  it('verifies a machine by its secret against the stored hash, and nothing else', async () => {
    const site = await createTestSite(2);
    try {
      const registry = await loadMachinesFile(site.machinesFile);
      const [m1, m2] = site.machines;
      expect(registry).to.deep.include({ gatewayId: site.gatewayId, branch: site.branch, size: 2 });
      expect(registry.verify(m1!.id, m1!.secret)).to.equal(m1!.id);
      expect(registry.verify(m1!.id, Buffer.from(m1!.secret))).to.equal(m1!.id);
      expect(registry.verify(m1!.id, m2!.secret)).to.equal(undefined);
      expect(registry.verify('m-99', m1!.secret)).to.equal(undefined);
      expect(registry.verify('constructor', m1!.secret)).to.equal(undefined);
      expect(registry.verify(m1!.id, undefined)).to.equal(undefined);
    } finally {
      await site.remove();
    }
  });

  it('refuses a file that is missing, not JSON, or breaks the schema, saying where', async () => {
    const site = await createTestSite(1);
    try {
      const fail = async (path: string) =>
        loadMachinesFile(path).then(
          () => '',
          (err: unknown) => (err instanceof MachinesFileError ? err.message : `unexpected ${String(err)}`),
        );
      expect(await fail(`${site.dir}/absent.json`)).to.include('cannot read it (ENOENT)');
      await writeFile(`${site.dir}/bad.json`, '{');
      expect(await fail(`${site.dir}/bad.json`)).to.include('not JSON');
      const hash = hashSecret(newSecret());
      const bad = (value: unknown) => () => createMachineRegistry(value, 'f.json');
      expect(bad({ gatewayId: 'gw', branch: 'demo', machines: [{ id: 'M1', secretHash: hash }] })).to.throw(
        MachinesFileError,
        /machines\.0\.id/,
      );
      expect(bad({ gatewayId: 'gw', branch: 'demo', machines: [{ id: 'm1', secretHash: 'abc' }] })).to.throw(/SHA-256/);
      expect(
        bad({
          gatewayId: 'gw',
          branch: 'demo',
          machines: [
            { id: 'm1', secretHash: hash },
            { id: 'm1', secretHash: hash },
          ],
        }),
      ).to.throw(/twice/);
      expect(bad({ gatewayId: 'gw', branch: 'demo', machines: [], extra: 1 })).to.throw(MachinesFileError);
    } finally {
      await site.remove();
    }
  });
});
