/**
 * bad-payload-storm: a quarter of the machines also publish 5 bad payloads a second each — cut-short JSON, bodies
 * the schema refuses, events naming another machine, the odd payload above the gateway's packet limit (which cuts
 * that machine's connection). None may be stored, and the good traffic must go through untouched.
 */
import { badNotStored, noDuplicates, nothingLost, p99Below } from '../src/report/checks.ts';
import type { Scenario } from '../src/scenario.ts';

const scenario: Scenario = {
  name: 'bad-payload-storm',
  description: 'A quarter of the machines also send 5 bad payloads/s each; none may be stored.',
  settings: { durationS: 60, badPayloads: { share: 0.25, perS: 5 } },
  checks: () => [badNotStored, nothingLost, noDuplicates, p99Below(2000)],
};
export default scenario;
