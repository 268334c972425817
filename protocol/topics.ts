/**
 * The topic tree: the only file that joins or splits topic levels.
 *
 * ```
 * nxg/v1/
 * ├── sys/cloud/state
 * ├── b/{branch}/
 * │   ├── gw/{gateway}/state | up/{lane} | ack | req/{name} | req/{name}/res | cmd/{name} | cmd/{name}/res
 * │   ├── m/{machine}/meta | status | telemetry | workout | event | cmd/{name} | cmd/{name}/res
 * │   ├── access/{reader}/scan
 * │   └── live/machines/{machine}
 * └── u/{user}/live/{topic}
 * ```
 *
 * Branch comes first so that "a gateway may only touch its branch" is one subtree check. Builders take branded
 * ids (ids.ts), so a topic can only be built from values that passed the id rule; `parseTopic` refuses anything
 * outside the tree. QoS, retain flag and direction of every topic kind are data (`TOPIC_POLICY`): the broker
 * ACL, the publishers and docs/protocol.md all read the same table.
 */
import { isTopicLevelId } from './ids.ts';
import type { BranchId, GatewayId, MachineId, ReaderId, UserId } from './ids.ts';
import { PROTOCOL_ROOT } from './version.ts';

/**
 * Lanes of the gateway's durable queue, in send priority. Order holds per source within a lane.
 * - `access`: scans and check-in/out decisions; sent first, never evicted.
 * - `records`: workouts, events, status and meta changes, offline decisions; never evicted while space remains.
 * - `telemetry`: samples; evicted oldest first when the queue is full.
 */
export const LANES = ['access', 'records', 'telemetry'] as const;
export type Lane = (typeof LANES)[number];

/** Online decisions a gateway asks the cloud for on `gw/{gateway}/req/{name}`. */
export const REQUEST_NAMES = ['check-in', 'check-out', 'link', 'unlink'] as const;
export type RequestName = (typeof REQUEST_NAMES)[number];

/** Commands to a machine on `m/{machine}/cmd/{name}` (from the cloud, or from its gateway). */
export const MACHINE_COMMAND_NAMES = ['link', 'unlink', 'display', 'config', 'rebirth'] as const;
export type MachineCommandName = (typeof MACHINE_COMMAND_NAMES)[number];

/** Commands to a gateway on `gw/{gateway}/cmd/{name}`. */
export const GATEWAY_COMMAND_NAMES = ['config', 'allow-list', 'rebirth'] as const;
export type GatewayCommandName = (typeof GATEWAY_COMMAND_NAMES)[number];

/** What a machine publishes under `m/{machine}/…`; each becomes a record of the same kind in the uplink queue. */
export const MACHINE_UPLINK_KINDS = ['meta', 'status', 'telemetry', 'workout', 'event'] as const;
export type MachineUplinkKind = (typeof MACHINE_UPLINK_KINDS)[number];

/** The last level of `u/{user}/live/{topic}`: the user's live workout view and their notifications. */
export const USER_LIVE_TOPICS = ['workout', 'notification'] as const;
export type UserLiveTopic = (typeof USER_LIVE_TOPICS)[number];

/** Every kind of topic in the tree. */
export const TOPIC_KINDS = [
  'cloud-state',
  'gateway-state',
  'gateway-uplink',
  'gateway-ack',
  'gateway-request',
  'gateway-request-response',
  'gateway-command',
  'gateway-command-response',
  'machine-meta',
  'machine-status',
  'machine-telemetry',
  'machine-workout',
  'machine-event',
  'machine-command',
  'machine-command-response',
  'access-scan',
  'live-machine',
  'user-live',
] as const;
export type TopicKind = (typeof TOPIC_KINDS)[number];

type OnGateway = { branch: BranchId; gateway: GatewayId };
type OnMachine = { branch: BranchId; machine: MachineId };

