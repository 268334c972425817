/**
 * flapping-machines: a fifth of the machines lose their connection abruptly every ~10 s (no DISCONNECT: the
 * gateway publishes their wills) and come back with backoff and jitter. The rest of the fleet must not notice, and
 * nothing acknowledged may be lost.
 */
import { allConnected, noDuplicates, nothingLost, p99Below, reconnectedAtLeast } from '../src/report/checks.ts';
import type { Scenario } from '../src/scenario.ts';

const scenario: Scenario = {
  name: 'flapping-machines',
  description: 'A fifth of the machines drop their connection every ~10 s and come back.',
  settings: { durationS: 60, flapping: { share: 0.2, everyS: 10 }, outagesPerHour: 1 },
  checks: (s) => [
    nothingLost,
    noDuplicates,
    allConnected,
    reconnectedAtLeast(Math.max(1, Math.floor(((s.machines * s.branches * 0.2) / 2) * (s.durationS / 10)) / 2)),
    p99Below(2000),
  ],
};
export default scenario;
