import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { expect } from 'chai';
import { Redis } from 'ioredis';
import mongoose from 'mongoose';
import { connectAsync } from 'mqtt';
import {
  isProcessAlive,
  ServiceStartError,
  waitForProcessesGone,
  startMongo,
  startMosquitto,
  startRedis,
  startServices,
  spawnService,
  withPortRetry,
  type RunningService,
} from './index.ts';

/**
 * Runs a fixture script (a parent that starts services) and reads the JSON line of pids it prints once they are up.
 */
async function startFixture<K extends string>(script: string, { detached = false } = {}) {
  const child = spawn(process.execPath, [path.join(import.meta.dirname, script)], {
    stdio: ['ignore', 'pipe', 'pipe'],
    detached,
  });
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const exited = new Promise((resolve) => child.once('exit', resolve));
  const line = await new Promise<string>((resolve, reject) => {
    createInterface({ input: child.stdout }).once('line', resolve);
    child.once('exit', (code) => reject(new Error(`fixture exited (${code}) before printing pids:\n${stderr}`)));
  });
  return { child, exited, pids: JSON.parse(line) as Record<K, number> };
}

/**
 * Holds a port on 127.0.0.1 so a service started on it must fail. Connections (readiness probes) are dropped at
 * once: an unread, paused socket never sees the peer's FIN, and server.close() would then wait forever.
 */
async function occupyPort(): Promise<net.Server> {
  const server = net.createServer((socket) => socket.destroy());
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return server;
}

function portOf(server: net.Server): number {
  const address = server.address();
  if (!address || typeof address === 'string') throw new Error('no port');
  return address.port;
}