/** A topic taken apart: its kind and the values of its variable levels. */
export type ParsedTopic =
  | { kind: 'cloud-state' }
  | ({ kind: 'gateway-state' } & OnGateway)
  | ({ kind: 'gateway-uplink'; lane: Lane } & OnGateway)
  | ({ kind: 'gateway-ack' } & OnGateway)
  | ({ kind: 'gateway-request'; name: RequestName } & OnGateway)
  | ({ kind: 'gateway-request-response'; name: RequestName } & OnGateway)
  | ({ kind: 'gateway-command'; name: GatewayCommandName } & OnGateway)
  | ({ kind: 'gateway-command-response'; name: GatewayCommandName } & OnGateway)
  | { [U in MachineUplinkKind]: { kind: `machine-${U}` } & OnMachine }[MachineUplinkKind]
  | ({ kind: 'machine-command'; name: MachineCommandName } & OnMachine)
  | ({ kind: 'machine-command-response'; name: MachineCommandName } & OnMachine)
  | { kind: 'access-scan'; branch: BranchId; reader: ReaderId }
  | ({ kind: 'live-machine' } & OnMachine)
  | { kind: 'user-live'; user: UserId; topic: UserLiveTopic };

/** The parsed form of one topic kind, e.g. `TopicOf<'gateway-uplink'>`. */
export type TopicOf<K extends TopicKind> = Extract<ParsedTopic, { kind: K }>;

const root = PROTOCOL_ROOT;

/** Topic builders, one per kind. Ids must be branded (parsed), so no unchecked string reaches a topic. */
export const topics = {
  cloudState: () => `${root}/sys/cloud/state`,
  gatewayState: (branch: BranchId, gateway: GatewayId) => `${root}/b/${branch}/gw/${gateway}/state`,
  gatewayUplink: (branch: BranchId, gateway: GatewayId, lane: Lane) => `${root}/b/${branch}/gw/${gateway}/up/${lane}`,
  gatewayAck: (branch: BranchId, gateway: GatewayId) => `${root}/b/${branch}/gw/${gateway}/ack`,
  gatewayRequest: (branch: BranchId, gateway: GatewayId, name: RequestName) =>
    `${root}/b/${branch}/gw/${gateway}/req/${name}`,
  gatewayRequestResponse: (branch: BranchId, gateway: GatewayId, name: RequestName) =>
    `${root}/b/${branch}/gw/${gateway}/req/${name}/res`,
  gatewayCommand: (branch: BranchId, gateway: GatewayId, name: GatewayCommandName) =>
    `${root}/b/${branch}/gw/${gateway}/cmd/${name}`,
  gatewayCommandResponse: (branch: BranchId, gateway: GatewayId, name: GatewayCommandName) =>
    `${root}/b/${branch}/gw/${gateway}/cmd/${name}/res`,
  machineUplink: (branch: BranchId, machine: MachineId, kind: MachineUplinkKind) =>
    `${root}/b/${branch}/m/${machine}/${kind}`,
  machineMeta: (branch: BranchId, machine: MachineId) => `${root}/b/${branch}/m/${machine}/meta`,
  machineStatus: (branch: BranchId, machine: MachineId) => `${root}/b/${branch}/m/${machine}/status`,
  machineTelemetry: (branch: BranchId, machine: MachineId) => `${root}/b/${branch}/m/${machine}/telemetry`,
  machineWorkout: (branch: BranchId, machine: MachineId) => `${root}/b/${branch}/m/${machine}/workout`,
  machineEvent: (branch: BranchId, machine: MachineId) => `${root}/b/${branch}/m/${machine}/event`,
  machineCommand: (branch: BranchId, machine: MachineId, name: MachineCommandName) =>
    `${root}/b/${branch}/m/${machine}/cmd/${name}`,
  machineCommandResponse: (branch: BranchId, machine: MachineId, name: MachineCommandName) =>
    `${root}/b/${branch}/m/${machine}/cmd/${name}/res`,
  accessScan: (branch: BranchId, reader: ReaderId) => `${root}/b/${branch}/access/${reader}/scan`,
  liveMachine: (branch: BranchId, machine: MachineId) => `${root}/b/${branch}/live/machines/${machine}`,
  userLive: (user: UserId, topic: UserLiveTopic) => `${root}/u/${user}/live/${topic}`,
} as const;

