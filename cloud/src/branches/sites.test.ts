/**
 * Branches, equipment, gateways and access against a real cloud (MongoDB-compatible server, Redis, Aedes): roles
 * scoped to branches, gateway enrolment with one-time tokens, the signed configuration and allow-list as a gateway
 * receives them over MQTT, NFC cards and QR tokens through the credential resolver.
 */
import { createHash, randomBytes } from 'node:crypto';
import { expect } from 'chai';
import type { MqttClient } from 'mqtt';
import * as v from 'valibot';
import { asBranchId, asGatewayId, type BranchId } from '../../../protocol/ids.ts';
import { JWS_TYPES, publicKeyFromJwk, verifyJws } from '../../../protocol/jws.ts';
import {
  AllowListCommand,
  AllowListDocument,
  GatewayConfigCommand,
  GatewayConfigDocument,
  MAX_ALLOW_LIST_PART_MEMBERS,
  MAX_GATEWAY_MACHINES,
} from '../../../protocol/messages/command.ts';
import { GatewayEnrolmentResponse } from '../../../protocol/messages/enrolment.ts';
import { PROTOCOL_MINOR } from '../../../protocol/version.ts';
import { filters, topics } from '../../../protocol/topics.ts';
import { systemClock } from '../../../tools/runtime/clock.ts';
import { createLogger } from '../../../tools/runtime/logger.ts';
import { createTestAccount, startTestCloud, type TestAccount, type TestCloud } from '../../../test/helpers/accounts.ts';
import { eventually } from '../../../test/helpers/eventually.ts';
import { call } from '../../../test/helpers/users-api.ts';
import { createIdentityStore } from '../broker/identities.ts';
import { addGateway, addMachine } from '../broker/provisioning.ts';
import { connectClient } from '../broker/testing.ts';
import { qrNonceKey } from '../access/credentials.ts';
import { startGatewaySync } from '../gateways/sync.ts';
import { isOpenAt } from './hours.ts';

type Json = Record<string, unknown>;

