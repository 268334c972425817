/**
 * bench:api end to end, scaled down: the real stack (MongoDB-compatible server, Redis, the cloud and the bare
 * endpoint as processes), every scenario for a second at a low rate, nothing written to docs/. It proves the bench
 * runs on a fresh clone; the figures of a real run come from `npm run bench:api`.
 */
import { spawn } from 'node:child_process';
import path from 'node:path';
import { expect } from 'chai';

const root = path.resolve(import.meta.dirname, '../..');

describe('npm run bench:api (scaled down)', function () {
  this.timeout(180_000);

  it('runs every scenario against the real stack and prints the table', async () => {
    const args = [
      ...['--rate', '40', '--connections', '8', '--duration', '1'],
      ...['--max-connections', '4', '--max-duration', '1'],
      ...['--accounts', '2', '--sessions', '2'],
      ...['--login-rate', '4', '--ceiling-duration', '1'],
      ...['--flood-rate', '40', '--flood-duration', '1'],
      '--no-write',
    ];
    const { code, output } = await new Promise<{ code: number | null; output: string }>((resolve, reject) => {
      const child = spawn(process.execPath, [path.join(root, 'tools/bench/api.ts'), ...args], {
        cwd: root,
        stdio: ['ignore', 'pipe', 'pipe'],
        timeout: 170_000,
        killSignal: 'SIGTERM',
      });
      let text = '';
      child.stdout.on('data', (chunk: Buffer) => (text += chunk.toString('utf8')));
      child.stderr.on('data', (chunk: Buffer) => (text += chunk.toString('utf8')));
      child.once('error', reject);
      child.once('close', (exitCode) => resolve({ code: exitCode, output: text }));
    });
    expect(code, output.slice(-3000)).to.equal(0);
    for (const scenario of [
      'bare node:http',
      'GET /api/users/profile',
      'POST /api/auth/refresh',
      'PUT /api/users/body-metrics',
      'GET /api/machines/availability (max)',
      'POST /api/auth/login (ceiling)',
      'flood: bad POST /api/auth/login',
      'GET /health during the flood',
    ]) {
      expect(output, scenario).to.include(scenario);
    }
    // Only a handful of bad logins: the per-address failure budget (100) is not reached, so no 429 is expected,
    // but every one was refused.
    expect(output).to.match(/flood: bad POST \/api\/auth\/login[^\n]*4xx:40/);
  });
});
