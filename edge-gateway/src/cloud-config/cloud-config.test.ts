import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { asBranchId, asGatewayId, asUserId, JWS_TYPES, signJws } from '../../../protocol/index.ts';
import { createLogger } from '../../../tools/runtime/logger.ts';
import {
  allowListCommands,
  configCommand,
  configDocument,
  newSigningKey,
  uidHash,
} from '../testing/access-fixtures.ts';
import { createAllowList } from './allow-list.ts';
import { ensurePrivateDir } from './files.ts';
import { createKeyring } from './keys.ts';
import { createMachineRegistry } from '../machines-file.ts';
import { createSwitchableMachines } from './machine-set.ts';
import { createSignedConfig } from './signed-config.ts';

const log = createLogger({ name: 'test', level: 'silent' });
const branch = asBranchId('demo');
const gatewayId = asGatewayId('gw-1');
const cloudKey = newSigningKey();
const qrKey = newSigningKey();
const keys = createKeyring([cloudKey.jwk]);

describe('gateway signed configuration', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'nxg-g2-'));
    await ensurePrivateDir(path.join(dir, 'data'));
  });
  afterEach(() => rm(dir, { recursive: true, force: true }));

  const make = () =>
    createSignedConfig({ file: path.join(dir, 'data', 'config.jws'), gatewayId, branch, keys, nowMs: Date.now, log });
  const doc = (revision: number, extra = {}) =>
    configDocument({ branch, gateway: gatewayId, revision, qrKeys: [qrKey.jwk], ...extra });

  it('applies a signed configuration, stores the JWS 0600 in a 0700 directory, and verifies it again at start', async () => {
    const store = make();
    const seen: number[] = [];
    store.onChange((d) => seen.push(d.revision));
    expect(await store.apply(configCommand(cloudKey, doc(3)))).to.deep.equal({ ok: true });
    expect(store.revision).to.equal(3);
    expect(seen).to.deep.equal([3]);
    const file = path.join(dir, 'data', 'config.jws');
    expect((await stat(file)).mode & 0o777).to.equal(0o600);
    expect((await stat(path.join(dir, 'data'))).mode & 0o777).to.equal(0o700);

    const again = make();
    await again.load();
    expect(again.revision).to.equal(3);
    expect(again.document?.qrKeys[0]?.kid).to.equal(qrKey.kid);
  });

  it('refuses a stored configuration changed on disk', async () => {
    const store = make();
    await store.apply(configCommand(cloudKey, doc(3, { allowListMaxAgeS: 600 })));
    const file = path.join(dir, 'data', 'config.jws');
    const [h, p, s] = (await readFile(file, 'utf8')).split('.') as [string, string, string];
    const payload = JSON.parse(Buffer.from(p, 'base64url').toString()) as Record<string, unknown>;
    payload.allowListMaxAgeS = 2_592_000; // a longer offline window, without the cloud's signature
    await writeFile(file, `${h}.${Buffer.from(JSON.stringify(payload)).toString('base64url')}.${s}`);
    const again = make();
    await again.load();
    expect(again.document).to.equal(undefined);
  });

  it('answers bad-signature, invalid, stale-revision and expired as the protocol says', async () => {
    const store = make();
    const stranger = newSigningKey(cloudKey.kid); // same kid, other key: a forgery
    expect(await store.apply(configCommand(stranger, doc(1)))).to.deep.include({ ok: false });
    expect(((await store.apply(configCommand(stranger, doc(1)))) as { error: { code: string } }).error.code).to.equal(
      'bad-signature',
    );
    // An allow-list JWS presented as a configuration (wrong typ).
    const wrongTyp = signJws(JWS_TYPES.allowList, doc(1), cloudKey);
    expect(await store.apply({ revision: 1, jws: wrongTyp })).to.deep.equal({
      ok: false,
      error: { code: 'bad-signature', message: 'the JWS does not verify (wrong-type)' },
    });
    const other = configDocument({ branch, gateway: asGatewayId('gw-2'), revision: 1, qrKeys: [qrKey.jwk] });
    expect(codeOf(await store.apply(configCommand(cloudKey, other)))).to.equal('invalid');
    expect(codeOf(await store.apply({ ...configCommand(cloudKey, doc(1)), revision: 2 }))).to.equal('invalid');
    expect(codeOf(await store.apply({ ...configCommand(cloudKey, doc(1)), expiresAt: Date.now() - 1 }))).to.equal(
      'expired',
    );
    expect(await store.apply(configCommand(cloudKey, doc(5)))).to.deep.equal({ ok: true });
    expect(codeOf(await store.apply(configCommand(cloudKey, doc(4))))).to.equal('stale-revision');
    expect(store.revision).to.equal(5);
  });

  it('replaces the machines the local broker accepts', () => {
    const machines = createSwitchableMachines(createMachineRegistry({ gatewayId, branch, machines: [] }));
    expect(machines.has('m-01')).to.equal(false);
    const secret = 'a'.repeat(43);
    machines.replace([{ machine: 'm-01' as never, secretSha256: uidHash(secret) }]);
    expect(machines.has('m-01')).to.equal(true);
    expect(machines.verify('m-01', secret)).to.equal('m-01');
    expect(machines.verify('m-01', 'b'.repeat(43))).to.equal(undefined);
  });
});

