import { randomBytes } from 'node:crypto';
import { expect } from 'chai';
import type { Redis } from 'ioredis';
import type { Middleware } from 'koa';
import { pino } from 'pino';
import * as v from 'valibot';
import { startRedis, type RedisService } from '../../../tools/services/index.ts';
import { eventually } from '../../../test/helpers/eventually.ts';
import { testServices } from '../../../test/helpers/services.ts';
import { closeRedis, connectRedis } from '../db/redis.ts';
import { createApp } from '../http/app.ts';
import { Unauthorized } from '../http/errors.ts';
import { defineRoute, type RouteSpec } from '../http/route.ts';
import { listen, type HttpServer } from '../http/server.ts';
import type { AppState } from '../http/state.ts';
import { createMetrics } from '../metrics/metrics.ts';
import { apiRateLimit } from './api-limit.ts';
import type { RateLimitConfig } from './config.ts';
import { consumePoint, createRedisRateLimiter } from './limiter.ts';

const silent = pino({ level: 'silent' });

/**
 * Stands in for the auth guard (cloud/src/auth) only in shape: it sets ctx.state.user like the real one does, from a
 * header, so the limiter's per-user keying can be driven without tokens. "nobody" is refused like a bad token.
 */
const testUserGuard: Middleware<AppState> = async (ctx, next) => {
  const id = ctx.get('X-Test-User');
  if (id === 'nobody') throw new Unauthorized();
  if (id) {
    ctx.state.user = {
      id,
      role: 'member',
      status: 'active',
      emailVerified: true,
      tokenId: `t-${id}`,
      sessionId: `s-${id}`,
      expiresAt: Math.floor(Date.now() / 1000) + 600,
    };
  }
  await next();
};

const routes: RouteSpec[] = [
  defineRoute({
    method: 'get',
    path: '/api/ping',
    summary: 'ping',
    tags: ['test'],
    guards: [testUserGuard],
    responses: { 200: { description: 'pong' } },
    handler: () => ({ status: 200, body: { pong: true } }),
  }),
  defineRoute({
    method: 'post',
    path: '/api/echo',
    summary: 'echo',
    tags: ['test'],
    guards: [testUserGuard],
    body: v.strictObject({ n: v.number() }),
    responses: { 200: { description: 'echo' } },
    handler: (_ctx, { body }) => ({ status: 200, body }),
  }),
  defineRoute({
    method: 'get',
    path: '/api/unlimited',
    summary: 'opted out',
    tags: ['test'],
    rateLimit: false,
    responses: { 200: { description: 'ok' } },
    handler: () => ({ status: 200, body: { ok: true } }),
  }),
  defineRoute({
    method: 'get',
    path: '/health/live',
    summary: 'live',
    tags: ['operations'],
    responses: { 200: { description: 'alive' } },
    handler: () => ({ status: 200, body: { status: 'alive' } }),
  }),
];

async function serve(redis: Redis, config: RateLimitConfig): Promise<HttpServer> {
  const app = createApp({
    config: { corsOrigins: [], trustProxy: false, jsonLimitBytes: 1024 },
    log: silent,
    metrics: createMetrics({ defaultMetrics: false }),
    version: 'test',
    routes,
    rateLimit: apiRateLimit({ redis, config, log: silent }),
  });
  return listen(app, { host: '127.0.0.1', port: 0, requestTimeoutMs: 5000 });
}

const get = (base: string, path: string, user?: string) =>
  fetch(`${base}${path}`, { headers: user ? { 'X-Test-User': user } : {} });

