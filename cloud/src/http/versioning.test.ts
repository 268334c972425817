import { request } from 'node:http';
import { expect } from 'chai';
import { pino } from 'pino';
import * as v from 'valibot';
import { createMetrics } from '../metrics/metrics.ts';
import { metricsRoutes } from '../metrics/routes.ts';
import { API_VERSION_HEADER, createApp } from './app.ts';
import { canonicalPath, defineRoute, isRateLimited, mountedPaths } from './route.ts';
import { listen, type HttpServer } from './server.ts';

const Item = v.strictObject({ name: v.pipe(v.string(), v.maxLength(4000)) });

const routes = [
  defineRoute({
    method: 'post',
    path: '/api/items',
    summary: 'Echo an item',
    tags: ['test'],
    body: Item,
    responses: { 201: { description: 'created', schema: Item } },
    handler: (_ctx, { body }) => ({ status: 201, body }),
  }),
  defineRoute({
    method: 'get',
    path: '/api/items/:id',
    summary: 'A big item',
    tags: ['test'],
    params: v.object({ id: v.pipe(v.string(), v.regex(/^[a-z]{1,10}$/)) }),
    responses: { 200: { description: 'the item' } },
    handler: (_ctx, { params }) => ({ status: 200, body: { id: params.id, text: 'x'.repeat(4000) } }),
  }),
  defineRoute({
    method: 'get',
    path: '/api/:anything',
    summary: 'A catch-all that must not shadow versioned paths',
    tags: ['test'],
    params: v.object({ anything: v.string() }),
    responses: { 200: { description: 'caught' } },
    handler: (_ctx, { params }) => ({ status: 200, body: { caught: params.anything } }),
  }),
];

