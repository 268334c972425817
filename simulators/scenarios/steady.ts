/**
 * steady: an ordinary hour on the gym floor at mid-morning. Members come and go, machines report the odd fault and
 * power off now and then. Nothing acknowledged may be lost, nothing stored twice.
 */
import { allConnected, membersTrained, noDuplicates, nothingLost, p99Below } from '../src/report/checks.ts';
import type { Scenario } from '../src/scenario.ts';

const scenario: Scenario = {
  name: 'steady',
  description: 'An ordinary mid-morning: members come and go, the odd fault and power-off.',
  settings: { startHour: 10, durationS: 60 },
  checks: () => [nothingLost, noDuplicates, allConnected, membersTrained, p99Below(1000)],
};
export default scenario;
