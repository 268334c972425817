import { Writable } from 'node:stream';
import { expect } from 'chai';
import { pino } from 'pino';
import { createMetrics } from '../metrics/metrics.ts';
import { createApp } from './app.ts';
import { defineRoute } from './route.ts';
import { listen } from './server.ts';

/** A logger writing JSON lines into an array. */
function capture(level: string) {
  const lines: Record<string, unknown>[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString().split('\n').filter(Boolean))
        lines.push(JSON.parse(line) as Record<string, unknown>);
      done();
    },
  });
  return { log: pino({ level }, stream), lines };
}

describe('request context: request id on every log line of a request', () => {
  for (const level of ['info', 'debug']) {
    it(`tags a handler's lines and the access line with the request id (level ${level})`, async () => {
      const { log, lines } = capture(level);
      const app = createApp({
        config: { corsOrigins: [], trustProxy: false, jsonLimitBytes: 1024 },
        log,
        metrics: createMetrics({ defaultMetrics: false }),
        version: 'test',
        routes: [
          defineRoute({
            method: 'get',
            path: '/api/said',
            summary: 'logs once',
            tags: ['test'],
            responses: { 200: { description: 'ok' } },
            handler: (ctx) => {
              ctx.state.log.info({ what: 'hello' }, 'handler says');
              return { status: 200, body: {} };
            },
          }),
          defineRoute({
            method: 'get',
            path: '/api/silent',
            summary: 'logs nothing',
            tags: ['test'],
            responses: { 200: { description: 'ok' } },
            handler: () => ({ status: 200, body: {} }),
          }),
        ],
      });
      const server = await listen(app, { host: '127.0.0.1', port: 0, requestTimeoutMs: 5000 });
      try {
        await (await fetch(`${server.url}/api/said`, { headers: { 'X-Request-Id': 'req-log-000001' } })).arrayBuffer();
        await (
          await fetch(`${server.url}/api/silent`, { headers: { 'X-Request-Id': 'req-log-000002' } })
        ).arrayBuffer();
      } finally {
        await server.close(500);
      }
      const said = lines.find((l) => l.msg === 'handler says');
      expect(said).to.include({ reqId: 'req-log-000001', what: 'hello' });
      const access = lines.filter((l) => l.msg === 'request');
      if (level === 'debug') {
        expect(access.map((l) => l.reqId)).to.deep.equal(['req-log-000001', 'req-log-000002']);
        expect(access[1]).to.include({ method: 'GET', path: '/api/silent', status: 200 });
      } else {
        expect(access).to.deep.equal([]);
      }
    });
  }
});
