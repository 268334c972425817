import { expect } from 'chai';
import * as v from 'valibot';
import { pino } from 'pino';
import { createApp } from './app.ts';
import { Conflict, Unauthorized } from './errors.ts';
import { listen, type HttpServer } from './server.ts';
import { defineRoute } from './route.ts';
import { createMetrics } from '../metrics/metrics.ts';
import { metricsRoutes } from '../metrics/routes.ts';

const ThingBody = v.strictObject({
  name: v.pipe(v.string(), v.minLength(1), v.maxLength(40)),
  size: v.optional(v.pipe(v.number(), v.integer(), v.minValue(1), v.maxValue(10))),
});

const testRoutes = [
  defineRoute({
    method: 'post',
    path: '/api/things',
    summary: 'Create a thing',
    tags: ['test'],
    body: ThingBody,
    responses: { 201: { description: 'created', schema: ThingBody } },
    handler: (_ctx, { body }) => ({ status: 201, body }),
  }),
  defineRoute({
    method: 'get',
    path: '/api/things/:id',
    summary: 'Read a thing',
    tags: ['test'],
    params: v.object({ id: v.pipe(v.string(), v.regex(/^[a-z0-9-]{1,20}$/)) }),
    query: v.object({ limit: v.optional(v.pipe(v.string(), v.toNumber(), v.integer(), v.maxValue(100))) }),
    responses: { 200: { description: 'the thing' } },
    handler: (_ctx, { params, query }) => ({ status: 200, body: { id: params.id, limit: query.limit ?? null } }),
  }),
  defineRoute({
    method: 'post',
    path: '/api/things/archive',
    summary: 'Archive all things (a literal path beside /api/things/:id)',
    tags: ['test'],
    responses: { 204: { description: 'archived' } },
    handler: () => ({ status: 204 }),
  }),
  defineRoute({
    method: 'get',
    path: '/api/conflict',
    summary: 'Always 409',
    tags: ['test'],
    responses: {},
    handler: () => {
      throw new Conflict('thing-taken', 'that thing is taken');
    },
  }),
  defineRoute({
    method: 'get',
    path: '/api/bug',
    summary: 'Always throws a bug',
    tags: ['test'],
    responses: {},
    handler: () => {
      throw new Error('secret internal detail /etc/passwd');
    },
  }),
  defineRoute({
    method: 'get',
    path: '/api/outage',
    summary: 'Redis is down',
    tags: ['test'],
    responses: {},
    handler: () => {
      throw new Error('Command timed out');
    },
  }),
];

