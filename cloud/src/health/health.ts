/**
 * Dependency health for GET /health: each check runs with a deadline, in parallel, and reports status and latency.
 * Any check down, or the process shutting down, makes the answer 503 so a load balancer stops sending traffic.
 * Checks are registered by the parts that own the dependency (MongoDB, Redis now; the broker later).
 */
import type { Clock } from '../../../tools/runtime/clock.ts';
import type { Logger } from '../../../tools/runtime/logger.ts';

export interface HealthCheck {
  name: string;
  /** Resolves when healthy; rejects (or times out) when not. May resolve with details to report. */
  check(): Promise<Record<string, unknown> | void>;
}

export interface CheckResult {
  status: 'up' | 'down';
  latencyMs: number;
  /** Why it is down, in one word; the driver's message (hosts, ports) goes to the log only. */
  error?: 'timeout' | 'unreachable';
  [detail: string]: unknown;
}

export interface HealthReport {
  status: 'ok' | 'down' | 'shutting-down';
  checks: Record<string, CheckResult>;
  uptimeS: number;
  version: string;
}

export interface Health {
  add(check: HealthCheck): void;
  report(): Promise<HealthReport>;
  /** Called at the start of a graceful shutdown: /health answers 503 from then on. */
  markShuttingDown(): void;
}

export interface HealthOptions {
  clock: Clock;
  timeoutMs: number;
  version: string;
  log: Logger;
}

class DeadlineExceeded extends Error {}

function withDeadline<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new DeadlineExceeded(`no answer within ${ms} ms`)), ms);
  });
  return Promise.race([promise, deadline]).finally(() => clearTimeout(timer));
}

const roundMs = (ms: number) => Math.round(ms * 10) / 10;

export function createHealth({ clock, timeoutMs, version, log }: HealthOptions): Health {
  const checks: HealthCheck[] = [];
  const startedMs = clock.nowMs();
  let shuttingDown = false;
  // Concurrent callers share one round of checks, so a flood of GET /health cannot multiply the pings sent to
  // MongoDB and Redis.
  let inFlight: Promise<HealthReport> | undefined;

  async function run(check: HealthCheck): Promise<CheckResult> {
    const started = performance.now();
    try {
      const details = await withDeadline(check.check(), timeoutMs);
      return { status: 'up', latencyMs: roundMs(performance.now() - started), ...(details ?? {}) };
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      log.warn({ check: check.name, err: { message } }, 'health check failed');
      return {
        status: 'down',
        latencyMs: roundMs(performance.now() - started),
        error: err instanceof DeadlineExceeded ? 'timeout' : 'unreachable',
      };
    }
  }

  async function runAll(): Promise<HealthReport> {
    const results = await Promise.all(checks.map(run));
    const anyDown = results.some((r) => r.status === 'down');
    return {
      status: shuttingDown ? 'shutting-down' : anyDown ? 'down' : 'ok',
      checks: Object.fromEntries(checks.map((c, i) => [c.name, results[i]!])),
      uptimeS: Math.round((clock.nowMs() - startedMs) / 1000),
      version,
    };
  }

  return {
    add(check) {
      checks.push(check);
    },
    report() {
      inFlight ??= runAll().finally(() => {
        inFlight = undefined;
      });
      return inFlight;
    },
    markShuttingDown() {
      shuttingDown = true;
    },
  };
}