/** Builds the topic string of a parsed topic; `buildTopic(parseTopic(t)!) === t` for every topic in the tree. */
export function buildTopic(t: ParsedTopic): string {
  switch (t.kind) {
    case 'cloud-state':
      return topics.cloudState();
    case 'gateway-state':
      return topics.gatewayState(t.branch, t.gateway);
    case 'gateway-uplink':
      return topics.gatewayUplink(t.branch, t.gateway, t.lane);
    case 'gateway-ack':
      return topics.gatewayAck(t.branch, t.gateway);
    case 'gateway-request':
      return topics.gatewayRequest(t.branch, t.gateway, t.name);
    case 'gateway-request-response':
      return topics.gatewayRequestResponse(t.branch, t.gateway, t.name);
    case 'gateway-command':
      return topics.gatewayCommand(t.branch, t.gateway, t.name);
    case 'gateway-command-response':
      return topics.gatewayCommandResponse(t.branch, t.gateway, t.name);
    case 'machine-meta':
    case 'machine-status':
    case 'machine-telemetry':
    case 'machine-workout':
    case 'machine-event':
      return topics.machineUplink(t.branch, t.machine, uplinkKindOf(t.kind));
    case 'machine-command':
      return topics.machineCommand(t.branch, t.machine, t.name);
    case 'machine-command-response':
      return topics.machineCommandResponse(t.branch, t.machine, t.name);
    case 'access-scan':
      return topics.accessScan(t.branch, t.reader);
    case 'live-machine':
      return topics.liveMachine(t.branch, t.machine);
    case 'user-live':
      return topics.userLive(t.user, t.topic);
  }
}

/**
 * Longest topic the tree can produce is well under 400 characters (`b/{63}/gw/{63}/cmd/allow-list/res`); anything
 * longer is refused before it is split, so a hostile 64 KiB topic costs one length check.
 */
export const MAX_TREE_TOPIC_LENGTH = 400;
// Most levels below the root: b/{branch}/gw/{gateway}/req/{name}/res.
const MAX_TREE_LEVELS = 7;
const ROOT_PREFIX = `${root}/`;

/**
 * Takes a topic apart. Returns undefined for anything not in the tree: another version root, an unknown level,
 * a bad id (upper case, `+`, `#`, `$`, empty, too long), a name outside the constant lists, extra or missing levels.
 */
export function parseTopic(topic: string): ParsedTopic | undefined {
  if (typeof topic !== 'string' || topic.length > MAX_TREE_TOPIC_LENGTH || !topic.startsWith(ROOT_PREFIX)) {
    return undefined;
  }
  // The split limit bounds the work even for a topic of many empty levels; one level too many is enough to refuse.
  const levels = topic.slice(ROOT_PREFIX.length).split('/', MAX_TREE_LEVELS + 1);
  if (levels.length > MAX_TREE_LEVELS) return undefined;
  switch (levels[0]) {
    case 'sys':
      return levels.length === 3 && levels[1] === 'cloud' && levels[2] === 'state'
        ? { kind: 'cloud-state' }
        : undefined;
    case 'b':
      return parseBranchLevels(levels);
    case 'u':
      return parseUserLevels(levels);
    default:
      return undefined;
  }
}

function parseBranchLevels(levels: readonly string[]): ParsedTopic | undefined {
  const [, branchLevel, area, idLevel, ...rest] = levels;
  if (!isId(branchLevel) || !isId(idLevel)) return undefined;
  const branch = branchLevel as BranchId;
  switch (area) {
    case 'gw':
      return parseGatewayLevels(branch, idLevel as GatewayId, rest);
    case 'm':
      return parseMachineLevels(branch, idLevel as MachineId, rest);
    case 'access':
      return rest.length === 1 && rest[0] === 'scan'
        ? { kind: 'access-scan', branch, reader: idLevel as ReaderId }
        : undefined;
    case 'live': {
      // live/machines/{machine}: here the third level is the literal 'machines', the id comes after it.
      const [machineLevel, ...extra] = rest;
      return idLevel === 'machines' && isId(machineLevel) && extra.length === 0
        ? { kind: 'live-machine', branch, machine: machineLevel as MachineId }
        : undefined;
    }
    default:
      return undefined;
  }
}

