/**
 * The gateway's health endpoint and metrics on one small node:http server (127.0.0.1:8081 by default):
 *
 * - `GET /health`: JSON — status, uplink up/down and since when, queue depth/bytes/oldest age/evictions per lane
 *   (`queue.access|records|telemetry`), `queue.full` and why, drain rate, the offline-hours forecast and its alarm,
 *   batches in flight, machines connected, rejected counts by reason. **200 while the gateway accepts records** (`status:
 *   "ok"`, or `"degraded"` while the uplink is down: storing and forwarding later is its job, and a supervisor
 *   that restarted it for a cloud outage would only make things worse — with the memory queue it would lose the
 *   backlog). **503** when it cannot accept records: the machine broker is not listening, the queue is full, or it
 *   is shutting down.
 * - `GET /metrics`: Prometheus text from the gateway's own registry.
 */
import { once } from 'node:events';
import http from 'node:http';
import type net from 'node:net';
import { LANES } from '../../../protocol/index.ts';
import type { Lane } from '../../../protocol/index.ts';
import type { Logger } from '../../../tools/runtime/logger.ts';
import type { GatewayMetrics } from '../metrics.ts';
import type { UplinkStatus } from '../uplink/forwarder.ts';
import { ageSeconds } from '../uplink/gateway-state.ts';
import type { QueueInsight } from '../uplink/queue-monitor.ts';
import type { QueueStats } from '../uplink/queue.ts';

export interface HealthSources {
  readonly gatewayId: string;
  readonly branch: string;
  readonly bootId: string;
  readonly version: string;
  readonly nowMs: () => number;
  readonly uplink: () => UplinkStatus;
  readonly queue: () => QueueStats;
  /** Drain rate and offline-hours forecast (queue-monitor.ts); absent: not reported. */
  readonly queueInsight?: () => QueueInsight;
  /** Why the queue refuses records ('capacity' or 'storage') while `full`. */
  readonly queueFullReason?: () => string | undefined;
  /** The durability PRAGMAs as read back from the queue file; undefined: a queue without a file (tests). */
  readonly queuePragmas?: () => QueuePragmas | undefined;
  readonly machinesConnected: () => number;
  /** Whether the machine broker is listening. */
  readonly intakeListening: () => boolean;
  readonly rejected: () => { total: number; byReason: Readonly<Record<string, number>> };
  readonly stopping: () => boolean;
  /** Access path: configuration and allow-list revisions and age, readers, decisions (access/gateway-access.ts). */
  readonly access?: () => unknown;
}

/** The queue file's durability PRAGMAs as SQLite reports them (synchronous by name: OFF, NORMAL, FULL, EXTRA). */
export interface QueuePragmas {
  readonly journalMode: string;
  readonly synchronous: string;
  readonly lockingMode: string;
}

export interface LaneHealth {
  readonly depth: number;
  readonly bytes: number;
  /** Age of the oldest record, s; null when the lane is empty. */
  readonly oldestAgeS: number | null;
  readonly evicted: number;
  readonly inFlightBatches: number;
}

export interface HealthReport {
  readonly status: 'ok' | 'degraded' | 'unavailable' | 'stopping';
  readonly gateway: string;
  readonly branch: string;
  readonly bootId: string;
  readonly version: string;
  readonly uplink: 'up' | 'down';
  /** ISO time the uplink went up or down. */
  readonly since: string;
  readonly uplinkConnects: number;
  readonly uplinkError: string | null;
  readonly queue: {
    readonly depth: number;
    readonly bytes: number;
    readonly oldestAgeS: number | null;
    /** New records are refused (no PUBACK): the alarm of RELIABILITY G9/G10. */
    readonly full: boolean;
    /** 'capacity' (caps reached with only access and records left) or 'storage' (disk full, I/O); null: not full. */
    readonly fullReason: string | null;
    readonly capRecords: number;
    readonly capBytes: number;
    /** Records/s acked by the cloud (recent); null: not reported. */
    readonly drainPerS: number | null;
    /** Hours of outage absorbed at the current intake before eviction must start; null: no intake. */
    readonly offlineHoursLeft: number | null;
    /** offlineHoursLeft is below GATEWAY_QUEUE_MIN_OFFLINE_HOURS. */
    readonly forecastLow: boolean;
    /** journal_mode, synchronous, locking_mode read back from the queue file at open; null: no file. */
    readonly pragmas: QueuePragmas | null;
    readonly access: LaneHealth;
    readonly records: LaneHealth;
    readonly telemetry: LaneHealth;
    /** The same three lanes, keyed by lane (kept for existing readers). */
    readonly lanes: Readonly<Record<Lane, LaneHealth>>;
  };
  readonly machinesConnected: number;
  readonly rejected: { readonly total: number; readonly byReason: Readonly<Record<string, number>> };
  readonly access?: unknown;
}

