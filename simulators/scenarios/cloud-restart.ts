/**
 * cloud-restart: the cloud is stopped (SIGTERM, it drains) and started again mid-run. Gateways hold what they
 * acknowledged and send it when the cloud is back; machines notice nothing but a slower acknowledgement. Needs a
 * cloud of the run's own (--stack own).
 */
import { allConnected, noDuplicates, nothingLost, telemetryStored } from '../src/report/checks.ts';
import type { Scenario } from '../src/scenario.ts';

const scenario: Scenario = {
  name: 'cloud-restart',
  description: 'The cloud restarts mid-run; gateways buffer and forward when it is back.',
  settings: { durationS: 60, drainS: 90 },
  needs: 'own-cloud',
  events: (s) => [{ atS: Math.round(s.durationS / 3), action: 'restart-cloud' }],
  checks: () => [nothingLost, noDuplicates, allConnected, telemetryStored(0.95)],
};
export default scenario;
