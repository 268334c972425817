/**
 * What a benchmark needs from the machine: a description of it for the report, CPU time of a process from
 * /proc/<pid>/stat, and pinning processes to cores with taskset (util-linux) so that a broker and its load do not
 * share a core.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import os from 'node:os';

export interface MachineInfo {
  readonly cores: number;
  readonly cpuModel: string;
  readonly memoryGiB: number;
  readonly kernel: string;
  readonly node: string;
}

export function machineInfo(): MachineInfo {
  const cpuinfo = readFileSync('/proc/cpuinfo', 'utf8');
  const model = /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1]?.trim() ?? 'unknown';
  let cores = os.availableParallelism();
  try {
    cores = Number(execFileSync('nproc', { encoding: 'utf8' }).trim()) || cores;
  } catch {
    // nproc missing: keep Node's count
  }
  return {
    cores,
    cpuModel: model,
    memoryGiB: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    kernel: os.release(),
    node: process.version,
  };
}

/** The 1, 5 and 15 minute load averages, for the report ("1.23, 0.98, 0.75"). */
export function loadAverage(): string {
  return os
    .loadavg()
    .map((n) => n.toFixed(2))
    .join(', ');
}

/** How this bench was run, as a person would type it: `npm run bench:x -- <arguments>`. */
export function benchCommand(script: string): string {
  const args = process.argv.slice(2);
  return `npm run ${script}${args.length > 0 ? ` -- ${args.join(' ')}` : ''}`;
}

/** The first lines of a run's section in docs/benchmarks.md: when, the command, the machine and its load. */
export function runHeader(startedAt: Date, command: string, info: MachineInfo, loadAtStart: string): string[] {
  return [
    `### ${startedAt.toISOString().slice(0, 19)}Z`,
    '',
    `- command: \`${command}\``,
    `- machine: ${info.cores} cores (\`nproc\`), ${info.cpuModel}, ${info.memoryGiB} GiB, Linux ${info.kernel}, Node ${info.node}`,
    `- load average at start: ${loadAtStart} (other work on the machine inflates every figure)`,
  ];
}

let clockTicks: number | undefined;

/** Clock ticks per second of /proc/<pid>/stat (getconf CLK_TCK; 100 on Linux x86). */
function ticksPerSecond(): number {
  if (clockTicks !== undefined) return clockTicks;
  try {
    clockTicks = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    clockTicks = 100;
  }
  return clockTicks;
}

/** User + system CPU time of a process (all its threads) in ms, or undefined when it is gone. */
export function cpuTimeMs(pid: number): number | undefined {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // The command name (field 2) may contain spaces and parentheses: fields are counted after its closing ')'.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const utime = Number(fields[11]);
  const stime = Number(fields[12]);
  return ((utime + stime) * 1000) / ticksPerSecond();
}

/** CPU time of several processes, sampled together. */
export function cpuSnapshot(pids: Readonly<Record<string, number>>): Record<string, number> {
  return Object.fromEntries(Object.entries(pids).map(([name, pid]) => [name, cpuTimeMs(pid) ?? Number.NaN]));
}

let tasksetPath: string | null | undefined;

function taskset(): string | null {
  if (tasksetPath !== undefined) return tasksetPath;
  const probe = spawnSync('taskset', ['--version'], { encoding: 'utf8' });
  tasksetPath = probe.status === 0 ? 'taskset' : null;
  return tasksetPath;
}

/**
 * Pins every thread of `pid` to the CPUs in `cpus` (e.g. "0" or "0,1"). Returns false (and pins nothing) when
 * taskset is missing or the machine has a single core.
 */
export function pin(pid: number, cpus: string): boolean {
  const command = taskset();
  if (command === null || os.availableParallelism() < 2) return false;
  const result = spawnSync(command, ['-a', '-p', '-c', cpus, String(pid)], { encoding: 'utf8' });
  return result.status === 0;
}