function parseGatewayLevels(branch: BranchId, gateway: GatewayId, rest: readonly string[]): ParsedTopic | undefined {
  const [verb, name, suffix, ...extra] = rest;
  if (extra.length > 0) return undefined;
  switch (verb) {
    case 'state':
      return rest.length === 1 ? { kind: 'gateway-state', branch, gateway } : undefined;
    case 'ack':
      return rest.length === 1 ? { kind: 'gateway-ack', branch, gateway } : undefined;
    case 'up':
      return rest.length === 2 && isOneOf(LANES, name)
        ? { kind: 'gateway-uplink', branch, gateway, lane: name }
        : undefined;
    case 'req':
      if (!isOneOf(REQUEST_NAMES, name)) return undefined;
      if (suffix === undefined) return { kind: 'gateway-request', branch, gateway, name };
      return suffix === 'res' ? { kind: 'gateway-request-response', branch, gateway, name } : undefined;
    case 'cmd':
      if (!isOneOf(GATEWAY_COMMAND_NAMES, name)) return undefined;
      if (suffix === undefined) return { kind: 'gateway-command', branch, gateway, name };
      return suffix === 'res' ? { kind: 'gateway-command-response', branch, gateway, name } : undefined;
    default:
      return undefined;
  }
}

function parseMachineLevels(branch: BranchId, machine: MachineId, rest: readonly string[]): ParsedTopic | undefined {
  const [verb, name, suffix, ...extra] = rest;
  if (extra.length > 0) return undefined;
  if (rest.length === 1 && isOneOf(MACHINE_UPLINK_KINDS, verb)) {
    return { kind: `machine-${verb}`, branch, machine };
  }
  if (verb !== 'cmd' || !isOneOf(MACHINE_COMMAND_NAMES, name)) return undefined;
  if (suffix === undefined) return { kind: 'machine-command', branch, machine, name };
  return suffix === 'res' ? { kind: 'machine-command-response', branch, machine, name } : undefined;
}

function parseUserLevels(levels: readonly string[]): ParsedTopic | undefined {
  const [, userLevel, live, topic, ...extra] = levels;
  return isId(userLevel) && live === 'live' && isOneOf(USER_LIVE_TOPICS, topic) && extra.length === 0
    ? { kind: 'user-live', user: userLevel as UserId, topic }
    : undefined;
}

/** Machine data topic → `{ branch, machine, kind }`, or undefined for any other topic. */
export function parseMachineUplink(
  topic: string,
): { branch: BranchId; machine: MachineId; kind: MachineUplinkKind } | undefined {
  const parsed = parseTopic(topic);
  switch (parsed?.kind) {
    case 'machine-meta':
    case 'machine-status':
    case 'machine-telemetry':
    case 'machine-workout':
    case 'machine-event':
      return { branch: parsed.branch, machine: parsed.machine, kind: uplinkKindOf(parsed.kind) };
    default:
      return undefined;
  }
}

function uplinkKindOf(kind: `machine-${MachineUplinkKind}`): MachineUplinkKind {
  return kind.slice('machine-'.length) as MachineUplinkKind;
}

function isId(level: string | undefined): level is string {
  return level !== undefined && isTopicLevelId(level);
}

function isOneOf<T extends string>(list: readonly T[], value: string | undefined): value is T {
  return value !== undefined && (list as readonly string[]).includes(value);
}

// ---------------------------------------------------------------------------------------------------------------
// Subscription filters

/**
 * Subscription filters for the subscribers and ACLs of each part. A broker ACL should check that a requested
 * filter lies *within* an allowed one (`filterWithin`), not that it matches it: `#` matches every allowed topic
 * but reaches far beyond them.
 */
/** Machine topics an observer may read: not `event`, which can carry member credentials (see filters.observer). */
const OBSERVED_MACHINE_KINDS = ['meta', 'status', 'telemetry', 'workout'] as const;

