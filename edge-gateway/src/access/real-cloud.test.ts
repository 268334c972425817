/**
 * The gateway's access path against the real cloud (startTestCloud: API, TLS broker, gateway sync, sessions,
 * access): staff create a branch, a gateway with its one-time token and a door reader; the gateway enrols over
 * HTTP, connects over TLS through a TCP proxy, receives the cloud-signed configuration and allow-list, and decides a
 * member's cloud-issued QR token online — then, with the link cut, offline from what the cloud signed.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { asReaderId } from '../../../protocol/index.ts';
import type { ReaderId } from '../../../protocol/index.ts';
import { systemClock } from '../../../tools/runtime/clock.ts';
import { createLogger } from '../../../tools/runtime/logger.ts';
import { bearer, createTestAccount, postJson, startTestCloud, type TestCloud } from '../../../test/helpers/accounts.ts';
import { loadGatewayConfig } from '../config.ts';
import { enrolGateway } from '../enrolment/enrol.ts';
import { startGateway, type RunningGateway } from '../gateway.ts';
import { eventually } from '../testing/stand-in-cloud.ts';
import { startTcpProxy, type TcpProxy } from '../testing/tcp-proxy.ts';
import { version } from '../version.ts';
import type { AccessOutcome } from './access-service.ts';

const DECISION_DEADLINE_MS = 3_000;
const allDay = [{ open: '00:00', close: '24:00' }];
const week = Object.fromEntries(
  ['monday', 'tuesday', 'wednesday', 'thursday', 'friday', 'saturday', 'sunday'].map((d) => [d, allDay]),
);

async function expectOk(res: Response, what: string): Promise<unknown> {
  const text = await res.text();
  if (!res.ok) throw new Error(`${what}: HTTP ${res.status} ${text}`);
  return text === '' ? undefined : (JSON.parse(text) as unknown);
}

describe('gateway access against the real cloud', function () {
  this.timeout(90_000);
  let tc: TestCloud;
  let dir: string;
  let proxy: TcpProxy;
  let gateway: RunningGateway | undefined;

  before(async () => {
    tc = await startTestCloud({ dbPrefix: 'g2access' });
    dir = await mkdtemp(path.join(os.tmpdir(), 'nxg-g2-cloud-'));
    proxy = await startTcpProxy(tc.broker.tls.port);
  });
  after(async () => {
    await gateway?.stop();
    await proxy.close();
    await tc.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it('enrols, receives the signed configuration and allow-list, and decides online, then offline', async () => {
    const admin = await createTestAccount(tc, { role: 'admin' });
    const asAdmin = { ...bearer(admin.accessToken) };
    const branch = 'g2-branch';
    await expectOk(
      await postJson(
        tc,
        '/api/branches',
        { id: branch, name: 'G2 branch', timeZone: 'UTC', openingHours: week },
        asAdmin,
      ),
      'create branch',
    );
    const created = (await expectOk(
      await postJson(tc, `/api/branches/${branch}/gateways`, { id: 'gw-g2' }, asAdmin),
      'create gateway',
    )) as { enrolment: { token: string } };
    const reader: ReaderId = asReaderId('door-in');
    await expectOk(
      await postJson(
        tc,
        `/api/branches/${branch}/readers`,
        { reader, gateway: 'gw-g2', kind: 'qr', action: 'check-in' },
        asAdmin,
      ),
      'create reader',
    );
    const member = await createTestAccount(tc);
    await expectOk(
      // Granted by the gym (a member's own POST /api/users/branches/:id is only a request).
      await fetch(`${tc.url}/api/branches/${branch}/members/${member.userId}`, {
        method: 'PUT',
        headers: { ...asAdmin, 'Content-Type': 'application/json' },
        body: '{}',
      }),
      'grant membership',
    );

    const dataDir = path.join(dir, 'gateway');
    const { enrolment } = await enrolGateway({ cloud: tc.url, token: created.enrolment.token, dataDir, version });
    expect(enrolment).to.include({ gateway: 'gw-g2', branch });

    const config = loadGatewayConfig(
      {
        GATEWAY_DATA_DIR: dataDir,
        GATEWAY_UPLINK_URL: `mqtts://127.0.0.1:${proxy.port}`,
        GATEWAY_UPLINK_CA_FILE: tc.broker.tls.caFile,
        GATEWAY_MQTT_PORT: '0',
        GATEWAY_HEALTH_PORT: '0',
        GATEWAY_UPLINK_RECONNECT_MIN_MS: '50',
        GATEWAY_UPLINK_RECONNECT_MAX_MS: '200',
        LOG_LEVEL: 'silent',
      },
      { enrolled: () => true },
    );
    gateway = await startGateway({
      config,
      log: createLogger({ name: 'gw', level: 'silent' }),
      clock: systemClock,
      defaultMetrics: false,
    });
    const g = gateway;
    await eventually(
      () => g.access.status().configRevision !== undefined && g.access.status().allowList.revision !== undefined,
      'the cloud-signed configuration and allow-list at the gateway',
      20_000,
    );
    expect(g.access.service.readers()).to.deep.include({ reader, kind: 'qr', action: 'check-in' });
    expect(g.access.status().allowList.members).to.be.at.least(1);

    const seen: AccessOutcome[] = [];
    g.access.service.onDecision((o) => seen.push(o));
    const qr = async () =>
      (
        (await expectOk(
          await fetch(`${tc.url}/api/access/qr-token`, { headers: bearer(member.accessToken) }),
          'qr token',
        )) as { token: string }
      ).token;
    const scan = async (token: string) => {
      const n = seen.length;
      g.access.scan({ reader, credential: { kind: 'qr', token }, atMs: Date.now() });
      await eventually(() => seen.length > n, 'a decision', DECISION_DEADLINE_MS);
      return seen[n]!;
    };

    const online = await scan(await qr());
    expect(online).to.deep.include({ decidedBy: 'online' });
    expect(online.decision).to.deep.include({ decision: 'allow', userId: member.userId });
    console.log(`      real cloud, online check-in: ${online.latencyMs} ms`);
    // The live scan on access/{reader}/scan is within the gateway's ACL: the cloud kept the connection.
    expect(g.forwarder.status()).to.deep.include({ up: true, connects: 1 });

    // The link cut: decided by the gateway from the cloud's signed allow-list and QR keys.
    proxy.mode = 'refuse';
    proxy.cut();
    await eventually(() => !g.forwarder.status().up, 'uplink down');
    const offline = await scan(await qr());
    expect(offline).to.deep.include({ decidedBy: 'offline', fallback: 'offline' });
    expect(offline.decision).to.deep.include({ decision: 'allow', userId: member.userId });
    console.log(`      real cloud, offline check-in: ${offline.latencyMs} ms`);

    // The link back: both AccessScan records are stored by the cloud (acked, none rejected).
    proxy.mode = 'pass';
    await eventually(() => g.queue.stats().lanes.access.depth === 0, 'access lane drained and acked', 20_000);
    expect(g.rejected.total).to.equal(0);
    const current = (await expectOk(
      await fetch(`${tc.url}/api/sessions/current`, { headers: bearer(member.accessToken) }),
      'current session',
    )) as Record<string, unknown> | undefined;
    console.log(`      real cloud, member's current session after reconnect: ${JSON.stringify(current)}`);
  });
});
