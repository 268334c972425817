/**
 * Who may publish and subscribe to what on the cloud broker, derived from protocol/topics.ts: the policy table
 * (`TOPIC_POLICY`: who publishes and who receives each topic kind, on which broker) and the filter builders. No
 * topic string is written here; a new topic kind in protocol/ changes the grants by its policy alone.
 *
 * - A SUBSCRIBE filter must lie *within* a granted filter (`filterWithinAny`), not merely match one: `#` matches
 *   every allowed topic but reaches far beyond them (RELIABILITY (d), aedes-cli #158). Refused: SUBACK 0x80.
 * - A PUBLISH topic must be a topic of the tree (`parseTopic`) that matches a publish grant, at QoS ≤ 1, with the
 *   retain flag only where the policy retains. `$SYS/…` is never in the tree, so it stays refused (aedes #622).
 * - Every delivery is checked again against the receiver's grants (`authorizeForward`), a second line that also
 *   covers retained messages (aedes #200: a negated subscription still got retained messages).
 */
import type { BranchId, UserId } from '../../../protocol/ids.ts';
import {
  TOPIC_KINDS,
  TOPIC_POLICY,
  filterWithinAny,
  filters,
  isValidTopicFilter,
  parseTopic,
  topicMatches,
  type TopicKind,
  type TopicPolicy,
} from '../../../protocol/topics.ts';
import { PROTOCOL_ROOT } from '../../../protocol/version.ts';

/** Who a connected client is, as far as the ACL cares. */
export type Principal =
  | { role: 'gateway'; id: string; branch: BranchId }
  | { role: 'observer'; id: string; branches: readonly BranchId[] }
  | { role: 'app'; id: string; user: UserId; branches: readonly BranchId[] };

export type PrincipalRole = Principal['role'];

/** The filters a principal may publish to and subscribe within; computed once per connection. */
export interface Grants {
  readonly publish: readonly string[];
  readonly subscribe: readonly string[];
}

export type PublishDenial = 'read-only' | 'qos2' | 'not-in-tree' | 'out-of-scope' | 'retain';
export type SubscribeDenial = 'invalid-filter' | 'out-of-scope';
export type DenialReason = PublishDenial | SubscribeDenial;

/**
 * A topic kind's policy pattern as a filter for one scope: `{branch}` and `{gateway}` become the principal's own
 * ids, every other placeholder a `+`. Undefined when the pattern needs a value the scope has not got.
 */
export function policyFilter(kind: TopicKind, scope: { branch?: string; gateway?: string }): string | undefined {
  const levels: string[] = [];
  for (const level of TOPIC_POLICY[kind].pattern.split('/')) {
    if (level === '{branch}' || level === '{gateway}') {
      const value = level === '{branch}' ? scope.branch : scope.gateway;
      if (value === undefined) return undefined;
      levels.push(value);
    } else if (level === '{user}') {
      return undefined; // a user's topics are never granted by scope, only to that user (apps)
    } else {
      levels.push(level.startsWith('{') ? '+' : level);
    }
  }
  return `${PROTOCOL_ROOT}/${levels.join('/')}`;
}

const kindsWhere = (predicate: (p: TopicPolicy) => boolean): TopicKind[] =>
  TOPIC_KINDS.filter((kind) => predicate(TOPIC_POLICY[kind]));

/**
 * What a gateway publishes on the cloud broker: topics the cloud receives there, that the gateway sends itself
 * (state, uplink, requests, command answers, scans) or relays from its machines (their command answers). Not the
 * commands to machines: on the cloud broker those come from the cloud only.
 */
export const GATEWAY_PUBLISH_KINDS: readonly TopicKind[] = kindsWhere(
  (p) =>
    p.brokers.includes('cloud') && p.to.includes('cloud') && (p.from.includes('gateway') || p.from.includes('machine')),
);

/** What a gateway receives from the cloud on the cloud broker: acks, answers, commands, the cloud's state. */
export const GATEWAY_SUBSCRIBE_KINDS: readonly TopicKind[] = kindsWhere(
  (p) => p.brokers.includes('cloud') && p.to.includes('gateway') && p.from.includes('cloud'),
);

function defined<T>(value: T | undefined): value is T {
  return value !== undefined;
}

export function grantsFor(principal: Principal): Grants {
  switch (principal.role) {
    case 'gateway': {
      const scope = { branch: principal.branch, gateway: principal.id };
      return {
        publish: GATEWAY_PUBLISH_KINDS.map((kind) => policyFilter(kind, scope)).filter(defined),
        subscribe: GATEWAY_SUBSCRIBE_KINDS.map((kind) => policyFilter(kind, scope)).filter(defined),
      };
    }
    case 'observer':
      return { publish: [], subscribe: principal.branches.flatMap((branch) => filters.observer(branch)) };
    case 'app':
      return {
        publish: [],
        subscribe: [...principal.branches.map((b) => filters.branchLive(b)), filters.userLive(principal.user)],
      };
  }
}

/** Undefined when allowed, else why not. */
export function checkPublish(
  grants: Grants,
  packet: { topic: string; qos: number; retain?: boolean },
): PublishDenial | undefined {
  if (grants.publish.length === 0) return 'read-only';
  // Apps and tools use QoS 0 and 1 only; QoS 2 floods were an Aedes advisory (GHSA-5jvp, RELIABILITY A3).
  if (packet.qos > 1) return 'qos2';
  const parsed = parseTopic(packet.topic);
  if (!parsed) return 'not-in-tree';
  if (!grants.publish.some((grant) => topicMatches(grant, packet.topic))) return 'out-of-scope';
  // Retaining a topic the policy does not retain would keep, say, every uplink batch in the broker's store.
  if (packet.retain && !TOPIC_POLICY[parsed.kind].retained) return 'retain';
  return undefined;
}

export function checkSubscribe(grants: Grants, filter: string): SubscribeDenial | undefined {
  if (!isValidTopicFilter(filter)) return 'invalid-filter';
  return filterWithinAny(filter, grants.subscribe) ? undefined : 'out-of-scope';
}

/** Whether a message on `topic` may be delivered to a client holding `grants` (live or retained). */
export function mayReceive(grants: Grants, topic: string): boolean {
  return grants.subscribe.some((grant) => topicMatches(grant, topic));
}

/** The topic class for metrics: the topic kind, `sys` for `$SYS/…`, `other` for anything outside the tree. */
export function topicClass(topic: string): TopicKind | 'sys' | 'other' {
  if (topic.startsWith('$SYS/')) return 'sys';
  return parseTopic(topic)?.kind ?? 'other';
}