export const filters = {
  /** Everything under the root (cloud-internal tools only). */
  everything: () => `${root}/#`,
  /**
   * What a branch-scoped observer (operators, `mosquitto_sub`, dashboards; read-only) may subscribe to: a list,
   * because no single filter can say it. Machine availability for apps (`live/…`), gateway births and wills
   * (`gw/+/state`), and the machine data topics `m/+/meta`, `status`, `telemetry` and `workout` — one exact filter
   * each, never `m/+/#` or `gw/+/#`.
   *
   * Left out on purpose, because they carry member credentials or what they unlock: door scans
   * (`access/+/scan`: NFC card UIDs and QR tokens), gateway requests and their answers (`gw/+/req/…`: the same
   * credentials, plus member ids and session decisions), gateway commands and answers (`gw/+/cmd/…`: the signed
   * allow-list with card hashes, the configuration with machine secret hashes), machine commands and answers
   * (`m/+/cmd/…`: member links), uplink batches (`gw/+/up/+`: the access lane carries the same scans) and acks.
   * A whole-branch `b/{branch}/#` grant would hand all of that to every dashboard.
   *
   * Machine events (`m/+/event`) are left out too: besides faults they carry `qr-scanned` (a member's QR token,
   * valid ≤ 60 s) and `nfc-tapped` (a card UID) presented at a machine. Operators get faults through the cloud's
   * own views until events carry verified claims instead of credentials.
   *
   * The broker ACL checks a requested filter with `filterWithinAny(requested, filters.observer(branch))`.
   */
  observer: (branch: BranchId): readonly string[] => [
    `${root}/b/${branch}/live/#`,
    `${root}/b/${branch}/gw/+/state`,
    ...OBSERVED_MACHINE_KINDS.map((kind) => `${root}/b/${branch}/m/+/${kind}`),
  ],
  /** Everything of one gateway: `state`, `up/…`, `ack`, `req/…`, `cmd/…`. */
  gateway: (branch: BranchId, gateway: GatewayId) => `${root}/b/${branch}/gw/${gateway}/#`,
  /** The commands a gateway receives. */
  gatewayCommands: (branch: BranchId, gateway: GatewayId) => `${root}/b/${branch}/gw/${gateway}/cmd/+`,
  /** The answers to a gateway's requests. */
  gatewayRequestResponses: (branch: BranchId, gateway: GatewayId) => `${root}/b/${branch}/gw/${gateway}/req/+/res`,
  /** Everything of one machine: what the machine itself may use on its gateway's broker. */
  machine: (branch: BranchId, machine: MachineId) => `${root}/b/${branch}/m/${machine}/#`,
  /** The commands a machine receives. */
  machineCommands: (branch: BranchId, machine: MachineId) => `${root}/b/${branch}/m/${machine}/cmd/+`,
  /** Every machine topic of a branch (the gateway's intake on its local broker). */
  branchMachines: (branch: BranchId) => `${root}/b/${branch}/m/#`,
  /** Commands to every machine of a branch (the gateway relays them from the cloud broker). */
  branchMachineCommands: (branch: BranchId) => `${root}/b/${branch}/m/+/cmd/+`,
  /** Command responses of every machine of a branch. */
  branchMachineCommandResponses: (branch: BranchId) => `${root}/b/${branch}/m/+/cmd/+/res`,
  /** Scans of every reader of a branch. */
  branchAccessScans: (branch: BranchId) => `${root}/b/${branch}/access/+/scan`,
  /** The live subtree of a branch: what an app of that branch may read. */
  branchLive: (branch: BranchId) => `${root}/b/${branch}/live/#`,
  /** Availability of every machine of a branch. */
  liveMachines: (branch: BranchId) => `${root}/b/${branch}/live/machines/+`,
  /** A user's own live topics: the only user subtree their app may read. */
  userLive: (user: UserId) => `${root}/u/${user}/live/#`,
  /** Cloud ingest: every gateway's birth and will. */
  allGatewayStates: () => `${root}/b/+/gw/+/state`,
  /** Cloud ingest: every gateway's uplink batches. */
  allGatewayUplinks: () => `${root}/b/+/gw/+/up/+`,
  /** Cloud: every gateway's requests. */
  allGatewayRequests: () => `${root}/b/+/gw/+/req/+`,
  /** Cloud: every gateway's command responses. */
  allGatewayCommandResponses: () => `${root}/b/+/gw/+/cmd/+/res`,
  /** Cloud: every machine's command responses (relayed by the gateways). */
  allMachineCommandResponses: () => `${root}/b/+/m/+/cmd/+/res`,
  /** Cloud: every branch's scans. */
  allAccessScans: () => `${root}/b/+/access/+/scan`,
} as const;

