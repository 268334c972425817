import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { gunzipSync } from 'node:zlib';
import { expect } from 'chai';
import { pino } from 'pino';
import type { ErrorEvent } from '@sentry/node';
import { eventually } from '../../../test/helpers/eventually.ts';
import { createApp } from '../http/app.ts';
import { Conflict } from '../http/errors.ts';
import { defineRoute } from '../http/route.ts';
import { listen, type HttpServer } from '../http/server.ts';
import { createMetrics } from '../metrics/metrics.ts';
import { loadCloudConfig } from '../config.ts';
import { createErrorReporter, scrubEvent, type ErrorReporter } from './sentry.ts';

const silent = pino({ level: 'silent' });
const TOKEN = 'eyJhbGciOiJFUzI1NiIsImtpZCI6ImsxIn0.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLW9mLXRoZS10b2tlbg';

interface Received {
  path: string;
  raw: string;
  /** The envelope's items: [item header, payload] pairs. */
  items: [Record<string, unknown>, Record<string, unknown>][];
}

/** A Sentry ingest endpoint on loopback: receives what @sentry/node's real transport sends, as is. */
async function startIngest(): Promise<{ server: Server; dsn: string; received: Received[] }> {
  const received: Received[] = [];
  const server = createServer((req: IncomingMessage, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      let body = Buffer.concat(chunks);
      if (req.headers['content-encoding'] === 'gzip') body = gunzipSync(body);
      const raw = body.toString('utf8');
      const lines = raw.split('\n').filter((line) => line.length > 0);
      const items: Received['items'] = [];
      for (let i = 1; i + 1 < lines.length; i += 2) {
        items.push([
          JSON.parse(lines[i]!) as Record<string, unknown>,
          JSON.parse(lines[i + 1]!) as Record<string, unknown>,
        ]);
      }
      received.push({ path: req.url ?? '', raw, items });
      res.writeHead(200, { 'Content-Type': 'application/json' });
      res.end('{}');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return { server, dsn: `http://public@127.0.0.1:${port}/1`, received };
}

const events = (received: Received[]) =>
  received.flatMap((r) => r.items.filter(([header]) => header.type === 'event').map(([, payload]) => payload));

describe('errors to Sentry (@sentry/node against a local DSN endpoint)', () => {
  let ingest: Awaited<ReturnType<typeof startIngest>>;
  let reporter: ErrorReporter;
  let http: HttpServer;

  before(async () => {
    ingest = await startIngest();
    reporter = createErrorReporter({
      config: { dsn: ingest.dsn, environment: 'test', sampleRate: 1 },
      release: '7.7.7',
      log: silent,
    });
    const app = createApp({
      config: { corsOrigins: [], trustProxy: false, jsonLimitBytes: 1024 },
      log: silent,
      metrics: createMetrics({ defaultMetrics: false }),
      version: '7.7.7',
      errorReporter: reporter,
      routes: [
        defineRoute({
          method: 'get',
          path: '/api/explode/:id',
          summary: 'A bug',
          tags: ['test'],
          responses: {},
          handler: () => {
            throw new TypeError(`cannot read the plan; token was ${TOKEN}`);
          },
        }),
        defineRoute({
          method: 'get',
          path: '/api/taken',
          summary: 'A 409',
          tags: ['test'],
          responses: {},
          handler: () => {
            throw new Conflict('taken', 'taken');
          },
        }),
      ],
    });
    http = await listen(app, { host: '127.0.0.1', port: 0, requestTimeoutMs: 5000 });
  });
  after(async () => {
    await http.close(500);
    await reporter.close(2000);
    await new Promise((resolve) => ingest.server.close(resolve));
  });

  it('sends a 5xx with its exception, release, environment and request id, and no credentials', async () => {
    const res = await fetch(`${http.url}/api/v1/explode/abc?email=alice@nxg.test`, {
      headers: {
        Authorization: `Bearer ${TOKEN}`,
        Cookie: 'session=s3cr3t-cookie',
        'X-Request-Id': 'req-sentry-0001',
        'User-Agent': 'nxg-test',
      },
    });
    expect(res.status).to.equal(500);
    // 4xx are the client's business: not reported.
    expect((await fetch(`${http.url}/api/taken`, { headers: { Authorization: `Bearer ${TOKEN}` } })).status).to.equal(
      409,
    );
    expect((await fetch(`${http.url}/api/nothing`)).status).to.equal(404);

    await eventually('an event at the DSN', () => events(ingest.received).length > 0, 10_000, 50);
    expect(ingest.received[0]!.path).to.match(/^\/api\/1\/envelope\/\?.*sentry_key=public/);
    const [event] = events(ingest.received) as unknown as ErrorEvent[];
    expect(event, 'an event arrived at the DSN').to.not.equal(undefined);
    expect(events(ingest.received)).to.have.length(1);
    const exception = event!.exception!.values![0]!;
    expect(exception.type).to.equal('TypeError');
    expect(exception.value).to.include('cannot read the plan');
    expect(exception.stacktrace!.frames!.length).to.be.greaterThan(0);
    expect(event!.release).to.equal('7.7.7');
    expect(event!.environment).to.equal('test');
    expect(event!.tags).to.include({ request_id: 'req-sentry-0001', status: '500', route: '/api/v1/explode/:id' });
    expect(event!.request).to.deep.include({ method: 'GET', url: '/api/v1/explode/abc' });
    expect(event!.request!.headers).to.include({ 'user-agent': 'nxg-test' });
    expect(event!.request!.headers).to.not.have.any.keys('authorization', 'cookie');

    const raw = ingest.received.map((r) => r.raw).join('\n');
    expect(raw).to.not.match(/authorization/i);
    expect(raw).to.not.include(TOKEN);
    expect(raw).to.not.include('s3cr3t-cookie');
    expect(raw).to.not.include('alice@nxg.test');
  });
});

describe('Sentry flush on shutdown', () => {
  it('delivers an event captured right before close() by the time close resolves', async () => {
    const ingest = await startIngest();
    try {
      const reporter = createErrorReporter({
        config: { dsn: ingest.dsn, environment: 'test', sampleRate: 1 },
        release: '7.7.8',
        log: silent,
      });
      reporter.capture(new RangeError('last words'), {
        requestId: 'req-shutdown-01',
        method: 'POST',
        path: '/api/v1/x',
        status: 503,
        headers: {},
      });
      expect(await reporter.close(5000)).to.equal(true);
      const [event] = events(ingest.received) as unknown as ErrorEvent[];
      expect(event?.exception?.values?.[0]).to.include({ type: 'RangeError', value: 'last words' });
      expect(event?.tags).to.include({ request_id: 'req-shutdown-01', status: '503' });
    } finally {
      await new Promise((resolve) => ingest.server.close(resolve));
    }
  });
});

describe('scrubEvent (beforeSend)', () => {
  it('drops credentials, bodies, cookies, query strings and user details; masks tokens in messages', () => {
    const event = scrubEvent({
      type: undefined,
      message: `failed with Bearer ${TOKEN}`,
      request: {
        method: 'POST',
        url: '/api/v1/auth/refresh?token=abc',
        headers: { Authorization: 'Bearer x', 'X-Api-Key': 'k', Accept: 'application/json' },
        data: '{"refreshToken":"r1"}',
        cookies: { session: 's' },
        query_string: 'token=abc',
      },
      user: { id: 'u1', email: 'alice@nxg.test', ip_address: '203.0.113.9' },
      exception: { values: [{ type: 'Error', value: `jwt ${TOKEN} expired` }] },
      breadcrumbs: [{ message: 'GET /api/users?email=alice@nxg.test' }],
    });
    expect(event.request).to.deep.equal({
      method: 'POST',
      url: '/api/v1/auth/refresh',
      headers: { Accept: 'application/json' },
    });
    expect(event.user).to.deep.equal({ id: 'u1' });
    expect(event.message).to.equal('failed with Bearer [redacted token]');
    expect(event.exception!.values![0]!.value).to.equal('jwt [redacted token] expired');
    expect(event).to.not.have.property('breadcrumbs');
  });
});

describe('Sentry configuration', () => {
  const required = { MONGO_URL: 'mongodb://127.0.0.1:27017/nxg', REDIS_URL: 'redis://127.0.0.1:6379' };

  it('is off without SENTRY_DSN: the reporter sends nothing', async () => {
    const config = loadCloudConfig(required);
    expect(config.sentry).to.deep.equal({ dsn: undefined, environment: 'production', sampleRate: 1 });
    const reporter = createErrorReporter({ config: config.sentry, release: 'x', log: silent });
    expect(reporter.enabled).to.equal(false);
    reporter.capture(new Error('nowhere'), { requestId: 'r', method: 'GET', path: '/', status: 500, headers: {} });
    expect(await reporter.close(10)).to.equal(true);
  });

  it('parses the DSN, environment and sample rate, refusing bad values without echoing the DSN', () => {
    const config = loadCloudConfig({
      ...required,
      SENTRY_DSN: 'https://abc123@o1.ingest.sentry.io/42',
      SENTRY_ENVIRONMENT: 'staging',
      SENTRY_SAMPLE_RATE: '0.25',
    });
    expect(config.sentry).to.deep.equal({
      dsn: 'https://abc123@o1.ingest.sentry.io/42',
      environment: 'staging',
      sampleRate: 0.25,
    });
    expect(() => loadCloudConfig({ ...required, SENTRY_SAMPLE_RATE: '1.5' })).to.throw(/SENTRY_SAMPLE_RATE/);
    let message = '';
    try {
      loadCloudConfig({ ...required, SENTRY_DSN: 'https://o1.ingest.sentry.io/secret-project' });
    } catch (err) {
      message = (err as Error).message;
    }
    expect(message).to.match(/SENTRY_DSN: expected a Sentry DSN/);
    expect(message).to.not.include('secret-project');
  });
});
