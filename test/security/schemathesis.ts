/**
 * schemathesis (PyPI) in a virtual environment of the project's own, .cache/schemathesis-venv: created and
 * installed on first use, then reused while its stamp names the pinned version (a few seconds instead of ~30).
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';

/** Pinned: a new release can add checks, and a test that fails on a version bump should fail on purpose. */
export const SCHEMATHESIS_VERSION = '4.32.5';

const root = path.resolve(import.meta.dirname, '../..');
export const venvDir = path.join(root, '.cache', 'schemathesis-venv');
const stampFile = path.join(venvDir, '.nxg-stamp');
const stamp = `schemathesis==${SCHEMATHESIS_VERSION}\n`;

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  output: string;
}

/** Runs a command to completion (or kills it after timeoutMs), collecting stdout and stderr together. */
export function run(
  command: string,
  args: readonly string[],
  { timeoutMs, env }: { timeoutMs: number; env?: NodeJS.ProcessEnv },
): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, {
      cwd: root,
      env: env ?? process.env,
      stdio: ['ignore', 'pipe', 'pipe'],
      timeout: timeoutMs,
      killSignal: 'SIGKILL',
    });
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString('utf8')));
    child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString('utf8')));
    child.once('error', reject);
    child.once('close', (code, signal) => resolve({ code, signal, output }));
  });
}

async function isInstalled(): Promise<boolean> {
  if (!existsSync(path.join(venvDir, 'bin', 'st'))) return false;
  return (await readFile(stampFile, 'utf8').catch(() => '')) === stamp;
}

/** Creates the virtual environment and installs schemathesis unless the stamp says it is there. Returns `st`. */
export async function ensureSchemathesis(): Promise<string> {
  const st = path.join(venvDir, 'bin', 'st');
  if (await isInstalled()) return st;
  const ensurepip = await run('python3', ['-c', 'import ensurepip, venv'], { timeoutMs: 30_000 });
  if (ensurepip.code !== 0) {
    throw new Error(
      'python3 cannot create virtual environments (ensurepip/venv missing): apt-get install python3-venv\n' +
        ensurepip.output,
    );
  }
  await rm(venvDir, { recursive: true, force: true });
  const venv = await run('python3', ['-m', 'venv', venvDir], { timeoutMs: 120_000 });
  if (venv.code !== 0) throw new Error(`python3 -m venv failed:\n${venv.output}`);
  const pip = await run(
    path.join(venvDir, 'bin', 'pip'),
    ['install', '--disable-pip-version-check', '--quiet', `schemathesis==${SCHEMATHESIS_VERSION}`],
    { timeoutMs: 300_000 },
  );
  if (pip.code !== 0) throw new Error(`pip install schemathesis failed:\n${pip.output}`);
  await writeFile(stampFile, stamp);
  return st;
}