describe('tools/services: real services as child processes', function () {
  // Measured: stand-in ready in 0.3-1.1 s, redis and mosquitto in tens of ms.
  this.timeout(30_000);

  const tmpDirs: string[] = [];
  const makeTmpDir = async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'nxg-services-test-'));
    tmpDirs.push(dir);
    return dir;
  };
  after(async () => {
    await Promise.all(tmpDirs.map((dir) => rm(dir, { recursive: true, force: true })));
  });

  describe('MongoDB stand-in', () => {
    it('in memory: mongoose creates, finds and enforces a unique index (E11000); stop leaves no process', async () => {
      const mongo = await startMongo({ storage: { kind: 'memory' } });
      expect(mongo.url).to.equal(`mongodb://127.0.0.1:${mongo.port}`);
      const conn = await mongoose.createConnection(mongo.url, { dbName: 'services_test' }).asPromise();
      try {
        const Member = conn.model('Member', new mongoose.Schema({ email: { type: String, unique: true }, n: Number }));
        await Member.init();
        await Member.create({ email: 'a@example.com', n: 1 });
        const found = await Member.findOne({ email: 'a@example.com' }).lean();
        expect(found?.n).to.equal(1);
        const duplicate = await Member.create({ email: 'a@example.com', n: 2 }).then(
          () => undefined,
          (err: unknown) => err as { code?: number },
        );
        expect(duplicate?.code).to.equal(11000);
        expect(await Member.countDocuments()).to.equal(1);
      } finally {
        await conn.close();
      }
      await mongo.stop();
      expect(isProcessAlive(mongo.pid)).to.equal(false);
    });

    it('on an H2 file: documents survive a stop and a start on the same file', async () => {
      const file = path.join(await makeTmpDir(), 'nested', 'nxg.mv.db');
      const first = await startMongo({ storage: { kind: 'h2', file } });
      const conn1 = await mongoose.createConnection(first.url, { dbName: 'durable' }).asPromise();
      await conn1.collection('things').insertMany([
        { _id: 'a' as never, v: 1 },
        { _id: 'b' as never, v: 2 },
      ]);
      await conn1.close();
      await first.stop();
      expect(isProcessAlive(first.pid)).to.equal(false);

      const second = await startMongo({ storage: { kind: 'h2', file } });
      try {
        const conn2 = await mongoose.createConnection(second.url, { dbName: 'durable' }).asPromise();
        const docs = await conn2.collection('things').find().sort({ _id: 1 }).toArray();
        await conn2.close();
        expect(docs.map((d) => d.v as number)).to.deep.equal([1, 2]);
      } finally {
        await second.stop();
      }
    });

    it('on an H2 file: acknowledged writes survive a kill -9 (commit delay 20 ms, not the default 1,000 ms)', async () => {
      const file = path.join(await makeTmpDir(), 'crash.mv.db');
      const first = await startMongo({ storage: { kind: 'h2', file } });
      const conn1 = await mongoose.createConnection(first.url, { dbName: 'crash' }).asPromise();
      await conn1.collection('acked').insertMany(Array.from({ length: 200 }, (_, i) => ({ i })));
      await conn1.collection('acked').insertOne({ i: 200 });
      // Well past 20 ms, well inside the 1,000 ms that lost writes before.
      await new Promise((resolve) => setTimeout(resolve, 150));
      process.kill(first.pid, 'SIGKILL');
      await first.stop();
      await conn1.close(true);

      const second = await startMongo({ storage: { kind: 'h2', file } });
      try {
        const conn2 = await mongoose.createConnection(second.url, { dbName: 'crash' }).asPromise();
        const count = await conn2.collection('acked').countDocuments();
        await conn2.close();
        expect(count).to.equal(201);
      } finally {
        await second.stop();
      }
    });
  });

  describe('redis-server', () => {
    it('answers SET/GET through ioredis; stop leaves no process', async () => {
      const redis = await startRedis();
      expect(redis.url).to.equal(`redis://127.0.0.1:${redis.port}`);
      const client = new Redis(redis.url);
      try {
        await client.set('k', 'v');
        expect(await client.get('k')).to.equal('v');
        // Tests write nothing to disk.
        expect(await client.config('GET', 'appendonly')).to.deep.equal(['appendonly', 'no']);
        expect(await client.config('GET', 'save')).to.deep.equal(['save', '']);
      } finally {
        client.disconnect();
      }
      await redis.stop();
      expect(isProcessAlive(redis.pid)).to.equal(false);
    });

    it('with a dataDir keeps keys across a restart (append-only file)', async () => {
      const dataDir = await makeTmpDir();
      const first = await startRedis({ dataDir });
      const c1 = new Redis(first.url);
      await c1.set('kept', 'yes');
      c1.disconnect();
      await first.stop();

      const second = await startRedis({ dataDir });
      const c2 = new Redis(second.url);
      try {
        expect(await c2.get('kept')).to.equal('yes');
      } finally {
        c2.disconnect();
        await second.stop();
      }
    });
  });

  describe('mosquitto', () => {
    it('relays a QoS 1 message between two mqtt clients; stop leaves no process', async () => {
      const broker = await startMosquitto();
      expect(broker.url).to.equal(`mqtt://127.0.0.1:${broker.port}`);
      const sub = await connectAsync(broker.url, { clientId: 'services-test-sub', reconnectPeriod: 0 });
      const pub = await connectAsync(broker.url, { clientId: 'services-test-pub', reconnectPeriod: 0 });
      try {
        await sub.subscribeAsync('nxg/v1/test/#', { qos: 1 });
        const received = new Promise<[string, string]>((resolve) =>
          sub.once('message', (topic, payload) => resolve([topic, payload.toString()])),
        );
        await pub.publishAsync('nxg/v1/test/hello', 'world', { qos: 1 });
        expect(await received).to.deep.equal(['nxg/v1/test/hello', 'world']);
      } finally {
        await Promise.all([sub.endAsync(true), pub.endAsync(true)]);
      }
      await broker.stop();
      expect(isProcessAlive(broker.pid)).to.equal(false);
    });
  });

  it('a parent killed with SIGKILL leaves none of its services behind', async () => {
    const { child, exited, pids } = await startFixture<'mongo' | 'redis' | 'mosquitto'>('orphan-fixture.ts');
    try {
      const all = Object.values(pids);
      expect(all.filter(isProcessAlive)).to.deep.equal(all);

      child.kill('SIGKILL');
      await exited;
      expect(await waitForProcessesGone(all, 5_000)).to.deep.equal([]);
    } finally {
      child.kill('SIGKILL');
    }
  });

  it("detached: a Ctrl-C to the parent's process group does not reach the service; pdeathsig still does", async () => {
    // The fixture leads a process group of its own, standing for the terminal's foreground group (not mocha's).
    const { child, exited, pids } = await startFixture<'detached' | 'attached'>('process-group-fixture.ts', {
      detached: true,
    });
    try {
      expect([pids.detached, pids.attached].filter(isProcessAlive)).to.have.length(2);

      // What a terminal does on Ctrl-C. The fixture ignores it; redis-server stops on SIGINT.
      process.kill(-(child.pid ?? 0), 'SIGINT');
      // The one in the fixture's group got it (so the signal was sent and delivered) ...
      expect(await waitForProcessesGone([pids.attached], 5_000)).to.deep.equal([]);
      await new Promise((resolve) => setTimeout(resolve, 100));
      // ... the detached one did not.
      expect(isProcessAlive(pids.detached)).to.equal(true);
      expect(child.exitCode).to.equal(null);

      child.kill('SIGKILL');
      await exited;
      expect(await waitForProcessesGone([pids.detached], 5_000)).to.deep.equal([]);
    } finally {
      child.kill('SIGKILL');
    }
  });

  describe('a port that is already taken', () => {
    let blocker: net.Server;
    beforeEach(async () => {
      blocker = await occupyPort();
    });
    afterEach(() => new Promise<void>((resolve) => blocker.close(() => resolve())));

    const cases: [string, (port: number) => Promise<RunningService>][] = [
      ['redis-server', (port) => startRedis({ port })],
      ['mosquitto', (port) => startMosquitto({ port })],
      ['mongo-stand-in', (port) => startMongo({ storage: { kind: 'memory' }, port })],
    ];
    for (const [name, start] of cases) {
      it(`${name}: fails fast with a clear error, not a hang`, async () => {
        const started = Date.now();
        const err = await start(portOf(blocker)).then(
          async (service) => {
            await service.stop();
            return undefined;
          },
          (e: unknown) => e,
        );
        expect(err).to.be.instanceOf(ServiceStartError);
        const startError = err as ServiceStartError;
        expect(startError.addressInUse).to.equal(true);
        expect(startError.message).to.match(new RegExp(`^${name} exited with code \\d+ before it was ready`));
        expect(startError.message).to.match(/address already in use/i);
        expect(Date.now() - started).to.be.below(10_000);
      });
    }
  });

  describe('spawnService', () => {
    it('reports a missing ready line with the last output, by the deadline', async () => {
      const proc = await spawnService({ name: 'talker', command: 'sh', args: ['-c', 'echo hello; exec sleep 30'] });
      try {
        const started = Date.now();
        const err = await proc.waitForLine(/never/, 300).catch((e: unknown) => e);
        expect(err).to.be.instanceOf(ServiceStartError);
        expect((err as Error).message).to.match(/talker printed no \/never\/ within 300 ms/);
        expect((err as Error).message).to.contain('hello');
        expect(Date.now() - started).to.be.below(3_000);
      } finally {
        await proc.stop();
      }
      expect(isProcessAlive(proc.pid)).to.equal(false);
    });

    it('does not let a probe that never answers carry it past the deadline', async () => {
      const proc = await spawnService({ name: 'silent', command: 'sleep', args: ['30'] });
      try {
        const started = Date.now();
        const err = await proc.waitUntil(() => new Promise<boolean>(() => {}), 300).catch((e: unknown) => e);
        expect((err as Error).message).to.match(/^silent was not ready within 300 ms/);
        expect(Date.now() - started).to.be.below(3_000);
      } finally {
        await proc.stop();
      }
    });

    it('detached: leads a process group of its own, and stop() still ends it', async () => {
      const proc = await spawnService({ name: 'loner', command: 'sleep', args: ['30'], detached: true });
      try {
        // /proc/PID/stat: "PID (comm) STATE PPID PGRP …"
        const stat = await readFile(`/proc/${proc.pid}/stat`, 'utf8');
        const [, ppid, pgrp] = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
        expect(Number(ppid)).to.equal(process.pid);
        expect(Number(pgrp)).to.equal(proc.pid);
      } finally {
        expect(await proc.stop()).to.deep.equal({ code: null, signal: 'SIGTERM' });
      }
      expect(isProcessAlive(proc.pid)).to.equal(false);
    });

    it('stop() escalates to SIGKILL when SIGTERM is ignored', async () => {
      // An ignored signal stays ignored across exec, so sleep itself ignores SIGTERM.
      const script = 'trap "" TERM; echo ignoring; exec sleep 30';
      const proc = await spawnService({ name: 'stubborn', command: 'sh', args: ['-c', script] });
      await proc.waitForLine(/^ignoring$/, 10_000);
      const status = await proc.stop(200);
      expect(status).to.deep.equal({ code: null, signal: 'SIGKILL' });
      expect(isProcessAlive(proc.pid)).to.equal(false);
    });
  });

  it('withPortRetry tries another port when the first is reported taken', async () => {
    const tried: number[] = [];
    const result = await withPortRetry((port) => {
      tried.push(port);
      if (tried.length === 1) {
        return Promise.reject(new ServiceStartError('svc', 'svc exited', 'bind: Address already in use'));
      }
      return Promise.resolve(port);
    });
    expect(tried).to.have.length(2);
    expect(result).to.equal(tried[1]);
  });

  describe('startServices', () => {
    it('uses the URLs it is given and starts nothing', async () => {
      const services = await startServices({
        mongo: { url: 'mongodb://db.example:27017', storage: { kind: 'memory' } },
        redis: { url: 'redis://cache.example:6379' },
      });
      expect(services).to.include({
        mongoUrl: 'mongodb://db.example:27017',
        redisUrl: 'redis://cache.example:6379',
        mongo: undefined,
        redis: undefined,
      });
      await services.stop();
    });

    it('starts what has no URL and stops it again', async () => {
      const services = await startServices({
        mongo: { url: 'mongodb://db.example:27017', storage: { kind: 'memory' } },
        redis: {},
      });
      expect(services.mongo).to.equal(undefined);
      expect(services.redisUrl).to.equal(services.redis?.url);
      const pid = services.redis?.pid ?? 0;
      expect(isProcessAlive(pid)).to.equal(true);
      await services.stop();
      expect(isProcessAlive(pid)).to.equal(false);
    });
  });
});
