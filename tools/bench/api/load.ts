/**
 * Load generation for bench:api with undici and HDR histograms (microseconds).
 *
 * Open loop: requests are scheduled at a fixed arrival rate and each one's latency is measured from the moment it
 * was *due*, not from when it was sent, so a server that falls behind shows its queueing in the tail (a closed
 * loop would silently slow its arrivals down instead — "coordinated omission"). Requests go round-robin over many
 * keep-alive connections (up to 1000), each warmed with one request before measuring.
 *
 * Closed loop (maximum throughput only): each connection sends its next request when the previous one completed.
 */
import { performance } from 'node:perf_hooks';
import { build, type Histogram } from 'hdr-histogram-js';
import { Client } from 'undici';
import { cpuTimeMs } from '../system.ts';

export interface Outcome {
  status: number;
}

/** Sends request number `i` on `client`; resolves with the status once the body has been read. */
export type Send = (client: Client, i: number) => Promise<Outcome>;

export interface LoadResult {
  name: string;
  mode: 'open' | 'closed';
  /** Target arrivals per second (open loop). */
  targetRate?: number;
  connections: number;
  durationS: number;
  /** Responses per second over the run (completed, any status). */
  achievedRate: number;
  sent: number;
  completed: number;
  /** Count by status class: '2xx', '4xx', '429', '5xx', 'error' (network, timeout). */
  statuses: Record<string, number>;
  /** Latency percentiles in milliseconds. */
  p50Ms: number;
  p90Ms: number;
  p99Ms: number;
  maxMs: number;
  /** Share of one core the generator itself used (≥ 0.9: the figure may be the generator's limit, not the server's). */
  generatorCpu: number;
  /** Share of one core the server process used (a server far below 1 while falling behind was starved of CPU). */
  serverCpu?: number;
}

/** CPU time of the server process, sampled around a run. */
function serverCpuMeter(pid: number | undefined): (elapsedS: number) => number | undefined {
  const start = pid === undefined ? undefined : cpuTimeMs(pid);
  return (elapsedS) => {
    if (pid === undefined || start === undefined) return undefined;
    const end = cpuTimeMs(pid);
    return end === undefined ? undefined : Math.round(((end - start) / (elapsedS * 1000)) * 100) / 100;
  };
}

function newHistogram(): Histogram {
  return build({ lowestDiscernibleValue: 1, highestTrackableValue: 120_000_000, numberOfSignificantValueDigits: 3 });
}

function statusClass(status: number): string {
  if (status === 429) return '429';
  if (status >= 200 && status < 300) return '2xx';
  if (status >= 400 && status < 500) return '4xx';
  if (status >= 500) return '5xx';
  return String(status);
}

export interface Connections {
  readonly clients: readonly Client[];
  close(): Promise<void>;
}

/** `count` keep-alive connections to `origin`, one request in flight on each. */
export function openConnections(origin: string, count: number): Connections {
  const clients = Array.from(
    { length: count },
    () =>
      new Client(origin, {
        pipelining: 1,
        keepAliveTimeout: 60_000,
        headersTimeout: 30_000,
        bodyTimeout: 30_000,
        connect: { timeout: 10_000 },
      }),
  );
  return {
    clients,
    close: async () => {
      await Promise.allSettled(clients.map((c) => c.destroy()));
    },
  };
}

/** One unmeasured request per connection, so connection set-up is not in the figures. */
export async function warm(connections: Connections, send: Send): Promise<void> {
  const batch = 100;
  for (let i = 0; i < connections.clients.length; i += batch) {
    await Promise.allSettled(connections.clients.slice(i, i + batch).map((client, j) => send(client, -1 - i - j)));
  }
}

interface Tally {
  histogram: Histogram;
  statuses: Record<string, number>;
  completed: number;
}

function tally(): Tally {
  return { histogram: newHistogram(), statuses: {}, completed: 0 };
}

function record(t: Tally, status: string, latencyMs: number): void {
  t.statuses[status] = (t.statuses[status] ?? 0) + 1;
  t.completed++;
  t.histogram.recordValue(Math.max(1, Math.round(latencyMs * 1000)));
}

