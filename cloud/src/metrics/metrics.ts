/**
 * Prometheus metrics with prom-client. One registry per process, built in main.ts and passed down, so tests can
 * build apps side by side without "metric already registered" clashes from the global registry.
 */
import type { Middleware } from 'koa';
import { collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import type { AppState } from '../http/state.ts';

export interface CloudMetrics {
  registry: Registry;
  httpDuration: Histogram<'method' | 'route' | 'status'>;
  httpInFlight: Gauge;
}

export function createMetrics({ defaultMetrics = true }: { defaultMetrics?: boolean } = {}): CloudMetrics {
  const registry = new Registry();
  registry.setDefaultLabels({ service: 'cloud' });
  if (defaultMetrics) collectDefaultMetrics({ register: registry });
  return {
    registry,
    httpDuration: new Histogram({
      name: 'http_request_duration_seconds',
      help: 'HTTP request duration by route template (never the raw path, to bound cardinality)',
      labelNames: ['method', 'route', 'status'] as const,
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers: [registry],
    }),
    httpInFlight: new Gauge({
      name: 'http_requests_in_flight',
      help: 'HTTP requests being served',
      registers: [registry],
    }),
  };
}

/** Times every request; the route label is the matched template (e.g. /api/sessions/:id) or "unmatched". */
export function httpMetrics(metrics: CloudMetrics): Middleware<AppState> {
  return async (ctx, next) => {
    const end = metrics.httpDuration.startTimer();
    metrics.httpInFlight.inc();
    try {
      await next();
    } finally {
      metrics.httpInFlight.dec();
      const matched = (ctx as { _matchedRoute?: string | RegExp })._matchedRoute;
      end({
        method: ctx.method,
        route: typeof matched === 'string' ? matched : 'unmatched',
        status: String(ctx.status),
      });
    }
  };
}