/** The /health document and its HTTP status. */
export function healthReport(s: HealthSources): { status: number; body: HealthReport } {
  const now = s.nowMs();
  const uplink = s.uplink();
  const queue = s.queue();
  let oldest: number | undefined;
  const lanes = Object.fromEntries(
    LANES.map((lane): [Lane, LaneHealth] => {
      const l = queue.lanes[lane];
      if (l.oldestEnqueuedAtMs !== undefined && (oldest === undefined || l.oldestEnqueuedAtMs < oldest)) {
        oldest = l.oldestEnqueuedAtMs;
      }
      return [
        lane,
        {
          depth: l.depth,
          bytes: l.bytes,
          oldestAgeS: l.oldestEnqueuedAtMs === undefined ? null : ageSeconds(now, l.oldestEnqueuedAtMs),
          evicted: l.evicted,
          inFlightBatches: uplink.inFlight[lane].batches,
        },
      ];
    }),
  ) as Record<Lane, LaneHealth>;
  const insight = s.queueInsight?.();
  const accepting = s.intakeListening() && !queue.full;
  const status = s.stopping() ? 'stopping' : !accepting ? 'unavailable' : uplink.up ? 'ok' : 'degraded';
  return {
    status: status === 'ok' || status === 'degraded' ? 200 : 503,
    body: {
      status,
      gateway: s.gatewayId,
      branch: s.branch,
      bootId: s.bootId,
      version: s.version,
      uplink: uplink.up ? 'up' : 'down',
      since: new Date(uplink.sinceMs).toISOString(),
      uplinkConnects: uplink.connects,
      uplinkError: uplink.lastError ?? null,
      queue: {
        depth: queue.depth,
        bytes: queue.bytes,
        oldestAgeS: oldest === undefined ? null : ageSeconds(now, oldest),
        full: queue.full,
        fullReason: queue.full ? (s.queueFullReason?.() ?? 'capacity') : null,
        capRecords: queue.capRecords,
        capBytes: queue.capBytes,
        drainPerS: insight?.drainPerS ?? null,
        offlineHoursLeft: insight?.offlineHoursLeft ?? null,
        forecastLow: insight?.forecastLow ?? false,
        pragmas: s.queuePragmas?.() ?? null,
        access: lanes.access,
        records: lanes.records,
        telemetry: lanes.telemetry,
        lanes,
      },
      machinesConnected: s.machinesConnected(),
      rejected: s.rejected(),
      ...(s.access === undefined ? {} : { access: s.access() }),
    },
  };
}

export interface HealthServerOptions {
  readonly host: string;
  readonly port: number;
  readonly sources: HealthSources;
  readonly metrics: GatewayMetrics;
  readonly log: Logger;
}

export interface HealthServer {
  start(): Promise<void>;
  stop(): Promise<void>;
  /** The port it listens on (the chosen one when configured with 0). */
  readonly port: number;
}

export function createHealthServer({ host, port, sources, metrics, log }: HealthServerOptions): HealthServer {
  let server: http.Server | undefined;
  let boundPort = 0;

  /** Queue figures are read at scrape time, so /metrics and /health always agree. */
  function refreshGauges(): void {
    const now = sources.nowMs();
    const queue = sources.queue();
    for (const lane of LANES) {
      const l = queue.lanes[lane];
      metrics.queueDepth.set({ lane }, l.depth);
      metrics.queueBytes.set({ lane }, l.bytes);
      metrics.queueEvicted.set({ lane }, l.evicted);
      metrics.queueOldestAgeSeconds.set(
        { lane },
        l.oldestEnqueuedAtMs === undefined ? 0 : ageSeconds(now, l.oldestEnqueuedAtMs),
      );
    }
    metrics.queueFull.set(queue.full ? 1 : 0);
    const insight = sources.queueInsight?.();
    if (insight !== undefined) {
      metrics.queueDrainPerSecond.set(insight.drainPerS);
      for (const lane of LANES) metrics.queueIntakePerSecond.set({ lane }, insight.intake[lane].recordsPerS);
      metrics.queueOfflineHoursLeft.set(insight.offlineHoursLeft ?? -1);
      metrics.queueForecastLow.set(insight.forecastLow ? 1 : 0);
    }
    metrics.machinesConnected.set(sources.machinesConnected());
  }

  async function handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const path = (req.url ?? '/').split('?', 1)[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain' }).end('method not allowed\n');
      return;
    }
    if (path === '/health') {
      const { status, body } = healthReport(sources);
      res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
      res.end(JSON.stringify(body));
      return;
    }
    if (path === '/metrics') {
      refreshGauges();
      const text = await metrics.registry.metrics();
      res.writeHead(200, { 'content-type': metrics.registry.contentType });
      res.end(text);
      return;
    }
    res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
  }

  return {
    async start() {
      const srv = http.createServer((req, res) => {
        handle(req, res).catch((err: unknown) => {
          log.error({ err }, 'health request failed');
          if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' });
          res.end('internal error\n');
        });
      });
      srv.requestTimeout = 10_000;
      server = srv;
      srv.listen(port, host);
      await Promise.race([
        once(srv, 'listening'),
        once(srv, 'error').then(([err]) => {
          throw err;
        }),
      ]);
      boundPort = (srv.address() as net.AddressInfo).port;
      log.info({ host, port: boundPort }, 'gateway health endpoint listening');
    },
    async stop() {
      const srv = server;
      server = undefined;
      if (srv === undefined) return;
      srv.closeIdleConnections();
      await new Promise<void>((resolve) => srv.close(() => resolve()));
    },
    get port() {
      return boundPort;
    },
  };
}
