/**
 * gateway-outage: the branch gateway loses power (SIGKILL) a third into the run and comes back 15 s later. Machines
 * lose their connection, retry with backoff and jitter, and send what they queued. Every record the gateway
 * acknowledged before or after the outage must reach MongoDB (the gateway's queue is durable, issue 5).
 */
import { allConnected, noDuplicates, nothingLost, reconnectedAtLeast } from '../src/report/checks.ts';
import type { Scenario } from '../src/scenario.ts';

const scenario: Scenario = {
  name: 'gateway-outage',
  description: 'The gateway is killed a third into the run and started again 15 s later.',
  settings: { durationS: 90, drainS: 90 },
  needs: 'gateways',
  events: (s) => [
    { atS: Math.round(s.durationS / 3), action: 'kill-gateway', gateway: 0 },
    { atS: Math.round(s.durationS / 3) + 15, action: 'start-gateway', gateway: 0 },
  ],
  checks: (s) => [
    nothingLost,
    noDuplicates,
    allConnected,
    reconnectedAtLeast(Math.ceil(s.machines / s.gatewaysPerBranch)),
  ],
};
export default scenario;
