import { execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFile } from 'node:fs/promises';
import { promisify } from 'node:util';
import { expect } from 'chai';
import type { MqttClient } from 'mqtt';
import { asBranchId, asGatewayId } from '../../../protocol/ids.ts';
import { topics } from '../../../protocol/topics.ts';
import { addGateway, addObserver } from './provisioning.ts';
import { connackCode, connectClient, startBrokerFixture, type BrokerFixture } from './testing.ts';

const run = promisify(execFile);
const demo = asBranchId('demo');
const gwA = asGatewayId('gw-a');

/** Runs a mosquitto client; resolves with its exit code and output (never rejects on a non-zero exit). */
async function mosquitto(command: 'mosquitto_sub' | 'mosquitto_pub', args: string[], timeoutMs = 15_000) {
  try {
    const { stdout, stderr } = await run(command, ['-V', 'mqttv311', ...args], { timeout: timeoutMs });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof e.code === 'number' ? e.code : -1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
  }
}

describe('cloud broker with mosquitto clients as external peers (TLS and loopback)', function () {
  this.timeout(40_000);
  let fx: BrokerFixture;
  const secrets: Record<string, string> = {};
  const open: MqttClient[] = [];

  before(async () => {
    fx = await startBrokerFixture();
    secrets['gw-a'] = (await addGateway({ store: fx.identities }, { id: 'gw-a', branch: 'demo' })).secret;
    secrets.ops = (await addObserver({ store: fx.identities }, { id: 'ops', branches: ['demo'] })).secret;
  });
  afterEach(async () => {
    await Promise.all(open.splice(0).map((c) => c.endAsync(true).catch(() => undefined)));
  });
  after(() => fx.stop());

  const tls = () => ['-h', '127.0.0.1', '-p', String(fx.broker.tls.port), '--cafile', fx.broker.tls.caFile!];
  const tcp = () => ['-h', '127.0.0.1', '-p', String(fx.broker.tcp.port)];

  it('generated a development CA and a server certificate for 127.0.0.1 and localhost', async () => {
    expect(fx.broker.tls.caFile).to.equal(`${fx.dataDir}/tls/ca.crt`);
    const { stdout } = await run('openssl', [
      'x509',
      '-in',
      `${fx.dataDir}/tls/server.crt`,
      '-noout',
      '-ext',
      'subjectAltName',
    ]);
    expect(stdout).to.include('IP Address:127.0.0.1').and.include('DNS:localhost');
    // A restart reuses it.
    const again = await startBrokerFixture({ dataDir: fx.dataDir });
    try {
      expect(await readFile(`${fx.dataDir}/tls/ca.crt`, 'utf8')).to.include('BEGIN CERTIFICATE');
      expect(again.broker.tls.caFile).to.equal(fx.broker.tls.caFile);
    } finally {
      await again.stop();
    }
  });

  it('uses MQTT_TLS_CERT_FILE/KEY_FILE when set, and generates nothing', async () => {
    const emptyDir = `${fx.dataDir}/configured`;
    const configured = await startBrokerFixture({
      dataDir: emptyDir,
      env: {
        MQTT_TLS_CERT_FILE: `${fx.dataDir}/tls/server.crt`,
        MQTT_TLS_KEY_FILE: `${fx.dataDir}/tls/server.key`,
        MQTT_TLS_CA_FILE: `${fx.dataDir}/tls/ca.crt`,
      },
    });
    try {
      await addObserver({ store: configured.identities }, { id: 'ops', branches: ['demo'] });
      expect(configured.broker.tls.caFile).to.equal(`${fx.dataDir}/tls/ca.crt`);
      const { code } = await mosquitto('mosquitto_sub', [
        '-h',
        '127.0.0.1',
        '-p',
        String(configured.broker.tls.port),
        '--cafile',
        configured.broker.tls.caFile!,
        '-u',
        'ops',
        '-P',
        'wrong',
        '-i',
        'ops',
        '-t',
        'x',
        '-C',
        '1',
        '-W',
        '5',
      ]);
      // The TLS handshake succeeded with the configured certificate; the broker then refused the password (5).
      expect(code).to.equal(5);
      expect(await readFile(`${emptyDir}/tls/server.crt`).catch(() => undefined)).to.equal(undefined);
    } finally {
      await configured.stop();
    }
  });

  it('delivers a gateway birth (MQTT.js over TLS) to mosquitto_sub over TLS with observer credentials', async () => {
    const gw = await connectClient(fx.broker.tls.url, {
      username: 'gw-a',
      password: secrets['gw-a']!,
      clientId: 'gw-a',
      ca: await readFile(fx.broker.tls.caFile!),
    });
    open.push(gw);
    await gw.publishAsync(topics.gatewayState(demo, gwA), '{"online":true}', { qos: 1, retain: true });
    const sub = await mosquitto('mosquitto_sub', [
      ...tls(),
      '-u',
      'ops',
      '-P',
      secrets.ops!,
      '-i',
      'ops.mosquitto',
      '-t',
      'nxg/v1/b/demo/gw/+/state',
      '-C',
      '1',
      '-W',
      '10',
      '-v',
    ]);
    expect(sub.code, sub.stderr).to.equal(0);
    expect(sub.stdout.trim()).to.equal(`${topics.gatewayState(demo, gwA)} {"online":true}`);
  });

  it('takes an uplink from mosquitto_pub on loopback with gateway credentials', async () => {
    const got: string[] = [];
    const deliver = (packet: { payload: Buffer | string }, cb: () => void) => {
      got.push(packet.payload.toString());
      cb();
    };
    await new Promise<void>((resolve) => fx.broker.aedes.subscribe('nxg/v1/b/+/gw/+/up/+', deliver, () => resolve()));
    const pub = await mosquitto('mosquitto_pub', [
      ...tcp(),
      '-u',
      'gw-a',
      '-P',
      secrets['gw-a']!,
      '-i',
      'gw-a',
      '-q',
      '1',
      '-t',
      topics.gatewayUplink(demo, gwA, 'records'),
      '-m',
      '{"batchId":"b1","records":[]}',
    ]);
    expect(pub.code, pub.stderr).to.equal(0);
    expect(got).to.deep.equal(['{"batchId":"b1","records":[]}']);
    fx.broker.aedes.unsubscribe('nxg/v1/b/+/gw/+/up/+', deliver, () => undefined);
  });

  it('streams live traffic to a long-running mosquitto_sub (loopback) until it is stopped', async () => {
    const child = spawn('mosquitto_sub', [
      '-V',
      'mqttv311',
      ...tcp(),
      '-u',
      'ops',
      '-P',
      secrets.ops!,
      '-i',
      'ops.live',
      '-t',
      'nxg/v1/b/demo/live/#',
      '-v',
    ]);
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    try {
      // Wait until the subscription is in place, then publish from the cloud side.
      const deadline = Date.now() + 10_000;
      while (Date.now() < deadline && fx.broker.aedes.connectedClients === 0)
        await new Promise((r) => setTimeout(r, 50));
      await new Promise((r) => setTimeout(r, 200));
      for (let i = 0; i < 3; i++) {
        await new Promise<void>((resolve) =>
          fx.broker.aedes.publish(
            {
              cmd: 'publish',
              topic: `nxg/v1/b/demo/live/machines/tm-0${i}`,
              payload: Buffer.from(`{"i":${i}}`),
              qos: 1,
              retain: false,
              dup: false,
            },
            () => resolve(),
          ),
        );
      }
      while (Date.now() < deadline && out.split('\n').length < 4) await new Promise((r) => setTimeout(r, 50));
      expect(out.trim().split('\n')).to.deep.equal([
        'nxg/v1/b/demo/live/machines/tm-00 {"i":0}',
        'nxg/v1/b/demo/live/machines/tm-01 {"i":1}',
        'nxg/v1/b/demo/live/machines/tm-02 {"i":2}',
      ]);
    } finally {
      child.kill('SIGTERM');
      await once(child, 'exit');
    }
  });

  it('refuses mosquitto_sub with a wrong password (CONNACK 5) and an observer mosquitto_pub', async () => {
    const sub = await mosquitto('mosquitto_sub', [
      ...tls(),
      '-u',
      'ops',
      '-P',
      'wrong',
      '-i',
      'ops.x',
      '-t',
      '#',
      '-C',
      '1',
      '-W',
      '5',
    ]);
    expect(sub.code).to.not.equal(0);
    expect(sub.stderr).to.match(/not authori[sz]ed/i);
    const pub = await mosquitto('mosquitto_pub', [
      ...tcp(),
      '-u',
      'ops',
      '-P',
      secrets.ops!,
      '-i',
      'ops.pub',
      '-q',
      '1',
      '-t',
      topics.gatewayState(demo, gwA),
      '-m',
      'x',
    ]);
    expect(pub.code).to.not.equal(0);
  });

  it('is not trusted by mosquitto_sub or MQTT.js without the development CA', async () => {
    const noCa = await mosquitto('mosquitto_sub', [
      '-h',
      '127.0.0.1',
      '-p',
      String(fx.broker.tls.port),
      '--capath',
      '/nonexistent',
      '-u',
      'ops',
      '-P',
      secrets.ops!,
      '-i',
      'ops.y',
      '-t',
      'nxg/v1/b/demo/live/#',
      '-C',
      '1',
      '-W',
      '5',
    ]);
    expect(noCa.code).to.not.equal(0);
    expect(
      await connackCode(fx.broker.tls.url, {
        username: 'ops',
        password: secrets.ops!,
        clientId: 'ops.z',
        ca: [],
      }).catch(() => -1),
    ).to.equal(-1);
  });
});
