/**
 * Regression tests of the review of the gateway's access path: late and stray cloud answers, a clock that was
 * never set, the QR nonce cache's bounds and damage, scan repeats and floods, hostile line-reader input, and
 * re-enrolment over an existing file.
 */
import { appendFile, chmod, mkdtemp, readdir, rename, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { asBranchId, asGatewayId, asReaderId, asUserId, newReqId, topics } from '../../../protocol/index.ts';
import type { ReqId } from '../../../protocol/index.ts';
import { createLogger } from '../../../tools/runtime/logger.ts';
import { createAllowList } from '../cloud-config/allow-list.ts';
import { removeLeftoverTemps, writeFileAtomic } from '../cloud-config/files.ts';
import { createKeyring } from '../cloud-config/keys.ts';
import { enrolGateway, EnrolmentError } from '../enrolment/enrol.ts';
import { allowListCommands, newSigningKey, qrToken } from '../testing/access-fixtures.ts';
import { cardHash, checkQrToken } from './credentials.ts';
import { createLineReader } from './line-reader.ts';
import { decideOffline } from './offline.ts';
import { createOnlineRequester } from './online.ts';
import type { ReaderScan } from './readers.ts';
import { createReplayCache } from './replay-cache.ts';
import { createScanLimiter } from './scan-limiter.ts';

const log = createLogger({ name: 'test', level: 'silent' });
const branch = asBranchId('demo');
const gatewayId = asGatewayId('gw-1');
const ana = asUserId('u-ana');
const ANA_CARD = '04a1b2c3d4e5f6';

async function eventually(check: () => boolean, what: string, timeoutMs = 3_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('gateway access hardening', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'nxg-g2-rev-'));
  });
  afterEach(() => rm(dir, { recursive: true, force: true }));

  describe('online requests', () => {
    const answer = (reqId: ReqId) =>
      Buffer.from(JSON.stringify({ reqId, ok: true, decision: { decision: 'allow', userId: ana } }));

    it('ignores and counts an answer after the timeout, and answers on another gateway’s topic', async () => {
      const published: string[] = [];
      const requester = createOnlineRequester({
        branch,
        gatewayId,
        publish: (topic) => (published.push(topic), true),
        timeoutMs: 50,
        log,
      });
      const request = {
        reqId: newReqId(),
        ts: Date.now(),
        reader: asReaderId('door-in'),
        credential: { kind: 'nfc' as const, uid: 'ab' },
      };
      // Another gateway's response topic with this reqId: not an answer.
      const pending = requester.ask('check-in', request);
      requester.onResponse(
        topics.gatewayRequestResponse(branch, asGatewayId('gw-2'), 'check-in'),
        answer(request.reqId),
      );
      expect(requester.stray).to.equal(1);
      expect(await pending).to.deep.equal({ ok: false, why: 'timeout' });
      // The cloud's answer after the gateway decided offline: one scan, one decision.
      requester.onResponse(topics.gatewayRequestResponse(branch, gatewayId, 'check-in'), answer(request.reqId));
      expect(requester.late).to.equal(1);
      expect(requester.waiting).to.equal(0);
      // An answer to a request never made is stray, not late.
      requester.onResponse(topics.gatewayRequestResponse(branch, gatewayId, 'check-in'), answer(newReqId()));
      expect(requester.stray).to.equal(2);
      expect(published).to.deep.equal([topics.gatewayRequest(branch, gatewayId, 'check-in')]);

      // In time, on its own topic: the decision.
      const next = { ...request, reqId: newReqId() };
      const inTime = requester.ask('check-in', next);
      requester.onResponse(topics.gatewayRequestResponse(branch, gatewayId, 'check-in'), answer(next.reqId));
      expect(await inTime).to.deep.equal({ ok: true, decision: { decision: 'allow', userId: ana } });
    });
  });

  describe('allow-list assembly', () => {
    it('never mixes revisions: an older revision’s part is stale, a duplicate counts once, a newer one restarts', async () => {
      const cloudKey = newSigningKey();
      const list = createAllowList({
        file: path.join(dir, 'allow-list.json'),
        branch,
        keys: createKeyring([cloudKey.jwk]),
        nowMs: Date.now,
        log,
      });
      const members = (n: number, prefix: string) =>
        Array.from({ length: n }, (_, i) => ({ userId: asUserId(`${prefix}-${i}`), uids: [`0${prefix}0${i}`] }));
      const rev2 = allowListCommands(cloudKey, { branch, revision: 2, members: members(3, 'a'), partSize: 1 });
      const rev3 = allowListCommands(cloudKey, { branch, revision: 3, members: members(2, 'b'), partSize: 1 });
      const code = (o: { ok: boolean; error?: { code: string } }) => (o.ok ? 'ok' : o.error?.code);
      expect(code(await list.apply(rev2[0]!))).to.equal('ok');
      expect(code(await list.apply(rev3[0]!))).to.equal('ok');
      expect(code(await list.apply(rev2[1]!))).to.equal('stale-revision'); // older than the one arriving
      expect(code(await list.apply(rev3[0]!))).to.equal('ok'); // duplicated: still one part of two
      expect(list.revision).to.equal(undefined);
      expect(code(await list.apply(rev3[1]!))).to.equal('ok');
      expect(list.revision).to.equal(3);
      expect(list.size).to.equal(2);
      expect(list.byCard(cardHash('0a00'))).to.equal(undefined); // nothing of revision 2 slipped in
      expect(code(await list.apply(rev2[2]!))).to.equal('stale-revision'); // replayed older revision
      // A part whose signed document says another part than the command: invalid, not counted.
      expect(code(await list.apply({ ...rev3[0]!, part: 1 }))).to.equal('invalid');
      expect(list.revision).to.equal(3);
    });
  });

  describe('a clock that was never set (RTC at 1970)', () => {
    it('denies check-in offline (allow-list-stale) and refuses QR tokens, but lets a member leave', async () => {
      const cloudKey = newSigningKey();
      const qrKey = newSigningKey();
      const list = createAllowList({
        file: path.join(dir, 'allow-list.json'),
        branch,
        keys: createKeyring([cloudKey.jwk]),
        nowMs: Date.now,
        log,
      });
      for (const part of allowListCommands(cloudKey, {
        branch,
        revision: 1,
        members: [{ userId: ana, uids: [ANA_CARD], validUntil: Date.now() + 86_400_000 }],
      })) {
        expect(await list.apply(part)).to.deep.equal({ ok: true });
      }
      const epoch = 86_400_000; // 2 Jan 1970
      const ctx = { allowList: list, maxAgeS: 3_600, nowMs: epoch };
      const card = { kind: 'nfc' as const, uidHash: cardHash(ANA_CARD) };
      expect(decideOffline('check-in', card, ctx)).to.deep.equal({
        decision: 'deny',
        reason: 'allow-list-stale',
        userId: ana,
      });
      expect(decideOffline('link', card, ctx)).to.deep.include({ decision: 'deny', reason: 'allow-list-stale' });
      expect(decideOffline('check-out', card, ctx)).to.deep.equal({ decision: 'allow', userId: ana });
      expect(checkQrToken(qrToken(qrKey, ana), createKeyring([qrKey.jwk]), epoch)).to.deep.equal({
        ok: false,
        reason: 'invalid-token',
      });
      // The same list with the clock right: allowed.
      expect(decideOffline('check-in', card, { ...ctx, nowMs: Date.now() })).to.deep.equal({
        decision: 'allow',
        userId: ana,
      });
    });
  });

  describe('QR nonce cache', () => {
    it('refuses a token rather than evict a nonce when full', async () => {
      const cache = createReplayCache({ file: path.join(dir, 'n.json'), nowMs: Date.now, log, maxNonces: 3 });
      const until = Date.now() + 30_000;
      for (const n of ['nonce-aaaaaaaaaaa1', 'nonce-aaaaaaaaaaa2', 'nonce-aaaaaaaaaaa3']) {
        expect(await cache.claim(n, until)).to.equal(true);
      }
      expect(await cache.claim('nonce-aaaaaaaaaaa4', until)).to.equal(false);
      expect(cache.size).to.equal(3);
      expect(await cache.claim('nonce-aaaaaaaaaaa1', until)).to.equal(false);
    });

    it('after an unreadable cache file refuses tokens issued before the start, not those issued after', async () => {
      const file = path.join(dir, 'n.json');
      await writeFile(file, '{"nonce-aaaaaaaaaaa1": 17'); // cut off mid-write by something other than us
      let now = Date.now();
      const cache = createReplayCache({ file, nowMs: () => now, log });
      await cache.load();
      expect(await cache.claim('nonce-bbbbbbbbbbb1', now + 30_000, now - 10_000)).to.equal(false);
      expect(await cache.claim('nonce-bbbbbbbbbbb2', now + 60_000, now + 1_000)).to.equal(true);
      now += 71_000; // every token from before the start has expired
      expect(await cache.claim('nonce-bbbbbbbbbbb3', now + 30_000, now - 80_000)).to.equal(true);
    });

    it('removes temporary files an interrupted atomic write left behind, not the files themselves', async () => {
      await writeFileAtomic(path.join(dir, 'qr-nonces.json'), '{}');
      await writeFile(path.join(dir, '.qr-nonces.json.0123456789ab.tmp'), '{"half');
      expect(await removeLeftoverTemps(dir)).to.equal(1);
      expect(await readdir(dir)).to.deep.equal(['qr-nonces.json']);
    });
  });

  describe('scan admission', () => {
    it('drops a scanner’s repeats of one credential and a flood from one source, per source', () => {
      let now = 1_000_000;
      const limiter = createScanLimiter({ nowMs: () => now });
      const card = (uid: string) => ({ kind: 'nfc' as const, uid });
      expect(limiter.admit('reader:door-in', card('aa'))).to.equal(undefined);
      now += 500;
      expect(limiter.admit('reader:door-in', card('AA'))).to.equal('repeat');
      now += 2_900; // held in front of the scanner: the window slides
      expect(limiter.admit('reader:door-in', card('aa'))).to.equal('repeat');
      expect(limiter.admit('reader:door-out', card('aa'))).to.equal(undefined); // another reader: decided
      now += 3_100;
      expect(limiter.admit('reader:door-in', card('aa'))).to.equal(undefined);
      // A flood of different credentials: a burst of 5, then 2 a second.
      const results = Array.from({ length: 20 }, (_, i) => limiter.admit('machine:m-1', card(`0${i.toString(16)}`)));
      expect(results.filter((r) => r === undefined)).to.have.length(5);
      expect(results.filter((r) => r === 'flood')).to.have.length(15);
      expect(limiter.admit('reader:door-out', card('bb'))).to.equal(undefined); // others are not starved
      now += 1_000;
      expect(limiter.admit('machine:m-1', card('ff'))).to.equal(undefined);
      expect(limiter.dropped).to.deep.equal({ repeat: 2, flood: 15 });
    });
  });

  describe('line reader against hostile input', () => {
    const startReader = (file: string) => {
      const scans: ReaderScan[] = [];
      const reader = createLineReader({
        reader: asReaderId('door-in'),
        path: file,
        onScan: (s) => scans.push(s),
        log,
        nowMs: Date.now,
        retryMinMs: 20,
        retryMaxMs: 50,
      });
      reader.start();
      return { reader, scans };
    };

    it('drops an overlong line whole — its tail is no credential — and binary lines, counting each', async () => {
      const file = path.join(dir, 'reader.txt');
      await writeFile(file, '');
      const { reader, scans } = startReader(file);
      try {
        await eventually(() => reader.status().connected, 'reader connected');
        // 5 KiB of junk, then (in a later write) the end of that same line, which on its own looks like a card UID.
        await appendFile(file, 'z'.repeat(5 * 1024));
        await new Promise((r) => setTimeout(r, 300));
        await appendFile(file, 'deadbeef\n');
        await appendFile(file, Buffer.from([0x00, 0xff, 0xfe, 0x2e, 0x0a])); // binary
        await appendFile(file, `${ANA_CARD}\n`);
        await eventually(() => scans.length === 1, 'the one credential');
        await new Promise((r) => setTimeout(r, 300));
        expect(scans.map((s) => s.credential)).to.deep.equal([{ kind: 'nfc', uid: ANA_CARD }]);
        expect(reader.unreadable).to.equal(2);
      } finally {
        reader.close();
      }
    });

    it('reads a rotated file (a new inode at the path) from its start', async () => {
      const file = path.join(dir, 'reader.txt');
      await writeFile(file, 'old-line-0123\n'.repeat(20));
      const { reader, scans } = startReader(file);
      try {
        await eventually(() => reader.status().connected, 'reader connected');
        await new Promise((r) => setTimeout(r, 200));
        // Rotated: the old file moves away and a new one, already longer than the old offset, takes the path at
        // once (renamed in), so only its inode tells it apart.
        await writeFile(`${file}.new`, `${ANA_CARD}\n${'cafe0001\n'.repeat(40)}`);
        await rename(file, `${file}.1`);
        await rename(`${file}.new`, file);
        await eventually(() => scans.length >= 41, 'every line of the new file');
        expect(scans[0]!.credential).to.deep.equal({ kind: 'nfc', uid: ANA_CARD });
      } finally {
        reader.close();
      }
    });
  });

  describe('enrolment over an existing file', () => {
    it('refuses to replace an enrolment file that no longer loads unless --force', async () => {
      const file = path.join(dir, 'enrolment.json');
      await writeFile(file, '{"gateway": "gw-1"');
      await chmod(file, 0o644);
      const attempt = enrolGateway({
        cloud: 'http://127.0.0.1:1',
        token: 't'.repeat(40),
        dataDir: dir,
        version: 'test',
        timeoutMs: 1_000,
      });
      const err = await attempt.then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).to.be.instanceOf(EnrolmentError);
      expect((err as Error).message).to.match(/already enrolled/);
      // With --force it goes on to the cloud (unreachable here): the refusal was only about the file.
      const forced = await enrolGateway({
        cloud: 'http://127.0.0.1:1',
        token: 't'.repeat(40),
        dataDir: dir,
        version: 'test',
        force: true,
        timeoutMs: 1_000,
      }).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect((forced as Error).message).to.match(/cannot reach/);
    });
  });
});
