/**
 * npm run bench:live — real time for apps under load (issue 7, "Benchmark"): `--machines` (500) machines publishing
 * telemetry at `--hz` (2) through simulated branch gateways to the cloud, `--apps` (1000) app clients over
 * MQTT/WebSocket (half watching their own live workout, half their branch's machines), and
 * GET /api/machines/availability read at a fixed rate meanwhile. Reports delivery latency machine → app p50/p99,
 * availability p50/p99, and a bare Aedes fan-out baseline at the same message rate; appends to docs/benchmarks.md.
 * Smaller runs: `--machines 50 --apps 100 --seconds 10`. Every process it starts stops with it.
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { Command, InvalidArgumentError } from '@commander-js/extra-typings';
import mongoose from 'mongoose';
import { connectAsync, type MqttClient } from 'mqtt';
import {
  newBatchId,
  newBootId,
  newMsgId,
  topics,
  type BranchId,
  type GatewayId,
  type UplinkAck,
  type UserId,
} from '../../protocol/index.ts';
import { createIdentityStore } from '../../cloud/src/broker/identities.ts';
import { addGateway, addMachine } from '../../cloud/src/broker/provisioning.ts';
import { WEEKDAYS } from '../../cloud/src/branches/hours.ts';
import { findFreePort, spawnService, startMongo, startRedis } from '../services/index.ts';
import { appendToDoc, fmtMs, latencyOf, type Latency } from './live-report.ts';
import { markdownTable, terminalTable } from './ingest-report.ts';
import { benchCommand, cpuTimeMs, machineInfo, runHeader } from './system.ts';
import { startCloudOnPort } from './cloud-process.ts';
import { forEachLimited } from '../runtime/concurrency.ts';

const root = path.resolve(import.meta.dirname, '../..');

function int(min: number, max: number) {
  return (value: string) => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < min || n > max) throw new InvalidArgumentError(`an integer from ${min} to ${max}`);
    return n;
  };
}

const program = new Command()
  .name('bench:live')
  .description('Live delivery machine → app and availability under load, beside a bare Aedes fan-out')
  .option('--machines <n>', 'simulated machines', int(1, 5_000), 500)
  .option('--apps <n>', 'app clients over WebSocket (half per member workout, half per branch)', int(2, 10_000), 1000)
  .option('--branches <n>', 'branches, one gateway each', int(1, 100), 5)
  .option('--hz <n>', 'telemetry samples per machine per second', int(1, 20), 2)
  .option('--seconds <s>', 'measured load time', int(3, 600), 20)
  .option('--batch-ms <ms>', 'how long a simulated gateway gathers samples into one uplink batch', int(5, 1_000), 20)
  .option('--availability-rate <n>', 'GET /api/machines/availability per second during the load', int(1, 500), 20)
  .option('--no-baseline', 'skip the bare Aedes fan-out baseline')
  .option('--no-write', 'do not append the results to docs/benchmarks.md');

const opts = program.parse().opts();
const say = (message: string) => process.stderr.write(`[bench:live] ${message}\n`);

interface Member {
  userId: string;
  token: string;
  branch: string;
  machine: string;
}

const stops: (() => Promise<unknown>)[] = [];
async function stopAll() {
  for (const s of stops.reverse()) await s().catch(() => undefined);
}

async function json(
  res: Response | (() => Promise<Response>),
  what: string,
  ok: number[] = [200, 201],
): Promise<Record<string, unknown>> {
  // A request given as a function is retried while the cloud answers 503 (a dependency timed out on a loaded box).
  let response = typeof res === 'function' ? await res() : res;
  for (let attempt = 1; typeof res === 'function' && response.status === 503 && attempt < 6; attempt++) {
    await response.arrayBuffer();
    await delay(200 * attempt);
    response = await res();
  }
  const text = await response.text();
  if (!ok.includes(response.status)) throw new Error(`${what}: HTTP ${response.status} ${text.slice(0, 300)}`);
  return (text ? JSON.parse(text) : {}) as Record<string, unknown>;
}

const post = (url: string, body: unknown, token?: string) =>
  fetch(url, {
    method: 'POST',
    headers: {
      'Content-Type': 'application/json',
      'User-Agent': 'nxg-bench/1.0',
      ...(token ? { Authorization: `Bearer ${token}` } : {}),
    },
    body: JSON.stringify(body),
  });

/** Registers, marks verified (MongoDB, as the email link would) and logs in an account; returns id and token. */
async function account(cloudUrl: string, db: mongoose.Connection, role?: 'admin') {
  const email = `live-${randomBytes(6).toString('hex')}@nxg.test`;
  const password = `bench-${randomBytes(12).toString('base64url')}`;
  await json(() => post(`${cloudUrl}/api/auth/register`, { email, password }), 'register', [202]);
  await db
    .collection('accounts')
    .updateOne(
      { email },
      { $set: { emailVerified: true, emailVerifiedAt: new Date(), status: 'active', ...(role ? { role } : {}) } },
    );
  const login = await json(() => post(`${cloudUrl}/api/auth/login`, { email, password }), 'login');
  return { userId: (login.user as { id: string }).id, token: login.accessToken as string };
}