describe('general API rate limit (rate-limiter-flexible on the real Redis)', () => {
  let redis: Redis;
  let http: HttpServer;
  let prefix: string;

  before(async () => {
    prefix = `test-rl-${randomBytes(4).toString('hex')}:`;
    redis = await connectRedis({
      url: testServices().redisUrl,
      commandTimeoutMs: 500,
      log: silent,
      name: 'rl-test',
      keyPrefix: prefix,
    });
    http = await serve(redis, { perUser: 5, perIp: 3, windowS: 60 });
  });
  after(async () => {
    await http.close(500);
    const keys = await redis.keys(`${prefix}*`);
    if (keys.length > 0) await redis.del(...keys.map((k) => k.slice(prefix.length)));
    await closeRedis(redis);
  });

  it('counts an authenticated caller per account, with RateLimit headers, then 429 with Retry-After', async () => {
    for (let i = 1; i <= 5; i++) {
      const res = await get(http.url, '/api/v1/ping', 'alice');
      expect(res.status, `request ${i}`).to.equal(200);
      expect(res.headers.get('ratelimit-limit')).to.equal('5');
      expect(res.headers.get('ratelimit-remaining')).to.equal(String(5 - i));
      expect(Number(res.headers.get('ratelimit-reset'))).to.be.within(1, 60);
      await res.arrayBuffer();
    }
    const refused = await get(http.url, '/api/ping', 'alice'); // the alias shares the count
    expect(refused.status).to.equal(429);
    expect(refused.headers.get('content-type')).to.match(/^application\/problem\+json/);
    expect(Number(refused.headers.get('retry-after'))).to.be.within(1, 60);
    expect(refused.headers.get('ratelimit-remaining')).to.equal('0');
    const problem = (await refused.json()) as { type: string; status: number; requestId: string };
    expect(problem).to.include({ type: '/problems/too-many-requests', status: 429 });
    expect(problem.requestId).to.be.a('string');
    // Stored in the shared Redis under the cloud's key prefix, keyed by account (not by address). The 6th request
    // never reached Redis: a key at its limit is refused from memory until its window ends.
    expect(await redis.get('rl:api-user:user:alice')).to.equal('5');
    expect(await redis.exists('rl:api-ip:ip:127.0.0.1', 'rl:api-ip:ip:::ffff:127.0.0.1')).to.equal(0);
  });

  it('keeps accounts apart: another user from the same address is not affected', async () => {
    const res = await get(http.url, '/api/ping', 'bob');
    expect(res.status).to.equal(200);
    expect(res.headers.get('ratelimit-remaining')).to.equal('4');
  });

  it('counts anonymous callers per client address, apart from the users behind it', async () => {
    const statuses: number[] = [];
    for (let i = 0; i < 4; i++) {
      const res = await get(http.url, '/api/ping');
      statuses.push(res.status);
      await res.arrayBuffer();
    }
    expect(statuses).to.deep.equal([200, 200, 200, 429]);
    const ipKeys = (await redis.keys(`${prefix}rl:api-ip:ip:*`)).map((k) => k.slice(prefix.length));
    expect(ipKeys).to.have.length(1);
    expect(ipKeys[0]).to.match(/^rl:api-ip:ip:(::ffff:)?127\.0\.0\.1$/);
    // A user behind the same (now exhausted) address still gets through on their own count.
    expect((await get(http.url, '/api/ping', 'carol')).status).to.equal(200);
  });

  it('runs after the route guards: a refused token costs the caller nothing and gets its 401', async () => {
    const res = await get(http.url, '/api/ping', 'nobody');
    expect(res.status).to.equal(401);
    expect(await redis.exists('rl:api-user:user:nobody')).to.equal(0);
  });

  it('runs before the body is read: an over-limit caller gets 429, not a validation answer', async () => {
    const res = await fetch(`${http.url}/api/echo`, {
      method: 'POST',
      headers: { 'Content-Type': 'text/plain', 'X-Test-User': 'alice' },
      body: 'not json',
    });
    expect(res.status).to.equal(429);
  });

  it('leaves opted-out routes and operations paths outside /api unlimited', async () => {
    for (let i = 0; i < 5; i++) {
      const unlimited = await get(http.url, '/api/unlimited');
      expect(unlimited.status).to.equal(200);
      expect(unlimited.headers.get('ratelimit-limit')).to.equal(null);
      await unlimited.arrayBuffer();
      const live = await get(http.url, '/health/live');
      expect(live.status).to.equal(200);
      await live.arrayBuffer();
    }
  });

  it('documents the 429 with its headers on limited routes only', async () => {
    // A server of its own: this suite's anonymous budget is spent by now (the document is an /api route too).
    const fresh = await serve(redis, { perUser: 5, perIp: 0, windowS: 60 });
    const doc = (await (await fetch(`${fresh.url}/api/openapi.json`)).json()) as {
      paths: Record<string, Record<string, { responses: Record<string, { headers?: Record<string, unknown> }> }>>;
    };
    await fresh.close(500);
    const limited = doc.paths['/api/v1/ping']!.get!.responses['429'];
    expect(limited?.headers).to.have.keys('Retry-After', 'RateLimit-Limit', 'RateLimit-Remaining', 'RateLimit-Reset');
    expect(doc.paths['/api/v1/unlimited']!.get!.responses).to.not.have.property('429');
    expect(doc.paths['/health/live']!.get!.responses).to.not.have.property('429');
  });

  it('turns a limit off with 0 points', async () => {
    const open = await serve(redis, { perUser: 0, perIp: 0, windowS: 60 });
    try {
      for (let i = 0; i < 5; i++) {
        const res = await get(open.url, '/api/ping');
        expect(res.status).to.equal(200);
        expect(res.headers.get('ratelimit-limit')).to.equal(null);
        await res.arrayBuffer();
      }
    } finally {
      await open.close(500);
    }
  });
});

