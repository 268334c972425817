import { expect } from 'chai';
import type { MqttClient } from 'mqtt';
import { pino } from 'pino';
import sinon from 'sinon';
import { connectTestRedis, type TestRedis } from '../../../test/helpers/services.ts';
import { eventually } from '../../../test/helpers/eventually.ts';
import { asBranchId, asGatewayId, topics, type RequestResponse } from '../../../protocol/index.ts';
import { createGatewayRequests, type GatewayRequests } from './gateway-requests.ts';
import { addGateway } from './provisioning.ts';
import {
  connectClient,
  metricValue,
  startBrokerFixture,
  subscribeGranted,
  closed,
  type BrokerFixture,
} from './testing.ts';

const branch = asBranchId('demo');
const gwA = asGatewayId('gw-a');
const gwB = asGatewayId('gw-b');
const checkIn = (reqId: string) => ({
  reqId,
  ts: Date.now(),
  reader: 'door-1',
  credential: { kind: 'nfc', uid: '04a1b2c3' },
});

/** Collects the RequestResponses a gateway receives on its `req/+/res` topics. */
function answers(client: MqttClient): { topic: string; body: RequestResponse }[] {
  const got: { topic: string; body: RequestResponse }[] = [];
  client.on('message', (topic, payload) =>
    got.push({ topic, body: JSON.parse(payload.toString()) as RequestResponse }),
  );
  return got;
}

