/**
 * The gateway's access path with real parts: the gateway in-process (local broker, durable queue, forwarder), a
 * stand-in cloud (a real Aedes) whose "cloud" client pushes signed configuration and allow-list and answers the
 * gateway's requests as the cloud's dispatcher would, real machines (mqtt.js) on the local broker, a QR line
 * reader on a file, and real ES256 signatures throughout.
 */
import { appendFile, mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { expect } from 'chai';
import mqtt, { type MqttClient } from 'mqtt';
import { asReaderId, asUserId, filters, newMsgId, parsePayload, parseTopic, topics } from '../../../protocol/index.ts';
import type { Decision, MachineId, RequestName } from '../../../protocol/index.ts';
import { hashSecret, newSecret } from '../../../tools/mqtt/secrets.ts';
import { systemClock } from '../../../tools/runtime/clock.ts';
import { createLogger } from '../../../tools/runtime/logger.ts';
import type { GatewayConfig } from '../config.ts';
import { startGateway, type RunningGateway } from '../gateway.ts';
import {
  allowListCommands,
  configCommand,
  configDocument,
  newSigningKey,
  qrToken,
  type TestSigningKey,
} from '../testing/access-fixtures.ts';
import { createTestSite, testConfig, type TestSite } from '../testing/fixtures.ts';
import { eventually, startStandInCloud, type StandInCloud } from '../testing/stand-in-cloud.ts';
import type { AccessOutcome } from './access-service.ts';
import { DEFAULT_ACCESS_CONFIG } from './config.ts';

const log = createLogger({ name: 'gateway-access-test', level: 'silent' });
/** The target is 1 s from scan to decision shown; tests allow 3×. */
const DECISION_DEADLINE_MS = 3_000;

const doorIn = asReaderId('door-in');
const doorOut = asReaderId('door-out');
const ana = asUserId('u-ana');
const bo = asUserId('u-bo');
const ANA_CARD = '04a1b2c3d4e5f6';

type Responder = (name: RequestName, request: Record<string, unknown>) => Decision | undefined;

/** The cloud side of the stand-in: pushes commands, answers requests, collects command answers. */
async function cloudClient(cloud: StandInCloud) {
  const client: MqttClient = await mqtt.connectAsync(cloud.url, {
    clientId: `observer-cloud-${newMsgId()}`,
    reconnectPeriod: 0,
  });
  const answers = new Map<string, { ok: boolean; error?: { code: string } }>();
  const requests: { name: RequestName; request: Record<string, unknown> }[] = [];
  const liveScans: Record<string, unknown>[] = [];
  let responder: Responder = () => undefined;
  client.on('message', (topic, payload) => {
    const parsed = parseTopic(topic);
    if (parsed?.kind === 'access-scan') {
      liveScans.push(JSON.parse(payload.toString()) as Record<string, unknown>);
    } else if (parsed?.kind === 'gateway-command-response') {
      const r = parsePayload('CommandResponse', payload);
      if (r.ok) answers.set(r.value.reqId, r.value.ok ? { ok: true } : { ok: false, error: r.value.error });
    } else if (parsed?.kind === 'gateway-request') {
      const request = JSON.parse(payload.toString()) as Record<string, unknown>;
      requests.push({ name: parsed.name, request });
      const decision = responder(parsed.name, request);
      if (decision !== undefined) {
        const res = { reqId: request.reqId, ok: true, decision };
        client.publish(topics.gatewayRequestResponse(parsed.branch, parsed.gateway, parsed.name), JSON.stringify(res), {
          qos: 1,
        });
      }
    }
  });
  await client.subscribeAsync(['nxg/v1/b/+/gw/+/req/+', 'nxg/v1/b/+/gw/+/cmd/+/res', 'nxg/v1/b/+/access/+/scan'], {
    qos: 1,
  });
  return {
    requests,
    answers,
    liveScans,
    respond(next: Responder) {
      responder = next;
    },
    /** Answers a request now, whatever the gateway did meanwhile (a late answer). */
    async answer(site: TestSite, name: RequestName, reqId: unknown, decision: Record<string, unknown>) {
      const res = JSON.stringify({ reqId, ok: true, decision });
      await client.publishAsync(topics.gatewayRequestResponse(site.branch, site.gatewayId, name), res, { qos: 1 });
    },
    /** Publishes a gateway command and waits for its answer. */
    async command(site: TestSite, name: 'config' | 'allow-list', command: { reqId: string }) {
      await client.publishAsync(topics.gatewayCommand(site.branch, site.gatewayId, name), JSON.stringify(command), {
        qos: 1,
      });
      await eventually(() => answers.has(command.reqId), `answer to ${name} ${command.reqId}`);
      return answers.get(command.reqId)!;
    },
    stop: () => client.endAsync(),
  };
}

async function connectMachine(port: number, id: string, secret: string): Promise<MqttClient> {
  return mqtt.connectAsync(`mqtt://127.0.0.1:${port}`, {
    clientId: id,
    username: id,
    password: secret,
    reconnectPeriod: 0,
    protocolVersion: 4,
  });
}

function decisionsOf(gateway: RunningGateway): AccessOutcome[] {
  const seen: AccessOutcome[] = [];
  gateway.access.service.onDecision((o) => seen.push(o));
  return seen;
}

describe('gateway access: signed configuration, readers, online and offline decisions', function () {
  this.timeout(60_000);
  let site: TestSite;
  let cloud: StandInCloud;
  let cloudKey: TestSigningKey;
  let qrKey: TestSigningKey;
  let config: GatewayConfig;
  let readerFile: string;
  let doorLog: string;
  const newMachine = { id: 'm-new' as MachineId, secret: newSecret() };
  const running: RunningGateway[] = [];

  const start = async (c: GatewayConfig = config) => {
    const gateway = await startGateway({ config: c, log, clock: systemClock, defaultMetrics: false });
    running.push(gateway);
    return gateway;
  };

  before(async () => {
    site = await createTestSite(2, 'gw-access-1');
    cloud = await startStandInCloud({ id: site.gatewayId, secret: site.gatewaySecret });
    cloudKey = newSigningKey();
    qrKey = newSigningKey();
    const keysFile = path.join(site.dir, 'config-keys.json');
    await writeFile(keysFile, JSON.stringify({ keys: [cloudKey.jwk] }));
    readerFile = path.join(site.dir, 'reader', 'door-in.txt');
    await mkdir(path.dirname(readerFile), { recursive: true });
    await writeFile(readerFile, '');
    doorLog = path.join(site.dir, 'door.log');
    const doorScript = path.join(site.dir, 'door.sh');
    await writeFile(doorScript, `#!/bin/sh\necho "$@" >> '${doorLog}'\n`, { mode: 0o755 });
    config = {
      ...testConfig(site, cloud.url),
      access: {
        ...DEFAULT_ACCESS_CONFIG,
        qrReaders: [{ reader: doorIn, path: readerFile }],
        configKeysFile: keysFile,
        doorCommand: doorScript,
      },
    };
  });
  afterEach(async () => {
    for (const g of running.splice(0)) await g.stop();
  });
  after(async () => {
    await cloud.stop().catch(() => undefined);
    await site.remove();
  });

  const document = (revision: number) =>
    configDocument({
      branch: site.branch,
      gateway: site.gatewayId,
      revision,
      qrKeys: [qrKey.jwk],
      allowListMaxAgeS: 3_600,
      machines: [
        ...site.machines.map((m) => ({ machine: m.id, secretSha256: hashSecret(m.secret) })),
        { machine: newMachine.id, secretSha256: hashSecret(newMachine.secret) },
      ],
      readers: [
        { reader: doorIn, kind: 'qr', action: 'check-in' },
        { reader: doorOut, kind: 'nfc', action: 'check-out' },
        { reader: asReaderId('m-01-pad'), kind: 'nfc', action: 'link', machine: site.machines[0]!.id },
      ],
    });

  it('verifies, answers and keeps pushed configuration and allow-list; new machines connect without a restart', async () => {
    const gateway = await start();
    const c = await cloudClient(cloud);
    try {
      await eventually(() => gateway.forwarder.status().up, 'uplink up');
      // Not in the machines file: refused until the signed configuration lists it.
      await connectMachine(gateway.brokerPort, newMachine.id, newMachine.secret).then(
        (m) => m.endAsync().then(() => expect.fail('connected before the configuration')),
        (err: Error) => expect(err.message).to.match(/Not authorized/i),
      );

      const forged = configCommand(newSigningKey(cloudKey.kid), document(1));
      expect(await c.command(site, 'config', forged)).to.deep.include({
        ok: false,
        error: { code: 'bad-signature', message: 'the JWS does not verify (bad-signature)' },
      });
      expect(await c.command(site, 'config', configCommand(cloudKey, document(2)))).to.deep.equal({ ok: true });
      expect((await c.command(site, 'config', configCommand(cloudKey, document(1)))).error?.code).to.equal(
        'stale-revision',
      );
      const members = [{ userId: ana, uids: [ANA_CARD] }, { userId: bo }];
      for (const part of allowListCommands(cloudKey, { branch: site.branch, revision: 5, members, partSize: 1 })) {
        expect(await c.command(site, 'allow-list', part)).to.deep.equal({ ok: true });
      }
      const machine = await connectMachine(gateway.brokerPort, newMachine.id, newMachine.secret);
      // A configuration without it cuts it off now (not only at its next CONNECT).
      const closed = new Promise<void>((resolve) => machine.once('close', () => resolve()));
      const without = { ...document(3), machines: document(3).machines.filter((m) => m.machine !== newMachine.id) };
      expect(await c.command(site, 'config', configCommand(cloudKey, without))).to.deep.equal({ ok: true });
      await closed;
      await machine.endAsync();
      expect(await c.command(site, 'config', configCommand(cloudKey, document(4)))).to.deep.equal({ ok: true });

      // The birth names what is in use, so the cloud pushes only what is newer after a reconnect.
      await eventually(async () => {
        const state = (await cloud.retained(topics.gatewayState(site.branch, site.gatewayId))) as
          | { configRevision?: number; allowListRevision?: number; readers?: { reader: string; connected: boolean }[] }
          | undefined;
        return state?.configRevision === 4 && state.allowListRevision === 5 && state.readers?.[0]?.connected === true;
      }, 'birth with configRevision 4, allowListRevision 5 and the reader');
      expect(gateway.access.status()).to.deep.include({ configRevision: 4 });
      const health = (await (await fetch(`http://127.0.0.1:${gateway.healthPort}/health`)).json()) as {
        access: { configRevision: number; allowList: { revision: number; members: number; stale: boolean } };
      };
      expect(health.access.configRevision).to.equal(4);
      expect(health.access.allowList).to.deep.include({ revision: 5, members: 2, stale: false });
      const metrics = await (await fetch(`http://127.0.0.1:${gateway.healthPort}/metrics`)).text();
      expect(metrics).to.match(/gateway_access_commands_total\{[^}]*command="config"[^}]*result="ok"[^}]*\} 3/);
      expect(metrics).to.match(
        /gateway_access_commands_total\{[^}]*command="config"[^}]*result="bad-signature"[^}]*\} 1/,
      );
      expect(metrics).to.include('gateway_access_config_revision{service="gateway"} 4');
    } finally {
      await c.stop();
    }
  });

  it('decides online within a second from a QR line reader and queues an AccessScan', async () => {
    const gateway = await start(); // same data directory: configuration and allow-list from disk
    const c = await cloudClient(cloud);
    try {
      await eventually(() => gateway.forwarder.status().up, 'uplink up');
      const seen = decisionsOf(gateway);
      c.respond((name, request) =>
        name === 'check-in'
          ? { decision: 'allow', userId: ana, sessionId: 'sess-1' as never, greeting: `Hi ${String(request.reader)}` }
          : undefined,
      );
      const before = cloud.received.length;
      const token = qrToken(qrKey, ana);
      const t0 = Date.now();
      await appendFile(readerFile, `${token}\n`);
      await eventually(() => seen.length === 1, 'a decision', DECISION_DEADLINE_MS);
      const wall = Date.now() - t0;
      const outcome = seen[0]!;
      expect(outcome).to.deep.include({ action: 'check-in', reader: doorIn, decidedBy: 'online' });
      expect(outcome.decision).to.deep.include({ decision: 'allow', userId: ana });
      expect(c.requests.at(-1)?.request).to.deep.include({ reader: doorIn, credential: { kind: 'qr', token } });
      console.log(`      online check-in: ${outcome.latencyMs} ms scan→decision, ${wall} ms file append→decision`);

      await eventually(
        () => cloud.received.slice(before).some((b) => b.lane === 'access'),
        'the AccessScan in an access-lane batch',
      );
      const scan = cloud.received
        .slice(before)
        .flatMap((b) => b.batch.records)
        .flatMap((r) => (r.ok && r.record.kind === 'access-scan' ? [r.record.payload] : []))[0]!;
      expect(scan).to.deep.include({
        source: site.gatewayId,
        reader: doorIn,
        action: 'check-in',
        decision: 'allow',
        decidedBy: 'online',
        userId: ana,
        sessionId: 'sess-1',
        reqId: outcome.reqId,
      });
      // Also published as it happened, on access/{reader}/scan.
      await eventually(() => c.liveScans.some((s) => s.msgId === scan.msgId), 'the live access scan');
      // The door hook ran with the decision.
      await eventually(
        async () => (await readFile(doorLog, 'utf8').catch(() => '')).includes('door-in check-in allow'),
        'the door hook',
      );
    } finally {
      await c.stop();
    }
  });

  it('decides offline from the cached allow-list and QR keys when the cloud does not answer', async () => {
    const gateway = await start();
    const c = await cloudClient(cloud);
    try {
      await eventually(() => gateway.forwarder.status().up, 'uplink up');
      const seen = decisionsOf(gateway);
      c.respond(() => undefined); // the cloud is connected but silent: the request times out
      const scanAt = async (
        reader: typeof doorIn,
        credential: { kind: 'nfc'; uid: string } | { kind: 'qr'; token: string },
      ) => {
        const n = seen.length;
        gateway.access.scan({ reader, credential, atMs: Date.now() });
        await eventually(() => seen.length > n, 'a decision', DECISION_DEADLINE_MS);
        return seen[n]!;
      };
      const card = await scanAt(doorIn, { kind: 'nfc', uid: ANA_CARD });
      expect(card).to.deep.include({ decidedBy: 'offline', fallback: 'timeout' });
      expect(card.decision).to.deep.equal({ decision: 'allow', userId: ana });
      expect(card.latencyMs).to.be.below(DECISION_DEADLINE_MS);
      console.log(`      offline check-in after the online timeout: ${card.latencyMs} ms`);
      // The cloud's answer after the gateway decided offline: ignored (one scan, one decision) and counted.
      const asked = c.requests.find((r) => r.name === 'check-in')!;
      // Its record names the request tried first, so the cloud applies the tap once if it decided it after all.
      expect(card.reqId).to.equal(asked.request.reqId);
      await eventually(() => c.liveScans.some((s) => s.reqId === asked.request.reqId), 'the offline scan record');
      expect(c.liveScans.find((s) => s.reqId === asked.request.reqId)).to.deep.include({
        decidedBy: 'offline',
        decision: 'allow',
        userId: ana,
      });
      const decidedBefore = seen.length;
      await c.answer(site, 'check-in', asked.request.reqId, { decision: 'deny', reason: 'blocked' });
      await eventually(() => gateway.access.status().ignoredAnswers.late === 1, 'the late answer counted');
      expect(seen.length).to.equal(decidedBefore);

      const token = qrToken(qrKey, bo);
      expect((await scanAt(doorIn, { kind: 'qr', token })).decision).to.deep.equal({ decision: 'allow', userId: bo });
      // Shown again at another reader (at the same one within 3 s it is a scanner's repeat: dropped, not decided).
      expect((await scanAt(doorOut, { kind: 'qr', token })).decision).to.deep.include({ reason: 'replayed-token' });
      const decided = seen.length;
      gateway.access.scan({ reader: doorIn, credential: { kind: 'qr', token }, atMs: Date.now() });
      expect(gateway.access.status().dropped).to.deep.include({ repeat: 1, flood: 0 });
      expect(seen.length).to.equal(decided);
      const expired = qrToken(qrKey, bo, { nowMs: Date.now() - 300_000 });
      expect((await scanAt(doorIn, { kind: 'qr', token: expired })).decision).to.deep.include({
        reason: 'expired-token',
      });
      const forged = qrToken(newSigningKey(qrKey.kid), bo);
      expect((await scanAt(doorIn, { kind: 'qr', token: forged })).decision).to.deep.include({
        reason: 'invalid-token',
      });
      expect((await scanAt(doorOut, { kind: 'nfc', uid: ANA_CARD })).decision).to.deep.equal({
        decision: 'allow',
        userId: ana,
      });
    } finally {
      await c.stop();
    }
  });

  it('links and unlinks a member at a machine from its qr-scanned event, online and offline', async () => {
    const gateway = await start();
    const c = await cloudClient(cloud);
    const [m1] = site.machines;
    const machine = await connectMachine(gateway.brokerPort, m1!.id, m1!.secret);
    try {
      await eventually(() => gateway.forwarder.status().up, 'uplink up');
      const commands: { name: string; payload: Record<string, unknown> }[] = [];
      machine.on('message', (topic, payload) => {
        const parsed = parseTopic(topic);
        if (parsed?.kind === 'machine-command')
          commands.push({ name: parsed.name, payload: JSON.parse(payload.toString()) as Record<string, unknown> });
      });
      await machine.subscribeAsync(filters.machineCommands(site.branch, m1!.id), { qos: 1 });
      c.respond((name, request) => {
        if (name === 'link') return { decision: 'allow', userId: ana, greeting: 'Hi Ana' };
        if (name === 'unlink') return { decision: 'allow', userId: request.userId as never };
        return undefined;
      });
      let seq = 0;
      const presentQr = async (token: string) => {
        const event = {
          msgId: newMsgId(),
          source: m1!.id,
          bootId: 'boot-m1',
          seq: seq++,
          ts: Date.now(),
          v: 0,
          type: 'qr-scanned',
          token,
        };
        await machine.publishAsync(topics.machineEvent(site.branch, m1!.id), JSON.stringify(event), { qos: 1 });
        return event;
      };
      const first = await presentQr(qrToken(qrKey, ana));
      // The same event redelivered (a QoS 1 retry): decided once, not linked-then-unlinked.
      await machine.publishAsync(topics.machineEvent(site.branch, m1!.id), JSON.stringify(first), { qos: 1 });
      await eventually(() => commands.some((x) => x.name === 'link'), 'cmd/link at the machine', DECISION_DEADLINE_MS);
      expect(commands.find((x) => x.name === 'link')!.payload).to.deep.include({ userId: ana, greeting: 'Hi Ana' });
      expect(c.requests.find((r) => r.name === 'link')?.request).to.deep.include({ machine: m1!.id });

      await presentQr(qrToken(qrKey, ana));
      await eventually(
        () => commands.some((x) => x.name === 'unlink'),
        'cmd/unlink at the machine',
        DECISION_DEADLINE_MS,
      );
      expect(c.requests.find((r) => r.name === 'unlink')?.request).to.deep.include({ userId: ana, reason: 'member' });
      expect(c.requests.map((r) => r.name)).to.deep.equal(['link', 'unlink']);

      // Offline: the gateway links alone and queues an OfflineDecision for the cloud to apply.
      c.respond(() => undefined);
      const before = cloud.received.length;
      await presentQr(qrToken(qrKey, bo));
      await eventually(
        () => commands.filter((x) => x.name === 'link').length === 2,
        'offline cmd/link',
        DECISION_DEADLINE_MS,
      );
      await eventually(
        () =>
          cloud.received
            .slice(before)
            .some((b) => b.batch.records.some((r) => r.ok && r.record.kind === 'offline-decision')),
        'the OfflineDecision record at the cloud',
      );
      const record = cloud.received
        .slice(before)
        .flatMap((b) => b.batch.records)
        .flatMap((r) => (r.ok && r.record.kind === 'offline-decision' ? [r.record.payload] : []))[0]!;
      expect(record).to.deep.include({ name: 'link', decision: { decision: 'allow', userId: bo } });
      // The request the cloud was asked first: one tap is applied once if the cloud decided it after all.
      const tried = c.requests.at(-1)!;
      expect(tried.name).to.equal('link');
      expect(record.request).to.deep.include({ machine: m1!.id, reqId: tried.request.reqId });
    } finally {
      await machine.endAsync();
      await c.stop();
    }
  });

  it('restarts offline on the cached configuration and decides from the cached allow-list; refuses a tampered one', async () => {
    // The cloud is unreachable from the start.
    const offline = { ...config, uplink: { ...config.uplink, url: 'mqtt://127.0.0.1:1' } };
    const gateway = await start(offline);
    expect(gateway.access.status()).to.deep.include({ configRevision: 4 });
    const machine = await connectMachine(gateway.brokerPort, newMachine.id, newMachine.secret);
    await machine.endAsync();
    const seen = decisionsOf(gateway);
    gateway.access.scan({ reader: doorIn, credential: { kind: 'nfc', uid: ANA_CARD }, atMs: Date.now() });
    await eventually(() => seen.length === 1, 'an offline decision', DECISION_DEADLINE_MS);
    expect(seen[0]).to.deep.include({ decidedBy: 'offline', fallback: 'offline' });
    expect(seen[0]!.decision).to.deep.equal({ decision: 'allow', userId: ana });
    console.log(`      cold start offline, check-in from the cached allow-list: ${seen[0]!.latencyMs} ms`);
    const queuedBefore = gateway.queue.stats().lanes.access.depth;
    expect(queuedBefore).to.be.greaterThan(0);
    await gateway.stop();

    // Someone edits the stored configuration (e.g. to add a machine): it no longer verifies and is not used.
    const file = path.join(config.dataDir, 'config.jws');
    const [h, p, s] = (await readFile(file, 'utf8')).split('.') as [string, string, string];
    const payload = JSON.parse(Buffer.from(p, 'base64url').toString()) as { machines: unknown[] };
    payload.machines.push({ machine: 'm-rogue', secretSha256: hashSecret(newMachine.secret) });
    await writeFile(file, `${h}.${Buffer.from(JSON.stringify(payload)).toString('base64url')}.${s}`);
    const tampered = await start(offline);
    expect(tampered.access.status().configRevision).to.equal(undefined);
    await connectMachine(tampered.brokerPort, 'm-rogue', newMachine.secret).then(
      (m) => m.endAsync().then(() => expect.fail('a machine from a tampered configuration connected')),
      (err: Error) => expect(err.message).to.match(/Not authorized/i),
    );
    // Its records from before the restart are still queued.
    expect(tampered.queue.stats().lanes.access.depth).to.equal(queuedBefore);
  });
});