describe('API versioning and response headers', () => {
  let http: HttpServer;
  let base: string;
  const metrics = createMetrics({ defaultMetrics: false });

  before(async () => {
    const app = createApp({
      config: { corsOrigins: ['https://app.nxg.test'], trustProxy: false, jsonLimitBytes: 16 * 1024 },
      log: pino({ level: 'silent' }),
      metrics,
      version: '1.2.3-test',
      routes: [...routes, ...metricsRoutes(metrics, { bearerToken: undefined })],
    });
    http = await listen(app, { host: '127.0.0.1', port: 0, requestTimeoutMs: 5000 });
    base = http.url;
  });
  after(() => http.close(1000));

  it('maps declared paths to their canonical /api/v1 path, leaving operations paths alone', () => {
    expect(canonicalPath('/api/users/profile')).to.equal('/api/v1/users/profile');
    expect(canonicalPath('/api')).to.equal('/api/v1');
    expect(canonicalPath('/api/v1/users')).to.equal('/api/v1/users');
    expect(canonicalPath('/health')).to.equal('/health');
    expect(canonicalPath('/apiary')).to.equal('/apiary');
    expect(mountedPaths({ path: '/api/things' })).to.deep.equal(['/api/v1/things', '/api/things']);
    expect(mountedPaths({ path: '/metrics' })).to.deep.equal(['/metrics']);
    expect(isRateLimited({ path: '/api/things' })).to.equal(true);
    expect(isRateLimited({ path: '/api/things', rateLimit: false })).to.equal(false);
    expect(isRateLimited({ path: '/health' })).to.equal(false);
  });

  it('serves one declaration at /api/v1/… and at the /api/… alias, with the same answer', async () => {
    for (const prefix of ['/api/v1', '/api']) {
      const res = await fetch(`${base}${prefix}/items`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ name: 'bench' }),
      });
      expect(res.status, prefix).to.equal(201);
      expect(await res.json()).to.deep.equal({ name: 'bench' });
      const invalid = await fetch(`${base}${prefix}/items`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ name: 'bench', role: 'admin' }),
      });
      expect(invalid.status, prefix).to.equal(400);
    }
    const info = (await (await fetch(`${base}/api/v1`)).json()) as { apiVersion: number; version: string };
    expect(info).to.include({ apiVersion: 1, version: '1.2.3-test' });
  });

  it('never lets an alias pattern shadow a versioned path', async () => {
    const versioned = await fetch(`${base}/api/v1/items/abc`);
    expect(versioned.status).to.equal(200);
    expect(((await versioned.json()) as { id: string }).id).to.equal('abc');
    // /api/v1 itself is the info route, not /api/:anything with anything = "v1".
    expect(await (await fetch(`${base}/api/v1`)).json()).to.have.property('name', 'NXG Connect');
    expect(await (await fetch(`${base}/api/other`)).json()).to.deep.equal({ caught: 'other' });
  });

  it('names the API version in a header on every /api response, errors included, and not elsewhere', async () => {
    for (const path of ['/api/v1/items/abc', '/api/items/abc', '/api/v1/nothing/here', '/api/items/ABC!']) {
      const res = await fetch(`${base}${path}`);
      await res.arrayBuffer();
      expect(res.headers.get(API_VERSION_HEADER), path).to.equal('1');
    }
    const metricsRes = await fetch(`${base}/metrics`);
    await metricsRes.arrayBuffer();
    expect(metricsRes.headers.get(API_VERSION_HEADER)).to.equal(null);
  });

  it('documents each operation once, at its canonical path, and says where the alias is', async () => {
    const doc = (await (await fetch(`${base}/api/openapi.json`)).json()) as {
      info: { description: string };
      paths: Record<string, Record<string, { operationId: string }>>;
    };
    const paths = Object.keys(doc.paths);
    expect(paths).to.include.members(['/api/v1/items', '/api/v1/items/{id}', '/api/v1', '/metrics']);
    expect(paths.filter((p) => p.startsWith('/api/') && !p.startsWith('/api/v1'))).to.deep.equal([]);
    expect(doc.info.description).to.include('/api/v1/').and.include(API_VERSION_HEADER);
    // Operation ids stay version-free, so client code generated from v1 and v2 documents keeps its names.
    expect(doc.paths['/api/v1/items']!.post!.operationId).to.equal('postApiItems');
  });

  it('lets a browser read the version, rate-limit and request-id headers cross-origin', async () => {
    const res = await fetch(`${base}/api/items/abc`, { headers: { Origin: 'https://app.nxg.test' } });
    await res.arrayBuffer();
    const exposed = (res.headers.get('access-control-expose-headers') ?? '').split(',');
    expect(exposed).to.include.members([API_VERSION_HEADER, 'RateLimit-Remaining', 'Retry-After', 'X-Request-Id']);
  });

  it('sends CSP, HSTS, frame and sniffing protections on versioned routes and their errors', async () => {
    for (const path of ['/api/v1/items/abc', '/api/v1/items/ABC!']) {
      const res = await fetch(`${base}${path}`);
      await res.arrayBuffer();
      expect(res.headers.get('content-security-policy'), path).to.include("frame-ancestors 'none'");
      expect(res.headers.get('strict-transport-security'), path).to.include('max-age=31536000');
      expect(res.headers.get('x-frame-options'), path).to.equal('SAMEORIGIN');
      expect(res.headers.get('x-content-type-options'), path).to.equal('nosniff');
    }
  });

  it('answers a method the router does not know (TRACE) with 405 and Allow, or 404 off any route — never 5xx', async () => {
    const trace = (path: string) =>
      new Promise<{ status: number; allow: string | undefined; type: string | undefined }>((resolve, reject) => {
        const req = request(`${base}${path}`, { method: 'TRACE' }, (res) => {
          res.resume();
          res.on('end', () =>
            resolve({ status: res.statusCode ?? 0, allow: res.headers.allow, type: res.headers['content-type'] }),
          );
        });
        req.on('error', reject);
        req.end();
      });
    const known = await trace('/api/v1/items');
    expect(known.status).to.equal(405);
    expect(known.allow).to.include('POST');
    expect(known.type).to.match(/problem\+json/);
    expect((await trace('/nowhere/at/all')).status).to.equal(404);
  });

  it('compresses large API responses but never /metrics', async () => {
    const api = await fetch(`${base}/api/v1/items/abc`, { headers: { 'Accept-Encoding': 'gzip' } });
    await api.arrayBuffer();
    expect(api.headers.get('content-encoding')).to.equal('gzip');
    const scrape = await fetch(`${base}/metrics`, { headers: { 'Accept-Encoding': 'gzip' } });
    expect((await scrape.text()).length).to.be.greaterThan(1024);
    expect(scrape.headers.get('content-encoding')).to.equal(null);
  });
});
