import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { asBranchId, asUserId, JWS_TYPES, signJws } from '../../../protocol/index.ts';
import { createLogger } from '../../../tools/runtime/logger.ts';
import { createAllowList, type AllowList } from '../cloud-config/allow-list.ts';
import { createKeyring } from '../cloud-config/keys.ts';
import { allowListCommands, newSigningKey, qrToken } from '../testing/access-fixtures.ts';
import { cardHash, checkQrToken } from './credentials.ts';
import { credentialOfLine } from './line-reader.ts';
import { decideOffline, type Identified } from './offline.ts';
import { createReplayCache } from './replay-cache.ts';

const log = createLogger({ name: 'test', level: 'silent' });
const branch = asBranchId('demo');
const cloudKey = newSigningKey();
const qrKey = newSigningKey();
const qrKeys = createKeyring([qrKey.jwk]);
const ana = asUserId('u-ana');
const bo = asUserId('u-bo');
const cy = asUserId('u-cy');

describe('gateway offline decisions', () => {
  let dir: string;
  let list: AllowList;
  const now = Date.now();
  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'nxg-g2-'));
    list = createAllowList({
      file: path.join(dir, 'allow-list.json'),
      branch,
      keys: createKeyring([cloudKey.jwk]),
      nowMs: Date.now,
      log,
    });
    const members = [
      { userId: ana, uids: ['04a1b2c3d4e5f6'] },
      { userId: bo, uids: ['deadbeef'], validUntil: now - 60_000 },
      { userId: cy, validUntil: now + 86_400_000 },
    ];
    for (const part of allowListCommands(cloudKey, { branch, revision: 1, members, issuedAt: now - 1_000 })) {
      await list.apply(part);
    }
  });
  after(() => rm(dir, { recursive: true, force: true }));

  const ctx = (overrides: { maxAgeS?: number; nowMs?: number } = {}) => ({
    allowList: list,
    maxAgeS: overrides.maxAgeS ?? 3_600,
    nowMs: overrides.nowMs ?? Date.now(),
  });
  const nfc = (uid: string): Identified => ({ kind: 'nfc', uidHash: cardHash(uid) });
  const qr = (token: string, replayed = false): Identified => ({
    kind: 'qr',
    check: checkQrToken(token, qrKeys, Date.now()),
    replayed,
  });

  it('checks a card in by the hash of its UID, in any case', () => {
    expect(decideOffline('check-in', nfc('04A1B2C3D4E5F6'), ctx())).to.deep.equal({ decision: 'allow', userId: ana });
    expect(decideOffline('check-in', nfc('01020304'), ctx())).to.deep.equal({
      decision: 'deny',
      reason: 'unknown-credential',
    });
    expect(decideOffline('check-in', nfc('deadbeef'), ctx())).to.deep.include({ reason: 'membership-inactive' });
    // Leaving is never refused to a recognised member.
    expect(decideOffline('check-out', nfc('deadbeef'), ctx())).to.deep.equal({ decision: 'allow', userId: bo });
  });

  it('checks a signed QR token in and refuses expired, forged, wrong-typ and replayed ones', () => {
    expect(decideOffline('check-in', qr(qrToken(qrKey, cy)), ctx())).to.deep.equal({ decision: 'allow', userId: cy });
    const expired = qrToken(qrKey, cy, { nowMs: Date.now() - 120_000, ttlS: 60 });
    expect(decideOffline('check-in', qr(expired), ctx())).to.deep.equal({ decision: 'deny', reason: 'expired-token' });
    const forged = qrToken(newSigningKey(qrKey.kid), cy);
    expect(decideOffline('check-in', qr(forged), ctx())).to.deep.equal({ decision: 'deny', reason: 'invalid-token' });
    const unknownKey = qrToken(newSigningKey(), cy);
    expect(decideOffline('check-in', qr(unknownKey), ctx())).to.deep.include({ reason: 'invalid-token' });
    const iat = Math.floor(Date.now() / 1000);
    const wrongTyp = signJws(JWS_TYPES.gatewayConfig, { sub: cy, nonce: 'n'.repeat(16), iat, exp: iat + 30 }, qrKey);
    expect(decideOffline('check-in', qr(wrongTyp), ctx())).to.deep.include({ reason: 'invalid-token' });
    const tooLong = signJws(JWS_TYPES.qr, { sub: cy, nonce: 'n'.repeat(16), iat, exp: iat + 600 }, qrKey);
    expect(decideOffline('check-in', qr(tooLong), ctx())).to.deep.include({ reason: 'invalid-token' });
    expect(decideOffline('check-in', qr(qrToken(qrKey, cy), true), ctx())).to.deep.include({
      decision: 'deny',
      reason: 'replayed-token',
    });
    // Signed, but the member is not on the branch's list.
    expect(decideOffline('check-in', qr(qrToken(qrKey, asUserId('u-elsewhere'))), ctx())).to.deep.include({
      reason: 'membership-inactive',
    });
  });

  it('denies allow-list-stale when the list is older than allowListMaxAgeS', () => {
    expect(decideOffline('check-in', nfc('04a1b2c3d4e5f6'), ctx({ maxAgeS: 60, nowMs: now + 120_000 }))).to.deep.equal({
      decision: 'deny',
      reason: 'allow-list-stale',
      userId: ana,
    });
  });

  it('persists QR nonces for the token lifetime, across a restart', async () => {
    const file = path.join(dir, 'nonces.json');
    const cache = createReplayCache({ file, nowMs: Date.now, log });
    expect(await cache.claim('nonce-aaaaaaaaaaaa', Date.now() + 30_000)).to.equal(true);
    expect(await cache.claim('nonce-aaaaaaaaaaaa', Date.now() + 30_000)).to.equal(false);
    expect(await cache.claim('nonce-old-aaaaaaa', Date.now() - 1)).to.equal(true);
    const restarted = createReplayCache({ file, nowMs: Date.now, log });
    await restarted.load();
    expect(await restarted.claim('nonce-aaaaaaaaaaaa', Date.now() + 30_000)).to.equal(false);
    expect(await restarted.claim('nonce-old-aaaaaaa', Date.now() + 30_000)).to.equal(true);
  });

  it('reads line-reader lines as QR tokens or NFC UIDs', () => {
    const token = qrToken(qrKey, cy);
    expect(credentialOfLine(`${token}\r`)).to.deep.equal({ kind: 'qr', token });
    expect(credentialOfLine('04:A1:B2:C3:D4:E5:F6')).to.deep.equal({ kind: 'nfc', uid: '04a1b2c3d4e5f6' });
    expect(credentialOfLine('hello')).to.equal(undefined);
    expect(credentialOfLine('')).to.equal(undefined);
  });
});