/** Most topic levels a broker should accept (Aedes' `maxTopicLevels`; 101 crashed Aedes < 1.1.1, GHSA-xxqp). */
export const MAX_TOPIC_LEVELS = 100;
/** Most bytes in an MQTT topic or filter (a UTF-8 string with a 16-bit length). */
export const MAX_TOPIC_BYTES = 65_535;

/**
 * Whether `topic` is a valid MQTT topic name to publish to: non-empty, well-formed UTF-16 (no lone surrogates,
 * which have no UTF-8 form [MQTT-1.5.3-1]), no U+0000 [MQTT-1.5.3-2], no wildcards, ≤ 100 levels.
 */
export function isValidTopicName(topic: string): boolean {
  if (!isPlausibleTopicString(topic) || topic.includes('+') || topic.includes('#')) return false;
  return topic.split('/', MAX_TOPIC_LEVELS + 1).length <= MAX_TOPIC_LEVELS;
}

/**
 * Whether `filter` is a valid MQTT subscription filter: non-empty, well-formed UTF-16 (no lone surrogates
 * [MQTT-1.5.3-1]), no U+0000 [MQTT-1.5.3-2], ≤ 100 levels, `+` only as a whole level, `#` only as the whole last
 * level [MQTT-4.7.1-2, -3].
 */
export function isValidTopicFilter(filter: string): boolean {
  if (!isPlausibleTopicString(filter)) return false;
  const levels = filter.split('/', MAX_TOPIC_LEVELS + 1);
  if (levels.length > MAX_TOPIC_LEVELS) return false;
  return levels.every((level, i) => {
    if (level === '#') return i === levels.length - 1;
    if (level === '+') return true;
    return !level.includes('+') && !level.includes('#');
  });
}

const utf8 = new TextEncoder();

function isPlausibleTopicString(value: string): boolean {
  // A UTF-16 unit takes 1–3 UTF-8 bytes: count bytes only when the length alone cannot decide.
  if (typeof value !== 'string' || value.length === 0 || value.length > MAX_TOPIC_BYTES) return false;
  // A lone surrogate has no UTF-8 encoding: a client would send U+FFFD or fail, so the topic is not what it seems.
  if (value.includes('\u0000') || !value.isWellFormed()) return false;
  return value.length * 3 <= MAX_TOPIC_BYTES || utf8.encode(value).length <= MAX_TOPIC_BYTES;
}

/**
 * Whether a topic matches a filter, with MQTT semantics: `+` matches one level, `#` the rest including the parent
 * (`a/#` matches `a`), and a wildcard in the first level does not match a topic starting with `$` [MQTT-4.7.2-1].
 * The filter is assumed valid (`isValidTopicFilter`). A "topic" containing `+` or `#` is a filter, not a topic
 * name, and matches nothing: `topicMatches('a/+', 'a/#')` is false (use `filterWithin` to compare filters).
 */
export function topicMatches(filter: string, topic: string): boolean {
  if (topic.includes('+') || topic.includes('#')) return false;
  const f = filter.split('/');
  const t = topic.split('/');
  if (t[0]?.startsWith('$') && (f[0] === '+' || f[0] === '#')) return false;
  for (let i = 0; i < f.length; i++) {
    const level = f[i];
    if (level === '#') return true;
    if (i >= t.length) return false;
    if (level !== '+' && level !== t[i]) return false;
  }
  return f.length === t.length;
}

/** Whether `filter` lies within at least one of `allowed` (`filterWithin`): the ACL check for a list of grants. */
export function filterWithinAny(filter: string, allowed: readonly string[]): boolean {
  return allowed.some((grant) => filterWithin(filter, grant));
}

/**
 * Whether every topic that `filter` can match is also matched by `allowed`: the ACL question for SUBSCRIBE.
 * `nxg/v1/b/demo/live/machines/+` is within `nxg/v1/b/demo/live/#`; `nxg/v1/b/+/live/#` and `#` are not.
 * Returns false if either filter is invalid.
 */