describe('gateway requests (gw/{gateway}/req/{name})', function () {
  let fx: BrokerFixture;
  let redis: TestRedis;
  let requests: GatewayRequests;
  const secrets: Record<string, string> = {};
  const clients: MqttClient[] = [];

  async function gateway(id: string): Promise<MqttClient> {
    const client = await connectClient(fx.broker.tcp.url, { username: id, password: secrets[id]!, clientId: id });
    clients.push(client);
    await client.subscribeAsync(`nxg/v1/b/demo/gw/${id}/req/+/res`, { qos: 1 });
    return client;
  }

  before(async () => {
    fx = await startBrokerFixture();
    redis = await connectTestRedis();
    secrets['gw-a'] = (await addGateway({ store: fx.identities }, { id: 'gw-a', branch: 'demo' })).secret;
    secrets['gw-b'] = (await addGateway({ store: fx.identities }, { id: 'gw-b', branch: 'demo' })).secret;
  });

  beforeEach(async () => {
    await redis.flush();
    requests = createGatewayRequests({
      aedes: fx.broker.aedes,
      redis: redis.client,
      log: pino({ level: 'silent' }),
      registry: fx.registry,
      deadlineMs: 1000,
      maxInFlightPerGateway: 2,
    });
    await requests.start();
  });

  afterEach(async () => {
    sinon.restore();
    for (const c of clients.splice(0)) {
      if (c.connected) await c.endAsync();
      else c.end(true);
    }
    await requests.stop();
  });

  after(async () => {
    await redis.close();
    await fx.stop();
  });

  it('hands a valid request to its handler with the asking gateway and answers on …/res', async () => {
    const seen: unknown[] = [];
    requests.handle('check-in', (request, ctx) => {
      seen.push({ reqId: request.reqId, uid: request.credential.kind === 'nfc' && request.credential.uid, ...ctx });
      return Promise.resolve({ decision: 'allow', userId: 'u1' as never, sessionId: 's1' as never });
    });
    const gw = await gateway('gw-a');
    const got = answers(gw);
    const sent = performance.now();
    await gw.publishAsync(topics.gatewayRequest(branch, gwA, 'check-in'), JSON.stringify(checkIn('r1')), { qos: 1 });
    await eventually('answer', () => got.length === 1, 3000, 10);
    // Target: within a second; asserted with a 3× margin.
    expect(performance.now() - sent).to.be.below(3000);
    expect(got[0]!.topic).to.equal(topics.gatewayRequestResponse(branch, gwA, 'check-in'));
    expect(got[0]!.body).to.deep.equal({
      reqId: 'r1',
      ok: true,
      decision: { decision: 'allow', userId: 'u1', sessionId: 's1' },
    });
    expect(seen).to.have.length(1);
    expect(seen[0]).to.include({ reqId: 'r1', uid: '04a1b2c3', branch: 'demo', gateway: 'gw-a', name: 'check-in' });
    expect(
      await metricValue(fx.registry, 'gateway_requests_total', { name: 'check-in', outcome: 'allow' }),
    ).to.be.at.least(1);
  });

  it('answers an invalid request {ok:false, invalid-request} when its reqId can be read, and never calls the handler', async () => {
    let called = 0;
    requests.handle('check-in', () => {
      called++;
      return Promise.resolve({ decision: 'deny', reason: 'unknown-credential' });
    });
    const gw = await gateway('gw-a');
    const got = answers(gw);
    await gw.publishAsync(
      topics.gatewayRequest(branch, gwA, 'check-in'),
      JSON.stringify({ reqId: 'bad-1', ts: Date.now(), reader: 'door-1', credential: { kind: 'nfc', uid: 'XYZ' } }),
      { qos: 1 },
    );
    await gw.publishAsync(topics.gatewayRequest(branch, gwA, 'check-in'), 'not json', { qos: 1 });
    await eventually('answer', () => got.length === 1, 3000, 10);
    expect(got[0]!.body).to.include({ reqId: 'bad-1', ok: false });
    expect((got[0]!.body as { error: { code: string } }).error.code).to.equal('invalid-request');
    expect(called).to.equal(0);
    expect(
      await metricValue(fx.registry, 'gateway_requests_total', { name: 'check-in', outcome: 'unanswerable' }),
    ).to.be.at.least(1);
  });

  it('answers a request nobody decides in time {ok:false, timeout} within the deadline', async () => {
    requests.handle('check-out', () => new Promise(() => undefined));
    const gw = await gateway('gw-a');
    const got = answers(gw);
    await gw.publishAsync(topics.gatewayRequest(branch, gwA, 'check-out'), JSON.stringify(checkIn('slow-1')), {
      qos: 1,
    });
    await eventually('timeout answer', () => got.length === 1, 3000, 10);
    expect(got[0]!.body).to.deep.include({ reqId: 'slow-1', ok: false });
    expect((got[0]!.body as { error: { code: string } }).error.code).to.equal('timeout');
  });

  it('answers a handler failure {ok:false, internal} and a name without a handler {ok:false, unsupported}', async () => {
    requests.handle('check-in', () => Promise.reject(new Error('boom')));
    const gw = await gateway('gw-a');
    const got = answers(gw);
    await gw.publishAsync(topics.gatewayRequest(branch, gwA, 'check-in'), JSON.stringify(checkIn('f-1')), { qos: 1 });
    await gw.publishAsync(
      topics.gatewayRequest(branch, gwA, 'unlink'),
      JSON.stringify({ reqId: 'u-1', ts: Date.now(), machine: 'bike-1', reason: 'idle-timeout' }),
      { qos: 1 },
    );
    await eventually('two answers', () => got.length === 2, 3000, 10);
    const byId = Object.fromEntries(got.map((a) => [a.body.reqId, a.body as { error: { code: string } }]));
    expect(byId['f-1']!.error.code).to.equal('internal');
    expect(byId['u-1']!.error.code).to.equal('unsupported');
  });

  it('answers requests beyond the in-flight limit of a gateway `busy` at once, without holding another gateway', async () => {
    const release: (() => void)[] = [];
    requests.handle('check-in', (request) =>
      request.reader === 'door-slow'
        ? new Promise((resolve) => release.push(() => resolve({ decision: 'deny', reason: 'rate-limited' })))
        : Promise.resolve({ decision: 'deny', reason: 'unknown-credential' }),
    );
    const a = await gateway('gw-a');
    const b = await gateway('gw-b');
    const gotA = answers(a);
    const gotB = answers(b);
    for (const id of ['s1', 's2', 's3']) {
      await a.publishAsync(
        topics.gatewayRequest(branch, gwA, 'check-in'),
        JSON.stringify({ ...checkIn(id), reader: 'door-slow' }),
        { qos: 1 },
      );
    }
    await b.publishAsync(topics.gatewayRequest(branch, gwB, 'check-in'), JSON.stringify(checkIn('b1')), { qos: 1 });
    await eventually('busy answer and gw-b answer', () => gotA.length >= 1 && gotB.length === 1, 3000, 10);
    expect(gotA[0]!.body).to.deep.include({ reqId: 's3', ok: false });
    expect((gotA[0]!.body as { error: { code: string } }).error.code).to.equal('busy');
    expect(gotB[0]!.body).to.deep.include({ reqId: 'b1', ok: true });
    release.forEach((r) => r());
    await eventually('the two slow ones answered (timeout)', () => gotA.length === 3, 3000, 10);
  });

  it('decides a redelivered request once and answers the redelivery with the same answer', async () => {
    let calls = 0;
    requests.handle('check-in', () => {
      calls++;
      return Promise.resolve({ decision: 'allow', userId: 'u1' as never, sessionId: `s${calls}` as never });
    });
    const gw = await gateway('gw-a');
    const got = answers(gw);
    const payload = JSON.stringify(checkIn('dup-1'));
    await gw.publishAsync(topics.gatewayRequest(branch, gwA, 'check-in'), payload, { qos: 1 });
    await eventually('first answer', () => got.length === 1, 3000, 10);
    await gw.publishAsync(topics.gatewayRequest(branch, gwA, 'check-in'), payload, { qos: 1, dup: true });
    await eventually('second answer', () => got.length === 2, 3000, 10);
    expect(calls).to.equal(1);
    expect(got[1]!.body).to.deep.equal(got[0]!.body);
  });

  it('never lets a gateway ask on another gateway’s request topic (ACL), nor read its answers', async () => {
    let calls = 0;
    requests.handle('check-in', () => {
      calls++;
      return Promise.resolve({ decision: 'deny', reason: 'unknown-credential' });
    });
    const b = await gateway('gw-b');
    const [refused] = await subscribeGranted(b, ['nxg/v1/b/demo/gw/gw-a/req/+/res']);
    expect(refused).to.equal(128);
    // Aedes closes a client whose PUBLISH is refused (MQTT 3.1.1 has no negative PUBACK).
    b.publish(topics.gatewayRequest(branch, gwA, 'check-in'), JSON.stringify(checkIn('x-1')), { qos: 1 });
    await Promise.race([closed(b), new Promise((resolve) => setTimeout(resolve, 5000))]);
    expect(b.connected).to.equal(false);
    b.end(true);
    const a = await gateway('gw-a');
    const got = answers(a);
    await a.publishAsync(topics.gatewayRequest(branch, gwA, 'check-in'), JSON.stringify(checkIn('own-1')), { qos: 1 });
    await eventually('own answer', () => got.length === 1, 3000, 10);
    expect(got.map((g) => g.body.reqId)).to.deep.equal(['own-1']);
    expect(calls).to.equal(1);
  });
  it('answers `timeout` when Redis is too slow to claim, and never decides the request after that', async () => {
    let calls = 0;
    requests.handle('check-in', () => {
      calls++;
      return Promise.resolve({ decision: 'allow', userId: 'u1' as never, sessionId: 's1' as never });
    });
    // Fault injection: the claim's SET answers only after the deadline (1 s here).
    const set = redis.client.set.bind(redis.client);
    sinon
      .stub(redis.client, 'set')
      .callsFake((...args: Parameters<typeof set>) =>
        new Promise((resolve) => setTimeout(resolve, 1300)).then(() => set(...args)),
      );
    const gw = await gateway('gw-a');
    const got = answers(gw);
    await gw.publishAsync(topics.gatewayRequest(branch, gwA, 'check-in'), JSON.stringify(checkIn('slow-redis')), {
      qos: 1,
    });
    await eventually('timeout answer', () => got.length === 1, 3000, 10);
    expect((got[0]!.body as { error: { code: string } }).error.code).to.equal('timeout');
    // The claim came back after the deadline: the gateway decides offline, so the cloud must not decide too.
    await new Promise((resolve) => setTimeout(resolve, 600));
    expect(calls).to.equal(0);
    expect(got).to.have.length(1);
  });

  it('aborts the handler’s signal at the deadline and answers a redelivery `timeout`, not the late decision', async () => {
    let sawAbort = false;
    requests.handle('check-in', (_request, { signal }) => {
      return new Promise((resolve) =>
        signal.addEventListener('abort', () => {
          sawAbort = true;
          resolve({ decision: 'allow', userId: 'u1' as never, sessionId: 'late' as never });
        }),
      );
    });
    const gw = await gateway('gw-a');
    const got = answers(gw);
    const payload = JSON.stringify(checkIn('late-1'));
    await gw.publishAsync(topics.gatewayRequest(branch, gwA, 'check-in'), payload, { qos: 1 });
    await eventually('timeout answer', () => got.length === 1, 3000, 10);
    expect(sawAbort).to.equal(true);
    await gw.publishAsync(topics.gatewayRequest(branch, gwA, 'check-in'), payload, { qos: 1, dup: true });
    await eventually('redelivery answered', () => got.length === 2, 3000, 10);
    expect((got[1]!.body as { error: { code: string } }).error.code).to.equal('timeout');
  });

  it('answers a redelivery once the claim of a node that died deciding it has expired', async () => {
    await requests.stop();
    requests = createGatewayRequests({
      aedes: fx.broker.aedes,
      redis: redis.client,
      log: pino({ level: 'silent' }),
      registry: fx.registry,
      deadlineMs: 200,
    });
    const claimTtls: number[] = [];
    requests.handle('check-in', async (request) => {
      claimTtls.push(await redis.client.pttl(`gwreq:demo:gw-a:${request.reqId}`));
      return { decision: 'deny', reason: 'unknown-credential' };
    });
    await requests.start();
    const gw = await gateway('gw-a');
    const got = answers(gw);
    // While a request is being decided, its claim lives twice the deadline only (not the 2 minutes of an answer).
    await gw.publishAsync(topics.gatewayRequest(branch, gwA, 'check-in'), JSON.stringify(checkIn('ttl-1')), { qos: 1 });
    await eventually('answer', () => got.length === 1, 3000, 10);
    expect(claimTtls[0]).to.be.within(1, 400);
    got.length = 0;
    // What a node that crashed right after claiming leaves behind.
    await redis.client.set('gwreq:demo:gw-a:orphan-1', '', 'PX', 400, 'NX');
    const payload = JSON.stringify(checkIn('orphan-1'));
    await gw.publishAsync(topics.gatewayRequest(branch, gwA, 'check-in'), payload, { qos: 1 });
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(got, 'held by the dead node: not decided twice meanwhile').to.have.length(0);
    await gw.publishAsync(topics.gatewayRequest(branch, gwA, 'check-in'), payload, { qos: 1, dup: true });
    await eventually('redelivery answered', () => got.length === 1, 3000, 10);
    expect(got[0]!.body).to.deep.include({ reqId: 'orphan-1', ok: true });
  });

  it('decides without the claim when Redis fails (answering beats deduplicating)', async () => {
    requests.handle('check-in', () => Promise.resolve({ decision: 'deny', reason: 'unknown-credential' }));
    sinon.stub(redis.client, 'set').rejects(new Error('Connection is closed.'));
    const gw = await gateway('gw-a');
    const got = answers(gw);
    await gw.publishAsync(topics.gatewayRequest(branch, gwA, 'check-in'), JSON.stringify(checkIn('no-redis')), {
      qos: 1,
    });
    await eventually('answer', () => got.length === 1, 3000, 10);
    expect(got[0]!.body).to.deep.include({ reqId: 'no-redis', ok: true });
  });
});
