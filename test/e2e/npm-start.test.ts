/**
 * `npm start` as a person runs it: the start script brings up the MongoDB-compatible server, Redis and the cloud,
 * reports them healthy, and Ctrl-C (or a kill -9 of the script itself) leaves no process behind.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { expect } from 'chai';
import { findFreePort, waitForProcessesGone } from '../../tools/services/process.ts';
import { eventually } from '../helpers/eventually.ts';

const root = path.resolve(import.meta.dirname, '../..');

interface Started {
  child: ChildProcess;
  lines: string[];
  pids: number[];
  apiUrl: string;
  ports: { MQTT_TCP_PORT: number; MQTT_TLS_PORT: number; GATEWAY_MQTT_PORT: number; GATEWAY_HEALTH_PORT: number };
}

/**
 * Runs the start script on Node 24, in a process group of its own as a terminal would (so a SIGINT to the group is
 * Ctrl-C), and resolves when it prints its ready line. `viaNpmScript` runs package.json's "start" command under a
 * stand-in for npm instead, to test what happens when npm itself dies.
 */
async function runStart(dataDir: string, { viaNpmScript = false } = {}): Promise<Started> {
  const deadlineMs = 90_000;
  const port = await findFreePort();
  const ports = {
    MQTT_TCP_PORT: await findFreePort(),
    MQTT_TLS_PORT: await findFreePort(),
    GATEWAY_MQTT_PORT: await findFreePort(),
    GATEWAY_HEALTH_PORT: await findFreePort(),
  };
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    ...Object.fromEntries(Object.entries(ports).map(([name, value]) => [name, String(value)])),
    NXG_DATA_DIR: dataDir,
    HTTP_PORT: String(port),
    LOG_LEVEL: 'info',
    PATH: `${path.dirname(process.execPath)}:${process.env.PATH ?? ''}`,
  };
  delete env.MONGO_URL; // the harness may point at shared services; npm start must start its own here
  delete env.REDIS_URL;
  const pkg = JSON.parse(await readFile(path.join(root, 'package.json'), 'utf8')) as { scripts: { start: string } };
  const args = viaNpmScript ? ['-e', npmStandIn, pkg.scripts.start] : [path.join(root, 'scripts/start.ts')];
  const child = spawn(process.execPath, args, { cwd: root, env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  startedGroups.push(child);
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
  // The services' and the cloud's pids; the script's own is printed as "start script pid N".
  const pids = lines.flatMap((l) => [...l.matchAll(/(?<!script )pid (\d+)/g)].map((m) => Number(m[1])));
  return { child, lines, pids, apiUrl: `http://127.0.0.1:${port}`, ports };
}

/** Runs mosquitto_sub to completion (it exits after -C messages or -W seconds) and returns its lines. */
function mosquittoSub(args: string[]): Promise<string[]> {
  return new Promise((resolve, reject) => {
    const child = spawn('mosquitto_sub', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const out: string[] = [];
    let err = '';
    createInterface({ input: child.stdout }).on('line', (line) => out.push(line));
    child.stderr.on('data', (chunk: Buffer) => (err += chunk.toString()));
    child.once('error', reject);
    child.once('close', (code) =>
      code === 0 || out.length > 0 ? resolve(out) : reject(new Error(`mosquitto_sub ${code}: ${err}`)),
    );
  });
}

/** MongoDB stand-in, Redis, cloud, gateway and simulator. */
const PROCESSES = 5;

/** Like npm run-script: the script's command line through `sh -c`, output passed through. */
const npmStandIn = `require('node:child_process').spawn(process.argv[1], { shell: true, stdio: 'inherit' });`;

/** Every start-script group this file made, so a failing test cannot leave a hub running. */
const startedGroups: ChildProcess[] = [];

describe('npm start (end to end)', function () {
  this.timeout(180_000);
  let dataDir: string;

  before(async () => {
    dataDir = await mkdtemp(path.join(tmpdir(), 'nxg-start-'));
  });
  afterEach(() => {
    for (const child of startedGroups.splice(0)) {
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch {
        // already gone
      }
    }
  });
  after(() => rm(dataDir, { recursive: true, force: true }));

  it('brings up MongoDB, Redis and the cloud, healthy, and Ctrl-C drains and leaves no process behind', async () => {
    const started = await runStart(dataDir);
    expect(started.pids, started.lines.join('\n')).to.have.length(PROCESSES);
    expect(started.lines.join('\n')).to.include('/api/docs');

    const res = await fetch(`${started.apiUrl}/health`);
    expect(res.status).to.equal(200);
    const body = (await res.json()) as { checks: Record<string, { status: string }> };
    expect(body.checks.mongo!.status).to.equal('up');
    expect(body.checks.redis!.status).to.equal('up');
    expect((await fetch(`${started.apiUrl}/api/docs`)).status).to.equal(200);

    // The demo branch: gateway healthy, ≥ 40 machines live through gateway → cloud broker → ingest → Redis, read
    // with the observer credentials npm start prints (HTTP Basic).
    const observer = started.lines
      .map((l) => /observer credentials\s+user (\S+)\s+password (\S+)/.exec(l))
      .find(Boolean);
    expect(observer, started.lines.join('\n')).to.not.equal(undefined);
    const observerAuth = {
      Authorization: `Basic ${Buffer.from(`${observer![1]}:${observer![2]}`).toString('base64')}`,
    };
    const gatewayHealth = await fetch(`http://127.0.0.1:${started.ports.GATEWAY_HEALTH_PORT}/health`);
    expect(gatewayHealth.status).to.equal(200);
    const availability = await eventually(
      '≥ 40 machines in the availability list',
      async () => {
        const r = await fetch(`${started.apiUrl}/api/machines/availability?branchId=demo`, { headers: observerAuth });
        const json = (await r.json()) as { machines: { machine: string; status: string }[] };
        return json.machines.length >= 40 ? json : undefined;
      },
      60_000,
      250,
    );
    expect(
      availability.machines.filter((m) => m.status === 'available' || m.status === 'in_use'),
    ).to.have.length.of.at.least(40);

    // mosquitto_sub (Debian) over TLS with the printed observer credentials receives the branch's live traffic.
    const text = started.lines.join('\n');
    const [, user, password] = /observer credentials\s+user (\S+)\s+password (\S+)/.exec(text) ?? [];
    const caFile = /\(CA (\S+)\)/.exec(text)?.[1];
    expect(user && password && caFile, text).to.be.a('string');
    const received = await mosquittoSub([
      ...['-h', '127.0.0.1', '-p', String(started.ports.MQTT_TLS_PORT), '--cafile', caFile!],
      ...[
        '-u',
        user!,
        '-P',
        password!,
        '-i',
        `${user!}.e2e`,
        '-t',
        'nxg/v1/b/demo/live/#',
        '-v',
        '-C',
        '5',
        '-W',
        '30',
      ],
    ]);
    expect(received, 'five live messages').to.have.length(5);
    for (const line of received) expect(line).to.match(/^nxg\/v1\/b\/demo\/live\/machines\/[a-z0-9-]+ \{/);

    const exited = new Promise<number | null>((resolve) => started.child.once('exit', (code) => resolve(code)));
    // Ctrl-C: the terminal signals its whole foreground process group.
    process.kill(-started.child.pid!, 'SIGINT');
    expect(await exited).to.equal(0);
    expect(await waitForProcessesGone(started.pids, 5000), 'processes left behind').to.deep.equal([]);
    const log = started.lines.join('\n');
    expect(log, 'the cloud stopped gracefully, once').to.include('cloud stopped');
    expect(log).to.not.include('second signal');
  });

  it('leaves no process behind when the start script is killed with SIGKILL', async () => {
    const started = await runStart(dataDir);
    expect(started.pids).to.have.length(PROCESSES);
    started.child.kill('SIGKILL');
    // The parent-death signal reaches each child at once; 15 s allows for the cloud's graceful stop.
    expect(await waitForProcessesGone(started.pids, 15_000), 'orphans left behind').to.deep.equal([]);
  });

  it("stops the hub when npm itself is killed (package.json's start command)", async () => {
    const started = await runStart(dataDir, { viaNpmScript: true });
    expect(started.pids).to.have.length(PROCESSES);
    const scriptPid = Number(/start script pid (\d+)/.exec(started.lines.join('\n'))?.[1]);
    expect(scriptPid, started.lines.join('\n')).to.be.above(0);
    started.child.kill('SIGKILL'); // the stand-in for npm
    expect(await waitForProcessesGone([scriptPid, ...started.pids], 15_000), 'processes left behind').to.deep.equal([]);
  });
});