export function filterWithin(filter: string, allowed: string): boolean {
  if (!isValidTopicFilter(filter) || !isValidTopicFilter(allowed)) return false;
  const r = filter.split('/');
  const a = allowed.split('/');
  // A filter on $-topics is never covered by a filter whose first level is a wildcard.
  if (r[0]?.startsWith('$') && (a[0] === '+' || a[0] === '#')) return false;
  for (let i = 0; i < a.length; i++) {
    const allowedLevel = a[i];
    if (allowedLevel === '#') return true;
    if (i >= r.length) return false;
    const requestedLevel = r[i];
    // A requested `#` reaches deeper (and up to the parent) than any single allowed level.
    if (requestedLevel === '#') return false;
    if (allowedLevel !== '+' && requestedLevel !== allowedLevel) return false;
  }
  return r.length === a.length;
}

// ---------------------------------------------------------------------------------------------------------------
// Policy: QoS, retain flag and direction per topic kind

/**
 * Who takes part in the protocol. Observers (read-only operators) are not listed: what they may read is
 * `filters.observer`. Apps may only ever read `live/…` and their own `u/{user}/…`.
 */
export type Party = 'cloud' | 'gateway' | 'machine' | 'app';
/** MQTT QoS used for a topic; QoS 2 is never used (Aedes QoS2 floods, GHSA-5jvp). */
export type Qos = 0 | 1;
/** Where a topic lives: the cloud broker, the gateway's local broker for machines, or both. */
export type BrokerSide = 'cloud' | 'gateway';

export interface TopicPolicy {
  /** The topic below the root, with `{placeholders}` for variable levels. */
  readonly pattern: string;
  readonly qos: Qos;
  /**
   * Whether publishers set the retain flag (the latest message is state; a new subscriber gets it at once). A
   * zero-length payload published with retain clears the retained message — the MQTT way to remove state, e.g. of
   * a decommissioned machine; receivers see it as `parsePayload(…).reason === 'empty'`.
   */
  readonly retained: boolean;
  /** Who publishes it. */
  readonly from: readonly Party[];
  /** Who subscribes to it. */
  readonly to: readonly Party[];
  readonly brokers: readonly BrokerSide[];
  /** One line for the docs. */
  readonly summary: string;
}

/**
 * QoS, retain flag and direction of every topic kind. Machine data topics exist only on the gateway's broker:
 * the cloud receives them as records in uplink batches, so a gateway's cloud ACL stays its own `gw/{gateway}/…`
 * subtree plus its machines' command topics and its readers' scans.
 */
