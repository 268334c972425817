/**
 * The gateway stands by its own offline decisions the cloud has not applied yet (access-service.ts point 6): the
 * cloud's `not-checked-in` to a link of a member the gateway checked in offline, and its `not-linked` to the unlink
 * of a link the gateway made offline, are overridden by an offline decision naming the request tried. Real parts: the
 * gateway in-process (local broker, durable queue, forwarder), a stand-in cloud (a real Aedes) whose "cloud" client
 * answers the gateway's requests as scripted, a real machine (mqtt.js) on the local broker, real ES256 signatures.
 */
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { expect } from 'chai';
import mqtt, { type MqttClient } from 'mqtt';
import { asReaderId, asUserId, filters, newMsgId, parsePayload, parseTopic, topics } from '../../../protocol/index.ts';
import type { Decision, OfflineDecision, RequestName, UserId } from '../../../protocol/index.ts';
import { hashSecret } from '../../../tools/mqtt/secrets.ts';
import { systemClock } from '../../../tools/runtime/clock.ts';
import { createLogger } from '../../../tools/runtime/logger.ts';
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

const log = createLogger({ name: 'offline-overrides-test', level: 'silent' });
/** The target is 1 s from scan to decision shown; tests allow 3×. */
const DECISION_DEADLINE_MS = 3_000;

const doorIn = asReaderId('door-in');
const doorOut = asReaderId('door-out');
const ana = asUserId('u-ana');
const bo = asUserId('u-bo');
const cy = asUserId('u-cy');
const CARDS: Record<string, string> = { [ana]: '04a1b2c3d4e5f6', [bo]: '04b0b0b0b0b0b0', [cy]: '04c0c0c0c0c0c0' };

type Responder = (name: RequestName, request: Record<string, unknown>) => Decision | undefined;

