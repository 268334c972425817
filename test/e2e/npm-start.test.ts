/**
 * `npm start` as a person runs it: the start script brings up the MongoDB-compatible server, Redis and the cloud,
 * reports them healthy, and Ctrl-C (or a kill -9 of the script itself) leaves no process behind.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { expect } from 'chai';
import { findFreePort, isProcessAlive } from '../../tools/services/process.ts';

const root = path.resolve(import.meta.dirname, '../..');

interface Started {
  child: ChildProcess;
  lines: string[];
  pids: number[];
  apiUrl: string;
}

/** Runs scripts/start.ts on Node 24 and resolves when it prints its ready line. */
async function runStart(dataDir: string, port: number, deadlineMs = 90_000): Promise<Started> {
  const env: NodeJS.ProcessEnv = { ...process.env, NXG_DATA_DIR: dataDir, HTTP_PORT: String(port), LOG_LEVEL: 'warn' };
  delete env.MONGO_URL; // the harness may point at shared services; npm start must start its own here
  delete env.REDIS_URL;
  const child = spawn(process.execPath, [path.join(root, 'scripts/start.ts')], {
    cwd: root,
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lines: string[] = [];
  const collect = (stream: NodeJS.ReadableStream) =>
    createInterface({ input: stream }).on('line', (line) => lines.push(line));
  collect(child.stdout);
  collect(child.stderr);

  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`npm start not ready in ${deadlineMs} ms:\n${lines.join('\n')}`)),
      deadlineMs,
    );
    const poll = setInterval(() => {
      if (lines.some((l) => /ready in [\d.]+ s/.test(l))) {
        clearInterval(poll);
        clearTimeout(timer);
        resolve();
      }
    }, 50);
    child.once('exit', (code) => {
      clearInterval(poll);
      clearTimeout(timer);
      reject(new Error(`npm start exited with ${code}:\n${lines.join('\n')}`));
    });
  });
  const pids = lines.flatMap((l) => [...l.matchAll(/pid (\d+)/g)].map((m) => Number(m[1])));
  return { child, lines, pids, apiUrl: `http://127.0.0.1:${port}` };
}

async function waitGone(pids: number[], deadlineMs: number): Promise<number[]> {
  const until = Date.now() + deadlineMs;
  let alive = pids.filter(isProcessAlive);
  while (alive.length > 0 && Date.now() < until) {
    await new Promise((resolve) => setTimeout(resolve, 100));
    alive = alive.filter(isProcessAlive);
  }
  return alive;
}

describe('npm start (end to end)', function () {
  this.timeout(180_000);
  let dataDir: string;

  before(async () => {
    dataDir = await mkdtemp(path.join(tmpdir(), 'nxg-start-'));
  });
  after(() => rm(dataDir, { recursive: true, force: true }));

  it('brings up MongoDB, Redis and the cloud, healthy, and Ctrl-C leaves no process behind', async () => {
    const started = await runStart(dataDir, await findFreePort());
    expect(started.pids, started.lines.join('\n')).to.have.length(3);
    expect(started.lines.join('\n')).to.include('/api/docs');

    const res = await fetch(`${started.apiUrl}/health`);
    expect(res.status).to.equal(200);
    const body = (await res.json()) as { checks: Record<string, { status: string }> };
    expect(body.checks.mongo!.status).to.equal('up');
    expect(body.checks.redis!.status).to.equal('up');
    expect((await fetch(`${started.apiUrl}/api/docs`)).status).to.equal(200);

    const exited = new Promise<number | null>((resolve) => started.child.once('exit', (code) => resolve(code)));
    started.child.kill('SIGINT');
    expect(await exited).to.equal(0);
    expect(await waitGone(started.pids, 5000), 'processes left behind').to.deep.equal([]);
  });

  it('leaves no process behind even when the start script is killed with SIGKILL', async () => {
    const started = await runStart(dataDir, await findFreePort());
    expect(started.pids).to.have.length(3);
    started.child.kill('SIGKILL');
    // The parent-death signal reaches each child at once; 15 s allows for the cloud's graceful stop.
    expect(await waitGone(started.pids, 15_000), 'orphans left behind').to.deep.equal([]);
  });
});
