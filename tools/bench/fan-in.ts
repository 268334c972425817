/**
 * QoS 1 fan-in: `publishers` clients publish 100-byte payloads as fast as a window of unacknowledged messages
 * allows, one subscriber receives them all (`bench/fan-in/#`, QoS 1). Throughput is what the subscriber receives
 * per second in the measuring window; latency is publish → delivery (one process holds both ends, so one clock).
 * After the window the publishers stop and the run waits for the stragglers: every message published must be
 * delivered, or the run reports how many were lost.
 */
import { connectAsync, type MqttClient } from 'mqtt';
import hdr from 'hdr-histogram-js';

export interface FanInOptions {
  readonly url: string;
  readonly publishers: number;
  /** Unacknowledged messages per publisher (default 100). */
  readonly window?: number;
  readonly payloadBytes?: number;
  readonly warmupMs: number;
  readonly durationMs: number;
  /** Called about every 250 ms with the messages delivered so far in the window. */
  readonly onProgress?: (delivered: number, elapsedMs: number) => void;
}

export interface FanInResult {
  readonly msgPerS: number;
  readonly delivered: number;
  readonly published: number;
  readonly lost: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
}

export async function runFanIn(options: FanInOptions): Promise<FanInResult> {
  const window = options.window ?? 100;
  const size = options.payloadBytes ?? 100;
  const id = `${process.pid}-${Date.now().toString(36)}`;
  const subscriber = await connectAsync(options.url, { clientId: `bench-sub-${id}`, reconnectPeriod: 0, clean: true });
  await subscriber.subscribeAsync('bench/fan-in/#', { qos: 1 });
  const publishers: MqttClient[] = [];
  for (let i = 0; i < options.publishers; i++) {
    publishers.push(
      await connectAsync(options.url, { clientId: `bench-pub-${id}-${i}`, reconnectPeriod: 0, clean: true }),
    );
  }

  const latency = hdr.build({
    lowestDiscernibleValue: 1,
    highestTrackableValue: 120_000_000,
    numberOfSignificantValueDigits: 3,
  });
  const origin = performance.now();
  let measuring = false;
  let windowDelivered = 0;
  let delivered = 0;
  let published = 0;
  let running = true;

  subscriber.on('message', (_topic, payload) => {
    delivered += 1;
    if (!measuring) return;
    windowDelivered += 1;
    const sentUs = payload.readDoubleLE(0);
    latency.recordValue(Math.max(1, Math.round((performance.now() - origin) * 1000 - sentUs)));
  });

  const pump = (client: MqttClient, index: number) => {
    const topic = `bench/fan-in/${index}`;
    const send = () => {
      if (!running) return;
      const payload = Buffer.alloc(size, 0x61);
      payload.writeDoubleLE((performance.now() - origin) * 1000, 0);
      published += 1;
      client.publish(topic, payload, { qos: 1 }, (err) => {
        if (!err) send();
      });
    };
    for (let i = 0; i < window; i++) send();
  };
  publishers.forEach(pump);

  await sleep(options.warmupMs);
  measuring = true;
  const start = performance.now();
  const progress = setInterval(() => options.onProgress?.(windowDelivered, performance.now() - start), 250);
  await sleep(options.durationMs);
  measuring = false;
  const elapsed = performance.now() - start;
  clearInterval(progress);
  running = false;
  // Stragglers: everything published must arrive.
  const deadline = Date.now() + 10_000;
  while (delivered < published && Date.now() < deadline) await sleep(50);
  await Promise.all([...publishers, subscriber].map((client) => client.endAsync(true)));
  return {
    msgPerS: Math.round((windowDelivered * 1000) / elapsed),
    delivered,
    published,
    lost: published - delivered,
    p50Ms: latency.getValueAtPercentile(50) / 1000,
    p99Ms: latency.getValueAtPercentile(99) / 1000,
  };
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