describe('branches, equipment, gateways and access (real cloud)', function () {
  this.timeout(90_000);
  let tc: TestCloud;
  let admin: TestAccount;
  let staffX: TestAccount;
  let staffY: TestAccount;
  let a: TestAccount;
  let b: TestAccount;
  const x = 'branch-x';
  const y = 'branch-y';
  const api = <T = Json>(method: string, path: string, token?: string, body?: unknown) =>
    call<T>(tc.url, method, path, token, body);
  const hours = (open: string, close: string) =>
    Object.fromEntries(
      ['monday', 'tuesday', 'wednesday', 'thursday', 'friday', 'saturday', 'sunday'].map((d) => [d, [{ open, close }]]),
    );

  before(async () => {
    tc = await startTestCloud({ dbPrefix: 'sites', env: { ACCESS_ALLOW_LIST_DEBOUNCE_MS: '100' } });
    [admin, staffX, staffY, a, b] = await Promise.all([
      createTestAccount(tc, { role: 'admin' }),
      createTestAccount(tc, { role: 'staff' }),
      createTestAccount(tc, { role: 'staff' }),
      createTestAccount(tc),
      createTestAccount(tc),
    ]);
    for (const id of [x, y]) {
      const res = await api('POST', '/api/branches', admin.accessToken, {
        id,
        name: `Gym ${id}`,
        timeZone: 'Europe/Berlin',
        openingHours: hours('06:00', '22:00'),
      });
      expect(res.status, JSON.stringify(res.body)).to.equal(201);
    }
    expect((await api('PUT', `/api/branches/${x}/staff/${staffX.userId}`, admin.accessToken)).status).to.equal(201);
    expect((await api('PUT', `/api/branches/${y}/staff/${staffY.userId}`, admin.accessToken)).status).to.equal(201);
    for (const m of [a, b]) {
      // Granted by the branch's staff (a member's own POST is only a request).
      expect((await api('PUT', `/api/branches/${x}/members/${m.userId}`, staffX.accessToken, {})).status).to.equal(201);
    }
  });
  after(() => tc?.stop());

  /** A gateway of branch X created by its staff and enrolled with its one-time token. */
  const createAndEnrol = async (gateway: string) => {
    const created = await api<{ enrolment: { token: string } }>(
      'POST',
      `/api/branches/${x}/gateways`,
      staffX.accessToken,
      {
        id: gateway,
      },
    );
    const token = created.body.enrolment.token;
    const enrolled = await api('POST', '/api/v1/gateways/enrol', undefined, { token, version: '1.0.0' });
    expect(enrolled.status, JSON.stringify(enrolled.body)).to.equal(200);
  };

  describe('branches and roles', () => {
    it('validates the time zone and lets only admins create branches', async () => {
      const bad = await api<{ errors: { field: string }[] }>('POST', '/api/branches', admin.accessToken, {
        id: 'branch-z',
        name: 'Z',
        timeZone: 'Mars/Olympus',
        openingHours: hours('06:00', '22:00'),
      });
      expect(bad.status).to.equal(400);
      expect(bad.body.errors.map((e) => e.field)).to.include('timeZone');
      const byStaff = await api('POST', '/api/branches', staffX.accessToken, {
        id: 'branch-z',
        name: 'Z',
        timeZone: 'UTC',
        openingHours: hours('06:00', '22:00'),
      });
      expect(byStaff.status).to.equal(403);
    });

    it('shows members their branches only, and the service answers get/isOpenAt', async () => {
      const mine = await api<{ items: { id: string }[] }>('GET', '/api/branches', a.accessToken);
      expect(mine.body.items.map((i) => i.id)).to.deep.equal([x]);
      expect((await api('GET', `/api/branches/${y}`, a.accessToken)).status).to.equal(404);
      const branch = await tc.branches.get(x);
      expect(branch).to.include({ id: x, timeZone: 'Europe/Berlin' });
      expect(isOpenAt(branch!, Date.parse('2026-01-14T12:00:00Z'))).to.equal(true);
      expect(isOpenAt(branch!, Date.parse('2026-01-14T22:00:00Z'))).to.equal(false);
    });

    it('staff of branch X cannot manage branch Y (403)', async () => {
      expect((await api('PATCH', `/api/branches/${y}`, staffX.accessToken, { name: 'Mine now' })).status).to.equal(403);
      expect((await api('GET', `/api/branches/${y}/gateways`, staffX.accessToken)).status).to.equal(403);
      expect(
        (await api('POST', `/api/branches/${y}/gateways`, staffX.accessToken, { id: 'gw-steal' })).status,
      ).to.equal(403);
      expect(
        (await api('POST', '/api/access/cards', staffX.accessToken, { userId: b.userId, branch: y, uid: '0a0b0c0d' }))
          .status,
      ).to.equal(403);
      const own = await api('PATCH', `/api/branches/${x}`, staffX.accessToken, { name: 'Gym X, renamed' });
      expect(own.status).to.equal(200);
    });
  });

  describe('gateways, equipment and the signed configuration', () => {
    let enrolment: GatewayEnrolmentResponse;
    let gwClient: MqttClient | undefined;
    const received: { topic: string; payload: Json }[] = [];
    const gateway = 'gw-x1';
    after(() => gwClient?.endAsync());

    it('enrols with a one-time token; a used or expired token is refused (401)', async () => {
      const created = await api<{ enrolment: { token: string } }>(
        'POST',
        `/api/branches/${x}/gateways`,
        staffX.accessToken,
        { id: gateway, name: 'Front desk' },
      );
      expect(created.status).to.equal(201);
      const { token } = created.body.enrolment;
      expect(token).to.match(/^[A-Za-z0-9_-]{43}$/);

      const ok = await api('POST', '/api/v1/gateways/enrol', undefined, { token, version: '1.0.0', hostname: 'gw1' });
      expect(ok.status, JSON.stringify(ok.body)).to.equal(200);
      enrolment = v.parse(GatewayEnrolmentResponse, ok.body);
      expect(enrolment).to.deep.include({ branch: x, gateway });
      const used = await api('POST', '/api/v1/gateways/enrol', undefined, { token, version: '1.0.0' });
      expect(used.status).to.equal(401);

      const second = await api<{ enrolment: { token: string } }>(
        'POST',
        `/api/branches/${x}/gateways`,
        staffX.accessToken,
        {
          id: 'gw-x2',
        },
      );
      await tc.mongo
        .collection('gateways')
        .updateOne({ _id: 'gw-x2' as never }, { $set: { 'enrolment.expiresAt': new Date(Date.now() - 1000) } });
      const expired = await api('POST', '/api/v1/gateways/enrol', undefined, {
        token: second.body.enrolment.token,
        version: '1.0.0',
      });
      expect(expired.status).to.equal(401);
      // No identity was issued for the refused one.
      expect(await tc.mongo.collection('mqtt_identities').countDocuments({ _id: 'gw-x2' as never })).to.equal(0);
    });

    it('registers machines (secret once) and readers, and pushes a configuration that verifies with configKeys', async () => {
      const machine = await api<{ machine: Json; mqtt: { password: string } }>(
        'POST',
        `/api/branches/${x}/machines`,
        staffX.accessToken,
        { id: 'rower-1', gateway, kind: 'rower', model: 'Concept2 RowErg', capabilities: ['ftms'], location: 'Hall 1' },
      );
      expect(machine.status, JSON.stringify(machine.body)).to.equal(201);
      expect(machine.body.machine).to.include({ type: 'cardio', kind: 'rower' });
      const secretHash = createHash('sha256').update(machine.body.mqtt.password).digest('hex');
      for (const reader of [
        { reader: 'door-in', gateway, kind: 'nfc', action: 'check-in' },
        { reader: 'rower-1-tag', gateway, kind: 'nfc', action: 'link', machine: 'rower-1' },
      ]) {
        expect((await api('POST', `/api/branches/${x}/readers`, staffX.accessToken, reader)).status).to.equal(201);
      }

      const branch = asBranchId(x);
      gwClient = await connectClient(tc.broker.tcp.url, {
        username: gateway,
        password: enrolment.mqtt.password,
        clientId: gateway,
      });
      gwClient.on('message', (topic, payload) =>
        received.push({ topic, payload: JSON.parse(payload.toString()) as Json }),
      );
      await gwClient.subscribeAsync(filters.gatewayCommands(branch, asGatewayId(gateway)), { qos: 1 });
      const birth = {
        online: true,
        v: PROTOCOL_MINOR,
        bootId: 'boot-1',
        conn: 1,
        since: Date.now(),
        ts: Date.now(),
        version: '1.0.0',
        queue: {
          access: { depth: 0 },
          records: { depth: 3, oldestAgeS: 12 },
          telemetry: { depth: 40, oldestAgeS: 30 },
          full: false,
        },
        readers: [],
        machinesConnected: 1,
        configRevision: 0,
        allowListRevision: 0,
      };
      await gwClient.publishAsync(topics.gatewayState(branch, asGatewayId(gateway)), JSON.stringify(birth), {
        qos: 1,
        retain: true,
      });

      const configMsg = await eventually(
        'configuration pushed',
        () => received.find((m) => m.topic.endsWith('/cmd/config')),
        10_000,
      );
      const command = v.parse(GatewayConfigCommand, configMsg.payload);
      const keys = new Map(enrolment.configKeys.map((k) => [k.kid, publicKeyFromJwk(k)]));
      const verified = verifyJws(command.jws, JWS_TYPES.gatewayConfig, (kid) => keys.get(kid));
      expect(verified.ok).to.equal(true);
      const doc = v.parse(GatewayConfigDocument, verified.ok ? verified.payload : undefined);
      expect(doc).to.include({ branch: x, gateway, revision: command.revision });
      expect(doc.machines).to.deep.equal([{ machine: 'rower-1', secretSha256: secretHash }]);
      expect(doc.readers).to.deep.include({ reader: 'rower-1-tag', kind: 'nfc', action: 'link', machine: 'rower-1' });
      expect(doc.qrKeys.map((k) => k.kid)).to.deep.equal(enrolment.configKeys.map((k) => k.kid));
      // A token of another kind signed with the same key is refused as a configuration.
      expect(verifyJws(command.jws, JWS_TYPES.allowList, (kid) => keys.get(kid))).to.deep.equal({
        ok: false,
        reason: 'wrong-type',
      });

      const fleet = await api<{ items: Json[] }>('GET', `/api/branches/${x}/gateways`, staffX.accessToken);
      const entry = fleet.body.items.find((g) => g.id === gateway)!;
      expect(entry).to.include({ online: true, version: '1.0.0', enrolled: true, machinesConnected: 1 });
      expect(entry.queue).to.deep.include({ depth: 43, full: false });
      expect((entry.queue as Json).oldestBufferedAt).to.equal(new Date(birth.ts - 30_000).toISOString());
      expect(entry.lastSeenAt).to.be.a('string');

      // The gateway confirms: the fleet view shows the revision in use.
      await gwClient.publishAsync(
        topics.gatewayCommandResponse(branch, asGatewayId(gateway), 'config'),
        JSON.stringify({ reqId: command.reqId, ok: true }),
        { qos: 1 },
      );
      await eventually(
        'revision in use',
        async () => {
          const f = await api<{ items: Json[] }>('GET', `/api/branches/${x}/gateways`, staffX.accessToken);
          const e = f.body.items.find((g) => g.id === gateway)!;
          return (e.configRevision as Json).inUse === command.revision;
        },
        10_000,
      );

      // A change re-issues the configuration with a higher revision.
      received.length = 0;
      expect((await api('DELETE', `/api/branches/${x}/readers/door-in`, staffX.accessToken)).status).to.equal(204);
      const next = await eventually(
        'new revision pushed',
        () => received.find((m) => m.topic.endsWith('/cmd/config')),
        10_000,
      );
      expect(v.parse(GatewayConfigCommand, next.payload).revision).to.be.above(command.revision);
    });

    it('cards: staff enrol, members see and block only their own, a revoked card leaves the next allow-list', async () => {
      const uid = '04a1b2c3d4e5f6';
      const hash = createHash('sha256').update(uid).digest('hex');
      const enrolled = await api<{ id: string; last4: string }>('POST', '/api/access/cards', staffX.accessToken, {
        userId: a.userId,
        branch: x,
        uid: uid.toUpperCase(),
      });
      expect(enrolled.status, JSON.stringify(enrolled.body)).to.equal(201);
      expect(enrolled.body.last4).to.equal('e5f6');
      const cardId = enrolled.body.id;

      const resolveNfc = () =>
        tc.access.resolver.resolve({ kind: 'nfc', uid } as never, { branch: x as BranchId, atMs: Date.now() });
      expect(await resolveNfc()).to.deep.equal({ ok: true, userId: a.userId });

      // The allow-list the gateway receives holds the card's hash.
      const withCard = await eventually(
        'allow-list with the card',
        () => latestAllowList(received, enrolment).find((m) => m.userId === a.userId && m.nfc.includes(hash)),
        10_000,
      );
      expect(withCard).to.not.equal(undefined);

      // Member B can neither see nor block A's card.
      const bList = await api<{ items: Json[] }>('GET', '/api/access/cards', b.accessToken);
      expect(bList.body.items).to.deep.equal([]);
      expect((await api('POST', `/api/access/cards/${cardId}/block`, b.accessToken)).status).to.equal(404);
      expect(await resolveNfc()).to.deep.equal({ ok: true, userId: a.userId });

      const blocked = await api<{ blocked: boolean }>('POST', `/api/access/cards/${cardId}/block`, a.accessToken);
      expect(blocked.status).to.equal(200);
      expect(blocked.body.blocked).to.equal(true);
      expect(await resolveNfc()).to.deep.equal({ ok: false, reason: 'blocked', userId: a.userId });
      await eventually(
        'allow-list without the card',
        () => {
          const members = latestAllowList(received, enrolment);
          const entry = members.find((m) => m.userId === a.userId);
          return entry !== undefined && !entry.nfc.includes(hash);
        },
        10_000,
      );
      const audit = await tc.mongo.collection('audit_log').findOne({ action: 'card_blocked', actor: a.userId });
      expect(audit).to.not.equal(null);
      expect(JSON.stringify(audit)).to.not.include(uid);
    });

    it('QR tokens: valid once, refused when replayed or at a branch the member does not belong to', async () => {
      const res = await api<{ token: string; expiresAt: string }>('GET', '/api/access/qr-token', a.accessToken);
      expect(res.status).to.equal(200);
      const keys = new Map(enrolment.configKeys.map((k) => [k.kid, publicKeyFromJwk(k)]));
      expect(verifyJws(res.body.token, JWS_TYPES.qr, (kid) => keys.get(kid), 1024).ok).to.equal(true);
      const credential = { kind: 'qr', token: res.body.token } as never;
      const ctx = { branch: x as BranchId, atMs: Date.now() };
      expect(await tc.access.resolver.resolve(credential, ctx)).to.deep.equal({ ok: true, userId: a.userId });
      // The used nonce is kept as long as an offline decision may be reconciled (ACCESS_ALLOW_LIST_MAX_AGE_S, 3 d).
      const { nonce } = JSON.parse(Buffer.from(res.body.token.split('.')[1]!, 'base64url').toString()) as Json;
      expect(await tc.redis.ttl(qrNonceKey(nonce as string))).to.be.above(3 * 86_400 - 60);
      expect(await tc.access.resolver.resolve(credential, ctx)).to.deep.include({
        ok: false,
        reason: 'replayed-token',
      });

      const other = await api<{ token: string }>('GET', '/api/access/qr-token', a.accessToken);
      expect(
        await tc.access.resolver.resolve({ kind: 'qr', token: other.body.token } as never, {
          branch: y as BranchId,
          atMs: Date.now(),
        }),
      ).to.deep.equal({ ok: false, reason: 'membership-inactive', userId: a.userId });
      const late = await api<{ token: string }>('GET', '/api/access/qr-token', a.accessToken);
      expect(
        await tc.access.resolver.resolve({ kind: 'qr', token: late.body.token } as never, {
          branch: x as BranchId,
          atMs: Date.now() + 61_000,
        }),
      ).to.deep.include({ ok: false, reason: 'expired-token' });
      expect(
        await tc.access.resolver.resolve({ kind: 'qr', token: `${late.body.token.slice(0, -4)}AAAA` } as never, ctx),
      ).to.deep.equal({ ok: false, reason: 'invalid-token' });
    });
  });

  it('a gateway provisioned with the hub CLI joins the fleet at its first birth and gets its configuration', async () => {
    const identities = createIdentityStore(tc.mongo);
    const gw = await addGateway({ store: identities }, { id: 'gw-hub', branch: y });
    const machine = await addMachine({ store: identities }, { id: 'bike-hub', branch: y, gateway: 'gw-hub' });
    const client = await connectClient(tc.broker.tcp.url, {
      username: 'gw-hub',
      password: gw.secret,
      clientId: 'gw-hub',
    });
    try {
      const got: Json[] = [];
      client.on('message', (topic, payload) => {
        if (topic.endsWith('/cmd/config')) got.push(JSON.parse(payload.toString()) as Json);
      });
      await client.subscribeAsync(filters.gatewayCommands(asBranchId(y), asGatewayId('gw-hub')), { qos: 1 });
      const now = Date.now();
      const birth = {
        online: true,
        v: PROTOCOL_MINOR,
        bootId: 'hub-boot',
        conn: 1,
        since: now,
        ts: now,
        version: '1.0.0',
        queue: { access: { depth: 0 }, records: { depth: 0 }, telemetry: { depth: 0 }, full: false },
        readers: [],
        machinesConnected: 0,
      };
      await client.publishAsync(topics.gatewayState(asBranchId(y), asGatewayId('gw-hub')), JSON.stringify(birth), {
        qos: 1,
        retain: true,
      });
      const command = v.parse(GatewayConfigCommand, await eventually('configuration pushed', () => got[0], 10_000));
      const verified = verifyJws(command.jws, JWS_TYPES.gatewayConfig, (kid) => tc.auth.keyring.verifyKey(kid));
      const doc = v.parse(GatewayConfigDocument, verified.ok ? verified.payload : undefined);
      expect(doc.machines).to.deep.equal([{ machine: 'bike-hub', secretSha256: machine.identity.secretHash }]);
      const fleet = await api<{ items: Json[] }>('GET', `/api/branches/${y}/gateways`, staffY.accessToken);
      expect(fleet.body.items.map((g) => [g.id, g.online])).to.deep.include(['gw-hub', true]);
      // A branch with gateways is not deleted.
      expect((await api('DELETE', `/api/branches/${y}`, admin.accessToken)).status).to.equal(409);
    } finally {
      await client.endAsync();
    }
  });

  it('two enrolments racing with one token: one gets the identity, the other 401', async () => {
    const created = await api<{ enrolment: { token: string } }>(
      'POST',
      `/api/branches/${x}/gateways`,
      staffX.accessToken,
      { id: 'gw-race' },
    );
    const { token } = created.body.enrolment;
    const answers = await Promise.all(
      [1, 2].map(() => api('POST', '/api/v1/gateways/enrol', undefined, { token, version: '1.0.0' })),
    );
    expect(answers.map((r) => r.status).sort()).to.deep.equal([200, 401]);
    expect(await tc.mongo.collection('mqtt_identities').countDocuments({ _id: 'gw-race' as never })).to.equal(1);
    const fleet = await api<{ items: Json[] }>('GET', `/api/branches/${x}/gateways`, staffX.accessToken);
    expect(fleet.body.items.find((g) => g.id === 'gw-race')).to.include({ enrolled: true });
  });

  it('retiring a gateway revokes its machines and clears its readers; staff of another branch cannot', async () => {
    const gw = 'gw-retire';
    await createAndEnrol(gw);
    const machine = await api('POST', `/api/branches/${x}/machines`, staffX.accessToken, {
      id: 'bike-retire',
      gateway: gw,
      kind: 'indoor-bike',
      model: 'Wattbike',
    });
    expect(machine.status, JSON.stringify(machine.body)).to.equal(201);
    const reader = { reader: 'bike-retire-tag', gateway: gw, kind: 'nfc', action: 'link', machine: 'bike-retire' };
    expect((await api('POST', `/api/branches/${x}/readers`, staffX.accessToken, reader)).status).to.equal(201);
    expect(await tc.mongo.collection('audit_log').countDocuments({ action: 'reader_added' })).to.be.above(0);

    expect((await api('DELETE', `/api/branches/${x}/gateways/${gw}`, staffY.accessToken)).status).to.equal(403);
    expect((await api('DELETE', `/api/branches/${y}/gateways/${gw}`, staffY.accessToken)).status).to.equal(404);
    expect((await api('DELETE', `/api/branches/${x}/gateways/${gw}`, staffX.accessToken)).status).to.equal(204);

    const identities = tc.mongo.collection<{ _id: string; disabled: boolean }>('mqtt_identities');
    expect(await identities.findOne({ _id: gw })).to.include({ disabled: true });
    expect(await identities.findOne({ _id: 'bike-retire' })).to.include({ disabled: true });
    const machines = await api<{ items: Json[] }>('GET', `/api/branches/${x}/machines`, staffX.accessToken);
    expect(machines.body.items.map((m) => m.id)).to.not.include('bike-retire');
    const readers = await api<{ items: Json[] }>('GET', `/api/branches/${x}/readers`, staffX.accessToken);
    expect(readers.body.items.map((r) => r.reader)).to.not.include('bike-retire-tag');
    const audit = await tc.mongo
      .collection('audit_log')
      .findOne({ action: 'gateway_retired', target: `gateway:${gw}` });
    expect(audit?.details).to.deep.include({ machines: 1, readers: 1 });
  });

  it('a branch whose gateway identity exists (provisioned, never seen) is not deleted', async () => {
    const res = await api('POST', '/api/branches', admin.accessToken, {
      id: 'branch-hubonly',
      name: 'Hub only',
      timeZone: 'UTC',
      openingHours: hours('00:00', '24:00'),
    });
    expect(res.status).to.equal(201);
    await addGateway({ store: createIdentityStore(tc.mongo) }, { id: 'gw-hubonly', branch: 'branch-hubonly' });
    expect((await api('DELETE', '/api/branches/branch-hubonly', admin.accessToken)).status).to.equal(409);
  });

  it('blocking a card twice audits and pushes once; card changes are rate-limited per account', async () => {
    const m = await createTestAccount(tc);
    expect((await api('PUT', `/api/branches/${x}/members/${m.userId}`, staffX.accessToken, {})).status).to.equal(201);
    const card = await api<{ id: string }>('POST', '/api/access/cards', staffX.accessToken, {
      userId: m.userId,
      branch: x,
      uid: '0a0b0c0d0e0f10',
    });
    expect(card.status).to.equal(201);
    for (let i = 0; i < 2; i++) {
      const res = await api<{ blocked: boolean }>('POST', `/api/access/cards/${card.body.id}/block`, m.accessToken);
      expect(res.status).to.equal(200);
      expect(res.body.blocked).to.equal(true);
    }
    expect(
      await tc.mongo.collection('audit_log').countDocuments({ action: 'card_blocked', target: `card:${card.body.id}` }),
    ).to.equal(1);

    let last = 0;
    for (let i = 0; i < 40 && last !== 429; i++) {
      last = (await api('POST', `/api/access/cards/${card.body.id}/block`, m.accessToken)).status;
    }
    expect(last).to.equal(429);
  });

  it('a steady stream of card changes does not hold the allow-list push back (debounce from the first change)', async () => {
    const m = await createTestAccount(tc);
    // Granted behind the routes' back: a grant through them would announce an allow-list change of its own.
    expect((await tc.users.services.memberships.join(m.userId, x)).created).to.equal(true);
    const before = (await tc.access.allowLists.refresh(x)).current.revision;
    // Enrolled behind the routes' back, then announced again and again, faster than the 100 ms debounce.
    await tc.access.cards.enrol({ userId: m.userId, uid: '0a0b0c0d0e0f11', by: 'test' });
    const sync = tc.sites.gateways.sync;
    let moved = false;
    for (let i = 0; i < 100 && !moved; i++) {
      sync.allowListChanged([x]);
      await new Promise((resolve) => setTimeout(resolve, 30));
      moved = ((await tc.access.allowLists.current(x))?.revision ?? 0) > before;
    }
    expect(moved, 'allow-list rebuilt while changes kept coming').to.equal(true);
    await sync.idle();
  });

  it('two nodes issuing one gateway configuration: a stale build never becomes the newer revision', async () => {
    const gw = 'gw-cfg';
    await createAndEnrol(gw);
    const nodeB = tc.sites.gateways.sync;
    await nodeB.idle();
    // A change the sync is not told of (the hub CLI), then node A reads it and stalls before writing a revision.
    await addMachine({ store: createIdentityStore(tc.mongo) }, { id: 'bike-cfg1', branch: x, gateway: gw });
    let reached!: () => void;
    const readDone = new Promise<void>((resolve) => (reached = resolve));
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    let stallOnce = true;
    const nodeA = await startGatewaySync({
      aedes: tc.broker.aedes,
      store: tc.sites.gateways.store,
      equipment: {
        async configOf(gateway) {
          const content = await tc.sites.equipment.configOf(gateway);
          if (stallOnce) {
            stallOnce = false;
            reached();
            await gate;
          }
          return content;
        },
      },
      allowLists: tc.access.allowLists,
      keyring: tc.auth.keyring,
      clock: systemClock,
      log: createLogger({ name: 'node-a', level: 'silent' }),
      allowListMaxAgeS: 3 * 86_400,
      allowListDebounceMs: 100,
      sweepS: 3_600,
    });
    try {
      const slow = nodeA.config(gw);
      await readDone;
      // Meanwhile node B issues the configuration with a second machine.
      const second = await api('POST', `/api/branches/${x}/machines`, staffX.accessToken, {
        id: 'bike-cfg2',
        gateway: gw,
        kind: 'indoor-bike',
        model: 'Wattbike',
      });
      expect(second.status).to.equal(201);
      await nodeB.idle();
      const fromB = await nodeB.config(gw);
      release();
      const fromA = await slow;
      expect(fromA?.revision).to.equal(fromB!.revision);
      expect(fromA?.document.machines.map((m) => m.machine)).to.deep.equal(['bike-cfg1', 'bike-cfg2']);
      expect((await tc.sites.gateways.store.get(gw))?.config.revision).to.equal(fromB!.revision);
    } finally {
      await nodeA.stop();
    }
  });

  it('refuses a machine beyond what one signed configuration may list (409)', async () => {
    const gw = 'gw-full';
    await createAndEnrol(gw);
    const createdAt = new Date();
    await tc.mongo.collection('mqtt_identities').insertMany(
      Array.from({ length: MAX_GATEWAY_MACHINES }, (_, i) => ({
        _id: `full-${i}`,
        role: 'machine',
        branches: [x],
        gateway: gw,
        secretHash: createHash('sha256').update(`s${i}`).digest('hex'),
        createdAt,
        disabled: false,
      })) as never[],
    );
    const res = await api<{ type: string }>('POST', `/api/branches/${x}/machines`, staffX.accessToken, {
      id: 'one-too-many',
      gateway: gw,
      kind: 'rower',
      model: 'Concept2',
    });
    expect(res.status).to.equal(409);
    const signed = await tc.sites.gateways.sync.config(gw);
    expect(signed?.document.machines).to.have.length(MAX_GATEWAY_MACHINES);
    expect(v.safeParse(GatewayConfigDocument, signed?.document).success).to.equal(true);
  });

  it('refuses to enrol a card for someone who is not a member of the branch (404)', async () => {
    const outsider = await createTestAccount(tc);
    const res = await api('POST', '/api/access/cards', staffX.accessToken, {
      userId: outsider.userId,
      branch: x,
      uid: '0a0b0c0d',
    });
    expect(res.status).to.equal(404);
  });

  it('a 20,000-member branch goes out as 50 signed parts, each below the frame limit', async () => {
    const big = 'branch-big';
    const docs = Array.from({ length: 20_000 }, () => {
      const userId = randomBytes(12).toString('hex');
      return { _id: `${userId}:${big}`, userId, branchId: big, joinedAt: new Date() };
    });
    await tc.mongo.collection('branch_memberships').insertMany(docs as never[]);
    const signed = await tc.access.allowLists.signed(big);
    expect(signed.parts).to.have.length(50);
    expect(signed.members).to.equal(20_000);
    const key = tc.auth.keyring;
    const topic = topics.gatewayCommand(asBranchId(big), asGatewayId('gw-big'), 'allow-list');
    let total = 0;
    for (const [part, jws] of signed.parts.entries()) {
      const payload = JSON.stringify({ reqId: 'r', revision: signed.revision, part, parts: 50, jws });
      expect(v.safeParse(AllowListCommand, JSON.parse(payload)).success).to.equal(true);
      // PUBLISH: fixed header (≤ 5), topic length (2) + topic, packet id (2), payload.
      expect(5 + 2 + Buffer.byteLength(topic) + 2 + Buffer.byteLength(payload)).to.be.below(256 * 1024);
      const verified = verifyJws(jws, JWS_TYPES.allowList, (kid) => key.verifyKey(kid));
      const doc = v.parse(AllowListDocument, verified.ok ? verified.payload : undefined);
      expect(doc.members.length).to.be.at.most(MAX_ALLOW_LIST_PART_MEMBERS);
      total += doc.members.length;
    }
    expect(total).to.equal(20_000);
  });

  // Last: it uses up this address's enrolment attempts.
  describe('enrolment attempts', () => {
    it('are limited per address (429 with Retry-After), whatever the token', async () => {
      let res: Awaited<ReturnType<typeof api>> | undefined;
      for (let i = 0; i < 20; i++) {
        res = await api('POST', '/api/v1/gateways/enrol', undefined, {
          token: randomBytes(32).toString('base64url'),
          version: '1.0.0',
        });
        if (res.status !== 401) break;
      }
      expect(res!.status).to.equal(429);
      expect(Number(res!.headers.get('retry-after'))).to.be.above(0);
    });
  });
});