describe('gateway allow-list', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'nxg-g2-'));
  });
  afterEach(() => rm(dir, { recursive: true, force: true }));

  const make = () => createAllowList({ file: path.join(dir, 'allow-list.json'), branch, keys, nowMs: Date.now, log });
  const members = Array.from({ length: 25 }, (_, i) => ({
    userId: asUserId(`u-${i}`),
    uids: [`0a0b0c${String(i).padStart(2, '0')}`],
  }));

  it('switches to a revision only when every part is held, and keeps it across a restart', async () => {
    const list = make();
    const parts = allowListCommands(cloudKey, { branch, revision: 7, members, partSize: 10 });
    expect(parts).to.have.length(3);
    expect(await list.apply(parts[2]!)).to.deep.equal({ ok: true });
    expect(await list.apply(parts[0]!)).to.deep.equal({ ok: true });
    expect(list.revision).to.equal(undefined);
    expect(list.byCard(uidHash('0a0b0c00'))).to.equal(undefined);
    expect(await list.apply(parts[1]!)).to.deep.equal({ ok: true });
    expect(list.revision).to.equal(7);
    expect(list.size).to.equal(25);
    expect(list.byCard(uidHash('0A0B0C24'))?.userId).to.equal('u-24');

    const again = make();
    await again.load();
    expect(again.revision).to.equal(7);
    expect(again.byCard(uidHash('0a0b0c13'))?.userId).to.equal('u-13');
    expect((await stat(path.join(dir, 'allow-list.json'))).mode & 0o777).to.equal(0o600);
  });

  it('refuses an older revision, a forged part and a stored part changed on disk', async () => {
    const list = make();
    for (const part of allowListCommands(cloudKey, { branch, revision: 9, members })) await list.apply(part);
    const [older] = allowListCommands(cloudKey, { branch, revision: 8, members });
    expect(codeOf(await list.apply(older!))).to.equal('stale-revision');
    const [forged] = allowListCommands(newSigningKey(cloudKey.kid), { branch, revision: 10, members });
    expect(codeOf(await list.apply(forged!))).to.equal('bad-signature');
    const [otherBranch] = allowListCommands(cloudKey, { branch: asBranchId('elsewhere'), revision: 10, members });
    expect(codeOf(await list.apply(otherBranch!))).to.equal('invalid');
    const [mismatch] = allowListCommands(cloudKey, { branch, revision: 10, members });
    expect(codeOf(await list.apply({ ...mismatch!, revision: 11 }))).to.equal('invalid');

    const file = path.join(dir, 'allow-list.json');
    const stored = JSON.parse(await readFile(file, 'utf8')) as { revision: number; parts: string[] };
    const [h, p, s] = stored.parts[0]!.split('.') as [string, string, string];
    const payload = JSON.parse(Buffer.from(p, 'base64url').toString()) as {
      members: { userId: string; nfc: string[] }[];
    };
    payload.members.push({ userId: 'intruder', nfc: [uidHash('deadbeef')] });
    stored.parts[0] = `${h}.${Buffer.from(JSON.stringify(payload)).toString('base64url')}.${s}`;
    await writeFile(file, JSON.stringify(stored));
    const again = make();
    await again.load();
    expect(again.revision).to.equal(undefined);
    expect(again.byCard(uidHash('deadbeef'))).to.equal(undefined);
  });
});

function codeOf(outcome: { ok: boolean; error?: { code: string } }): string | undefined {
  return outcome.error?.code;
}
