import { timingSafeEqual, createHash } from 'node:crypto';
import { defineRoute } from '../http/route.ts';
import { Unauthorized } from '../http/errors.ts';
import type { CloudMetrics } from './metrics.ts';

/** Constant-time comparison of a presented bearer token with the configured one. */
function sameToken(presented: string, expected: string): boolean {
  const a = createHash('sha256').update(presented).digest();
  const b = createHash('sha256').update(expected).digest();
  return timingSafeEqual(a, b);
}

export function metricsRoutes(metrics: CloudMetrics, { bearerToken }: { bearerToken: string | undefined }) {
  return [
    defineRoute({
      method: 'get',
      path: '/metrics',
      summary: 'Prometheus metrics',
      description: 'Text exposition format. When METRICS_TOKEN is set, scrapers must send it as a bearer token.',
      tags: ['operations'],
      ...(bearerToken ? { security: [{ bearer: [] }] } : {}),
      responses: { 200: { description: 'Metrics', contentType: 'text/plain; version=0.0.4' } },
      handler: async (ctx) => {
        if (bearerToken) {
          const header = ctx.get('Authorization');
          const presented = header.startsWith('Bearer ') ? header.slice(7) : '';
          if (!sameToken(presented, bearerToken)) throw new Unauthorized('a valid metrics token is required');
        }
        ctx.set('Cache-Control', 'no-store');
        return {
          status: 200,
          headers: { 'Content-Type': metrics.registry.contentType },
          body: await metrics.registry.metrics(),
        };
      },
    }),
  ];
}
