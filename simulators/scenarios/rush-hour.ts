/**
 * rush-hour: the evening peak. The run starts at 17:45 simulated time, when arrivals climb to the day's maximum,
 * at twice the usual sample rate; time runs 10× so the peak's sessions start and end within the run. Telemetry is
 * QoS 0 (TOPIC_POLICY): the share stored is reported, not checked. 2,000 machines at 2 Hz offer ~4,000 messages/s,
 * far more than the hub stores on the MongoDB stand-in (~520/s in the 2,000-machine runs): the gateways queue the
 * rest (nothing is evicted below their caps) and forward it behind real time — records and door decisions first —
 * so the report's "still queued at the gateways" are late samples, not lost ones (docs/benchmarks.md, "Simulator").
 */
import { allConnected, membersTrained, noDuplicates, nothingLost, p99Below } from '../src/report/checks.ts';
import type { Scenario } from '../src/scenario.ts';

const scenario: Scenario = {
  name: 'rush-hour',
  description: 'The evening peak: nearly every machine taken, members queueing, samples at 2 Hz.',
  settings: { startHour: 17.75, timeScale: 10, rate: 2, durationS: 120, members: 1500, drainS: 180 },
  checks: () => [nothingLost, noDuplicates, allConnected, membersTrained, p99Below(2000)],
};
export default scenario;
