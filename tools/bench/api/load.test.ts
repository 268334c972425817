import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { closedLoop, openConnections, openLoop, warm } from './load.ts';
import { appendToBenchmarks, markdownTable, printTable, type Row } from './report.ts';
import { firstRefusals, getRequest, refreshRequest } from './scenarios.ts';

/** A server that answers after `delayMs`, holds every answer until `holdUntil` (epoch ms), and 503s /fail. */
async function server(
  delayMs: number,
  holdUntil = 0,
): Promise<{ url: string; close(): Promise<void>; seen: string[] }> {
  const seen: string[] = [];
  let issued = 0;
  const s: Server = createServer((req, res) => {
    let body = '';
    req.on('data', (c: Buffer) => (body += c.toString()));
    req.on('end', () => {
      seen.push(body);
      const wait = Math.max(delayMs, holdUntil - Date.now());
      setTimeout(() => {
        if (req.url === '/fail') {
          res.writeHead(503, { 'Content-Type': 'application/problem+json' });
          res.end('{"status":503}');
          return;
        }
        res.writeHead(200, { 'Content-Type': 'application/json' });
        res.end(
          req.url === '/api/auth/refresh' ? JSON.stringify({ refreshToken: `r${++issued}`, accessToken: 'a' }) : '{}',
        );
      }, wait);
    });
  });
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(s.address() as AddressInfo).port}`,
    seen,
    close: () =>
      new Promise((resolve) => {
        s.closeAllConnections();
        s.close(() => resolve());
      }),
  };
}

describe('bench:api load generation', function () {
  this.timeout(20_000);

  it('sends the scheduled number of requests at the rate, over every connection, and measures latency', async () => {
    const srv = await server(20);
    const connections = openConnections(srv.url, 10);
    try {
      await warm(connections, getRequest('/'));
      // The server is in this process here: its CPU share is this process's.
      const result = await openLoop({
        name: 'slow',
        connections,
        rate: 100,
        durationS: 1,
        send: getRequest('/'),
        serverPid: process.pid,
      });
      expect(result.serverCpu).to.be.a('number').and.be.within(0, 2);
      expect(result).to.include({ mode: 'open', targetRate: 100, sent: 100, completed: 100, connections: 10 });
      expect(result.statuses).to.deep.equal({ '2xx': 100 });
      expect(result.p50Ms).to.be.at.least(19);
      expect(result.achievedRate).to.be.within(50, 110);
    } finally {
      await connections.close();
      await srv.close();
    }
  });

  it('measures from when a request was due, so a stalled server shows its queue in the tail', async () => {
    const srv = await server(1, Date.now() + 600);
    const connections = openConnections(srv.url, 50);
    try {
      const result = await openLoop({ name: 'stall', connections, rate: 100, durationS: 1, send: getRequest('/') });
      // The first requests were due right away and answered after the hold: their latency includes the wait.
      expect(result.maxMs).to.be.at.least(450);
      expect(result.completed).to.equal(100);
    } finally {
      await connections.close();
      await srv.close();
    }
  });

  it('counts refusals by class and keeps the first answer of each scenario', async () => {
    const srv = await server(1);
    const connections = openConnections(srv.url, 2);
    try {
      const result = await closedLoop({ name: 'fail', connections, durationS: 0.3, send: getRequest('/fail') });
      expect(result.statuses['5xx']).to.equal(result.completed);
      expect(result.completed).to.be.greaterThan(2);
      expect(firstRefusals.get('GET /fail → 503')).to.equal('{"status":503}');
    } finally {
      await connections.close();
      await srv.close();
    }
  });

  it('rotates refresh tokens, one request per login session at a time', async () => {
    const srv = await server(5);
    const connections = openConnections(srv.url, 4);
    const sessions = [
      { accessToken: 'a', refreshToken: 'first-1' },
      { accessToken: 'a', refreshToken: 'first-2' },
    ];
    try {
      const result = await openLoop({
        name: 'refresh',
        connections,
        rate: 200,
        durationS: 0.2,
        send: refreshRequest(sessions),
      });
      expect(result.statuses).to.deep.equal({ '2xx': 40 });
      const presented = srv.seen.map((b) => (JSON.parse(b) as { refreshToken: string }).refreshToken);
      // Every token was presented once: a new one after each answer, never the same one twice.
      expect(new Set(presented).size).to.equal(presented.length);
      expect(sessions.map((s) => s.refreshToken)).to.not.include('first-1');
    } finally {
      await connections.close();
      await srv.close();
    }
  });
});

describe('bench:api report', () => {
  const row = (name: string, pass?: boolean): Row => ({
    result: {
      name,
      mode: 'open',
      targetRate: 2000,
      connections: 1000,
      durationS: 10,
      achievedRate: 1999,
      sent: 20000,
      completed: 20000,
      statuses: { '2xx': 20000 },
      p50Ms: 1.2,
      p90Ms: 3,
      p99Ms: 9.5,
      maxMs: 20,
      generatorCpu: 0.3,
      serverCpu: 0.95,
    },
    target: 'p99 < 50 ms',
    ...(pass === undefined ? {} : { pass }),
  });
  const info = {
    command: 'npm run bench:api',
    machine: { cores: 2, cpuModel: 'Test CPU', memoryGiB: 4, kernel: '6.0', node: 'v24' },
    pinned: false,
    loadAverage: [0.5, 0.4, 0.3],
    cloudEnv: { API_RATE_LIMIT_PER_IP: '10000000' },
    notes: ['a note'],
  };

  it('prints a terminal table and a markdown table with each figure beside its target', () => {
    expect(printTable([row('GET /x', true)]))
      .to.include('GET /x')
      .and.include('pass');
    const md = markdownTable([row('GET /x', false), row('bare')]);
    expect(md.split('\n')).to.have.length(4);
    expect(md).to.include(
      '| GET /x | open 2000/s × 10s | 1000 | 1999 | 1.2 | 9.5 | 20 | 2xx:20000 | 0.95 | p99 < 50 ms | FAIL |',
    );
  });

  it('creates docs/benchmarks.md, then appends runs inside its own section, before other sections', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'bench-report-'));
    const file = path.join(dir, 'benchmarks.md');
    try {
      await appendToBenchmarks(file, [row('GET /first', true)], info);
      let text = await readFile(file, 'utf8');
      expect(text).to.match(/^# Benchmarks\n/);
      expect(text).to.include('## API (npm run bench:api)').and.include('GET /first').and.include('2 cores, Test CPU');
      await writeFile(file, `${text}\n## Ingest (npm run bench:ingest)\n\nIngest figures.\n`);
      await appendToBenchmarks(file, [row('GET /second', true)], info);
      text = await readFile(file, 'utf8');
      expect(text.indexOf('GET /second')).to.be.greaterThan(text.indexOf('GET /first'));
      expect(text.indexOf('GET /second')).to.be.lessThan(text.indexOf('## Ingest'));
      expect(text).to.include('Ingest figures.');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