/** The bare Aedes baseline: the same message rate, one publisher, `subscribers` TCP clients on a topic each. */
async function baseline(subscribers: number, ratePerS: number, seconds: number): Promise<Latency & { cpu: number }> {
  const server = await spawnService({
    name: 'bare aedes',
    command: process.execPath,
    args: [path.join(import.meta.dirname, 'aedes-server.ts')],
    cwd: root,
    stdinPipe: true,
  });
  try {
    const [, port] = await server.waitForLine(/^ready (\d+)$/, 10_000);
    const url = `mqtt://127.0.0.1:${port}`;
    const latencies: number[] = [];
    const clients: MqttClient[] = [];
    let measuring = false;
    for (let i = 0; i < subscribers; i++) {
      const c = await connectAsync(url, { clientId: `sub-${i}`, reconnectPeriod: 0 });
      c.on('message', (_t, payload) => {
        if (measuring) latencies.push(Date.now() - (JSON.parse(payload.toString()) as { ts: number }).ts);
      });
      await c.subscribeAsync(`nxg/v1/u/user${i}/live/workout`, { qos: 0 });
      clients.push(c);
    }
    const pub = await connectAsync(url, { clientId: 'pub', reconnectPeriod: 0 });
    const cpu0 = cpuTimeMs(server.pid) ?? 0;
    const t0 = performance.now();
    measuring = true;
    let sent = 0;
    while (performance.now() - t0 < seconds * 1000) {
      const due = Math.floor(((performance.now() - t0) / 1000) * ratePerS);
      for (; sent < due; sent++) {
        const payload = JSON.stringify({ type: 'sample', machine: `m-${sent % subscribers}`, ts: Date.now() });
        pub.publish(`nxg/v1/u/user${sent % subscribers}/live/workout`, payload, { qos: 0 });
      }
      await delay(5);
    }
    await delay(500);
    measuring = false;
    const cpu = ((cpuTimeMs(server.pid) ?? 0) - cpu0) / (performance.now() - t0);
    await Promise.all([...clients, pub].map((c) => c.endAsync(true)));
    return { ...latencyOf(latencies), cpu };
  } finally {
    await server.stop(2000);
  }
}

