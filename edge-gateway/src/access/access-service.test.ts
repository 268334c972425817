/**
 * The bounds of the gateway's memory of its own offline check-ins and links (access-service.ts point 6): an
 * entry older than the age bound, or pushed out by the count bound, no longer overrides the cloud's answer. The
 * access service with real parts (signed configuration and allow-list on disk with ES256 signatures, the online
 * requester, the in-memory uplink queue); the cloud is a scripted answerer behind the requester's publish, and the
 * gateway's clock is moved by an offset.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import {
  asBootId,
  asBranchId,
  asGatewayId,
  asReaderId,
  asUserId,
  parseTopic,
  topics,
} from '../../../protocol/index.ts';
import type { Decision, MachineId, UserId } from '../../../protocol/index.ts';
import { createLogger } from '../../../tools/runtime/logger.ts';
import { createAllowList } from '../cloud-config/allow-list.ts';
import { createKeyring } from '../cloud-config/keys.ts';
import { createSignedConfig } from '../cloud-config/signed-config.ts';
import { allowListCommands, configCommand, configDocument, newSigningKey } from '../testing/access-fixtures.ts';
import { MemoryQueue } from '../uplink/memory-queue.ts';
import { createAccessService, OFFLINE_VOUCH_MS, type AccessService } from './access-service.ts';
import { createOnlineRequester } from './online.ts';
import { createReplayCache } from './replay-cache.ts';

const log = createLogger({ name: 'access-service-test', level: 'silent' });
const branch = asBranchId('demo');
const gatewayId = asGatewayId('gw-1');
const doorIn = asReaderId('door-in');
const machine = 'm-01' as MachineId;
const members = ['u-ana', 'u-bo', 'u-cy'].map((u) => asUserId(u));
const cardOf = (userId: UserId) => `04${Buffer.from(userId).toString('hex').padEnd(12, '0').slice(0, 12)}`;

describe('access service: bounds of the offline decisions the gateway stands by', () => {
  let dir: string;
  let skewMs: number;
  let service: AccessService;
  let queue: MemoryQueue;

  beforeEach(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'nxg-access-service-'));
    skewMs = 0;
  });
  afterEach(async () => {
    await queue?.close();
    await rm(dir, { recursive: true, force: true });
  });

  /** A service whose cloud does not answer check-ins (offline) and answers every link with deny not-checked-in. */
  async function start(vouch?: { maxAgeMs: number; maxEntries: number }) {
    const nowMs = () => Date.now() + skewMs;
    const cloudKey = newSigningKey();
    const keys = createKeyring([cloudKey.jwk]);
    const signedConfig = createSignedConfig({
      file: path.join(dir, 'config.jws'),
      gatewayId,
      branch,
      keys,
      nowMs,
      log,
    });
    const configured = await signedConfig.apply(
      configCommand(
        cloudKey,
        configDocument({
          branch,
          gateway: gatewayId,
          revision: 1,
          qrKeys: [newSigningKey().jwk],
          allowListMaxAgeS: 3_600,
          machines: [],
          readers: [{ reader: doorIn, kind: 'nfc', action: 'check-in' }],
        }),
      ),
    );
    expect(configured).to.deep.include({ ok: true });
    const allowList = createAllowList({ file: path.join(dir, 'allow-list.jws'), branch, keys, nowMs, log });
    const listed = members.map((userId) => ({ userId, uids: [cardOf(userId)] }));
    for (const part of allowListCommands(cloudKey, { branch, revision: 1, members: listed })) {
      expect(await allowList.apply(part)).to.deep.include({ ok: true });
    }
    const requester = createOnlineRequester({
      branch,
      gatewayId,
      timeoutMs: 500,
      log,
      publish(topic, payload) {
        const parsed = parseTopic(topic);
        if (parsed?.kind !== 'gateway-request' || parsed.name !== 'link') return false; // check-ins: offline
        const { reqId } = JSON.parse(payload.toString()) as { reqId: string };
        const decision: Decision = { decision: 'deny', reason: 'not-checked-in' };
        setImmediate(() =>
          requester.onResponse(
            topics.gatewayRequestResponse(branch, gatewayId, 'link'),
            Buffer.from(JSON.stringify({ reqId, ok: true, decision })),
          ),
        );
        return true;
      },
    });
    queue = new MemoryQueue({ capRecords: 1_000, capBytes: 1_000_000 });
    service = createAccessService({
      branch,
      gatewayId,
      bootId: asBootId('boot-test'),
      signedConfig,
      allowList,
      replay: createReplayCache({ file: path.join(dir, 'replay.json'), nowMs, log }),
      requester,
      queue,
      onQueued: () => undefined,
      machineCommand: () => Promise.resolve(),
      nowMs,
      log,
      ...(vouch === undefined ? {} : { vouch }),
    });
  }

  const checkIn = async (userId: UserId) => {
    const outcome = await service.scan({ reader: doorIn, credential: { kind: 'nfc', uid: cardOf(userId) }, atMs: 0 });
    expect(outcome).to.deep.include({ decidedBy: 'offline', fallback: 'offline' });
    expect(outcome!.decision).to.deep.equal({ decision: 'allow', userId });
  };
  const link = (userId: UserId) => service.machineCredential(machine, { kind: 'nfc', uid: cardOf(userId) }, 0);

  it('stands by an offline check-in for OFFLINE_VOUCH_MS, not longer', async () => {
    await start();
    const [ana, bo] = members as [UserId, UserId];
    await checkIn(ana);
    skewMs = OFFLINE_VOUCH_MS + 60_000;
    await checkIn(bo);
    skewMs += OFFLINE_VOUCH_MS - 60_000;
    // Ana's check-in is older than the bound: the cloud's deny stands.
    const late = await link(ana);
    expect(late).to.deep.include({ decidedBy: 'online' });
    expect(late.decision).to.deep.include({ decision: 'deny', reason: 'not-checked-in' });
    // Bo's is within it: linked offline.
    const within = await link(bo);
    expect(within).to.deep.include({ decidedBy: 'offline', fallback: 'cloud-behind' });
    expect(within.decision).to.deep.equal({ decision: 'allow', userId: bo });
    expect(service.stats().overrides).to.deep.equal({ notCheckedIn: 1, notLinked: 0 });
    expect(queue.stats().lanes.records.depth).to.equal(1); // the OfflineDecision of bo's link only
  });

  it('forgets the oldest offline check-in beyond the count bound', async () => {
    await start({ maxAgeMs: OFFLINE_VOUCH_MS, maxEntries: 2 });
    const [ana, bo, cy] = members as [UserId, UserId, UserId];
    for (const m of [ana, bo, cy]) await checkIn(m);
    expect((await link(ana)).decidedBy).to.equal('online');
    const cyLink = await link(cy);
    expect(cyLink).to.deep.include({ decidedBy: 'offline', fallback: 'cloud-behind' });
    expect(cyLink.decision).to.deep.equal({ decision: 'allow', userId: cy });
    expect(service.stats().overrides.notCheckedIn).to.equal(1);
  });
});
