/**
 * `npm run bench:broker`: the same publish/subscribe workload against Mosquitto (Debian, `max_inflight_messages 0`),
 * a bare Aedes and our cloud broker (authentication and ACL on), in one run. Each broker runs in a process of its
 * own pinned to core 0, the load (this process) to core 1 (taskset).
 *
 * Workloads, 100-byte payloads, publishers as gateways on their own `gw/{id}/state` topic, subscribers as
 * observers of `gw/+/state` (topics our ACL grants, so the cloud broker checks every publish and delivery):
 * - fan-in (10 publishers → 1 subscriber) at QoS 0 and QoS 1, and fan-out (1 publisher → 10 subscribers) at QoS 1,
 *   each as fast as it goes (QoS 1: a window of 100 unacknowledged messages per publisher): delivered msg/s,
 *   broker CPU per delivered message;
 * - QoS 1 fan-in at fixed rates (2,000 and 10,000 msg/s): latency p50/p99 publish → delivery (one process holds
 *   both ends, one clock);
 * - idle connections (TCP and WebSocket), first, on the fresh broker process: connect rate (200 CONNECTs at a time,
 *   from 200 source addresses 127.0.0.2–201, the cloud broker with its per-address limits at their defaults) and
 *   broker memory per connection (RSS and, for Node brokers, heap + buffers, each after a garbage collection).
 * Results as a table, appended to docs/benchmarks.md with a chart.
 */
import { readFileSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Command } from '@commander-js/extra-typings';
import Table from 'cli-table3';
import hdr from 'hdr-histogram-js';
import net from 'node:net';
import { MqttClient, connect, connectAsync, type IClientOptions } from 'mqtt';
import { newSecret } from '../mqtt/secrets.ts';
import {
  findFreePort,
  spawnService,
  startMongo,
  startMosquitto,
  startRedis,
  type ServiceProcess,
} from '../services/index.ts';
import { cpuTimeMs, machineInfo, pin } from './system.ts';
import { inRange } from './cli.ts';

const repoRoot = path.resolve(import.meta.dirname, '..', '..');

const program = new Command()
  .name('bench:broker')
  .description('Mosquitto, bare Aedes and our cloud broker under the same pub/sub workload, side by side.')
  .option('--seconds <s>', 'measuring time per throughput or rate run', inRange(1, 60), 4)
  .option('--idle <n>', 'idle connections per transport', inRange(0, 50_000), 10_000)
  .option('--rates <list>', 'fixed QoS 1 rates, msg/s', '2000,10000')
  .option('--brokers <list>', 'which brokers', 'mosquitto,aedes,cloud')
  .option('--doc <file>', 'where the results are appended', path.join(repoRoot, 'docs', 'benchmarks.md'))
  .option('--no-write', 'do not append the results');

const SECRET = newSecret();
const PAYLOAD_BYTES = 100;
const PUBLISHERS = 10;
const SUBSCRIBERS = 10;
const topicOf = (i: number) => `nxg/v1/b/bench/gw/bench-gw-${i}/state`;
const FILTER = 'nxg/v1/b/bench/gw/+/state';

