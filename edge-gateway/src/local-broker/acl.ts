/**
 * What a machine may do on its gateway's broker, derived from the protocol's topic policy: publish the topic kinds
 * whose policy says a machine publishes them on a gateway's broker (meta, status, telemetry, workout, event and
 * command responses) under its own `b/{branch}/m/{machine}/…`, and subscribe only within its own `m/{machine}/cmd/+`.
 */
import { TOPIC_KINDS, TOPIC_POLICY, filterWithin, filters, parseTopic } from '../../../protocol/index.ts';
import type { BranchId, MachineId, ParsedTopic, TopicKind } from '../../../protocol/index.ts';

/** Topic kinds a machine publishes on its gateway's broker (from TOPIC_POLICY). */
export const MACHINE_PUBLISH_KINDS: ReadonlySet<TopicKind> = new Set(
  TOPIC_KINDS.filter((kind) => {
    const policy = TOPIC_POLICY[kind];
    return policy.from.includes('machine') && policy.brokers.includes('gateway');
  }),
);

type MachineTopic = Extract<ParsedTopic, { machine: MachineId }>;

/** The parsed topic when `machine` of `branch` may publish to `topic`; undefined otherwise. */
export function machinePublishTopic(branch: BranchId, machine: MachineId, topic: string): MachineTopic | undefined {
  const parsed = parseTopic(topic);
  if (parsed === undefined || !MACHINE_PUBLISH_KINDS.has(parsed.kind) || !('machine' in parsed)) return undefined;
  return parsed.branch === branch && parsed.machine === machine ? parsed : undefined;
}

/** Whether `machine` of `branch` may subscribe to `filter`: only within its own command topics. */
export function machineMaySubscribe(branch: BranchId, machine: MachineId, filter: string): boolean {
  return filterWithin(filter, filters.machineCommands(branch, machine));
}