describe('gateway access: the gateway stands by its offline decisions the cloud has not applied yet', function () {
  this.timeout(60_000);
  let site: TestSite;
  let cloud: StandInCloud;
  let cloudKey: TestSigningKey;
  let qrKey: TestSigningKey;
  let gateway: RunningGateway;
  let cloudClient: MqttClient;
  let machine: MqttClient;
  let responder: Responder = () => undefined;
  const requests: { name: RequestName; request: Record<string, unknown> }[] = [];
  const commandAnswers = new Set<string>();
  const commands: { name: string; payload: Record<string, unknown> }[] = [];
  const seen: AccessOutcome[] = [];
  let seq = 0;

  before(async () => {
    site = await createTestSite(1, 'gw-overrides-1');
    cloud = await startStandInCloud({ id: site.gatewayId, secret: site.gatewaySecret });
    cloudKey = newSigningKey();
    qrKey = newSigningKey();
    const keysFile = path.join(site.dir, 'config-keys.json');
    await writeFile(keysFile, JSON.stringify({ keys: [cloudKey.jwk] }));
    gateway = await startGateway({
      config: { ...testConfig(site, cloud.url), access: { ...DEFAULT_ACCESS_CONFIG, configKeysFile: keysFile } },
      log,
      clock: systemClock,
      defaultMetrics: false,
    });
    gateway.access.service.onDecision((o) => seen.push(o));

    cloudClient = await mqtt.connectAsync(cloud.url, { clientId: `observer-cloud-${newMsgId()}`, reconnectPeriod: 0 });
    cloudClient.on('message', (topic, payload) => {
      const parsed = parseTopic(topic);
      if (parsed?.kind === 'gateway-command-response') {
        const r = parsePayload('CommandResponse', payload);
        if (r.ok && r.value.ok) commandAnswers.add(r.value.reqId);
      } else if (parsed?.kind === 'gateway-request') {
        const request = JSON.parse(payload.toString()) as Record<string, unknown>;
        requests.push({ name: parsed.name, request });
        const decision = responder(parsed.name, request);
        if (decision === undefined) return; // silent: the gateway's request times out
        const res = JSON.stringify({ reqId: request.reqId, ok: true, decision });
        cloudClient.publish(topics.gatewayRequestResponse(parsed.branch, parsed.gateway, parsed.name), res, { qos: 1 });
      }
    });
    await cloudClient.subscribeAsync(['nxg/v1/b/+/gw/+/req/+', 'nxg/v1/b/+/gw/+/cmd/+/res'], { qos: 1 });
    await eventually(() => gateway.forwarder.status().up, 'uplink up');

    const command = async (name: 'config' | 'allow-list', c: { reqId: string }) => {
      await cloudClient.publishAsync(topics.gatewayCommand(site.branch, site.gatewayId, name), JSON.stringify(c), {
        qos: 1,
      });
      await eventually(() => commandAnswers.has(c.reqId), `ok answer to ${name}`);
    };
    const m1 = site.machines[0]!;
    await command(
      'config',
      configCommand(
        cloudKey,
        configDocument({
          branch: site.branch,
          gateway: site.gatewayId,
          revision: 1,
          qrKeys: [qrKey.jwk],
          allowListMaxAgeS: 3_600,
          machines: [{ machine: m1.id, secretSha256: hashSecret(m1.secret) }],
          readers: [
            { reader: doorIn, kind: 'nfc', action: 'check-in' },
            { reader: doorOut, kind: 'nfc', action: 'check-out' },
          ],
        }),
      ),
    );
    const members = [ana, bo, cy].map((userId) => ({ userId, uids: [CARDS[userId]!] }));
    for (const part of allowListCommands(cloudKey, { branch: site.branch, revision: 1, members })) {
      await command('allow-list', part);
    }

    machine = await mqtt.connectAsync(`mqtt://127.0.0.1:${gateway.brokerPort}`, {
      clientId: m1.id,
      username: m1.id,
      password: m1.secret,
      reconnectPeriod: 0,
      protocolVersion: 4,
    });
    machine.on('message', (topic, payload) => {
      const parsed = parseTopic(topic);
      if (parsed?.kind === 'machine-command')
        commands.push({ name: parsed.name, payload: JSON.parse(payload.toString()) as Record<string, unknown> });
    });
    await machine.subscribeAsync(filters.machineCommands(site.branch, m1.id), { qos: 1 });
  });

  after(async () => {
    await machine?.endAsync();
    await cloudClient?.endAsync();
    await gateway?.stop();
    await cloud?.stop().catch(() => undefined);
    await site?.remove();
  });

  /** The cloud: check-ins time out (decided offline) unless `online` lists the member; links and unlinks as given. */
  const cloudAnswers = (online: { checkIn?: UserId[]; link?: Decision; unlink?: Decision }) => {
    responder = (name, request) => {
      if (name === 'check-in') {
        const card = (request.credential as { uid?: string }).uid;
        const member = Object.keys(CARDS).find((u) => CARDS[u] === card) as UserId | undefined;
        return member !== undefined && online.checkIn?.includes(member)
          ? { decision: 'allow', userId: member }
          : undefined;
      }
      if (name === 'check-out') return undefined;
      return name === 'link' ? online.link : online.unlink;
    };
  };

  const atDoor = async (reader: typeof doorIn, userId: UserId) => {
    const n = seen.length;
    gateway.access.scan({ reader, credential: { kind: 'nfc', uid: CARDS[userId]! }, atMs: Date.now() });
    await eventually(() => seen.length > n, 'a door decision', DECISION_DEADLINE_MS);
    return seen[n]!;
  };

  /** The member shows their QR code at the machine: its qr-scanned event. Resolves with the decision. */
  const atMachine = async (userId: UserId) => {
    const n = seen.length;
    const m1 = site.machines[0]!;
    const event = {
      msgId: newMsgId(),
      source: m1.id,
      bootId: 'boot-m1',
      seq: seq++,
      ts: Date.now(),
      v: 0,
      type: 'qr-scanned',
      token: qrToken(qrKey, userId),
    };
    await machine.publishAsync(topics.machineEvent(site.branch, m1.id), JSON.stringify(event), { qos: 1 });
    await eventually(() => seen.length > n, 'a machine decision', DECISION_DEADLINE_MS);
    return seen[n]!;
  };

  const commandFor = async (reqId: string) => {
    await eventually(() => commands.some((c) => c.payload.reqId === reqId), `the machine command of ${reqId}`);
    return commands.find((c) => c.payload.reqId === reqId)!;
  };

  const offlineDecisionAtCloud = async (reqId: string): Promise<OfflineDecision> => {
    const find = () =>
      cloud.received
        .flatMap((b) => b.batch.records)
        .flatMap((r) => (r.ok && r.record.kind === 'offline-decision' ? [r.record.payload] : []))
        .find((d) => d.request.reqId === reqId);
    await eventually(() => find() !== undefined, `the OfflineDecision naming ${reqId} at the cloud`);
    return find()!;
  };

  const offlineDecisionsNaming = (reqId: string) =>
    cloud.received
      .flatMap((b) => b.batch.records)
      .filter((r) => r.ok && r.record.kind === 'offline-decision' && r.record.payload.request.reqId === reqId).length;

  it('links offline when the cloud answers not-checked-in for a member the gateway checked in offline', async () => {
    cloudAnswers({ link: { decision: 'deny', reason: 'not-checked-in', userId: ana } });
    const checkIn = await atDoor(doorIn, ana);
    expect(checkIn).to.deep.include({ action: 'check-in', decidedBy: 'offline', fallback: 'timeout' });
    expect(checkIn.decision).to.deep.equal({ decision: 'allow', userId: ana });

    const link = await atMachine(ana);
    const tried = requests.at(-1)!;
    expect(tried.name).to.equal('link');
    expect(link).to.deep.include({
      action: 'link',
      decidedBy: 'offline',
      fallback: 'cloud-behind',
      reqId: tried.request.reqId,
    });
    expect(link.decision).to.deep.equal({ decision: 'allow', userId: ana });
    expect(await commandFor(link.reqId)).to.deep.include({ name: 'link' });
    expect((await commandFor(link.reqId)).payload).to.deep.include({ userId: ana });
    const record = await offlineDecisionAtCloud(String(tried.request.reqId));
    expect(record).to.deep.include({ name: 'link', decision: { decision: 'allow', userId: ana } });
    expect(record.request).to.deep.include({ machine: site.machines[0]!.id });
    expect(gateway.access.service.stats().overrides).to.deep.equal({ notCheckedIn: 1, notLinked: 0 });
  });

  it('unlinks offline when the cloud answers not-linked for the link the gateway made offline', async () => {
    cloudAnswers({ unlink: { decision: 'deny', reason: 'not-linked', userId: ana } });
    const unlink = await atMachine(ana);
    const tried = requests.at(-1)!;
    expect(tried.name).to.equal('unlink');
    expect(tried.request).to.deep.include({ userId: ana, reason: 'member' });
    expect(unlink).to.deep.include({ action: 'unlink', decidedBy: 'offline', fallback: 'cloud-behind' });
    expect(unlink.decision).to.deep.equal({ decision: 'allow', userId: ana });
    // The machine gets the unlink, not an error display.
    const shown = await commandFor(unlink.reqId);
    expect(shown.name).to.equal('unlink');
    expect(shown.payload).to.deep.include({ userId: ana, reason: 'member' });
    const record = await offlineDecisionAtCloud(String(tried.request.reqId));
    expect(record).to.deep.include({ name: 'unlink', decision: { decision: 'allow', userId: ana } });
    expect(record.request).to.deep.include({ machine: site.machines[0]!.id, userId: ana });
    expect(gateway.access.service.stats().overrides).to.deep.equal({ notCheckedIn: 1, notLinked: 1 });
    const health = (await (await fetch(`http://127.0.0.1:${gateway.healthPort}/health`)).json()) as {
      access: { decisions: { overrides: unknown } };
    };
    expect(health.access.decisions.overrides).to.deep.equal({ notCheckedIn: 1, notLinked: 1 });
  });

  it('keeps the cloud’s deny for members the gateway did not check in offline, or checked out since', async () => {
    const deny = (userId: UserId, reason: string): Decision => ({ decision: 'deny', reason, userId });
    // Bo checked in online: the cloud knows, and its not-checked-in (say, checked out from the desk) stands.
    cloudAnswers({ checkIn: [bo], link: deny(bo, 'not-checked-in') });
    expect(await atDoor(doorIn, bo)).to.deep.include({ decidedBy: 'online' });
    const boLink = await atMachine(bo);
    expect(boLink).to.deep.include({ action: 'link', decidedBy: 'online' });
    expect(boLink.decision).to.deep.include({ decision: 'deny', reason: 'not-checked-in' });
    const boShown = await commandFor(boLink.reqId);
    expect(boShown.name).to.equal('display');
    expect(boShown.payload).to.deep.include({ level: 'error', text: 'Check in at the door first' });

    // Cy never checked in at this gateway.
    cloudAnswers({ link: deny(cy, 'not-checked-in') });
    const cyLink = await atMachine(cy);
    expect(cyLink).to.deep.include({ decidedBy: 'online' });
    expect(cyLink.decision).to.deep.include({ decision: 'deny', reason: 'not-checked-in' });

    // Cy checked in offline, then out (offline too): the gateway no longer vouches for the check-in.
    cloudAnswers({ link: deny(cy, 'not-checked-in') });
    expect(await atDoor(doorIn, cy)).to.deep.include({ decidedBy: 'offline' });
    expect(await atDoor(doorOut, cy)).to.deep.include({ action: 'check-out', decidedBy: 'offline' });
    const afterOut = await atMachine(cy);
    expect(afterOut).to.deep.include({ decidedBy: 'online' });
    expect(afterOut.decision).to.deep.include({ decision: 'deny', reason: 'not-checked-in' });

    // Bo linked online: the cloud's not-linked to the unlink stands (the gateway did not link offline).
    cloudAnswers({ link: { decision: 'allow', userId: bo }, unlink: deny(bo, 'not-linked') });
    expect(await atMachine(bo)).to.deep.include({ action: 'link', decidedBy: 'online' });
    const boUnlink = await atMachine(bo);
    expect(boUnlink).to.deep.include({ action: 'unlink', decidedBy: 'online' });
    expect(boUnlink.decision).to.deep.include({ decision: 'deny', reason: 'not-linked' });
    expect((await commandFor(boUnlink.reqId)).name).to.equal('display');

    expect(gateway.access.service.stats().overrides).to.deep.equal({ notCheckedIn: 1, notLinked: 1 });
    for (const r of [boLink, cyLink, afterOut, boUnlink]) expect(offlineDecisionsNaming(r.reqId)).to.equal(0);
  });
});
