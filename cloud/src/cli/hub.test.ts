import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { expect } from 'chai';
import type { Connection } from 'mongoose';
import { hashSecret, SECRET_PATTERN, verifySecret } from '../../../tools/mqtt/secrets.ts';
import { pino } from 'pino';
import { systemClock } from '../../../tools/runtime/clock.ts';
import { eventually } from '../../../test/helpers/eventually.ts';
import { connectMongoose, connectTestRedis, testServices, uniqueDbName } from '../../../test/helpers/services.ts';
import { createIdentityStore } from '../broker/identities.ts';
import { createCachedIdentityStore } from '../broker/identity-cache.ts';
import { runHub } from './hub.ts';

const run = promisify(execFile);

describe('hub CLI (npm run hub)', function () {
  this.timeout(30_000);
  let dbName: string;
  let env: Record<string, string>;
  let mongo: Connection;
  let dir: string;

  before(async () => {
    dbName = uniqueDbName('hub');
    env = { MONGO_URL: `${testServices().mongoUrl}/${dbName}`, MONGO_TIMEOUT_MS: '3000' };
    mongo = await connectMongoose(dbName);
    dir = await mkdtemp(path.join(os.tmpdir(), 'nxg-hub-'));
  });
  after(async () => {
    await mongo.dropDatabase();
    await mongo.close();
    await rm(dir, { recursive: true, force: true });
  });

  async function hub(...argv: string[]) {
    let stdout = '';
    let stderr = '';
    const code = await runHub(argv, { env, stdout: (t) => (stdout += t), stderr: (t) => (stderr += t) });
    return { code, stdout, stderr };
  }

  it('adds a gateway, prints its secret once and stores only the hash', async () => {
    const res = await hub('gateway', 'add', 'gw-demo-1', '--branch', 'demo');
    expect(res.code).to.equal(0);
    const secret = /secret \(shown once; store it now\): (\S+)/.exec(res.stdout)?.[1];
    expect(secret).to.match(SECRET_PATTERN);
    const stored = await createIdentityStore(mongo).find('gw-demo-1');
    expect(stored).to.deep.include({ role: 'gateway', branches: ['demo'], disabled: false });
    expect(stored!.secretHash).to.equal(hashSecret(secret!));
    const raw = await mongo.collection('mqtt_identities').findOne({ _id: 'gw-demo-1' as never });
    expect(JSON.stringify(raw)).to.not.include(secret);
  });

  it('adds machines to the gateway and writes its machines file with their hashes', async () => {
    const m1 = await hub('machine', 'add', 'tm-01', '--branch', 'demo', '--gateway', 'gw-demo-1', '--json');
    const m2 = await hub('machine', 'add', 'rw-01', '--branch', 'demo', '--gateway', 'gw-demo-1', '--json');
    expect(m1.code).to.equal(0);
    const s1 = (JSON.parse(m1.stdout) as { secret: string; gateway: string }).secret;
    expect((JSON.parse(m2.stdout) as { gateway: string }).gateway).to.equal('gw-demo-1');
    const out = path.join(dir, 'gw.json');
    const res = await hub('gateway', 'machines', 'gw-demo-1', '--out', out);
    expect(res.code).to.equal(0);
    const file = JSON.parse(await readFile(out, 'utf8')) as {
      gatewayId: string;
      branch: string;
      machines: { id: string; secretHash: string }[];
    };
    expect(file.gatewayId).to.equal('gw-demo-1');
    expect(file.branch).to.equal('demo');
    expect(file.machines.map((m) => m.id)).to.deep.equal(['rw-01', 'tm-01']);
    expect(verifySecret(s1, file.machines.find((m) => m.id === 'tm-01')!.secretHash)).to.equal(true);
    const toStdout = await hub('gateway', 'machines', 'gw-demo-1');
    expect(JSON.parse(toStdout.stdout)).to.deep.equal(file);
  });

  it('refuses a machine of another branch, an unknown gateway, a taken id and bad ids', async () => {
    expect((await hub('machine', 'add', 'x-1', '--branch', 'other', '--gateway', 'gw-demo-1')).code).to.equal(1);
    expect((await hub('machine', 'add', 'x-2', '--branch', 'demo', '--gateway', 'gw-nope')).stderr).to.include(
      'there is no gateway gw-nope',
    );
    const taken = await hub('observer', 'add', 'tm-01', '--branch', 'demo');
    expect(taken.code).to.equal(1);
    expect(taken.stderr).to.include('already exists');
    for (const bad of ['a/b', '#', 'Upper', 'constructor', 'x'.repeat(64)]) {
      const res = await hub('gateway', 'add', bad, '--branch', 'demo');
      expect(res.code, bad).to.equal(1);
      expect(res.stdout).to.equal('');
    }
    expect((await hub('gateway', 'add', 'gw-x', '--branch', 'a+b')).code).to.equal(1);
    expect((await hub('gateway', 'add', 'gw-x')).code).to.equal(2);
    expect((await hub('nonsense')).code).to.equal(2);
  });

  it('adds an observer of several branches, lists without secrets, revokes', async () => {
    const obs = await hub('observer', 'add', 'ops', '--branch', 'demo, other', '--json');
    expect(JSON.parse(obs.stdout)).to.deep.include({ id: 'ops', role: 'observer', branches: ['demo', 'other'] });
    const list = await hub('list', '--json');
    const ids = (JSON.parse(list.stdout) as { id: string }[]).map((i) => i.id);
    expect(ids).to.deep.equal(['gw-demo-1', 'ops', 'rw-01', 'tm-01']);
    expect(list.stdout).to.not.match(/secret|[0-9a-f]{64}/i);
    const table = await hub('list', '--role', 'machine');
    expect(table.stdout).to.include('tm-01').and.include('active').and.not.include('observer');
    expect((await hub('revoke', 'tm-01')).code).to.equal(0);
    expect((await hub('list', '--role', 'machine')).stdout).to.include('revoked');
    expect((await hub('revoke', 'nobody')).code).to.equal(1);
    const file = JSON.parse((await hub('gateway', 'machines', 'gw-demo-1')).stdout) as { machines: { id: string }[] };
    expect(file.machines.map((m) => m.id)).to.deep.equal(['rw-01']);
  });

  it('revoke tells the cloud nodes over Redis (REDIS_URL, REDIS_KEY_PREFIX), so their caches drop it at once', async () => {
    const redis = await connectTestRedis();
    const prefix = `test:${process.pid}:hub-revoke:`;
    // A cloud node's identity cache, holding the observer from an earlier lookup.
    const node = await createCachedIdentityStore({
      store: createIdentityStore(mongo),
      redis: redis.client,
      redisKeyPrefix: prefix,
      maxEntries: 100,
      ttlMs: 60_000,
      clock: systemClock,
      log: pino({ level: 'silent' }),
    });
    try {
      expect((await hub('observer', 'add', 'ops-cached', '--branch', 'demo')).code).to.equal(0);
      expect((await node.find('ops-cached'))?.disabled).to.equal(false);
      const withoutRedis = await hub('revoke', 'ops-cached');
      expect(withoutRedis.stderr).to.include('MQTT_IDENTITY_CACHE_TTL_MS');
      expect(node.isCached('ops-cached'), 'not told: still cached').to.equal(true);
      const res = await runHub(['revoke', 'ops-cached'], {
        env: { ...env, REDIS_URL: testServices().redisUrl, REDIS_KEY_PREFIX: prefix },
        stdout: () => undefined,
        stderr: (t) => expect.fail(t),
      });
      expect(res).to.equal(0);
      await eventually('the node drops ops-cached', () => !node.isCached('ops-cached'), 5000, 20);
      expect((await node.find('ops-cached'))?.disabled).to.equal(true);
    } finally {
      await node.close();
      await redis.close();
    }
  });

  it('stops with EX_CONFIG when MONGO_URL is missing, naming it', async () => {
    let stderr = '';
    const code = await runHub(['list'], { env: {}, stdout: () => undefined, stderr: (t) => (stderr += t) });
    expect(code).to.equal(78);
    expect(stderr).to.include('MONGO_URL');
  });

  it('runs as `node cloud/src/cli/hub.ts` (the npm script)', async () => {
    const root = path.resolve(import.meta.dirname, '../../..');
    const { stdout } = await run(
      process.execPath,
      ['cloud/src/cli/hub.ts', 'observer', 'add', 'ops-2', '--branch', 'demo'],
      {
        cwd: root,
        env: { ...process.env, ...env },
      },
    );
    expect(stdout).to.match(/observer ops-2 created \(branch demo\)\.\nsecret \(shown once; store it now\): \S{43}\n/);
  });
});
