import * as v from 'valibot';
import { defineRoute } from '../http/route.ts';
import type { Health } from './health.ts';

const CheckResult = v.object({
  status: v.picklist(['up', 'down']),
  latencyMs: v.number(),
  /** Why it is down, in one word (details are in the server log). */
  error: v.optional(v.picklist(['timeout', 'unreachable'])),
});

export const HealthReport = v.object({
  status: v.picklist(['ok', 'down', 'shutting-down']),
  checks: v.record(v.string(), CheckResult),
  uptimeS: v.number(),
  version: v.string(),
});

export function healthRoutes(health: Health) {
  return [
    defineRoute({
      method: 'get',
      path: '/health',
      summary: 'Readiness: MongoDB and Redis reachable, with latency',
      description:
        'Answers 503 when a dependency is down or the server is shutting down, so load balancers stop routing to it.',
      tags: ['operations'],
      responses: {
        200: { description: 'Every dependency is up', schema: HealthReport },
        503: { description: 'A dependency is down, or the server is shutting down', schema: HealthReport },
      },
      handler: async (ctx) => {
        const report = await health.report();
        ctx.set('Cache-Control', 'no-store');
        return { status: report.status === 'ok' ? 200 : 503, body: report };
      },
    }),
    defineRoute({
      method: 'get',
      path: '/health/live',
      summary: 'Liveness: the process answers',
      description: 'Touches no dependency: a MongoDB outage must not make an orchestrator restart healthy API nodes.',
      tags: ['operations'],
      responses: { 200: { description: 'Alive', schema: v.object({ status: v.literal('alive') }) } },
      handler: () => ({ status: 200, body: { status: 'alive' } }),
    }),
  ];
}