function summarise(
  base: Pick<LoadResult, 'name' | 'mode' | 'connections' | 'durationS'> & { targetRate?: number },
  t: Tally,
  sent: number,
  elapsedS: number,
  cpuMs: number,
  serverCpu: number | undefined,
): LoadResult {
  const ms = (us: number) => Math.round(us / 10) / 100;
  const result: LoadResult = {
    ...base,
    achievedRate: Math.round(t.completed / elapsedS),
    sent,
    completed: t.completed,
    statuses: t.statuses,
    p50Ms: ms(t.histogram.getValueAtPercentile(50)),
    p90Ms: ms(t.histogram.getValueAtPercentile(90)),
    p99Ms: ms(t.histogram.getValueAtPercentile(99)),
    maxMs: ms(t.histogram.maxValue),
    generatorCpu: Math.round((cpuMs / (elapsedS * 1000)) * 100) / 100,
    ...(serverCpu === undefined ? {} : { serverCpu }),
  };
  t.histogram.destroy();
  return result;
}

export interface OpenLoopOptions {
  name: string;
  connections: Connections;
  rate: number;
  durationS: number;
  send: Send;
  /** Called about every 250 ms with the share of the schedule done (0..1). */
  onProgress?: (done: number) => void;
  /** How long to wait for stragglers after the last arrival. */
  drainTimeoutMs?: number;
  /** The server's pid, to report the CPU it used. */
  serverPid?: number;
}

export async function openLoop({
  name,
  connections,
  rate,
  durationS,
  send,
  onProgress,
  drainTimeoutMs = 30_000,
  serverPid,
}: OpenLoopOptions): Promise<LoadResult> {
  const t = tally();
  const total = Math.round(rate * durationS);
  const intervalMs = 1000 / rate;
  const clients = connections.clients;
  const cpuStart = process.cpuUsage();
  const serverCpu = serverCpuMeter(serverPid);
  const start = performance.now() + 20;
  let next = 0;
  let inFlight = 0;
  let lastProgress = 0;
  let resolveDrained: () => void = () => {};
  const drained = new Promise<void>((resolve) => (resolveDrained = resolve));

  const dispatch = (i: number, due: number) => {
    inFlight++;
    send(clients[i % clients.length]!, i)
      .then(
        ({ status }) => record(t, statusClass(status), performance.now() - due),
        () => record(t, 'error', performance.now() - due),
      )
      .finally(() => {
        inFlight--;
        if (next >= total && inFlight === 0) resolveDrained();
      });
  };

  await new Promise<void>((resolve) => {
    const tick = () => {
      const now = performance.now();
      while (next < total && start + next * intervalMs <= now) {
        dispatch(next, start + next * intervalMs);
        next++;
      }
      if (onProgress && now - lastProgress > 250) {
        lastProgress = now;
        onProgress(next / total);
      }
      if (next < total) setTimeout(tick, 1);
      else resolve();
    };
    setTimeout(tick, Math.max(0, start - performance.now()));
  });
  if (inFlight > 0) {
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([drained, new Promise((resolve) => (timer = setTimeout(resolve, drainTimeoutMs)))]);
    clearTimeout(timer);
  }
  const elapsedS = (performance.now() - start) / 1000;
  const cpu = process.cpuUsage(cpuStart);
  onProgress?.(1);
  return summarise(
    { name, mode: 'open', targetRate: rate, connections: clients.length, durationS },
    t,
    total,
    elapsedS,
    (cpu.user + cpu.system) / 1000,
    serverCpu(elapsedS),
  );
}

export interface ClosedLoopOptions {
  name: string;
  connections: Connections;
  durationS: number;
  send: Send;
  onProgress?: (done: number) => void;
  serverPid?: number;
}

export async function closedLoop({
  name,
  connections,
  durationS,
  send,
  onProgress,
  serverPid,
}: ClosedLoopOptions): Promise<LoadResult> {
  const t = tally();
  const cpuStart = process.cpuUsage();
  const serverCpu = serverCpuMeter(serverPid);
  const start = performance.now();
  const end = start + durationS * 1000;
  let sent = 0;
  const progress = onProgress
    ? setInterval(() => onProgress((performance.now() - start) / (end - start)), 250)
    : undefined;
  await Promise.all(
    connections.clients.map(async (client) => {
      while (performance.now() < end) {
        const i = sent++;
        const began = performance.now();
        try {
          const { status } = await send(client, i);
          record(t, statusClass(status), performance.now() - began);
        } catch {
          record(t, 'error', performance.now() - began);
        }
      }
    }),
  );
  if (progress) clearInterval(progress);
  onProgress?.(1);
  const elapsedS = (performance.now() - start) / 1000;
  const cpu = process.cpuUsage(cpuStart);
  return summarise(
    { name, mode: 'closed', connections: connections.clients.length, durationS },
    t,
    sent,
    elapsedS,
    (cpu.user + cpu.system) / 1000,
    serverCpu(elapsedS),
  );
}