describe('rate limit while Redis is down (in-memory fallback per node)', function () {
  this.timeout(30_000);
  let server: RedisService;
  let redis: Redis;
  let http: HttpServer;

  before(async () => {
    server = await startRedis({});
    redis = await connectRedis({
      url: server.url,
      commandTimeoutMs: 300,
      log: silent,
      name: 'rl-down',
      keyPrefix: 'rl-down:',
    });
    http = await serve(redis, { perUser: 3, perIp: 3, windowS: 60 });
  });
  after(async () => {
    await http.close(500);
    await closeRedis(redis);
    await server.stop();
  });

  it('keeps answering, and keeps limiting, from memory; fast (no wait for Redis)', async () => {
    expect((await get(http.url, '/api/ping', 'dora')).status).to.equal(200);
    await server.stop();
    // The client notices the closed socket; from then on the limiter must not wait for Redis.
    await eventually('the client to notice Redis is gone', () => redis.status !== 'ready', 10_000, 20);
    const statuses: number[] = [];
    const started = Date.now();
    for (let i = 0; i < 4; i++) {
      const res = await get(http.url, '/api/ping', 'dora');
      statuses.push(res.status);
      await res.arrayBuffer();
    }
    // Memory counts from zero: the Redis count (1) is not visible to it, so 3 pass and the 4th is refused.
    expect(statuses).to.deep.equal([200, 200, 200, 429]);
    expect(Date.now() - started, 'four requests answered without waiting on Redis').to.be.below(3000);
  });
});

describe('createRedisRateLimiter (shared by the API and, for CONNECTs, the broker)', () => {
  let redis: Redis;
  before(async () => {
    redis = await connectRedis({
      url: testServices().redisUrl,
      commandTimeoutMs: 500,
      log: silent,
      name: 'rl-factory',
      keyPrefix: `test-rlf-${randomBytes(4).toString('hex')}:`,
    });
  });
  after(() => closeRedis(redis));

  it('shares one count between limiter instances (API nodes) through Redis', async () => {
    const nodeA = createRedisRateLimiter({ redis, name: 'mqtt-connect', points: 2, windowS: 10 });
    const nodeB = createRedisRateLimiter({ redis, name: 'mqtt-connect', points: 2, windowS: 10 });
    expect((await consumePoint(nodeA, '198.51.100.7')).allowed).to.equal(true);
    expect((await consumePoint(nodeB, '198.51.100.7')).allowed).to.equal(true);
    const third = await consumePoint(nodeA, '198.51.100.7');
    expect(third).to.include({ allowed: false, remaining: 0, limit: 2 });
    expect(third.resetMs).to.be.within(1, 10_000);
    expect((await consumePoint(nodeB, '198.51.100.8')).allowed).to.equal(true);
  });
});