describe('cloud HTTP skeleton', () => {
  let http: HttpServer;
  let base: string;
  const metrics = createMetrics({ defaultMetrics: false });

  before(async () => {
    const app = createApp({
      config: { corsOrigins: ['https://app.nxg.test'], trustProxy: false, jsonLimitBytes: 1024 },
      log: pino({ level: 'silent' }),
      metrics,
      version: '9.9.9-test',
      routes: [...testRoutes, ...metricsRoutes(metrics, { bearerToken: 'metrics-token-0123456789' })],
    });
    http = await listen(app, { host: '127.0.0.1', port: 0, requestTimeoutMs: 5000 });
    base = http.url;
  });
  after(() => http.close(1000));

  const postJson = (path: string, body: string, contentType = 'application/json') =>
    fetch(`${base}${path}`, { method: 'POST', headers: { 'Content-Type': contentType }, body });

  describe('validation', () => {
    it('accepts a valid body and answers with the validated value', async () => {
      const res = await postJson('/api/things', JSON.stringify({ name: 'rack', size: 3 }));
      expect(res.status).to.equal(201);
      expect(await res.json()).to.deep.equal({ name: 'rack', size: 3 });
    });

    it('refuses unknown fields (no mass assignment) with 400 naming each field', async () => {
      const res = await postJson('/api/things', JSON.stringify({ name: 'rack', role: 'admin' }));
      expect(res.status).to.equal(400);
      expect(res.headers.get('content-type')).to.match(/^application\/problem\+json/);
      const problem = (await res.json()) as { type: string; errors: { in: string; field: string; reason: string }[] };
      expect(problem.type).to.equal('/problems/invalid-request');
      expect(problem.errors.map((e) => e.field)).to.include('role');
    });

    it('reports the failing field and reason for a wrong type', async () => {
      const res = await postJson('/api/things', JSON.stringify({ name: 'rack', size: 11 }));
      expect(res.status).to.equal(400);
      const problem = (await res.json()) as { errors: { in: string; field: string; reason: string }[] };
      expect(problem.errors).to.have.length(1);
      expect(problem.errors[0]).to.include({ in: 'body', field: 'size' });
      expect(problem.errors[0]!.reason).to.be.a('string').and.not.be.empty;
    });

    it('refuses $-operators, dotted keys and prototype keys anywhere in a body', async () => {
      for (const body of [
        '{"name":{"$ne":null}}',
        '{"name":"x","__proto__":{"role":"admin"}}',
        '{"name":"x","profile.role":"admin"}',
        '{"$where":"1"}',
        '{"name":"x","nested":[{"constructor":{}}]}',
      ]) {
        const res = await postJson('/api/things', body);
        expect(res.status, body).to.equal(400);
        const problem = (await res.json()) as { errors: { reason: string }[] };
        expect(problem.errors[0]!.reason, body).to.match(/\$|dot|prototype/);
      }
    });

    it('refuses operator-looking query parameter names', async () => {
      const res = await fetch(`${base}/api/things/abc?limit[$gt]=1`);
      expect(res.status).to.equal(400);
      const problem = (await res.json()) as { errors: { in: string }[] };
      expect(problem.errors[0]!.in).to.equal('query');
    });

    it('validates params and query and passes typed values to the handler', async () => {
      expect(await (await fetch(`${base}/api/things/abc?limit=5`)).json()).to.deep.equal({ id: 'abc', limit: 5 });
      const res = await fetch(`${base}/api/things/ABC!`);
      expect(res.status).to.equal(400);
      const tooMany = await fetch(`${base}/api/things/abc?limit=1000000`);
      expect(tooMany.status).to.equal(400);
    });

    it('answers 415 to a form or text body on a JSON route', async () => {
      const form = await postJson('/api/things', 'name[$ne]=x', 'application/x-www-form-urlencoded');
      expect(form.status).to.equal(415);
      const text = await postJson('/api/things', 'hello', 'text/plain');
      expect(text.status).to.equal(415);
      expect(((await text.json()) as { type: string }).type).to.equal('/problems/unsupported-media-type');
    });

    it('answers 400 to malformed JSON without echoing it', async () => {
      const res = await postJson('/api/things', '{"name": "x",,, SECRET');
      expect(res.status).to.equal(400);
      const text = await res.text();
      expect(text).to.not.include('SECRET');
      expect(JSON.parse(text)).to.include({ type: '/problems/malformed-body' });
    });

    it('answers 413 to a body over the limit', async () => {
      const res = await postJson('/api/things', JSON.stringify({ name: 'x'.repeat(5000) }));
      expect(res.status).to.equal(413);
      expect(((await res.json()) as { type: string }).type).to.equal('/problems/payload-too-large');
    });

    it('refuses a deeply nested body quickly with a 4xx, never a 5xx', async () => {
      const deep = '['.repeat(400) + ']'.repeat(400);
      const res = await postJson('/api/things', `{"name":${deep}}`);
      expect(res.status).to.be.within(400, 499);
    });
  });

  describe('errors as problem+json', () => {
    it('renders an AppError with its status, code and the request id', async () => {
      const res = await fetch(`${base}/api/conflict`, { headers: { 'X-Request-Id': 'trace-abc-123456' } });
      expect(res.status).to.equal(409);
      const problem = (await res.json()) as Record<string, unknown>;
      expect(problem).to.include({
        type: '/problems/thing-taken',
        status: 409,
        detail: 'that thing is taken',
        instance: '/api/conflict',
        requestId: 'trace-abc-123456',
      });
      expect(res.headers.get('x-request-id')).to.equal('trace-abc-123456');
    });

    it('hides a bug behind a generic 500 with no stack or message', async () => {
      const res = await fetch(`${base}/api/bug`);
      expect(res.status).to.equal(500);
      const text = await res.text();
      expect(text).to.not.include('passwd');
      expect(text).to.not.include('at ');
      const problem = JSON.parse(text) as { requestId: string };
      expect(problem.requestId).to.match(/^[0-9a-f-]{36}$/);
    });

    it('turns a dependency outage into 503 with Retry-After', async () => {
      const res = await fetch(`${base}/api/outage`);
      expect(res.status).to.equal(503);
      expect(res.headers.get('retry-after')).to.equal('5');
    });

    it('answers 404 and 405 as problems', async () => {
      const missing = await fetch(`${base}/api/nothing-here`);
      expect(missing.status).to.equal(404);
      expect(missing.headers.get('content-type')).to.match(/problem\+json/);
      const wrongMethod = await fetch(`${base}/api/conflict`, { method: 'DELETE' });
      expect(wrongMethod.status).to.equal(405);
      expect(wrongMethod.headers.get('allow')).to.include('GET');
    });

    it('advertises only the literal route on a path a parameterised route would also match', async () => {
      const options = await fetch(`${base}/api/things/archive`, { method: 'OPTIONS' });
      expect(options.headers.get('allow')).to.equal('POST');
      expect((await fetch(`${base}/api/things/some-id`, { method: 'OPTIONS' })).headers.get('allow')).to.include('GET');
    });

    it('replaces an unsafe incoming request id', async () => {
      const res = await fetch(`${base}/api/conflict`, { headers: { 'X-Request-Id': 'bad id with spaces' } });
      expect(res.headers.get('x-request-id')).to.match(/^[0-9a-f-]{36}$/);
    });
  });

  describe('security headers and CORS', () => {
    it('sends helmet headers on every response, errors included', async () => {
      const res = await fetch(`${base}/api/nothing-here`);
      expect(res.headers.get('content-security-policy')).to.include("default-src 'self'");
      expect(res.headers.get('strict-transport-security')).to.include('max-age=31536000');
      expect(res.headers.get('x-content-type-options')).to.equal('nosniff');
      expect(res.headers.get('x-frame-options')).to.equal('SAMEORIGIN');
    });

    it('gives an unknown origin no Access-Control-Allow-Origin (never * or a reflection)', async () => {
      const res = await fetch(`${base}/api/things`, {
        method: 'OPTIONS',
        headers: {
          Origin: 'https://evil.example',
          'Access-Control-Request-Method': 'PUT',
          'Access-Control-Request-Headers': 'authorization',
        },
      });
      expect(res.status).to.be.oneOf([204, 403]);
      expect(res.headers.get('access-control-allow-origin')).to.equal(null);
    });

    it('echoes an allowed origin exactly, with Vary: Origin', async () => {
      const res = await fetch(`${base}/api/things`, {
        method: 'OPTIONS',
        headers: { Origin: 'https://app.nxg.test', 'Access-Control-Request-Method': 'POST' },
      });
      expect(res.status).to.equal(204);
      expect(res.headers.get('access-control-allow-origin')).to.equal('https://app.nxg.test');
      expect(res.headers.get('vary')).to.match(/Origin/);
    });
  });

  describe('OpenAPI document and docs page', () => {
    it('describes every route with its schemas and problem responses', async () => {
      const doc = (await (await fetch(`${base}/api/openapi.json`)).json()) as {
        openapi: string;
        info: { version: string };
        paths: Record<
          string,
          Record<string, { requestBody?: unknown; responses: Record<string, unknown>; parameters: { name: string }[] }>
        >;
        components: { schemas: Record<string, unknown> };
      };
      expect(doc.openapi).to.equal('3.1.0');
      expect(doc.info.version).to.equal('9.9.9-test');
      // Documented once, at the canonical versioned paths (/api/… is the alias, see versioning.test.ts).
      expect(Object.keys(doc.paths)).to.include.members([
        '/api/v1/things',
        '/api/v1/things/{id}',
        '/metrics',
        '/api/v1/openapi.json',
      ]);
      const create = doc.paths['/api/v1/things']!.post!;
      expect(JSON.stringify(create.requestBody)).to.include('"additionalProperties":false');
      expect(create.responses).to.have.keys('201', '400', '413', '415', '500', '503');
      expect(doc.paths['/api/v1/things/{id}']!.get!.parameters.map((p) => p.name)).to.have.members(['id', 'limit']);
      expect(doc.components.schemas).to.have.property('Problem');
    });

    it('serves the docs page and its assets from the package, with no CDN', async () => {
      const page = await (await fetch(`${base}/api/docs`)).text();
      expect(page).to.include('/api/docs/assets/swagger-ui-bundle.js');
      expect(page).to.not.match(/https?:\/\//);
      const bundle = await fetch(`${base}/api/docs/assets/swagger-ui-bundle.js`);
      expect(bundle.status).to.equal(200);
      expect(Number(bundle.headers.get('content-length') ?? (await bundle.arrayBuffer()).byteLength)).to.be.greaterThan(
        100_000,
      );
      expect((await fetch(`${base}/api/docs/assets/package.json`)).status).to.equal(404);
      expect((await fetch(`${base}/api/docs/assets/..%2Fpackage.json`)).status).to.equal(404);
    });
  });

  describe('metrics', () => {
    it('requires the metrics token when one is configured', async () => {
      expect((await fetch(`${base}/metrics`)).status).to.equal(401);
      expect((await fetch(`${base}/metrics`, { headers: { Authorization: 'Bearer wrong' } })).status).to.equal(401);
    });

    it('records HTTP latency by route template, not raw path', async () => {
      await fetch(`${base}/api/things/some-id`);
      const res = await fetch(`${base}/metrics`, { headers: { Authorization: 'Bearer metrics-token-0123456789' } });
      expect(res.status).to.equal(200);
      const text = await res.text();
      expect(text).to.match(
        /http_request_duration_seconds_count\{[^}]*method="GET",route="\/api\/things\/:id",status="200"/,
      );
      expect(text).to.not.include('some-id');
    });
  });
});

describe('route declarations', () => {
  const mountOne = (route: Parameters<typeof defineRoute>[0]) =>
    createApp({
      config: { corsOrigins: [], trustProxy: false, jsonLimitBytes: 1024 },
      log: pino({ level: 'silent' }),
      metrics: createMetrics({ defaultMetrics: false }),
      version: 'test',
      routes: [route],
    });

  it('refuses at build time a body schema that would silently drop unknown keys', () => {
    expect(() =>
      mountOne({
        method: 'put',
        path: '/api/profile',
        summary: 'x',
        tags: [],
        body: v.object({ firstName: v.string() }),
        responses: {},
        handler: () => undefined,
      }),
    ).to.throw(/must be a v.strictObject/);
  });

  it('refuses at build time a body on GET or DELETE', () => {
    expect(() =>
      mountOne({
        method: 'delete',
        path: '/api/thing',
        summary: 'x',
        tags: [],
        body: v.strictObject({}),
        responses: {},
        handler: () => undefined,
      }),
    ).to.throw(/only POST, PUT and PATCH/);
  });

  it('runs guards before reading the body: an unauthenticated bad body gets 401, not a schema lesson', async () => {
    const app = mountOne({
      method: 'post',
      path: '/api/secret',
      summary: 'x',
      tags: [],
      body: v.strictObject({ name: v.string() }),
      responses: {},
      guards: [
        () => {
          throw new Unauthorized();
        },
      ],
      handler: () => ({ status: 204 }),
    });
    const server = await listen(app, { host: '127.0.0.1', port: 0, requestTimeoutMs: 5000 });
    try {
      const res = await fetch(`${server.url}/api/secret`, {
        method: 'POST',
        headers: { 'Content-Type': 'text/plain' },
        body: 'x',
      });
      expect(res.status).to.equal(401);
      expect(res.headers.get('www-authenticate')).to.equal('Bearer');
      expect(await res.text()).to.not.include('name');
    } finally {
      await server.close(100);
    }
  });
});

describe('client address behind a proxy', () => {
  it('reads X-Forwarded-For from the right when TRUST_PROXY is on, never the client-written left', async () => {
    const app = createApp({
      config: { corsOrigins: [], trustProxy: true, trustProxyHops: 1, jsonLimitBytes: 1024 },
      log: pino({ level: 'silent' }),
      metrics: createMetrics({ defaultMetrics: false }),
      version: 'test',
      routes: [
        defineRoute({
          method: 'get',
          path: '/api/ip',
          summary: 'x',
          tags: [],
          responses: {},
          handler: (ctx) => ({ status: 200, body: { ip: ctx.ip } }),
        }),
      ],
    });
    const server = await listen(app, { host: '127.0.0.1', port: 0, requestTimeoutMs: 5000 });
    try {
      const res = await fetch(`${server.url}/api/ip`, { headers: { 'X-Forwarded-For': '203.0.113.9, 198.51.100.7' } });
      expect(await res.json()).to.deep.equal({ ip: '198.51.100.7' });
    } finally {
      await server.close(100);
    }
  });
});
