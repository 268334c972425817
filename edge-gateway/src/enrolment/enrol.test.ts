import { execFile } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { expect } from 'chai';
import { parsePayload } from '../../../protocol/index.ts';
import type { GatewayEnrolmentRequest, GatewayEnrolmentResponse } from '../../../protocol/index.ts';
import { newSecret } from '../../../tools/mqtt/secrets.ts';
import { makeDevCertificates, type DevCertificates } from '../testing/dev-ca.ts';
import { newSigningKey } from '../testing/access-fixtures.ts';
import { loadGatewayConfig } from '../config.ts';
import { resolveIdentity } from './identity.ts';
import { brokerUrlRefusal, loadEnrolment, saveEnrolment } from './credentials.ts';
import { runEnrolCli } from './cli.ts';
import { enrolGateway, enrolUrl } from './enrol.ts';

const run = promisify(execFile);

/**
 * A stand-in for the cloud's enrolment endpoint over real HTTPS (development CA): it validates the request with the
 * protocol schema and answers a GatewayEnrolmentResponse for its one token, once; anything else 401.
 */
async function startEnrolmentStandIn(certs: DevCertificates, token: string) {
  const key = newSigningKey();
  const secret = newSecret();
  const requests: GatewayEnrolmentRequest[] = [];
  let used = false;
  const server = https.createServer({ key: certs.key, cert: certs.cert }, (req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const parsed = parsePayload('GatewayEnrolmentRequest', Buffer.concat(chunks));
      if (req.method !== 'POST' || req.url !== '/api/v1/gateways/enrol' || !parsed.ok) {
        res.writeHead(400, { 'content-type': 'application/problem+json' }).end('{"title":"Bad request"}');
        return;
      }
      requests.push(parsed.value);
      if (parsed.value.token !== token || used) {
        res.writeHead(401, { 'content-type': 'application/problem+json' }).end('{"title":"Invalid or used token"}');
        return;
      }
      used = true;
      const body: GatewayEnrolmentResponse = {
        branch: 'demo' as never,
        gateway: 'gw-enrolled' as never,
        mqtt: { username: 'gw-enrolled' as never, password: secret, url: 'mqtts://127.0.0.1:18883' },
        configKeys: [key.jwk],
      };
      res.writeHead(201, { 'content-type': 'application/json' }).end(JSON.stringify(body));
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as AddressInfo).port;
  return {
    url: `https://127.0.0.1:${port}`,
    secret,
    key,
    requests,
    stop: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

describe('gateway enrolment', function () {
  this.timeout(30_000);
  let dir: string;
  let certs: DevCertificates;
  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'nxg-g2-enrol-'));
    certs = await makeDevCertificates(dir);
  });
  after(() => rm(dir, { recursive: true, force: true }));

  it('exchanges the one-time token for credentials stored 0600 in a 0700 directory, then the gateway uses them', async () => {
    const token = 'T'.repeat(43);
    const cloud = await startEnrolmentStandIn(certs, token);
    try {
      const dataDir = path.join(dir, 'gw-a');
      const { enrolment } = await enrolGateway({
        cloud: cloud.url,
        token,
        caFile: certs.caFile,
        dataDir,
        version: '1.2.3',
        hostname: 'edge-box',
      });
      expect(cloud.requests[0]).to.deep.equal({ token, version: '1.2.3', hostname: 'edge-box' });
      expect(enrolment).to.include({ gateway: 'gw-enrolled', branch: 'demo', secret: cloud.secret });
      expect((await stat(dataDir)).mode & 0o777).to.equal(0o700);
      expect((await stat(path.join(dataDir, 'enrolment.json'))).mode & 0o777).to.equal(0o600);
      const stored = await loadEnrolment(dataDir);
      expect(stored?.configKeys).to.deep.equal([cloud.key.jwk]);

      // `npm run gateway` with no secret in the environment: the enrolment supplies identity, secret, broker, CA.
      const config = loadGatewayConfig({ GATEWAY_DATA_DIR: dataDir }, { enrolled: () => true });
      const identity = await resolveIdentity(config);
      expect(identity).to.deep.include({ gatewayId: 'gw-enrolled', branch: 'demo', secret: cloud.secret });
      expect(identity.uplinkUrl).to.equal('mqtts://127.0.0.1:18883');
      expect(identity.ca?.toString()).to.equal(certs.ca.toString());
      expect(identity.machines.size).to.equal(0);
      const explicit = loadGatewayConfig(
        { GATEWAY_DATA_DIR: dataDir, GATEWAY_UPLINK_URL: 'mqtt://127.0.0.1:1' },
        { enrolled: () => true },
      );
      expect((await resolveIdentity(explicit)).uplinkUrl).to.equal('mqtt://127.0.0.1:1');

      // A second enrolment needs --force; a used token is refused by the cloud.
      await expectRejection(
        enrolGateway({ cloud: cloud.url, token, caFile: certs.caFile, dataDir, version: '1' }),
        'already enrolled',
      );
      await expectRejection(
        enrolGateway({ cloud: cloud.url, token, caFile: certs.caFile, dataDir, version: '1', force: true }),
        'HTTP 401 (Invalid or used token)',
      );
    } finally {
      await cloud.stop();
    }
  });

  it('refuses plain http off loopback, an untrusted certificate and a malformed token', async () => {
    expect(() => enrolUrl('http://hub.example.com')).to.throw('https');
    expect(enrolUrl('https://hub.example.com/prefix').href).to.equal(
      'https://hub.example.com/prefix/api/v1/gateways/enrol',
    );
    const token = 'U'.repeat(43);
    const cloud = await startEnrolmentStandIn(certs, token);
    try {
      await expectRejection(
        enrolGateway({ cloud: cloud.url, token, dataDir: path.join(dir, 'gw-b'), version: '1' }),
        'cannot reach',
      );
      await expectRejection(
        enrolGateway({ cloud: cloud.url, token: 'short', dataDir: path.join(dir, 'gw-b'), version: '1' }),
        '--token',
      );
      expect(await loadEnrolment(path.join(dir, 'gw-b'))).to.equal(undefined);
    } finally {
      await cloud.stop();
    }
  });

  it('runs as `npm run gateway -- enrol` (the gateway entry point), printing no secret', async () => {
    const token = 'V'.repeat(43);
    const cloud = await startEnrolmentStandIn(certs, token);
    try {
      const dataDir = path.join(dir, 'gw-cli');
      const { stdout, stderr } = await run(
        process.execPath,
        ['edge-gateway/src/main.ts', 'enrol', '--cloud', cloud.url, '--token', token, '--ca', certs.caFile],
        { env: { ...process.env, GATEWAY_DATA_DIR: dataDir }, timeout: 20_000 },
      );
      expect(stdout).to.include('enrolled gateway gw-enrolled of branch demo');
      expect(stdout + stderr).not.to.include(cloud.secret);
      expect(stdout + stderr).not.to.include(token);
      const stored = JSON.parse(await readFile(path.join(dataDir, 'enrolment.json'), 'utf8')) as { secret: string };
      expect(stored.secret).to.equal(cloud.secret);
    } finally {
      await cloud.stop();
    }
  });
});