/** The members of the newest complete allow-list revision a gateway received, verified. */
function latestAllowList(
  received: { topic: string; payload: Json }[],
  enrolment: GatewayEnrolmentResponse,
): { userId: string; nfc: string[] }[] {
  const keys = new Map(enrolment.configKeys.map((k) => [k.kid, publicKeyFromJwk(k)]));
  const byRevision = new Map<number, Map<number, AllowListDocument>>();
  for (const m of received) {
    if (!m.topic.endsWith('/cmd/allow-list')) continue;
    const command = v.parse(AllowListCommand, m.payload);
    const verified = verifyJws(command.jws, JWS_TYPES.allowList, (kid) => keys.get(kid));
    if (!verified.ok) throw new Error(`allow-list part does not verify: ${verified.reason}`);
    const doc = v.parse(AllowListDocument, verified.payload);
    const parts = byRevision.get(doc.revision) ?? new Map<number, AllowListDocument>();
    parts.set(doc.part, doc);
    byRevision.set(doc.revision, parts);
  }
  const complete = [...byRevision.entries()]
    .filter(([, parts]) => parts.size === [...parts.values()][0]!.parts)
    .sort((p, q) => q[0] - p[0]);
  if (complete.length === 0) return [];
  return [...complete[0]![1].values()].flatMap((d) => d.members);
}
