import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Aedes, type Client } from 'aedes';
import { expect } from 'chai';
import { connectAsync, type MqttClient } from 'mqtt';
import { pino } from 'pino';
import { payloadNameFor, parsePayload } from '../../protocol/payloads.ts';
import { parseTopic } from '../../protocol/topics.ts';
import { eventually } from '../../test/helpers/eventually.ts';
import { CredentialsError, readCredentials } from './credentials.ts';
import { startFleet, type Fleet, type FleetMachine } from './fleet.ts';
import { createFrontDesk } from './front-desk.ts';
import { machineIdAt, typeAt } from './machines/index.ts';

interface BareBroker {
  readonly url: string;
  readonly broker: Aedes;
  close(): Promise<void>;
}

/** A bare Aedes on a free port; `secrets` given: username/password are checked against it. */
async function startBareBroker(secrets?: Map<string, string>): Promise<BareBroker> {
  const broker = await Aedes.createBroker(
    secrets
      ? {
          authenticate: (client, username, password, done) => {
            const ok = username === client.id && secrets.get(client.id) === password?.toString();
            done(null, ok);
          },
        }
      : {},
  );
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    broker.handle(socket);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as net.AddressInfo;
  return {
    url: `mqtt://127.0.0.1:${port}`,
    broker,
    close: async () => {
      await new Promise<void>((resolve) => broker.close(() => resolve()));
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

interface Seen {
  readonly topic: string;
  readonly payload: Record<string, unknown>;
  readonly retain: boolean;
}

/** Subscribes to the branch's machine topics and validates every message against the protocol schemas. */
const OBSERVER = { id: `observer-${process.pid}`, secret: 'observer-secret' };

async function observe(url: string, branch = 'demo') {
  const client: MqttClient = await connectAsync(url, {
    clientId: OBSERVER.id,
    username: OBSERVER.id,
    password: OBSERVER.secret,
    reconnectPeriod: 0,
  });
  const seen: Seen[] = [];
  const invalid: string[] = [];
  client.on('message', (topic, payload, packet) => {
    const parsed = parseTopic(topic);
    if (parsed === undefined) {
      invalid.push(`${topic}: not in the topic tree`);
      return;
    }
    const result = parsePayload(payloadNameFor(parsed), payload);
    if (!result.ok) invalid.push(`${topic}: ${JSON.stringify(result)} ${payload.toString()}`);
    else if (result.unknownKeys.length > 0) invalid.push(`${topic}: unknown keys ${result.unknownKeys.join(', ')}`);
    seen.push({ topic, payload: JSON.parse(payload.toString()) as Record<string, unknown>, retain: packet.retain });
  });
  await client.subscribeAsync(`nxg/v1/b/${branch}/m/#`, { qos: 1 });
  return { client, seen, invalid };
}

const until = (what: string, check: () => boolean) => eventually(what, check, 15_000, 25);

function machines(count: number): FleetMachine[] {
  return Array.from({ length: count }, (_, i) => ({ id: machineIdAt(i), type: typeAt(i) }));
}

const kindOf = (topic: string) => topic.split('/').at(-1);
const ENVELOPE = ['msgId', 'source', 'bootId', 'seq', 'ts', 'v'];
const withoutEnvelope = (payload: Record<string, unknown>) =>
  Object.fromEntries(Object.entries(payload).filter(([key]) => !ENVELOPE.includes(key)));

describe('simulated machine fleet', function () {
  let broker: BareBroker;
  const fleets: Fleet[] = [];
  const clients: MqttClient[] = [];
  const children: ChildProcess[] = [];

  beforeEach(async function () {
    broker = await startBareBroker();
  });

  afterEach(async function () {
    for (const child of children.splice(0))
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await Promise.all(fleets.splice(0).map((fleet) => fleet.stop()));
    await Promise.all(clients.splice(0).map((client) => client.endAsync(true)));
    await broker.close();
  });

  it('connects one MQTT client per machine, whose every message passes the protocol schemas', async function () {
    const observer = await observe(broker.url);
    clients.push(observer.client);
    const clientIds = new Set<string>();
    broker.broker.on('client', (client: Client) => clientIds.add(client.id));
    const fleet = startFleet({
      url: broker.url,
      branch: 'demo',
      machines: machines(20),
      rate: 20,
      seed: 42,
      timeScale: 25,
    });
    fleets.push(fleet);
    await fleet.whenConnected(10_000);
    expect([...clientIds].sort()).to.deep.equal(
      machines(20)
        .map((m) => m.id)
        .sort(),
    );
    // Accelerated: cardio intervals and strength sets finish within seconds.
    await until('a workout from a cardio and a strength machine', () => {
      const workouts = observer.seen.filter((m) => kindOf(m.topic) === 'workout').map((m) => m.payload.segment);
      return workouts.includes('interval') && workouts.includes('set');
    });
    await fleet.stop();
    await until('the clean-shutdown statuses', () =>
      machines(20).every((m) =>
        observer.seen.some((s) => s.topic.endsWith(`/${m.id}/status`) && s.payload.reason === 'clean-shutdown'),
      ),
    );

    expect(observer.invalid).to.deep.equal([]);
    const kinds = new Set(observer.seen.map((m) => kindOf(m.topic)));
    expect([...kinds].sort()).to.deep.equal(['event', 'meta', 'status', 'telemetry', 'workout']);
    for (const m of machines(20)) {
      const own = observer.seen.filter((s) => s.topic.includes(`/m/${m.id}/`));
      const meta = own.find((s) => kindOf(s.topic) === 'meta');
      expect(meta?.payload.type, m.id).to.equal(m.type);
      // Envelope: one source and boot per machine, seq strictly increasing in publish order (one connection).
      expect(new Set(own.map((s) => s.payload.source))).to.deep.equal(new Set([m.id]));
      expect(new Set(own.map((s) => s.payload.bootId)).size).to.equal(1);
      // No gaps and no repeats (QoS 0 samples and QoS 1 records may interleave differently on delivery); the will
      // registered at CONNECT took seq 0 and is never sent on a clean shutdown.
      const seqs = own.map((s) => s.payload.seq as number).sort((x, y) => x - y);
      expect(seqs).to.deep.equal(seqs.map((_, i) => i + 1));
      // Every telemetry key is announced in the meta's fields.
      const fields = new Set(meta?.payload.fields as string[]);
      for (const sample of own.filter((s) => kindOf(s.topic) === 'telemetry')) {
        for (const key of Object.keys(withoutEnvelope(sample.payload))) {
          if (key !== 'type') expect(fields.has(key), `${m.id} sends ${key}`).to.equal(true);
        }
      }
    }
    // Every QoS 1 record got its PUBACK, and the ledger says so.
    const stats = fleet.stats();
    expect(stats.pendingAcks).to.equal(0);
    expect(stats.errors).to.equal(0);
    for (const [id, ledger] of fleet.ledger()) {
      expect(ledger.sent.length, id).to.be.greaterThan(0);
      expect(
        ledger.sent.every((msgId) => ledger.acked.has(msgId)),
        id,
      ).to.equal(true);
    }
  });

  it('members from the front desk tap their cards on the machines, and the fleet follows the answers', async function () {
    // The gateway's part, played by a client: a machine's nfc-tapped event is answered on its command topics with
    // `link` (or, for one member, a denial), and a second tap of the linked member with the "Unlinked" display.
    const gateway = await connectAsync(broker.url, { clientId: 'gw-stand-in', reconnectPeriod: 0 });
    clients.push(gateway);
    const linkedAt = new Map<string, string>();
    let deniedUid: string | undefined;
    gateway.on('message', (topic, raw) => {
      const event = JSON.parse(raw.toString()) as { type?: string; uid?: string };
      if (event.type !== 'nfc-tapped' || !event.uid) return;
      const base = topic.replace(/\/event$/, '/cmd');
      const reqId = crypto.randomUUID();
      const expiresAt = Date.now() + 10_000;
      deniedUid ??= event.uid;
      if (event.uid === deniedUid) {
        void gateway.publishAsync(
          `${base}/display`,
          JSON.stringify({ reqId, expiresAt, text: 'Not recognised', level: 'error' }),
        );
      } else if (linkedAt.get(topic) === event.uid) {
        linkedAt.delete(topic);
        void gateway.publishAsync(
          `${base}/display`,
          JSON.stringify({ reqId, expiresAt, text: 'Unlinked: see you next set', level: 'info' }),
        );
      } else {
        linkedAt.set(topic, event.uid);
        void gateway.publishAsync(
          `${base}/link`,
          JSON.stringify({ reqId, expiresAt, userId: '0123456789abcdef01234567' }),
        );
      }
    });
    await gateway.subscribeAsync('nxg/v1/b/demo/m/+/event', { qos: 1 });
    const doorTaps: string[] = [];
    const desk = createFrontDesk({
      desk: { branch: 'demo', doorsIn: ['in'], doorsOut: ['out'], members: 100 },
      worker: 0,
      processes: 1,
      seed: 5,
      timeScale: 600,
      minWalkMs: 50,
      doorGapMs: 10,
      tap: (file, uid) => {
        doorTaps.push(`${file}:${uid}`);
        return Promise.resolve();
      },
    });
    // 600× from 10:00: sessions of ~20 simulated minutes take 2 s.
    const fleet = startFleet({
      url: broker.url,
      branch: 'demo',
      machines: machines(10),
      rate: 10,
      seed: 5,
      timeScale: 600,
      day: { startHour: 10 },
      desks: new Map([['demo', desk]]),
    });
    fleets.push(fleet);
    await fleet.whenConnected(10_000);
    await until('members linked, denied once, and unlinked', () => {
      const l = fleet.stats().links;
      return l.linked >= 3 && l.denied >= 1 && l.unlinked >= 2;
    });
    await fleet.calm(10_000);
    await fleet.stop();
    await desk.stop();
    const l = fleet.stats().links;
    // Every tap to link was answered (calm waits for the answers), with a link or the one member's denial.
    expect(l.linked + l.denied).to.equal(l.linkTaps);
    expect(l.deniedBy).to.deep.equal({ 'Not recognised': l.denied });
    // Only linked members tap to unlink, each once.
    expect(l.unlinkTaps).to.be.at.most(l.linked);
    expect(l.unlinked).to.be.at.most(l.unlinkTaps);
    const d = desk.stats();
    expect(doorTaps.filter((t) => t.startsWith('in:'))).to.have.length(d.checkInTaps);
    expect(d.arrivals).to.be.at.least(l.sessionsWithMember > 0 ? 1 : 0);
    expect(fleet.stats().published.event).to.be.at.least(l.linkTaps + l.unlinkTaps);
  });

  it('registers a last will per connection, which fires when the connection dies, and reconnects with backoff', async function () {
    const observer = await observe(broker.url);
    clients.push(observer.client);
    const victims = new Map<string, Client>();
    broker.broker.on('client', (client: Client) => victims.set(client.id, client));
    const fleet = startFleet({
      url: broker.url,
      branch: 'demo',
      machines: machines(2),
      seed: 1,
      backoffMs: { initial: 50, max: 200 },
    });
    fleets.push(fleet);
    await fleet.whenConnected(10_000);
    const id = machineIdAt(0);
    const statusesOf = () => observer.seen.filter((s) => s.topic.endsWith(`/${id}/status`)).map((s) => s.payload);
    await until('the first status', () => statusesOf().length === 1);
    // The broker drops the socket without a DISCONNECT from the machine: the will of connection 0 is published.
    victims.get(id)!.conn.destroy();
    await until('the will and the status of the next connection', () => statusesOf().length >= 3);
    const [first, will, next] = statusesOf();
    expect(first).to.include({ conn: 0 });
    expect(will).to.include({ status: 'offline', lastWill: true, conn: 0 });
    expect(next).to.include({ conn: 1, status: first!.status });
    expect(fleet.stats().reconnects).to.equal(1);
    // The meta is republished on the new connection too.
    expect(observer.seen.filter((s) => s.topic.endsWith(`/${id}/meta`))).to.have.length(2);
    expect(observer.invalid).to.deep.equal([]);
  });

  it('warns once when the broker refuses a machine, and keeps retrying with backoff', async function () {
    await broker.close();
    broker = await startBareBroker(new Map([['tread-001', 'right']]));
    const lines: { level: number; msg: string; machine?: string }[] = [];
    const log = pino(
      { level: 'debug' },
      { write: (line: string) => lines.push(JSON.parse(line) as (typeof lines)[0]) },
    );
    const fleet = startFleet({
      url: broker.url,
      branch: 'demo',
      machines: [{ id: 'tread-001', secret: 'wrong', type: 'treadmill' }],
      seed: 3,
      backoffMs: { initial: 20, max: 40 },
      log,
    });
    fleets.push(fleet);
    await until('three refused attempts', () => fleet.stats().reconnects >= 3);
    const warnings = lines.filter((line) => line.level === 40);
    expect(warnings).to.have.length(1);
    expect(warnings[0]).to.include({ machine: 'tread-001' });
    expect(fleet.stats().connects).to.equal(0);
  });

  it('gives the same machine behaviour for the same seed, and another for another seed', async function () {
    const samples = async (seed: number) => {
      const local = await startBareBroker();
      const observer = await observe(local.url);
      const fleet = startFleet({
        url: local.url,
        branch: 'demo',
        machines: machines(6),
        rate: 50,
        seed,
        timeScale: 10,
      });
      await fleet.whenConnected(10_000);
      const perMachine = (id: string) =>
        observer.seen.filter((s) => s.topic.endsWith(`/${id}/telemetry`)).map((s) => withoutEnvelope(s.payload));
      await until('40 samples per machine', () => machines(6).every((m) => perMachine(m.id).length >= 40));
      await fleet.stop();
      await observer.client.endAsync(true);
      await local.close();
      return machines(6).map((m) => perMachine(m.id).slice(0, 40));
    };
    const a = await samples(1234);
    const b = await samples(1234);
    const c = await samples(4321);
    expect(a).to.deep.equal(b);
    expect(a).to.not.deep.equal(c);
  });

  describe('the sim command', function () {
    let dir: string;
    beforeEach(async function () {
      dir = await mkdtemp(path.join(os.tmpdir(), 'nxg-sim-'));
    });
    afterEach(async function () {
      await rm(dir, { recursive: true, force: true });
    });

    const cli = path.join(import.meta.dirname, 'cli.ts');
    const run = (args: string[]) => {
      const child = spawn(process.execPath, [cli, ...args, '--log-level', 'silent'], {
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      children.push(child);
      let output = '';
      child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
      child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
      return { child, output: () => output };
    };

    it('authenticates with the credentials file; SIGTERM sets machines offline cleanly, SIGKILL fires the wills', async function () {
      const creds = [
        { id: 'tread-a', secret: 's3cret-a', type: 'treadmill' },
        { id: 'press-b', secret: 's3cret-b', type: 'selectorised' },
        { id: 'row-c', secret: 's3cret-c' },
      ];
      await broker.close();
      broker = await startBareBroker(
        new Map([...creds.map((c) => [c.id, c.secret] as const), [OBSERVER.id, OBSERVER.secret]]),
      );
      const file = path.join(dir, 'machines.json');
      await writeFile(file, JSON.stringify(creds));
      const observer = await observe(broker.url);
      clients.push(observer.client);
      const statuses = (id: string) =>
        observer.seen.filter((s) => s.topic.endsWith(`/${id}/status`)).map((s) => s.payload);
      const allHave = (check: (status: Record<string, unknown>) => boolean) =>
        creds.every((c) => statuses(c.id).some(check));

      const clean = run(['--url', broker.url, '--credentials', file, '--seed', '5']);
      await until('3 machines online', () => allHave((s) => s.status !== 'offline'));
      const metas = observer.seen
        .filter((s) => s.topic.endsWith('/meta'))
        .map((s) => [s.payload.source, s.payload.type]);
      expect(metas).to.have.deep.members([
        ['tread-a', 'treadmill'],
        ['press-b', 'selectorised'],
        ['row-c', typeAt(2)],
      ]);
      clean.child.kill('SIGTERM');
      const [code] = (await once(clean.child, 'exit')) as [number | null];
      expect(code, clean.output()).to.equal(0);
      expect(
        allHave((s) => s.status === 'offline' && s.reason === 'clean-shutdown' && s.lastWill === undefined),
      ).to.equal(true);
      // The report table at the end names what was sent, by kind.
      expect(clean.output()).to.match(/sent .*telemetry \d+/);

      observer.seen.length = 0;
      const killed = run(['--url', broker.url, '--credentials', file, '--machines', '3']);
      await until('3 machines online again', () => allHave((s) => s.status !== 'offline'));
      killed.child.kill('SIGKILL');
      await until('3 last wills', () => allHave((s) => s.lastWill === true && s.status === 'offline'));
      expect(observer.invalid).to.deep.equal([]);
    });

    it('refuses a credentials file that is not [{id, secret}]', async function () {
      const file = path.join(dir, 'bad.json');
      await writeFile(file, JSON.stringify([{ id: 'Not An Id', secret: 'x' }]));
      let error: unknown;
      try {
        await readCredentials(file);
      } catch (err) {
        error = err;
      }
      expect(error).to.be.instanceOf(CredentialsError);
      const bad = run(['--url', broker.url, '--credentials', file]);
      const [code] = (await once(bad.child, 'exit')) as [number | null];
      expect(code).to.equal(2);
      expect(bad.output()).to.match(/credentials .*bad\.json: 0\.id/);
    });
  });
});