describe('gateway enrolment: token file and re-enrolment', function () {
  this.timeout(30_000);
  let dir: string;
  let certs: DevCertificates;
  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'nxg-enrol-rev-'));
    certs = await makeDevCertificates(path.join(dir, 'certs'));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  it('reads the token from --token-file and, re-enrolled as another gateway with --force, drops the old identity’s signed state', async () => {
    const dataDir = path.join(dir, 'gw');
    const lines: string[] = [];
    const out = { log: (l: string) => lines.push(l), error: (l: string) => lines.push(l) };
    // Enrolled before as another gateway, with that gateway's configuration and allow-list on disk.
    await saveEnrolment(dataDir, {
      gateway: 'gw-old' as never,
      branch: 'demo' as never,
      secret: 's'.repeat(32),
      configKeys: [newSigningKey().jwk],
      cloud: 'https://old.example.com',
      enrolledAt: Date.now(),
    });
    await writeFile(path.join(dataDir, 'config.jws'), 'a.b.c');
    await writeFile(path.join(dataDir, 'allow-list.json'), '{}');
    const token = 'W'.repeat(43);
    const tokenFile = path.join(dir, 'token');
    await writeFile(tokenFile, `${token}\n`, { mode: 0o600 });
    const cloud = await startEnrolmentStandIn(certs, token);
    try {
      const args = ['--cloud', cloud.url, '--token-file', tokenFile, '--ca', certs.caFile, '--data-dir', dataDir];
      expect(await runEnrolCli(args, {}, out)).to.equal(1);
      expect(lines.join('\n')).to.match(/already enrolled/);
      expect(await runEnrolCli([...args, '--token', token], {}, out)).to.equal(64);
      expect(await runEnrolCli([...args, '--force'], {}, out)).to.equal(0);
      expect(lines.join('\n')).not.to.include(token);
      expect((await loadEnrolment(dataDir))?.gateway).to.equal('gw-enrolled');
      expect(await readdir(dataDir))
        .to.include('enrolment.json')
        .and.not.to.include.members(['config.jws']);
      expect(await readdir(dataDir)).not.to.include('allow-list.json');
    } finally {
      await cloud.stop();
    }
  });

  it('never sends the secret to a broker in clear: a plain mqtt:// broker URL off loopback is refused at start', async () => {
    expect(brokerUrlRefusal('mqtts://hub.example.com:8883')).to.equal(undefined);
    expect(brokerUrlRefusal('mqtt://127.0.0.1:1883')).to.equal(undefined);
    expect(brokerUrlRefusal('mqtt://hub.example.com:1883')).to.match(/in clear/);
    expect(brokerUrlRefusal('ws://hub.example.com')).to.match(/not mqtts/);
    const dataDir = path.join(dir, 'gw-plain');
    await saveEnrolment(dataDir, {
      gateway: 'gw-plain' as never,
      branch: 'demo' as never,
      secret: 's'.repeat(32),
      brokerUrl: 'mqtt://hub.example.com:1883',
      configKeys: [newSigningKey().jwk],
      cloud: 'https://hub.example.com',
      enrolledAt: Date.now(),
    });
    const config = loadGatewayConfig({ GATEWAY_DATA_DIR: dataDir }, { enrolled: () => true });
    await expectRejection(resolveIdentity(config), 'GATEWAY_UPLINK_URL');
    const explicit = loadGatewayConfig(
      { GATEWAY_DATA_DIR: dataDir, GATEWAY_UPLINK_URL: 'mqtts://hub.example.com:8883' },
      { enrolled: () => true },
    );
    expect((await resolveIdentity(explicit)).uplinkUrl).to.equal('mqtts://hub.example.com:8883');
  });
});

async function expectRejection(promise: Promise<unknown>, text: string): Promise<void> {
  try {
    await promise;
  } catch (err) {
    expect((err as Error).message).to.include(text);
    return;
  }
  expect.fail(`expected a rejection with ${text}`);
}
