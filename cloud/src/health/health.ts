/**
 * Dependency health for GET /health: each check runs with a deadline, in parallel, and reports status and latency.
 * Any check down, or the process shutting down, makes the answer 503 so a load balancer stops sending traffic.
 * Checks are registered by the parts that own the dependency (MongoDB, Redis now; the broker later).
 */
import type { Clock } from '../../../tools/runtime/clock.ts';

export interface HealthCheck {
  name: string;
  /** Resolves when healthy; rejects (or times out) when not. May resolve with details to report. */
  check(): Promise<Record<string, unknown> | void>;
}

export interface CheckResult {
  status: 'up' | 'down';
  latencyMs: number;
  error?: string;
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

function withDeadline<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
  });
  return Promise.race([promise, deadline]).finally(() => clearTimeout(timer));
}

export function createHealth({
  clock,
  timeoutMs,
  version,
}: {
  clock: Clock;
  timeoutMs: number;
  version: string;
}): Health {
  const checks: HealthCheck[] = [];
  const startedMs = clock.nowMs();
  let shuttingDown = false;

  async function run(check: HealthCheck): Promise<CheckResult> {
    const started = performance.now();
    try {
      const details = await withDeadline(check.check(), timeoutMs);
      return { status: 'up', latencyMs: Math.round((performance.now() - started) * 10) / 10, ...(details ?? {}) };
    } catch (err) {
      return {
        status: 'down',
        latencyMs: Math.round((performance.now() - started) * 10) / 10,
        error: err instanceof Error ? err.message.slice(0, 200) : 'failed',
      };
    }
  }

  return {
    add(check) {
      checks.push(check);
    },
    async report() {
      const results = await Promise.all(checks.map(run));
      const byName = Object.fromEntries(checks.map((c, i) => [c.name, results[i]!]));
      const anyDown = results.some((r) => r.status === 'down');
      return {
        status: shuttingDown ? 'shutting-down' : anyDown ? 'down' : 'ok',
        checks: byName,
        uptimeS: Math.round((clock.nowMs() - startedMs) / 1000),
        version,
      };
    },
    markShuttingDown() {
      shuttingDown = true;
    },
  };
}
