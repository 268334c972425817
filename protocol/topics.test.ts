import { expect } from 'chai';
import { EXAMPLE_IDS, EXAMPLE_TOPICS } from './examples.ts';
import { asBranchId, asUserId } from './ids.ts';
import {
  GATEWAY_COMMAND_NAMES,
  LANES,
  MACHINE_COMMAND_NAMES,
  MACHINE_UPLINK_KINDS,
  REQUEST_NAMES,
  TOPIC_KINDS,
  TOPIC_POLICY,
  USER_LIVE_TOPICS,
  buildTopic,
  filterWithin,
  filterWithinAny,
  filters,
  isValidTopicFilter,
  isValidTopicName,
  parseMachineUplink,
  parseTopic,
  policyOf,
  topicMatches,
  topics,
} from './topics.ts';
import type { ParsedTopic } from './topics.ts';

const { branch, gateway, rower, doorIn, member } = EXAMPLE_IDS;

/** Every topic the tree can carry on the example ids: every kind with every name, lane and user topic. */
function everyTopic(): ParsedTopic[] {
  const all: ParsedTopic[] = [{ kind: 'cloud-state' }];
  const onGateway = { branch, gateway };
  const onMachine = { branch, machine: rower };
  all.push({ kind: 'gateway-state', ...onGateway }, { kind: 'gateway-ack', ...onGateway });
  for (const lane of LANES) all.push({ kind: 'gateway-uplink', ...onGateway, lane });
  for (const name of REQUEST_NAMES) {
    all.push({ kind: 'gateway-request', ...onGateway, name }, { kind: 'gateway-request-response', ...onGateway, name });
  }
  for (const name of GATEWAY_COMMAND_NAMES) {
    all.push({ kind: 'gateway-command', ...onGateway, name }, { kind: 'gateway-command-response', ...onGateway, name });
  }
  for (const uplink of MACHINE_UPLINK_KINDS) all.push({ kind: `machine-${uplink}`, ...onMachine });
  for (const name of MACHINE_COMMAND_NAMES) {
    all.push({ kind: 'machine-command', ...onMachine, name }, { kind: 'machine-command-response', ...onMachine, name });
  }
  all.push({ kind: 'access-scan', branch, reader: doorIn }, { kind: 'live-machine', ...onMachine });
  for (const topic of USER_LIVE_TOPICS) all.push({ kind: 'user-live', user: member, topic });
  return all;
}