async function main() {
  const machine = machineInfo();
  const loadAtStart = os
    .loadavg()
    .map((l) => l.toFixed(2))
    .join(' ');
  const members = Math.min(Math.floor(opts.apps / 2), opts.machines);
  const branchWatchers = opts.apps - members;
  const rows: string[][] = [];
  const notes: string[] = [];

  let base: (Latency & { cpu: number }) | undefined;
  if (opts.baseline) {
    say(
      `baseline: bare Aedes, ${members} subscribers, ${opts.machines * opts.hz} msg/s for ${Math.min(10, opts.seconds)} s`,
    );
    base = await baseline(members, opts.machines * opts.hz, Math.min(10, opts.seconds));
  }

  say('starting MongoDB-compatible server (memory) and Redis');
  const [mongo, redis] = await Promise.all([startMongo({ storage: { kind: 'memory' } }), startRedis({})]);
  stops.push(
    () => mongo.stop(),
    () => redis.stop(),
  );
  const tmp = await mkdtemp(path.join(os.tmpdir(), 'nxg-bench-live-'));
  stops.push(() => rm(tmp, { recursive: true, force: true }));
  const [httpPort, mqttPort] = [await findFreePort(), await findFreePort()];
  const dbName = 'nxg_bench_live';
  const cloudEnv = {
    API_RATE_LIMIT_PER_IP: '10000000',
    API_RATE_LIMIT_PER_USER: '10000000',
    AUTH_ACCESS_TOKEN_TTL_S: '3600',
    // The bench shares a loaded machine: a Redis command waiting 500 ms for the CPU is not an outage here.
    REDIS_COMMAND_TIMEOUT_MS: '3000',
    // Every app client connects from this one address: the per-address connect limit would be what is measured.
    MQTT_CONNECT_LIMIT_PER_IP: '1000000',
    MQTT_MAX_PENDING_PER_IP: '100000',
    LOG_LEVEL: 'warn',
  };
  say('starting the cloud');
  const { proc: cloud, url: cloudUrl } = await startCloudOnPort(
    {
      dir: tmp,
      mongoUrl: `${mongo.url}/${dbName}`,
      redisUrl: redis.url,
      keyPrefix: 'bench-live:',
      httpPort,
      mqttTcpPort: mqttPort,
      env: { ...cloudEnv, DEV_KEYS_FILE: path.join(tmp, 'dev-keys.json') },
    },
    (proc) => stops.push(() => proc.stop(5000)),
  );

  const db = await mongoose.createConnection(`${mongo.url}/${dbName}`).asPromise();
  stops.push(() => db.close());
  const store = createIdentityStore(db);

  // Branches (24 h), one gateway each, machines spread over them.
  const admin = await account(cloudUrl, db, 'admin');
  const hours = Object.fromEntries(WEEKDAYS.map((d) => [d, [{ open: '00:00', close: '24:00' }]]));
  const branches = Array.from({ length: opts.branches }, (_, i) => `live-${i}`);
  for (const id of branches) {
    await json(
      await post(`${cloudUrl}/api/branches`, { id, name: id, timeZone: 'UTC', openingHours: hours }, admin.token),
      'create branch',
    );
  }
  const machines = Array.from({ length: opts.machines }, (_, i) => ({
    id: `lm-${i}`,
    branch: branches[i % branches.length]!,
    bootId: newBootId(),
    seq: 0,
  }));
  const gateways = new Map<string, { id: string; secret: string; client?: MqttClient }>();
  for (const b of branches) {
    const id = `gw-${b}`;
    const { secret } = await addGateway({ store }, { id, branch: b });
    gateways.set(b, { id, secret });
  }
  say(`provisioning ${machines.length} machines`);
  await forEachLimited(machines, 8, async (m) => {
    await addMachine({ store }, { id: m.id, branch: m.branch, gateway: gateways.get(m.branch)!.id });
  });

  // Gateways connect and announce their machines (meta + available), waiting for the ack.
  const acks = new Map<string, (ack: UplinkAck) => void>();
  for (const [b, g] of gateways) {
    g.client = await connectAsync(`mqtt://127.0.0.1:${mqttPort}`, {
      clientId: g.id,
      username: g.id,
      password: g.secret,
      // A connection lost under load comes back (mqtt.js resubscribes); batches sent meanwhile are counted as lost.
      reconnectPeriod: 1000,
    });
    await g.client.subscribeAsync(topics.gatewayAck(b as BranchId, g.id as GatewayId), { qos: 1 });
    g.client.on('message', (_t, payload) => {
      const ack = JSON.parse(payload.toString()) as UplinkAck;
      acks.get(ack.batchId)?.(ack);
    });
  }
  const env = (m: (typeof machines)[number], ts = Date.now()) => ({
    msgId: newMsgId(),
    source: m.id,
    bootId: m.bootId,
    seq: m.seq++,
    ts,
    v: 0,
  });
  const sendBatch = (b: string, lane: 'records' | 'telemetry', records: unknown[], wait: boolean) => {
    const g = gateways.get(b)!;
    const batchId = newBatchId();
    const acked = wait
      ? new Promise<UplinkAck>((resolve, reject) => {
          const timer = setTimeout(() => reject(new Error(`no ack for ${batchId}`)), 30_000);
          acks.set(batchId, (ack) => {
            clearTimeout(timer);
            acks.delete(batchId);
            resolve(ack);
          });
        })
      : undefined;
    g.client!.publish(
      topics.gatewayUplink(b as BranchId, g.id as GatewayId, lane),
      JSON.stringify({ batchId, sentAt: Date.now(), records }),
      { qos: 1 },
    );
    return acked;
  };
  for (const b of branches) {
    const mine = machines.filter((m) => m.branch === b);
    for (let i = 0; i < mine.length; i += 200) {
      const records = mine.slice(i, i + 200).flatMap((m) => [
        {
          kind: 'meta',
          payload: {
            ...env(m),
            type: 'rower',
            manufacturer: 'Bench',
            model: 'R1',
            firmware: '1.0.0',
            displayName: m.id,
            fields: ['powerW', 'strokeRateSpm', 'distanceM'],
          },
        },
        (() => {
          const e = env(m);
          return { kind: 'status', payload: { ...e, status: 'available', since: e.ts, conn: 0 } };
        })(),
      ]);
      // Until every record is acknowledged (a busy stand-in may fail some; the gateway would resend them).
      let left = records;
      for (let attempt = 1; left.length > 0; attempt++) {
        const ack = (await sendBatch(b, 'records', left, true))!;
        if (ack.rejected.length > 0) throw new Error(`announcement refused: ${JSON.stringify(ack.rejected[0])}`);
        const acked = new Set<string>(ack.acked);
        left = left.filter((r) => !acked.has(r.payload.msgId));
        if (left.length > 0 && attempt >= 10) throw new Error(`${left.length} announcement records never acked`);
      }
    }
  }

  // Members: checked in and linked to one machine each.
  say(`creating ${members} members (register, verify, join, check in, link)`);
  const made: Member[] = [];
  let done = 0;
  await forEachLimited(machines.slice(0, members), 6, async (m) => {
    const a = await account(cloudUrl, db);
    // The gym grants the membership (a member's own POST /api/users/branches/:id is only a request).
    await json(
      () =>
        fetch(`${cloudUrl}/api/branches/${m.branch}/members/${a.userId}`, {
          method: 'PUT',
          headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${admin.token}` },
          body: '{}',
        }),
      'grant membership',
    );
    // A fresh QR token per attempt (a token is single-use); 409 on a retry means the first attempt went through.
    await json(
      async () => {
        const qr = await json(
          () => fetch(`${cloudUrl}/api/access/qr-token`, { headers: { Authorization: `Bearer ${a.token}` } }),
          'qr token',
        );
        return post(
          `${cloudUrl}/api/sessions/start`,
          { branchId: m.branch, credential: { kind: 'qr', token: qr.token } },
          a.token,
        );
      },
      'check in',
      [201, 409],
    );
    await json(() => post(`${cloudUrl}/api/machines/link`, { branchId: m.branch, machineId: m.id }, a.token), 'link');
    made.push({ ...a, branch: m.branch, machine: m.id });
    if (++done % 50 === 0) say(`  ${done}/${members}`);
  });

  // App clients over WebSocket: one per member on its workout topic, the rest on a branch's machines.
  say(`connecting ${opts.apps} app clients over WebSocket`);
  const wsUrl = `ws://127.0.0.1:${httpPort}/mqtt`;
  const workoutLatency: number[] = [];
  const branchLatency: number[] = [];
  let measuring = false;
  let measureFrom = Number.POSITIVE_INFINITY;
  let wrongUser = 0;
  const apps: MqttClient[] = [];
  await forEachLimited(
    Array.from({ length: opts.apps }, (_, i) => i),
    16,
    async (i) => {
      const owner = made[i % made.length]!;
      const workout = i < members;
      const client = await connectAsync(wsUrl, {
        clientId: `u.${owner.userId}.${workout ? 'w' : `b${i}`}`,
        username: 'app',
        password: owner.token,
        reconnectPeriod: 0,
      });
      apps.push(client);
      client.on('message', (topic, payload) => {
        if (!measuring) return;
        const body = JSON.parse(payload.toString()) as {
          type?: string;
          machine?: string;
          telemetry?: { ts: number };
          since?: number;
        };
        if (workout) {
          if (body.type !== 'sample' || !body.telemetry) return;
          if (body.machine !== owner.machine) wrongUser += 1;
          workoutLatency.push(Date.now() - body.telemetry.ts);
        } else if (topic.includes('/live/machines/') && body.since !== undefined && body.since >= measureFrom) {
          branchLatency.push(Date.now() - body.since);
        }
      });
      const filter = workout
        ? topics.userLive(owner.userId as UserId, 'workout')
        : `nxg/v1/b/${owner.branch}/live/machines/+`;
      const granted = await client.subscribeAsync(filter, { qos: 0 });
      if (granted[0]?.qos === 128) throw new Error(`subscription refused: ${filter}`);
      if (apps.length % 100 === 0) say(`  ${apps.length}/${opts.apps}`);
    },
  );

  // The load: each gateway batches its machines' samples every --batch-ms; 5 % of machines change status each second.
  say(`load: ${opts.machines} machines × ${opts.hz} Hz for ${opts.seconds} s (+2 s warm-up)`);
  const pending = new Map<string, unknown[]>(branches.map((b) => [b, []]));
  const periodMs = 1000 / opts.hz;
  const phase = machines.map((_, i) => (i * periodMs) / machines.length);
  const lastSent = machines.map(() => -Infinity);
  const availability: number[] = [];
  let availabilityErrors = 0;
  let sentSamples = 0;
  let statusFlip = 0;
  const t0 = performance.now();
  const endAt = t0 + (opts.seconds + 2) * 1000;
  const cpuPids = { cloud: cloud.pid, mongo: mongo.pid, redis: redis.pid, bench: process.pid };
  let cpuStart: Record<string, number> = {};
  let cpuStartAt = 0;

  const generator = (async () => {
    let lastBatch = performance.now();
    let lastStatus = performance.now();
    while (performance.now() < endAt) {
      const now = performance.now();
      const wall = Date.now();
      if (!measuring && now - t0 >= 2000) {
        measuring = true;
        measureFrom = wall;
        cpuStart = Object.fromEntries(Object.entries(cpuPids).map(([k, pid]) => [k, cpuTimeMs(pid) ?? 0]));
        cpuStartAt = now;
      }
      machines.forEach((m, i) => {
        if (now - t0 - phase[i]! - lastSent[i]! < periodMs) return;
        lastSent[i] = now - t0 - phase[i]!;
        const ts = wall;
        pending.get(m.branch)!.push({
          kind: 'telemetry',
          payload: { ...env(m, ts), type: 'rower', strokeRateSpm: 24, powerW: 150 + (m.seq % 50), distanceM: m.seq },
        });
        sentSamples += 1;
      });
      if (now - lastBatch >= opts.batchMs) {
        lastBatch = now;
        for (const [b, records] of pending) {
          if (records.length === 0) continue;
          pending.set(b, []);
          for (let i = 0; i < records.length; i += 500)
            void sendBatch(b, 'telemetry', records.slice(i, i + 500), false);
        }
      }
      if (now - lastStatus >= 1000) {
        lastStatus = now;
        const flips = Math.max(1, Math.floor(machines.length * 0.05));
        const byBranch = new Map<string, unknown[]>();
        for (let k = 0; k < flips; k++) {
          const m = machines[(statusFlip++ * 7) % machines.length]!;
          const status = statusFlip % 2 === 0 ? 'available' : 'in_use';
          const list = byBranch.get(m.branch) ?? [];
          const e = env(m);
          list.push({ kind: 'status', payload: { ...e, status, since: e.ts, conn: 0 } });
          byBranch.set(m.branch, list);
        }
        for (const [b, list] of byBranch) void sendBatch(b, 'records', list, false);
      }
      await delay(5);
    }
  })();

  const reader = (async () => {
    const token = made[0]!.token;
    const branch = made[0]!.branch;
    let k = 0;
    const t = performance.now();
    const inflight: Promise<void>[] = [];
    while (performance.now() < endAt) {
      const due = t + (k * 1000) / opts.availabilityRate;
      const wait = due - performance.now();
      if (wait > 0) await delay(wait);
      k += 1;
      const started = performance.now();
      const record = measuring;
      inflight.push(
        fetch(`${cloudUrl}/api/machines/availability?branchId=${branch}`, {
          headers: { Authorization: `Bearer ${token}` },
        })
          .then(async (res) => {
            await res.arrayBuffer();
            if (!res.ok) availabilityErrors += 1;
            if (record) availability.push(performance.now() - due);
          })
          .catch(() => {
            availabilityErrors += 1;
          }),
      );
      void started;
    }
    await Promise.all(inflight);
  })();

  await Promise.all([generator, reader]);
  const elapsedS = (performance.now() - cpuStartAt) / 1000;
  const cpu = Object.fromEntries(
    Object.entries(cpuPids).map(([k, pid]) => [k, ((cpuTimeMs(pid) ?? 0) - (cpuStart[k] ?? 0)) / (elapsedS * 1000)]),
  );
  await delay(1500); // what is in flight arrives (and still counts: its latency is real)
  measuring = false;

  const workout = latencyOf(workoutLatency);
  const branchLive = latencyOf(branchLatency);
  const avail = latencyOf(availability);
  const expected = Math.round(((opts.seconds * opts.machines * opts.hz) / opts.machines) * members);
  const head = ['what', 'messages', 'p50 ms', 'p99 ms', 'max ms', 'target', 'notes'];
  if (base) {
    rows.push([
      'baseline: bare Aedes fan-out (TCP)',
      String(base.count),
      fmtMs(base.p50),
      fmtMs(base.p99),
      fmtMs(base.max),
      'information',
      `${opts.machines * opts.hz} msg/s to ${members} subscribers; broker ${(base.cpu * 100).toFixed(0)} % of a core`,
    ]);
  }
  rows.push([
    'sample → u/{user}/live/workout (WebSocket)',
    String(workout.count),
    fmtMs(workout.p50),
    fmtMs(workout.p99),
    fmtMs(workout.max),
    `p99 ≤ 100 ms: ${workout.p99 <= 100 ? 'pass' : 'FAIL'}`,
    `~${expected} expected for ${members} linked machines; batch window ${opts.batchMs} ms; wrong member ${wrongUser}`,
  ]);
  rows.push([
    'status → b/{branch}/live/machines (WebSocket)',
    String(branchLive.count),
    fmtMs(branchLive.p50),
    fmtMs(branchLive.p99),
    fmtMs(branchLive.max),
    'information',
    `${branchWatchers} branch watchers, 5 % of machines change status each second`,
  ]);
  rows.push([
    'GET /api/machines/availability',
    String(avail.count),
    fmtMs(avail.p50),
    fmtMs(avail.p99),
    fmtMs(avail.max),
    `p99 < 200 ms: ${avail.p99 < 200 ? 'pass' : 'FAIL'}`,
    `${opts.availabilityRate}/s, ${Math.ceil(opts.machines / opts.branches)} machines in the branch; errors ${availabilityErrors}`,
  ]);
  notes.push(
    `samples generated ${sentSamples} (${Math.round(sentSamples / (opts.seconds + 2))}/s); CPU share of one core during ` +
      `the measured window: ${Object.entries(cpu)
        .map(([k, v]) => `${k} ${(v * 100).toFixed(0)} %`)
        .join(', ')}`,
  );
  process.stdout.write(`\n${terminalTable(head, rows)}\n${notes.map((n) => `- ${n}`).join('\n')}\n`);

  if (opts.write) {
    const command = benchCommand('bench:live');
    const section = [
      ...runHeader(new Date(), command, machine, loadAtStart),
      `- ${opts.machines} machines × ${opts.hz} Hz in ${opts.branches} branches, ${opts.apps} app clients (${members} on their workout, ${branchWatchers} on a branch), ${opts.seconds} s measured`,
      '',
      markdownTable(head, rows),
      '',
      ...notes.map((n) => `- ${n}`),
    ].join('\n');
    await appendToDoc(path.join(root, 'docs', 'benchmarks.md'), section);
    say('results appended to docs/benchmarks.md');
  }
  await Promise.allSettled(apps.map((c) => c.endAsync(true)));
  await Promise.allSettled([...gateways.values()].flatMap((g) => (g.client ? [g.client.endAsync(true)] : [])));
}

main()
  .then(stopAll)
  .then(
    () => process.exit(0),
    async (err: unknown) => {
      process.stderr.write(`bench:live: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
      await stopAll();
      process.exit(1);
    },
  );