export const TOPIC_POLICY: { readonly [K in TopicKind]: TopicPolicy } = {
  'cloud-state': {
    pattern: 'sys/cloud/state',
    qos: 1,
    retained: true,
    from: ['cloud'],
    to: ['gateway'],
    brokers: ['cloud'],
    summary: 'Cloud availability; set offline by the last will. Not for apps (they read `live/…` and `u/…` only).',
  },
  'gateway-state': {
    pattern: 'b/{branch}/gw/{gateway}/state',
    qos: 1,
    retained: true,
    from: ['gateway'],
    to: ['cloud'],
    brokers: ['cloud'],
    summary:
      'Birth (version, queue by lane, oldest age, readers) and last will (offline), each with its connection ' +
      'number `conn`; order them with `gatewayStateSupersedes`.',
  },
  'gateway-uplink': {
    pattern: 'b/{branch}/gw/{gateway}/up/{lane}',
    qos: 1,
    retained: false,
    from: ['gateway'],
    to: ['cloud'],
    brokers: ['cloud'],
    summary: 'A batch of queued records of one lane; answered on `ack` after the MongoDB write.',
  },
  'gateway-ack': {
    pattern: 'b/{branch}/gw/{gateway}/ack',
    qos: 1,
    retained: false,
    from: ['cloud'],
    to: ['gateway'],
    brokers: ['cloud'],
    summary: 'Which records of a batch are durable and which were rejected; only then may the gateway delete them.',
  },
  'gateway-request': {
    pattern: 'b/{branch}/gw/{gateway}/req/{name}',
    qos: 1,
    retained: false,
    from: ['gateway'],
    to: ['cloud'],
    brokers: ['cloud'],
    summary: 'An online decision the gateway asks for (check-in, check-out, link, unlink).',
  },
  'gateway-request-response': {
    pattern: 'b/{branch}/gw/{gateway}/req/{name}/res',
    qos: 1,
    retained: false,
    from: ['cloud'],
    to: ['gateway'],
    brokers: ['cloud'],
    summary: 'The decision, or an error.',
  },
  'gateway-command': {
    pattern: 'b/{branch}/gw/{gateway}/cmd/{name}',
    qos: 1,
    retained: false,
    from: ['cloud'],
    to: ['gateway'],
    brokers: ['cloud'],
    summary: 'Configuration push, allow-list, rebirth.',
  },
  'gateway-command-response': {
    pattern: 'b/{branch}/gw/{gateway}/cmd/{name}/res',
    qos: 1,
    retained: false,
    from: ['gateway'],
    to: ['cloud'],
    brokers: ['cloud'],
    summary: 'Command outcome.',
  },
  'machine-meta': {
    pattern: 'b/{branch}/m/{machine}/meta',
    qos: 1,
    retained: true,
    from: ['machine'],
    to: ['gateway'],
    brokers: ['gateway'],
    summary: 'Self-description: type, model, firmware, supported fields and ranges. Queued in the records lane.',
  },
  'machine-status': {
    pattern: 'b/{branch}/m/{machine}/status',
    qos: 1,
    retained: true,
    from: ['machine'],
    to: ['gateway'],
    brokers: ['gateway'],
    summary: 'Availability; `offline` is also the last will. Queued in the records lane.',
  },
  'machine-telemetry': {
    pattern: 'b/{branch}/m/{machine}/telemetry',
    qos: 0,
    retained: false,
    from: ['machine'],
    to: ['gateway'],
    brokers: ['gateway'],
    summary: 'One sample, FTMS-style fields per machine type. Queued in the telemetry lane.',
  },
  'machine-workout': {
    pattern: 'b/{branch}/m/{machine}/workout',
    qos: 1,
    retained: false,
    from: ['machine'],
    to: ['gateway'],
    brokers: ['gateway'],
    summary: 'A finished set, interval or block. Queued in the records lane.',
  },
  'machine-event': {
    pattern: 'b/{branch}/m/{machine}/event',
    qos: 1,
    retained: false,
    from: ['machine'],
    to: ['gateway'],
    brokers: ['gateway'],
    summary: 'Fault, maintenance, credential presented at the machine, FTMS machine state. Queued in the records lane.',
  },
  'machine-command': {
    pattern: 'b/{branch}/m/{machine}/cmd/{name}',
    qos: 1,
    retained: false,
    from: ['cloud', 'gateway'],
    to: ['gateway', 'machine'],
    brokers: ['cloud', 'gateway'],
    summary:
      'link, unlink, display, config, rebirth. The cloud’s commands reach the machine through its gateway, which ' +
      'subscribes on the cloud broker and republishes them on its own; the gateway may also command directly.',
  },
  'machine-command-response': {
    pattern: 'b/{branch}/m/{machine}/cmd/{name}/res',
    qos: 1,
    retained: false,
    from: ['machine'],
    to: ['gateway', 'cloud'],
    brokers: ['gateway', 'cloud'],
    summary: 'Command outcome; the gateway relays it to the cloud broker unchanged.',
  },
  'access-scan': {
    pattern: 'b/{branch}/access/{reader}/scan',
    qos: 1,
    retained: false,
    from: ['gateway'],
    to: ['cloud'],
    brokers: ['cloud'],
    summary: 'An NFC/QR scan and the decision taken, as it happens; the durable copy travels in the access lane.',
  },
  'live-machine': {
    pattern: 'b/{branch}/live/machines/{machine}',
    qos: 1,
    retained: true,
    from: ['cloud'],
    to: ['app'],
    brokers: ['cloud'],
    summary: 'Machine availability for apps (read-only for apps).',
  },
  'user-live': {
    pattern: 'u/{user}/live/{topic}',
    qos: 0,
    retained: false,
    from: ['cloud'],
    to: ['app'],
    brokers: ['cloud'],
    summary: 'The user’s live workout and notifications (only that user may subscribe).',
  },
};

/** The policy of a topic, or undefined if it is not in the tree. */
export function policyOf(topic: string): TopicPolicy | undefined {
  const parsed = parseTopic(topic);
  return parsed && TOPIC_POLICY[parsed.kind];
}
