/**
 * bench:live's figures and report: percentiles of latency samples and the run appended to docs/benchmarks.md under
 * its own section (created when missing), formatted as `npm run format:check` expects.
 */
import { appendToSection } from './cli.ts';

export interface Latency {
  count: number;
  p50: number;
  p99: number;
  max: number;
}

export function latencyOf(values: readonly number[]): Latency {
  if (values.length === 0) return { count: 0, p50: NaN, p99: NaN, max: NaN };
  const sorted = [...values].sort((a, b) => a - b);
  const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)]!;
  return { count: sorted.length, p50: at(0.5), p99: at(0.99), max: sorted[sorted.length - 1]! };
}

export const fmtMs = (n: number) => (Number.isFinite(n) ? (n < 10 ? n.toFixed(1) : Math.round(n).toString()) : '–');

const SECTION = '## Live (npm run bench:live)';

const SECTION_INTRO = `${SECTION}

\`tools/bench/live.ts\`, issue 7's benchmark: the cloud (\`node cloud/src/main.ts\` on the MongoDB-compatible server in
memory and Redis) with simulated gateways (one per branch, in the bench process) publishing their machines'
telemetry as uplink batches every \`--batch-ms\` (the gateway sends what its queue holds at once; stored and acked
as usual), and app
clients over MQTT/WebSocket with member access tokens: half of them watch their own \`u/{user}/live/workout\` (each
member checked in and linked to one machine, so every sample of that machine is theirs), half their branch's
\`live/machines/+\` (5 % of the machines change status every second). Delivery latency is the sample's (or status's)
event time at the simulated machine → received by the app, in the bench process (one clock); it includes the
simulated gateway's batching window and ingest's queue and parse (the sample is forwarded before its MongoDB write:
the live view is not the record). \`GET /api/machines/availability\` (a 100-machine branch)
is read at a fixed rate during the load. Baseline in the same run: a bare Aedes (no auth, no persistence) fanning
the same message rate out to as many TCP subscribers, one topic each. Targets (issue 7): delivery p99 ≤ 100 ms
(the PRD asks < 1 s), availability p99 < 200 ms. Everything shares the machine's cores.`;

export async function appendToDoc(file: string, run: string): Promise<void> {
  await appendToSection(file, SECTION, SECTION_INTRO, run);
}
