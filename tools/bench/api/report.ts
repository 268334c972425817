/**
 * bench:api's results: a table on the terminal (cli-table3) and a dated section appended to docs/benchmarks.md
 * under "API (npm run bench:api)", each figure beside its target.
 */
import { existsSync } from 'node:fs';
import { appendFile, readFile, writeFile } from 'node:fs/promises';
import os from 'node:os';
import Table from 'cli-table3';
import * as prettier from 'prettier';
import type { MachineInfo } from '../system.ts';
import type { LoadResult } from './load.ts';

export interface Row {
  result: LoadResult;
  /** The target this row is judged against, in words, e.g. "p99 < 50 ms". */
  target: string;
  /** undefined: information only (no target). */
  pass?: boolean;
  note?: string;
}

const statuses = (r: LoadResult) =>
  Object.entries(r.statuses)
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([k, n]) => `${k}:${n}`)
    .join(' ');

const verdict = (row: Row) => (row.pass === undefined ? '' : row.pass ? 'pass' : 'FAIL');

const load = (r: LoadResult) =>
  r.mode === 'open' ? `open ${r.targetRate}/s × ${r.durationS}s` : `closed × ${r.durationS}s`;

export function printTable(rows: readonly Row[]): string {
  const table = new Table({
    head: [
      'scenario',
      'load',
      'conns',
      'req/s',
      'p50 ms',
      'p99 ms',
      'max ms',
      'statuses',
      'server cpu',
      'gen cpu',
      'target',
      '',
    ],
    style: { head: [], border: [] },
  });
  for (const row of rows) {
    const r = row.result;
    table.push([
      r.name,
      load(r),
      r.connections,
      r.achievedRate,
      r.p50Ms,
      r.p99Ms,
      r.maxMs,
      statuses(r),
      r.serverCpu ?? '',
      r.generatorCpu,
      row.target,
      verdict(row),
    ]);
  }
  return table.toString();
}

export function markdownTable(rows: readonly Row[]): string {
  const lines = [
    '| scenario | load | connections | req/s | p50 ms | p99 ms | max ms | statuses | server cpu | target | result |',
    '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |',
  ];
  for (const row of rows) {
    const r = row.result;
    const result = [verdict(row), row.note].filter(Boolean).join(' — ');
    lines.push(
      `| ${r.name} | ${load(r)} | ${r.connections} | ${r.achievedRate} | ${r.p50Ms} | ${r.p99Ms} | ${r.maxMs} | ${statuses(r)} | ${r.serverCpu ?? ''} | ${row.target} | ${result} |`,
    );
  }
  return lines.join('\n');
}

const HEADING = '## API (npm run bench:api)';

const INTRO = `${HEADING}

\`tools/bench/api.ts\`: the cloud (\`node cloud/src/main.ts\`, on the MongoDB-compatible server in memory and Redis)
and a bare node:http endpoint, each in a process of its own, driven by undici from the bench process (\`--pin\`:
servers on core 0, generator on core 1). Open loop at a fixed arrival rate over many keep-alive connections, latency
from each request's due time (HDR histogram, µs), so queueing shows in the tail; maximum throughput in a closed
loop. "server cpu" is the share of one core the server process used during the scenario: far below 1 while it falls
behind means it was starved by other processes, not busy. The figures depend on what else runs on the machine:
the load average at the start of each run is recorded with it. Targets (issue 6): p99 < 50 ms at 2,000 req/s over up to 1,000 connections;
a cached read ≥ 0.6× the bare endpoint's maximum; login p99 < 200 ms at a sustainable rate, with the ceiling;
\`GET /health\` p99 ≤ 200 ms under a flood of 500 bad logins/s. Each run below is appended by the bench.
`;

export interface RunInfo {
  command: string;
  machine: MachineInfo;
  pinned: boolean;
  loadAverage: number[];
  cloudEnv: Record<string, string>;
  notes: string[];
}

/**
 * Appends this run under the API section of docs/benchmarks.md (creating the file or the section if needed), then
 * formats the file with the project's Prettier settings (format:check covers docs/).
 */
export async function appendToBenchmarks(file: string, rows: readonly Row[], info: RunInfo): Promise<void> {
  await insertRun(file, rows, info);
  const options = (await prettier.resolveConfig(file)) ?? {};
  await writeFile(file, await prettier.format(await readFile(file, 'utf8'), { ...options, filepath: file }));
}

async function insertRun(file: string, rows: readonly Row[], info: RunInfo): Promise<void> {
  const date = new Date().toISOString().replace(/\.\d+Z$/, 'Z');
  const m = info.machine;
  const run = `
### ${date}

- command: \`${info.command}\`
- machine: ${m.cores} cores, ${m.cpuModel}, ${m.memoryGiB} GiB, Linux ${m.kernel}, Node ${m.node}; load average at start ${info.loadAverage.map((n) => n.toFixed(2)).join(' / ')}${info.pinned ? '; servers on core 0, generator on core 1' : '; not pinned'}
- cloud settings beyond defaults: ${Object.entries(info.cloudEnv)
    .map(([k, v]) => `\`${k}=${v}\``)
    .join(', ')}

${markdownTable(rows)}
${info.notes.map((n) => `\n- ${n}`).join('')}
`;
  if (!existsSync(file)) {
    await writeFile(file, `# Benchmarks\n\n${INTRO}${run}`);
    return;
  }
  const text = await readFile(file, 'utf8');
  if (!text.includes(HEADING)) {
    await appendFile(file, `${text.endsWith('\n') ? '' : '\n'}\n${INTRO}${run}`);
    return;
  }
  // Insert at the end of our section: before the next "## " heading, or at the end of the file.
  const start = text.indexOf(HEADING);
  const nextHeading = text.indexOf('\n## ', start + HEADING.length);
  const at = nextHeading === -1 ? text.length : nextHeading + 1;
  const before = text.slice(0, at).replace(/\n*$/, '\n');
  await writeFile(file, `${before}${run}${nextHeading === -1 ? '' : `\n${text.slice(at)}`}`);
}

export function loadAverage(): number[] {
  return os.loadavg();
}
