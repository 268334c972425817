import { expect } from 'chai';
import type { Middleware } from 'koa';
import type { AppState } from '../http/state.ts';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import { findFreePort } from '../../../tools/services/index.ts';
import { createApp } from '../http/app.ts';
import { listen, type HttpServer } from '../http/server.ts';
import { createMetrics } from '../metrics/metrics.ts';
import { createLiveState } from './live-state.ts';
import { machineRoutes } from './routes.ts';

const admitAdmin: Middleware<AppState> = async (ctx, next) => {
  ctx.state.user = {
    id: 'admin-1',
    role: 'admin',
    status: 'active',
    emailVerified: true,
    tokenId: 't',
    sessionId: 's',
    expiresAt: Math.floor(Date.now() / 1000) + 60,
  };
  await next();
};

describe('GET /api/machines/availability while Redis is unreachable', () => {
  let http: HttpServer;
  let redis: Redis;

  before(async () => {
    // A client of a port nothing listens on, failing fast like the cloud's (no offline queue, no retries).
    redis = new Redis(await findFreePort(), '127.0.0.1', {
      lazyConnect: true,
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      retryStrategy: () => null,
    });
    redis.on('error', () => undefined);
    const app = createApp({
      config: { corsOrigins: [], trustProxy: false, jsonLimitBytes: 1024 },
      log: pino({ level: 'silent' }),
      metrics: createMetrics({ defaultMetrics: false }),
      version: 'test',
      routes: machineRoutes({
        live: createLiveState(redis),
        nowMs: () => Date.now(),
        // What is under test is the Redis failure, after authorization: the caller is an admin here (the guard and
        // the branch scoping are tested against the real cloud in availability.test.ts).
        access: {
          guard: admitAdmin,
          staffGuard: admitAdmin,
          canSee: () => Promise.resolve(true),
          canManage: () => Promise.resolve(true),
        },
      }),
    });
    http = await listen(app, { host: '127.0.0.1', port: 0, requestTimeoutMs: 5000 });
  });
  after(async () => {
    await http.close(1000);
    redis.disconnect();
  });

  it('answers 503 problem+json with Retry-After, never a 500', async () => {
    const res = await fetch(`${http.url}/api/machines/availability?branchId=demo`);
    expect(res.status).to.equal(503);
    expect(res.headers.get('content-type')).to.match(/^application\/problem\+json/);
    expect(res.headers.get('retry-after')).to.equal('5');
    const body = (await res.json()) as { type: string; detail: string };
    expect(body.type).to.match(/service-unavailable$/);
  });
});