describe('protocol/topics', () => {
  describe('builders', () => {
    it('build the topics of the architecture tree', () => {
      expect(topics.cloudState()).to.equal('nxg/v1/sys/cloud/state');
      expect(topics.gatewayState(branch, gateway)).to.equal('nxg/v1/b/demo/gw/gw-demo-1/state');
      expect(topics.gatewayUplink(branch, gateway, 'access')).to.equal('nxg/v1/b/demo/gw/gw-demo-1/up/access');
      expect(topics.gatewayAck(branch, gateway)).to.equal('nxg/v1/b/demo/gw/gw-demo-1/ack');
      expect(topics.gatewayRequest(branch, gateway, 'check-in')).to.equal('nxg/v1/b/demo/gw/gw-demo-1/req/check-in');
      expect(topics.gatewayRequestResponse(branch, gateway, 'link')).to.equal(
        'nxg/v1/b/demo/gw/gw-demo-1/req/link/res',
      );
      expect(topics.gatewayCommand(branch, gateway, 'allow-list')).to.equal(
        'nxg/v1/b/demo/gw/gw-demo-1/cmd/allow-list',
      );
      expect(topics.gatewayCommandResponse(branch, gateway, 'config')).to.equal(
        'nxg/v1/b/demo/gw/gw-demo-1/cmd/config/res',
      );
      expect(topics.machineMeta(branch, rower)).to.equal('nxg/v1/b/demo/m/row-03/meta');
      expect(topics.machineStatus(branch, rower)).to.equal('nxg/v1/b/demo/m/row-03/status');
      expect(topics.machineTelemetry(branch, rower)).to.equal('nxg/v1/b/demo/m/row-03/telemetry');
      expect(topics.machineWorkout(branch, rower)).to.equal('nxg/v1/b/demo/m/row-03/workout');
      expect(topics.machineEvent(branch, rower)).to.equal('nxg/v1/b/demo/m/row-03/event');
      expect(topics.machineUplink(branch, rower, 'event')).to.equal('nxg/v1/b/demo/m/row-03/event');
      expect(topics.machineCommand(branch, rower, 'display')).to.equal('nxg/v1/b/demo/m/row-03/cmd/display');
      expect(topics.machineCommandResponse(branch, rower, 'rebirth')).to.equal(
        'nxg/v1/b/demo/m/row-03/cmd/rebirth/res',
      );
      expect(topics.accessScan(branch, doorIn)).to.equal('nxg/v1/b/demo/access/door-in/scan');
      expect(topics.liveMachine(branch, rower)).to.equal('nxg/v1/b/demo/live/machines/row-03');
      expect(topics.userLive(member, 'notification')).to.equal('nxg/v1/u/665f1c2ab3d4e5f601234567/live/notification');
    });
  });

  describe('parseTopic', () => {
    it('round-trips every topic of the tree through buildTopic', () => {
      const all = everyTopic();
      expect(all).to.have.length(39);
      for (const parsed of all) {
        const topic = buildTopic(parsed);
        expect(parseTopic(topic), topic).to.deep.equal(parsed);
      }
    });

    it('covers every topic kind, and each kind matches its policy pattern', () => {
      expect(new Set(everyTopic().map((t) => t.kind))).to.deep.equal(new Set(TOPIC_KINDS));
      for (const kind of TOPIC_KINDS) {
        const example = EXAMPLE_TOPICS[kind];
        const values: Record<string, string> = { ...(example as Record<string, string>) };
        const fromPattern = `nxg/v1/${TOPIC_POLICY[kind].pattern.replace(/\{(\w+)\}/g, (_, key: string) => values[key] ?? '?')}`;
        expect(buildTopic(example), kind).to.equal(fromPattern);
        expect(parseTopic(fromPattern), kind).to.deep.equal(example);
      }
    });

    const refused: [string, string][] = [
      ['empty', ''],
      ['the root alone', 'nxg/v1'],
      ['the root with a slash', 'nxg/v1/'],
      ['another major version', 'nxg/v2/sys/cloud/state'],
      ['a v1 look-alike', 'nxg/v10/sys/cloud/state'],
      ['a leading slash', '/nxg/v1/sys/cloud/state'],
      ['upper-case root', 'NXG/v1/sys/cloud/state'],
      ['an extra level', 'nxg/v1/sys/cloud/state/x'],
      ['a missing level', 'nxg/v1/sys/cloud'],
      ['a trailing slash', 'nxg/v1/b/demo/m/row-03/telemetry/'],
      ['an unknown area', 'nxg/v1/b/demo/x/row-03/telemetry'],
      ['an upper-case id', 'nxg/v1/b/Demo/gw/gw-demo-1/state'],
      ['a + wildcard as id', 'nxg/v1/b/+/gw/gw-demo-1/state'],
      ['a + inside an id', 'nxg/v1/b/de+mo/gw/gw-demo-1/state'],
      ['a # wildcard', 'nxg/v1/b/demo/gw/#'],
      ['a # inside an id', 'nxg/v1/b/demo/m/row#3/status'],
      ['a $ id', 'nxg/v1/b/$SYS/gw/gw-demo-1/state'],
      ['an id starting with -', 'nxg/v1/b/-demo/gw/gw-demo-1/state'],
      ['an empty id', 'nxg/v1/b//gw/gw-demo-1/state'],
      ['a 64-character id', `nxg/v1/b/${'a'.repeat(64)}/gw/gw-demo-1/state`],
      ['a non-ASCII id', 'nxg/v1/b/démo/gw/gw-demo-1/state'],
      ['a NUL in an id', 'nxg/v1/b/de\u0000mo/gw/gw-demo-1/state'],
      ['an unknown lane', 'nxg/v1/b/demo/gw/gw-demo-1/up/bulk'],
      ['an uplink without lane', 'nxg/v1/b/demo/gw/gw-demo-1/up'],
      ['an unknown request', 'nxg/v1/b/demo/gw/gw-demo-1/req/open-door'],
      ['a request response suffix typo', 'nxg/v1/b/demo/gw/gw-demo-1/req/check-in/resp'],
      ['a machine command as gateway command', 'nxg/v1/b/demo/gw/gw-demo-1/cmd/display'],
      ['a gateway command as machine command', 'nxg/v1/b/demo/m/row-03/cmd/allow-list'],
      ['a level after a response', 'nxg/v1/b/demo/m/row-03/cmd/link/res/x'],
      ['an unknown machine topic', 'nxg/v1/b/demo/m/row-03/telemetry2'],
      ['a scan without its suffix', 'nxg/v1/b/demo/access/door-in'],
      ['a live topic without machines', 'nxg/v1/b/demo/live/machine/row-03'],
      ['a live topic with an extra level', 'nxg/v1/b/demo/live/machines/row-03/x'],
      ['an unknown user topic', 'nxg/v1/u/665f1c2ab3d4e5f601234567/live/other'],
      ['a user topic without live', 'nxg/v1/u/665f1c2ab3d4e5f601234567/workout'],
      ['101 levels', `nxg/v1/${Array.from({ length: 99 }, () => 'a').join('/')}`],
      ['many empty levels', `nxg/v1/${'/'.repeat(300)}`],
      ['a 70 kB topic', `nxg/v1/b/demo/m/${'a'.repeat(70_000)}/status`],
    ];
    for (const [what, topic] of refused) {
      it(`refuses ${what}`, () => {
        expect(parseTopic(topic)).to.equal(undefined);
      });
    }

    it('refuses non-strings without throwing', () => {
      expect(parseTopic(42 as unknown as string)).to.equal(undefined);
      expect(parseTopic(undefined as unknown as string)).to.equal(undefined);
    });
  });

  describe('parseMachineUplink', () => {
    it('returns branch, machine and kind for machine data topics only', () => {
      expect(parseMachineUplink('nxg/v1/b/demo/m/row-03/workout')).to.deep.equal({
        branch,
        machine: rower,
        kind: 'workout',
      });
      expect(parseMachineUplink('nxg/v1/b/demo/m/row-03/cmd/link')).to.equal(undefined);
      expect(parseMachineUplink('nxg/v1/b/demo/gw/gw-demo-1/state')).to.equal(undefined);
      expect(parseMachineUplink('garbage')).to.equal(undefined);
    });
  });

  describe('TOPIC_POLICY', () => {
    it('states QoS, retain and direction for every kind as in the architecture', () => {
      const retained = TOPIC_KINDS.filter((kind) => TOPIC_POLICY[kind].retained);
      expect(retained).to.deep.equal([
        'cloud-state',
        'gateway-state',
        'machine-meta',
        'machine-status',
        'live-machine',
      ]);
      const qos0 = TOPIC_KINDS.filter((kind) => TOPIC_POLICY[kind].qos === 0);
      expect(qos0).to.deep.equal(['machine-telemetry', 'user-live']);
      expect(TOPIC_POLICY['machine-command'].from).to.deep.equal(['cloud', 'gateway']);
      expect(TOPIC_POLICY['gateway-ack'].from).to.deep.equal(['cloud']);
    });

    it('lists the gateway among the receivers of machine commands, which it relays', () => {
      expect(TOPIC_POLICY['machine-command'].to).to.deep.equal(['gateway', 'machine']);
      expect(TOPIC_POLICY['machine-command'].brokers).to.deep.equal(['cloud', 'gateway']);
    });

    it('lets apps read only live/… and their own u/{user}/… topics', () => {
      const forApps = TOPIC_KINDS.filter((kind) => TOPIC_POLICY[kind].to.includes('app'));
      expect(forApps).to.deep.equal(['live-machine', 'user-live']);
      for (const kind of forApps) expect(TOPIC_POLICY[kind].pattern).to.match(/^(b\/\{branch\}\/live\/|u\/\{user\}\/)/);
      expect(TOPIC_POLICY['cloud-state'].to).to.deep.equal(['gateway']);
      for (const kind of TOPIC_KINDS) expect(TOPIC_POLICY[kind].from, kind).not.to.include('app');
    });

    it('finds the policy of a topic string', () => {
      expect(policyOf('nxg/v1/b/demo/m/row-03/telemetry')?.qos).to.equal(0);
      expect(policyOf('nxg/v1/b/demo/m/row-03/nope')).to.equal(undefined);
    });
  });

  describe('filters', () => {
    it('are all valid MQTT filters', () => {
      const built = [
        filters.everything(),
        ...filters.observer(branch),
        filters.gateway(branch, gateway),
        filters.gatewayCommands(branch, gateway),
        filters.gatewayRequestResponses(branch, gateway),
        filters.machine(branch, rower),
        filters.machineCommands(branch, rower),
        filters.branchMachines(branch),
        filters.branchMachineCommands(branch),
        filters.branchMachineCommandResponses(branch),
        filters.branchAccessScans(branch),
        filters.branchLive(branch),
        filters.liveMachines(branch),
        filters.userLive(member),
        filters.allGatewayStates(),
        filters.allGatewayUplinks(),
        filters.allGatewayRequests(),
        filters.allGatewayCommandResponses(),
        filters.allMachineCommandResponses(),
        filters.allAccessScans(),
      ];
      expect(built).to.have.length(Object.keys(filters).length - 1 + filters.observer(branch).length);
      for (const filter of built) expect(isValidTopicFilter(filter), filter).to.equal(true);
    });

    it('match the topics they are meant for and no others', () => {
      expect(topicMatches(filters.gatewayCommands(branch, gateway), topics.gatewayCommand(branch, gateway, 'config')))
        .to.be.true;
      expect(
        topicMatches(
          filters.gatewayCommands(branch, gateway),
          topics.gatewayCommandResponse(branch, gateway, 'config'),
        ),
      ).to.be.false;
      expect(topicMatches(filters.machineCommands(branch, rower), topics.machineCommand(branch, rower, 'link'))).to.be
        .true;
      expect(topicMatches(filters.branchMachines(branch), topics.machineTelemetry(branch, rower))).to.be.true;
      expect(topicMatches(filters.allGatewayUplinks(), topics.gatewayUplink(branch, gateway, 'telemetry'))).to.be.true;
      expect(topicMatches(filters.allGatewayUplinks(), topics.gatewayAck(branch, gateway))).to.be.false;
      expect(topicMatches(filters.liveMachines(branch), topics.liveMachine(branch, rower))).to.be.true;
      expect(topicMatches(filters.userLive(member), topics.userLive(member, 'workout'))).to.be.true;
      const other = asUserId('665f1c2ab3d4e5f601234568');
      expect(topicMatches(filters.userLive(member), topics.userLive(other, 'workout'))).to.be.false;
    });
  });

  describe('filters.observer', () => {
    const observer = filters.observer(branch);
    const reads = (topic: string) => observer.some((filter) => topicMatches(filter, topic));
    const otherBranch = asBranchId('other');

    it('lets an observer read availability, gateway state and the machine data topics of its branch', () => {
      expect(reads(topics.liveMachine(branch, rower))).to.be.true;
      expect(reads(topics.gatewayState(branch, gateway))).to.be.true;
      for (const kind of MACHINE_UPLINK_KINDS.filter((k) => k !== 'event'))
        expect(reads(topics.machineUplink(branch, rower, kind)), kind).to.be.true;
    });

    it('keeps machine events (QR tokens and card UIDs presented at a machine) away from observers', () => {
      expect(reads(topics.machineUplink(branch, rower, 'event'))).to.be.false;
    });

    it('keeps door scans, requests, commands, batches and acks (member credentials) away from observers', () => {
      const hidden = everyTopic()
        .filter((t) => t.kind !== 'cloud-state' && t.kind !== 'user-live')
        .map(buildTopic)
        .filter((topic) => !reads(topic));
      const expectedHidden = everyTopic()
        .filter((t) =>
          [
            'access-scan',
            'gateway-request',
            'gateway-request-response',
            'gateway-command',
            'gateway-command-response',
            'machine-command',
            'machine-command-response',
            'gateway-uplink',
            'gateway-ack',
            'machine-event',
          ].includes(t.kind),
        )
        .map(buildTopic);
      expect(hidden).to.have.members(expectedHidden);
      expect(reads(topics.accessScan(branch, doorIn))).to.be.false;
      expect(reads(topics.gatewayRequest(branch, gateway, 'check-in'))).to.be.false;
      expect(reads(topics.gatewayCommand(branch, gateway, 'allow-list'))).to.be.false;
      expect(reads(topics.machineCommand(branch, rower, 'link'))).to.be.false;
      expect(reads(topics.machineCommandResponse(branch, rower, 'link'))).to.be.false;
    });

    it('reads nothing of another branch, nor user topics', () => {
      expect(reads(topics.liveMachine(otherBranch, rower))).to.be.false;
      expect(reads(topics.machineTelemetry(otherBranch, rower))).to.be.false;
      expect(reads(topics.userLive(member, 'workout'))).to.be.false;
    });

    it('grants, through filterWithinAny, exactly the subscriptions within the list', () => {
      expect(filterWithinAny(filters.liveMachines(branch), observer)).to.be.true;
      expect(filterWithinAny(topics.machineTelemetry(branch, rower), observer)).to.be.true;
      expect(filterWithinAny('nxg/v1/b/demo/m/+/status', observer)).to.be.true;
      expect(filterWithinAny('nxg/v1/b/demo/#', observer)).to.be.false;
      expect(filterWithinAny('nxg/v1/b/demo/m/+/#', observer)).to.be.false;
      expect(filterWithinAny('nxg/v1/b/demo/m/+/+', observer)).to.be.false;
      expect(filterWithinAny('nxg/v1/b/demo/gw/+/#', observer)).to.be.false;
      expect(filterWithinAny(filters.branchAccessScans(branch), observer)).to.be.false;
      expect(filterWithinAny(filters.branchMachineCommands(branch), observer)).to.be.false;
      expect(filterWithinAny('nxg/v1/b/demo/live/#', [])).to.be.false;
    });
  });

  describe('topicMatches', () => {
    it('follows MQTT wildcard semantics', () => {
      expect(topicMatches('a/+/c', 'a/b/c')).to.be.true;
      expect(topicMatches('a/+/c', 'a/b/d')).to.be.false;
      expect(topicMatches('a/+', 'a/b/c')).to.be.false;
      expect(topicMatches('a/#', 'a')).to.be.true;
      expect(topicMatches('a/#', 'a/b/c')).to.be.true;
      expect(topicMatches('#', 'a/b')).to.be.true;
      expect(topicMatches('a/b', 'a/b/c')).to.be.false;
      expect(topicMatches('a/b/c', 'a/b')).to.be.false;
    });

    it('matches no "topic" that contains a wildcard: that is a filter, not a topic name', () => {
      expect(topicMatches('a/+', 'a/#')).to.be.false;
      expect(topicMatches('a/+', 'a/+')).to.be.false;
      expect(topicMatches('#', 'a/b+')).to.be.false;
      expect(topicMatches('nxg/v1/b/demo/gw/gw-demo-1/#', 'nxg/v1/b/demo/gw/gw-demo-1/#')).to.be.false;
      expect(topicMatches('a/#', 'a/b')).to.be.true;
    });

    it('never matches $-topics with a leading wildcard [MQTT-4.7.2-1]', () => {
      expect(topicMatches('#', '$SYS/broker/load')).to.be.false;
      expect(topicMatches('+/broker/load', '$SYS/broker/load')).to.be.false;
      expect(topicMatches('$SYS/#', '$SYS/broker/load')).to.be.true;
    });
  });

  describe('filterWithin', () => {
    const branchLive = filters.branchLive(branch);

    it('accepts filters inside the allowed subtree', () => {
      expect(filterWithin(filters.liveMachines(branch), branchLive)).to.be.true;
      expect(filterWithin(topics.liveMachine(branch, rower), branchLive)).to.be.true;
      expect(filterWithin(branchLive, branchLive)).to.be.true;
      expect(filterWithin(branchLive, filters.everything())).to.be.true;
      expect(filterWithin('nxg/v1/b/demo/live', branchLive)).to.be.true;
      expect(filterWithin('a/b/#', 'a/+/#')).to.be.true;
      expect(filterWithin('a/+/c', 'a/+/+')).to.be.true;
    });

    it('refuses filters that reach beyond it (the ACL question, not "does it match")', () => {
      expect(filterWithin('#', branchLive)).to.be.false;
      expect(filterWithin('nxg/v1/#', branchLive)).to.be.false;
      expect(filterWithin('nxg/v1/b/+/live/#', branchLive)).to.be.false;
      expect(filterWithin(filters.branchLive(asBranchId('other')), branchLive)).to.be.false;
      expect(filterWithin('nxg/v1/u/+/live/#', filters.userLive(member))).to.be.false;
      expect(filterWithin('a/#', 'a/+/#')).to.be.false;
      expect(filterWithin('a/+', 'a/b')).to.be.false;
      expect(filterWithin('a', 'a/+')).to.be.false;
      expect(filterWithin('a/b/c', 'a/b')).to.be.false;
    });

    it('keeps $-topics out of wildcard grants and refuses invalid filters', () => {
      expect(filterWithin('$SYS/#', '#')).to.be.false;
      expect(filterWithin('$SYS/x', '+/x')).to.be.false;
      expect(filterWithin('a/#/b', '#')).to.be.false;
      expect(filterWithin('a/b', 'a/#/b')).to.be.false;
      expect(filterWithin('', '#')).to.be.false;
    });
  });

  describe('isValidTopicFilter and isValidTopicName', () => {
    it('apply the MQTT rules for wildcards, NUL, length and levels', () => {
      expect(isValidTopicFilter('#')).to.be.true;
      expect(isValidTopicFilter('a/+/c/#')).to.be.true;
      expect(isValidTopicFilter('a/#/c')).to.be.false;
      expect(isValidTopicFilter('a/b#')).to.be.false;
      expect(isValidTopicFilter('a/b+/c')).to.be.false;
      expect(isValidTopicFilter('')).to.be.false;
      expect(isValidTopicFilter('a\u0000b')).to.be.false;
      expect(isValidTopicFilter(Array.from({ length: 100 }, () => 'a').join('/'))).to.be.true;
      expect(isValidTopicFilter(Array.from({ length: 101 }, () => 'a').join('/'))).to.be.false;
      expect(isValidTopicFilter('a'.repeat(65_536))).to.be.false;
      expect(isValidTopicFilter('é'.repeat(40_000))).to.be.false;

      expect(isValidTopicName('nxg/v1/b/demo/live/machines/row-03')).to.be.true;
      expect(isValidTopicName('a\u0000b')).to.be.false;
      expect(isValidTopicName('nxg/v1/b/+/live')).to.be.false;
      expect(isValidTopicName('nxg/v1/#')).to.be.false;
      expect(isValidTopicName(Array.from({ length: 101 }, () => 'a').join('/'))).to.be.false;
    });

    it('refuse lone UTF-16 surrogates, which have no UTF-8 form [MQTT-1.5.3-1], and accept paired ones', () => {
      for (const lone of ['a/\ud800', 'a/\udc00/b', '\ud83d', 'x\udfff']) {
        expect(isValidTopicName(lone), JSON.stringify(lone)).to.be.false;
        expect(isValidTopicFilter(lone), JSON.stringify(lone)).to.be.false;
      }
      expect(isValidTopicName('a/\ud83d\ude00')).to.be.true;
      expect(isValidTopicFilter('a/\ud83d\ude00/#')).to.be.true;
      expect(filterWithin('a/\ud800', '#')).to.be.false;
    });
  });
});