interface Broker {
  readonly name: string;
  readonly tcpUrl: string;
  readonly wsUrl: string;
  readonly pid: number;
  /** Memory after a garbage collection (Node brokers), or the resident size (Mosquitto: C, nothing to collect). */
  memory(): Promise<{ rss: number; heap?: number }>;
  /** Undefined while it runs; its exit and last output once it died. */
  died(): string | undefined;
  stop(): Promise<void>;
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Resident memory of a process; NaN once it is gone (a broker that died shows as NaN, not as a crash here). */
function rssBytes(pid: number): number {
  let status: string;
  try {
    status = readFileSync(`/proc/${pid}/status`, 'utf8');
  } catch {
    return Number.NaN;
  }
  return Number(/^VmRSS:\s+(\d+) kB/m.exec(status)?.[1] ?? 0) * 1024;
}

const creds = (id: string): IClientOptions => ({
  clientId: id,
  username: id,
  password: SECRET,
  protocolVersion: 4,
  reconnectPeriod: 0,
  clean: true,
  keepalive: 300,
  connectTimeout: 30_000,
});

async function startNodeBroker(name: string, args: string[]): Promise<Broker> {
  const memWaiters: ((line: string) => void)[] = [];
  const proc: ServiceProcess = await spawnService({
    name,
    command: process.execPath,
    args: ['--expose-gc', path.join(import.meta.dirname, 'broker-server.ts'), ...args],
    cwd: repoRoot,
    env: { ...process.env, BENCH_SECRET: SECRET },
    stdinPipe: true,
    onLine: (line) => {
      if (line.startsWith('mem ')) memWaiters.shift()?.(line.slice(4));
    },
  });
  const ready = await proc.waitForLine(/^ready (.*)$/, 300_000);
  const ports = JSON.parse(ready[1]!) as { tcp: number; ws: number };
  return {
    name,
    tcpUrl: `mqtt://127.0.0.1:${ports.tcp}`,
    wsUrl: `ws://127.0.0.1:${ports.ws}/mqtt`,
    pid: proc.pid,
    async memory() {
      const line = new Promise<string>((resolve, reject) => {
        memWaiters.push(resolve);
        setTimeout(() => reject(new Error(`${name}: no memory report within 30 s`)), 30_000).unref();
      });
      process.kill(proc.pid, 'SIGUSR2');
      const m = JSON.parse(await line) as { rss: number; heapUsed: number; external: number };
      return { rss: m.rss, heap: m.heapUsed + m.external };
    },
    died() {
      const exit = proc.exitStatus();
      return exit ? `${name} exited (${exit.signal ?? exit.code}):\n${proc.recentOutput()}` : undefined;
    },
    stop: async () => {
      await proc.stop(10_000);
    },
  };
}

async function startMosquittoBroker(): Promise<Broker> {
  const wsPort = await findFreePort();
  const service = await startMosquitto({ extraConfig: `listener ${wsPort} 127.0.0.1\nprotocol websockets` });
  return {
    name: 'mosquitto',
    tcpUrl: service.url,
    wsUrl: `ws://127.0.0.1:${wsPort}/mqtt`,
    pid: service.pid,
    memory: () => Promise.resolve({ rss: rssBytes(service.pid) }),
    died: () => (Number.isNaN(rssBytes(service.pid)) ? 'mosquitto exited' : undefined),
    stop: () => service.stop(),
  };
}

const histogram = () =>
  hdr.build({ lowestDiscernibleValue: 1, highestTrackableValue: 120_000_000, numberOfSignificantValueDigits: 3 });

interface Clients {
  publishers: MqttClient[];
  subscribers: MqttClient[];
}

async function clientsFor(broker: Broker, publishers: number, subscribers: number): Promise<Clients> {
  const subs = await Promise.all(
    Array.from({ length: subscribers }, (_, i) => connectAsync(broker.tcpUrl, creds(`bench-obs-${i}`))),
  );
  for (const sub of subs) await sub.subscribeAsync(FILTER, { qos: 1 });
  const pubs = await Promise.all(
    Array.from({ length: publishers }, (_, i) => connectAsync(broker.tcpUrl, creds(`bench-gw-${i}`))),
  );
  return { publishers: pubs, subscribers: subs };
}

async function closeAll(clients: Clients): Promise<void> {
  await Promise.all([...clients.publishers, ...clients.subscribers].map((c) => c.endAsync(true)));
}

export interface Throughput {
  readonly msgPerS: number;
  readonly cpuUsPerMsg: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly lost: number;
}

/** As fast as it goes: QoS 1 with a window per publisher, QoS 0 as fast as the socket drains. */
async function maxThroughput(
  broker: Broker,
  { qos, publishers, subscribers, seconds }: { qos: 0 | 1; publishers: number; subscribers: number; seconds: number },
): Promise<Throughput> {
  const clients = await clientsFor(broker, publishers, subscribers);
  const origin = performance.now();
  const latency = histogram();
  let measuring = false;
  let delivered = 0;
  let windowDelivered = 0;
  let published = 0;
  let running = true;
  for (const sub of clients.subscribers) {
    sub.on('message', (_t, payload) => {
      delivered += 1;
      if (!measuring) return;
      windowDelivered += 1;
      latency.recordValue(Math.max(1, Math.round((performance.now() - origin) * 1000 - payload.readDoubleLE(0))));
    });
  }
  const payloadNow = () => {
    const payload = Buffer.alloc(PAYLOAD_BYTES, 0x61);
    payload.writeDoubleLE((performance.now() - origin) * 1000, 0);
    return payload;
  };
  clients.publishers.forEach((client, i) => {
    const topic = topicOf(i);
    if (qos === 1) {
      const send = () => {
        if (!running) return;
        published += 1;
        client.publish(topic, payloadNow(), { qos: 1 }, (err) => {
          if (!err) send();
        });
      };
      for (let k = 0; k < 100; k++) send();
    } else {
      const pump = () => {
        if (!running) return;
        // Keep the socket fed, not flooded: QoS 0 has no acknowledgement to pace it.
        while (running && client.stream.writableLength < 64 * 1024) {
          published += 1;
          client.publish(topic, payloadNow(), { qos: 0 });
        }
        setImmediate(pump);
      };
      pump();
    }
  });
  await sleep(1000);
  measuring = true;
  const cpu0 = cpuTimeMs(broker.pid) ?? 0;
  const t0 = performance.now();
  await sleep(seconds * 1000);
  measuring = false;
  const elapsed = performance.now() - t0;
  const cpu = (cpuTimeMs(broker.pid) ?? 0) - cpu0;
  running = false;
  const deadline = Date.now() + 10_000;
  while (delivered < published * subscribers && Date.now() < deadline) await sleep(50);
  await closeAll(clients);
  return {
    msgPerS: Math.round((windowDelivered * 1000) / elapsed),
    cpuUsPerMsg: windowDelivered ? Math.round(((cpu * 1000) / windowDelivered) * 10) / 10 : 0,
    p50Ms: latency.getValueAtPercentile(50) / 1000,
    p99Ms: latency.getValueAtPercentile(99) / 1000,
    lost: qos === 1 ? Math.max(0, published * subscribers - delivered) : 0,
  };
}

/** QoS 1 fan-in at a fixed total rate, open loop: sends follow the clock, not the acknowledgements. */
async function fixedRate(broker: Broker, rate: number, seconds: number): Promise<Throughput & { achieved: number }> {
  const clients = await clientsFor(broker, PUBLISHERS, 1);
  const origin = performance.now();
  const latency = histogram();
  let delivered = 0;
  let published = 0;
  let measuring = false;
  let windowDelivered = 0;
  clients.subscribers[0]!.on('message', (_t, payload) => {
    delivered += 1;
    if (!measuring) return;
    windowDelivered += 1;
    latency.recordValue(Math.max(1, Math.round((performance.now() - origin) * 1000 - payload.readDoubleLE(0))));
  });
  const start = performance.now();
  const tick = setInterval(() => {
    const due = Math.floor(((performance.now() - start) / 1000) * rate);
    while (published < due) {
      const i = published % PUBLISHERS;
      const payload = Buffer.alloc(PAYLOAD_BYTES, 0x61);
      payload.writeDoubleLE((performance.now() - origin) * 1000, 0);
      clients.publishers[i]!.publish(topicOf(i), payload, { qos: 1 });
      published += 1;
    }
  }, 5);
  await sleep(1000);
  measuring = true;
  const cpu0 = cpuTimeMs(broker.pid) ?? 0;
  const t0 = performance.now();
  await sleep(seconds * 1000);
  measuring = false;
  const elapsed = performance.now() - t0;
  const cpu = (cpuTimeMs(broker.pid) ?? 0) - cpu0;
  clearInterval(tick);
  const deadline = Date.now() + 10_000;
  while (delivered < published && Date.now() < deadline) await sleep(50);
  await closeAll(clients);
  return {
    achieved: Math.round((windowDelivered * 1000) / elapsed),
    msgPerS: rate,
    cpuUsPerMsg: windowDelivered ? Math.round(((cpu * 1000) / windowDelivered) * 10) / 10 : 0,
    p50Ms: latency.getValueAtPercentile(50) / 1000,
    p99Ms: latency.getValueAtPercentile(99) / 1000,
    lost: Math.max(0, published - delivered),
  };
}

export interface IdleResult {
  readonly connections: number;
  readonly connectsPerS: number;
  /** Broker memory per connection after a garbage collection: resident, and Node's heap + buffers. */
  readonly kibPerConnection: number;
  readonly heapKibPerConnection?: number | undefined;
  readonly failed: number;
  /** Why connections failed: the CONNACK's refusal, an error, or a close without either. */
  readonly failures: Readonly<Record<string, number>>;
}

/** Source addresses the idle clients connect from, round robin: a fleet comes from many addresses, not one. */
export const SOURCE_ADDRESSES = Array.from({ length: 200 }, (_, i) => `127.0.0.${i + 2}`);

/** An MQTT client from `localAddress` (TCP: its own socket; WebSocket: the ws client's option). */
function connectFrom(url: string, options: IClientOptions, localAddress: string): MqttClient {
  if (url.startsWith('ws')) return connect(url, { ...options, wsOptions: { localAddress } });
  const { hostname, port } = new URL(url);
  return new MqttClient(() => net.createConnection({ host: hostname, port: Number(port), localAddress }), options);
}

/** `n` idle connections (observers, as dashboards are), 200 CONNECTs at a time from 200 source addresses. */
async function idleConnections(broker: Broker, url: string, n: number): Promise<IdleResult> {
  const before = await broker.memory();
  const clients: MqttClient[] = [];
  const failures: Record<string, number> = {};
  let failed = 0;
  let next = 0;
  const t0 = performance.now();
  const worker = async () => {
    while (next < n) {
      const i = next++;
      await new Promise<void>((resolve) => {
        const client = connectFrom(url, creds(`bench-obs-${i}`), SOURCE_ADDRESSES[i % SOURCE_ADDRESSES.length]!);
        const fail = (reason: string) => {
          client.removeAllListeners('connect');
          failed += 1;
          failures[reason] = (failures[reason] ?? 0) + 1;
          client.end(true);
          resolve();
        };
        client.once('connect', () => {
          client.removeAllListeners('close');
          clients.push(client);
          resolve();
        });
        client.once('error', (err: Error & { code?: unknown }) =>
          fail(typeof err.code === 'number' || typeof err.code === 'string' ? `${err.code}` : err.message),
        );
        // A broker at its connection cap closes the socket without a CONNACK: without this the bench would hang.
        client.once('close', () => fail('closed before CONNACK'));
      });
    }
  };
  await Promise.all(Array.from({ length: 200 }, worker));
  const elapsed = (performance.now() - t0) / 1000;
  await sleep(2000);
  const dead = broker.died();
  if (dead) throw new Error(`the broker died with ${clients.length} idle connections open: ${dead}`);
  const after = await broker.memory();
  const connected = clients.length;
  await Promise.all(clients.map((c) => c.endAsync(true)));
  await sleep(1000);
  const perConnection = (a: number | undefined, b: number | undefined) =>
    connected && a !== undefined && b !== undefined ? Math.round(((b - a) / connected / 1024) * 10) / 10 : undefined;
  return {
    connections: connected,
    connectsPerS: Math.round(connected / elapsed),
    kibPerConnection: perConnection(before.rss, after.rss) ?? 0,
    heapKibPerConnection: perConnection(before.heap, after.heap),
    failed,
    failures,
  };
}

interface BrokerResults {
  name: string;
  fanInQos0?: Throughput;
  fanInQos1?: Throughput;
  fanOutQos1?: Throughput;
  rates: (Throughput & { achieved: number })[];
  idleTcp?: IdleResult;
  idleWs?: IdleResult;
}

async function main(): Promise<void> {
  program.parse();
  const opts = program.opts();
  const rates = opts.rates.split(',').map(Number);
  const names = opts.brokers.split(',');
  const info = machineInfo();
  const pinned = pin(process.pid, '1');
  const started = new Date().toISOString();
  const results: BrokerResults[] = [];
  const mongo = names.includes('cloud') ? await startMongo({ storage: { kind: 'memory' } }) : undefined;
  // The cloud's identity cache publishes and hears its invalidations on Redis, as in a deployment.
  const redis = names.includes('cloud') ? await startRedis() : undefined;
  try {
    for (const name of names) {
      process.stdout.write(`— ${name}: starting\n`);
      const broker =
        name === 'mosquitto'
          ? await startMosquittoBroker()
          : name === 'aedes'
            ? await startNodeBroker('aedes', ['aedes'])
            : await startNodeBroker('cloud broker', [
                'cloud',
                `${mongo!.url}/bench_broker`,
                String(opts.idle),
                redis!.url,
              ]);
      pin(broker.pid, '0');
      const r: BrokerResults = { name, rates: [] };
      try {
        // Idle connections first, on the fresh process: memory per connection is then not hidden in the garbage
        // the throughput runs left behind.
        if (opts.idle > 0) {
          r.idleTcp = await idleConnections(broker, broker.tcpUrl, opts.idle);
          process.stdout.write(`  idle TCP: ${JSON.stringify(r.idleTcp)}\n`);
          r.idleWs = await idleConnections(broker, broker.wsUrl, opts.idle);
          process.stdout.write(`  idle WebSocket: ${JSON.stringify(r.idleWs)}\n`);
        }
        const s = opts.seconds;
        r.fanInQos0 = await maxThroughput(broker, { qos: 0, publishers: PUBLISHERS, subscribers: 1, seconds: s });
        process.stdout.write(`  fan-in QoS 0: ${r.fanInQos0.msgPerS} msg/s\n`);
        r.fanInQos1 = await maxThroughput(broker, { qos: 1, publishers: PUBLISHERS, subscribers: 1, seconds: s });
        process.stdout.write(`  fan-in QoS 1: ${r.fanInQos1.msgPerS} msg/s\n`);
        r.fanOutQos1 = await maxThroughput(broker, { qos: 1, publishers: 1, subscribers: SUBSCRIBERS, seconds: s });
        process.stdout.write(`  fan-out QoS 1: ${r.fanOutQos1.msgPerS} msg/s delivered\n`);
        for (const rate of rates) {
          const fixed = await fixedRate(broker, rate, s);
          r.rates.push(fixed);
          process.stdout.write(`  ${rate} msg/s: p50 ${fixed.p50Ms} ms, p99 ${fixed.p99Ms} ms\n`);
        }
        const dead = broker.died();
        if (dead) throw new Error(dead);
      } finally {
        await broker.stop();
      }
      results.push(r);
    }
  } finally {
    await mongo?.stop();
    await redis?.stop();
  }
  const md = markdown(results, { started, info, pinned, opts });
  process.stdout.write(`\n${terminal(results)}\n`);
  if (opts.write) {
    await addToDoc(opts.doc, md);
    process.stdout.write(`added to ${opts.doc}\n`);
  }
}

const ratio = (a: number | undefined, b: number | undefined) =>
  a !== undefined && b !== undefined && b > 0 ? `${(a / b).toFixed(2)}×` : '–';

const idleCell = (idle: IdleResult | undefined) =>
  idle
    ? `${idle.connectsPerS}/s, ${idle.kibPerConnection} KiB` +
      (idle.heapKibPerConnection === undefined ? '' : ` (heap ${idle.heapKibPerConnection})`) +
      (idle.failed
        ? ` (${idle.failed} of ${idle.connections + idle.failed} failed: ${Object.entries(idle.failures)
            .map(([k, v]) => `${k} ${v}`)
            .join(', ')})`
        : '')
    : '–';

function rows(results: BrokerResults[]): string[][] {
  const aedes = results.find((r) => r.name === 'aedes');
  const mosquitto = results.find((r) => r.name === 'mosquitto');
  return results.map((r) => [
    r.name,
    String(r.fanInQos0?.msgPerS ?? '–'),
    String(r.fanInQos1?.msgPerS ?? '–'),
    String(r.fanOutQos1?.msgPerS ?? '–'),
    `${r.fanInQos1?.cpuUsPerMsg ?? '–'}`,
    ...r.rates.map((x) => `${x.p50Ms} / ${x.p99Ms}${x.achieved < x.msgPerS * 0.95 ? ` (only ${x.achieved}/s)` : ''}`),
    idleCell(r.idleTcp),
    idleCell(r.idleWs),
    `${ratio(r.fanInQos1?.msgPerS, aedes?.fanInQos1?.msgPerS)} Aedes, ${ratio(r.fanInQos1?.msgPerS, mosquitto?.fanInQos1?.msgPerS)} Mosquitto`,
  ]);
}

function head(results: BrokerResults[]): string[] {
  const rates = results[0]?.rates.map((x) => `QoS 1 at ${x.msgPerS}/s p50 / p99 ms`) ?? [];
  return [
    'broker',
    'fan-in QoS 0 msg/s',
    'fan-in QoS 1 msg/s',
    'fan-out QoS 1 msg/s',
    'CPU µs/msg (fan-in QoS 1)',
    ...rates,
    'idle TCP: connects, memory/conn',
    'idle WS: connects, memory/conn',
    'QoS 1 fan-in ratio',
  ];
}

function terminal(results: BrokerResults[]): string {
  const table = new Table({ head: head(results), style: { head: [], border: [] } });
  table.push(...rows(results));
  return table.toString();
}

/** A horizontal bar chart in text (Markdown renders it in a code block everywhere, offline too). */
function chart(results: BrokerResults[]): string {
  const values = results.map((r) => [r.name, r.fanInQos1?.msgPerS ?? 0] as const);
  const max = Math.max(1, ...values.map(([, v]) => v));
  return values
    .map(([name, v]) => `${name.padEnd(10)} ${'█'.repeat(Math.round((v / max) * 50)).padEnd(50)} ${v} msg/s`)
    .join('\n');
}

function markdown(
  results: BrokerResults[],
  {
    started,
    info,
    pinned,
    opts,
  }: { started: string; info: ReturnType<typeof machineInfo>; pinned: boolean; opts: ReturnType<typeof program.opts> },
): string {
  const h = head(results);
  const lines = [
    `\n### ${started.replace(/\.\d+Z$/, 'Z')} (bench:broker)\n`,
    `- command: \`npm run bench:broker -- --seconds ${opts.seconds} --idle ${opts.idle} --rates ${opts.rates}\``,
    `- machine: ${info.cores} cores, ${info.cpuModel}, ${info.memoryGiB} GiB, Linux ${info.kernel}, Node ${info.node}; ` +
      `${pinned ? 'brokers pinned to core 0, load to core 1' : 'not pinned'}; load average at the end ${loadAverage().join(' / ')}`,
    `- idle connections first on each fresh broker, 200 CONNECTs at a time from 200 source addresses (127.0.0.2–201); memory per connection after a garbage collection (RSS; Node brokers also heap + buffers); our broker with its documented defaults but MQTT_MAX_CONNECTIONS raised above the idle count`,
    `- workload: 100-byte payloads; fan-in ${PUBLISHERS} publishers → 1 subscriber, fan-out 1 → ${SUBSCRIBERS}; QoS 1 window 100 per publisher; our broker with authentication (SHA-256 secrets) and ACL on every publish and delivery`,
    '',
    ...markdownTable(h, rows(results)),
    '',
    'QoS 1 fan-in, delivered msg/s:',
    '',
    '```',
    chart(results),
    '```',
    '',
  ];
  return `${lines.join('\n')}\n`;
}

/** Inserts the run at the end of the "## Broker" section of the document (the other benches append theirs too). */
async function addToDoc(doc: string, run: string): Promise<void> {
  const text = await readFile(doc, 'utf8');
  const heading = text.indexOf('\n## Broker (npm run bench:broker)');
  if (heading < 0) {
    await writeFile(doc, `${text.trimEnd()}\n\n## Broker (npm run bench:broker)\n${run}`);
    return;
  }
  const next = text.indexOf('\n## ', heading + 1);
  const end = next < 0 ? text.length : next;
  await writeFile(doc, `${text.slice(0, end).trimEnd()}\n${run}${next < 0 ? '' : text.slice(end)}`);
}

/** A Markdown table padded the way Prettier writes it, so the document stays formatted. */
function markdownTable(head: string[], body: string[][]): string[] {
  const all = [head, ...body];
  const widths = head.map((_, c) => Math.max(3, ...all.map((row) => [...(row[c] ?? '')].length)));
  const line = (row: string[]) =>
    `| ${row.map((cell, c) => cell + ' '.repeat(widths[c]! - [...cell].length)).join(' | ')} |`;
  return [line(head), `| ${widths.map((w) => '-'.repeat(w)).join(' | ')} |`, ...body.map(line)];
}

function loadAverage(): string[] {
  return readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3);
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`bench:broker: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
