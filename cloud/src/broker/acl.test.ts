import { expect } from 'chai';
import fc from 'fast-check';
import { asBranchId, asUserId } from '../../../protocol/ids.ts';
import { TOPIC_POLICY, filterWithin, topicMatches } from '../../../protocol/topics.ts';
import {
  GATEWAY_PUBLISH_KINDS,
  GATEWAY_SUBSCRIBE_KINDS,
  checkPublish,
  checkSubscribe,
  grantsFor,
  mayReceive,
  policyFilter,
  topicClass,
  type Principal,
} from './acl.ts';

const gateway: Principal = { role: 'gateway', id: 'gw-a', branch: asBranchId('demo') };
const observer: Principal = { role: 'observer', id: 'ops', branches: [asBranchId('demo')] };
const app: Principal = { role: 'app', id: 'u.user-a', user: asUserId('user-a'), branches: [asBranchId('demo')] };

describe('broker ACL (derived from protocol/topics.ts)', () => {
  it('derives what a gateway publishes and receives on the cloud broker from TOPIC_POLICY', () => {
    expect([...GATEWAY_PUBLISH_KINDS].sort()).to.deep.equal(
      [
        'access-scan',
        'gateway-command-response',
        'gateway-request',
        'gateway-state',
        'gateway-uplink',
        'machine-command-response',
      ].sort(),
    );
    expect([...GATEWAY_SUBSCRIBE_KINDS].sort()).to.deep.equal(
      ['cloud-state', 'gateway-ack', 'gateway-command', 'gateway-request-response', 'machine-command'].sort(),
    );
    for (const kind of GATEWAY_PUBLISH_KINDS) expect(TOPIC_POLICY[kind].brokers).to.include('cloud');
  });

  it('turns policy patterns into scoped filters', () => {
    expect(policyFilter('gateway-uplink', { branch: 'demo', gateway: 'gw-a' })).to.equal('nxg/v1/b/demo/gw/gw-a/up/+');
    expect(policyFilter('machine-command', { branch: 'demo', gateway: 'gw-a' })).to.equal('nxg/v1/b/demo/m/+/cmd/+');
    expect(policyFilter('cloud-state', {})).to.equal('nxg/v1/sys/cloud/state');
    expect(policyFilter('gateway-state', { branch: 'demo' })).to.equal(undefined);
    expect(policyFilter('user-live', { branch: 'demo', gateway: 'gw-a' })).to.equal(undefined);
  });

  it('grants a gateway exactly its own subtree pieces and its branch relays', () => {
    const g = grantsFor(gateway);
    expect(g.publish).to.have.members([
      'nxg/v1/b/demo/gw/gw-a/state',
      'nxg/v1/b/demo/gw/gw-a/up/+',
      'nxg/v1/b/demo/gw/gw-a/req/+',
      'nxg/v1/b/demo/gw/gw-a/cmd/+/res',
      'nxg/v1/b/demo/m/+/cmd/+/res',
      'nxg/v1/b/demo/access/+/scan',
    ]);
    expect(g.subscribe).to.have.members([
      'nxg/v1/sys/cloud/state',
      'nxg/v1/b/demo/gw/gw-a/ack',
      'nxg/v1/b/demo/gw/gw-a/req/+/res',
      'nxg/v1/b/demo/gw/gw-a/cmd/+',
      'nxg/v1/b/demo/m/+/cmd/+',
    ]);
  });

  it('refuses subscriptions that match allowed topics but reach beyond them (containment, not matching)', () => {
    const g = grantsFor(gateway);
    for (const f of ['#', '+/#', 'nxg/#', 'nxg/v1/b/+/#', 'nxg/v1/b/demo/#', 'nxg/v1/b/demo/gw/gw-a/#', '$SYS/#']) {
      expect(checkSubscribe(g, f), f).to.equal('out-of-scope');
    }
    expect(checkSubscribe(g, 'nxg/v1/b/demo/gw/gw-a/cmd/config')).to.equal(undefined);
    expect(checkSubscribe(g, 'nxg/v1/b/demo/m/tm-01/cmd/+')).to.equal(undefined);
    expect(checkSubscribe(g, 'a/#/b')).to.equal('invalid-filter');
    expect(checkSubscribe(g, '')).to.equal('invalid-filter');
  });

  it('never lets a granted filter reach a topic outside the grants (property)', () => {
    const level = fc.constantFrom(
      'nxg',
      'v1',
      'b',
      'demo',
      'other',
      'gw',
      'gw-a',
      'gw-b',
      'm',
      'tm-01',
      'cmd',
      'res',
      'up',
      'ack',
      'req',
      'state',
      'live',
      'machines',
      'u',
      'user-a',
      'sys',
      'cloud',
      'access',
      'scan',
      'link',
      '$SYS',
    );
    const filterLevel = fc.oneof(level, fc.constant('+'));
    const filterArb = fc
      .tuple(fc.array(filterLevel, { minLength: 1, maxLength: 8 }), fc.boolean())
      .map(([levels, hash]) => (hash ? [...levels, '#'] : levels).join('/'));
    const topicArb = fc.array(level, { minLength: 1, maxLength: 9 }).map((l) => l.join('/'));
    for (const principal of [gateway, observer, app]) {
      const g = grantsFor(principal);
      // Near misses: a grant with some levels replaced, cut short or extended, so many filters are allowed.
      const nearGrant = fc
        .tuple(fc.constantFrom(...g.subscribe), fc.array(fc.tuple(fc.nat(9), filterLevel), { maxLength: 3 }), fc.nat(3))
        .map(([grant, swaps, tail]) => {
          const levels = grant.split('/');
          for (const [i, l] of swaps) if (i < levels.length) levels[i] = l;
          if (tail === 1) levels.push('#');
          if (tail === 2) levels.pop();
          return levels.join('/');
        });
      const topicFrom = (filter: string) =>
        fc.array(level, { minLength: 1, maxLength: 3 }).map((fill) =>
          filter
            .split('/')
            .flatMap((l, i) => (l === '+' ? [fill[i % fill.length]!] : l === '#' ? fill : [l]))
            .join('/'),
        );
      let allowedSeen = 0;
      fc.assert(
        fc.property(
          fc
            .oneof(filterArb, nearGrant)
            .chain((filter) => fc.tuple(fc.constant(filter), fc.oneof(topicArb, topicFrom(filter)))),
          ([filter, topic]) => {
            if (checkSubscribe(g, filter) === undefined) {
              allowedSeen += 1;
              if (topicMatches(filter, topic)) {
                expect(mayReceive(g, topic), `${principal.role}: ${filter} ⊇ ${topic}`).to.equal(true);
              }
            }
          },
        ),
        { numRuns: 3000 },
      );
      expect(allowedSeen, 'the property saw allowed filters').to.be.above(100);
    }
  });

  it('keeps each grant inside the principal’s own branch (or its own user, or the cloud state)', () => {
    for (const [principal, roots] of [
      [gateway, ['nxg/v1/b/demo/#', 'nxg/v1/sys/cloud/state']],
      [observer, ['nxg/v1/b/demo/#']],
      [app, ['nxg/v1/b/demo/live/#', 'nxg/v1/u/user-a/#']],
    ] as const) {
      const g = grantsFor(principal);
      for (const f of [...g.subscribe, ...g.publish]) {
        expect(
          roots.some((root) => filterWithin(f, root)),
          f,
        ).to.equal(true);
      }
    }
  });

  it('checks publishes: tree, scope, QoS and retain', () => {
    const g = grantsFor(gateway);
    expect(checkPublish(g, { topic: 'nxg/v1/b/demo/gw/gw-a/up/records', qos: 1 })).to.equal(undefined);
    expect(checkPublish(g, { topic: 'nxg/v1/b/demo/gw/gw-a/state', qos: 1, retain: true })).to.equal(undefined);
    expect(checkPublish(g, { topic: 'nxg/v1/b/demo/gw/gw-a/up/records', qos: 2 })).to.equal('qos2');
    expect(checkPublish(g, { topic: 'nxg/v1/b/demo/gw/gw-a/up/records', qos: 1, retain: true })).to.equal('retain');
    expect(checkPublish(g, { topic: 'nxg/v1/b/demo/gw/gw-a/up/bogus', qos: 1 })).to.equal('not-in-tree');
    expect(checkPublish(g, { topic: 'nxg/v1/b/demo/gw/gw-b/up/records', qos: 1 })).to.equal('out-of-scope');
    expect(checkPublish(g, { topic: '$SYS/broker/x', qos: 0 })).to.equal('not-in-tree');
    expect(checkPublish(grantsFor(observer), { topic: 'nxg/v1/b/demo/gw/gw-a/state', qos: 0 })).to.equal('read-only');
    expect(checkPublish(grantsFor(app), { topic: 'nxg/v1/b/demo/m/tm-01/cmd/link', qos: 1 })).to.equal('read-only');
  });

  it('classifies topics for metrics by kind', () => {
    expect(topicClass('nxg/v1/b/demo/gw/gw-a/up/records')).to.equal('gateway-uplink');
    expect(topicClass('$SYS/x')).to.equal('sys');
    expect(topicClass('anything/else')).to.equal('other');
  });
});
