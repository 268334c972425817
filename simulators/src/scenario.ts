/**
 * A scenario: a file under simulators/scenarios/ (or any path given to --scenario) whose default export says what
 * the run looks like (settings the command line may override), what happens during it (events at given seconds:
 * a gateway killed and started again, the cloud restarted), and what must hold at the end (checks).
 */
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import type { DayProfile } from './day.ts';
import type { SimulatedMachineType } from './machines/index.ts';
import type { Check } from './report/checks.ts';

export interface Settings {
  readonly branches: number;
  readonly gatewaysPerBranch: number;
  /** Machines per branch. */
  readonly machines: number;
  /** Types cycled through per branch; empty: the usual gym floor's mix. */
  readonly mix: readonly SimulatedMachineType[];
  /** Members per branch. */
  readonly members: number;
  readonly durationS: number;
  /** Telemetry samples per second per machine. */
  readonly rate: number;
  readonly telemetryQos: 0 | 1;
  /** Simulated seconds per real second. */
  readonly timeScale: number;
  /** Simulated hour of day when the run starts. */
  readonly startHour: number;
  readonly day?: DayProfile | undefined;
  readonly faultsPerHour: number;
  readonly outagesPerHour: number;
  readonly flapping?: { readonly share: number; readonly everyS: number } | undefined;
  readonly badPayloads?: { readonly share: number; readonly perS: number } | undefined;
  /** New connections per second per process while the fleet starts. */
  readonly connectRate: number;
  /** How long to wait after the run for the hub to store what it acknowledged, s. */
  readonly drainS: number;
}

export const DEFAULT_SETTINGS: Settings = {
  branches: 1,
  gatewaysPerBranch: 1,
  machines: 40,
  mix: [],
  members: 400,
  durationS: 60,
  rate: 1,
  telemetryQos: 0,
  timeScale: 1,
  startHour: 10,
  faultsPerHour: 0.05,
  outagesPerHour: 0.02,
  connectRate: 500,
  drainS: 60,
};

export type ScenarioAction = 'kill-gateway' | 'start-gateway' | 'restart-cloud';

export interface ScenarioEvent {
  /** Seconds after the fleet connected (every machine connected once; the run's own time starts then too). */
  readonly atS: number;
  readonly action: ScenarioAction;
  /** For gateway actions: index among the run's gateways (default 0, the first). */
  readonly gateway?: number;
}

export interface Scenario {
  readonly name: string;
  readonly description: string;
  /** Settings of this scenario (the command line overrides them). */
  readonly settings?: Partial<Settings>;
  /** What the run needs: its own gateways (killed and started again) or its own cloud (restarted). */
  readonly needs?: 'gateways' | 'own-cloud';
  readonly events?: (settings: Settings) => readonly ScenarioEvent[];
  readonly checks: (settings: Settings) => readonly Check[];
}

export const SCENARIO_DIR = path.resolve(import.meta.dirname, '../scenarios');

export async function scenarioNames(): Promise<string[]> {
  const files = await readdir(SCENARIO_DIR);
  return files
    .filter((f) => f.endsWith('.ts') && !f.endsWith('.test.ts'))
    .map((f) => f.slice(0, -3))
    .sort();
}

/** A scenario by name (simulators/scenarios/<name>.ts) or by the path of a .ts file. */
export async function loadScenario(nameOrFile: string): Promise<Scenario> {
  let file: string;
  if (nameOrFile.endsWith('.ts')) file = path.resolve(nameOrFile);
  else {
    const names = await scenarioNames();
    if (!names.includes(nameOrFile))
      throw new Error(`no scenario ${nameOrFile}; there are: ${names.join(', ')} (or give a .ts file)`);
    file = path.join(SCENARIO_DIR, `${nameOrFile}.ts`);
  }
  const mod = (await import(pathToFileURL(file).href)) as { default?: Scenario };
  const scenario = mod.default;
  if (!scenario || typeof scenario.checks !== 'function' || typeof scenario.name !== 'string')
    throw new Error(`${file}: its default export is not a scenario ({name, description, checks, …})`);
  return scenario;
}
