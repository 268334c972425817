/**
 * MQTT_MAX_CONNECTIONS holds for all listeners together (the WebSocket listener has no server-side cap of its own):
 * past it a new connection is refused at once and counted (`mqtt_connections_refused_total{reason="max-connections"}`),
 * the broker keeps running, and a freed place can be taken again.
 */
import { once } from 'node:events';
import http from 'node:http';
import type net from 'node:net';
import { expect } from 'chai';
import type { MqttClient } from 'mqtt';
import { addObserver } from './provisioning.ts';
import { connectClient, metricValue, startBrokerFixture, type BrokerFixture } from './testing.ts';

describe('cloud broker: connection cap over all listeners', function () {
  let fx: BrokerFixture;
  let httpServer: http.Server;
  let wsUrl: string;
  let secret: string;
  const open: MqttClient[] = [];

  before(async () => {
    fx = await startBrokerFixture({ env: { MQTT_MAX_CONNECTIONS: '4' } });
    httpServer = http.createServer((_req, res) => res.end('api'));
    httpServer.listen(0, '127.0.0.1');
    await once(httpServer, 'listening');
    fx.broker.attachWebSocket(httpServer);
    wsUrl = `ws://127.0.0.1:${(httpServer.address() as net.AddressInfo).port}/mqtt`;
    secret = (await addObserver({ store: fx.identities }, { id: 'ops', branches: ['demo'] })).secret;
  });
  after(async () => {
    await Promise.all(open.map((c) => c.endAsync(true).catch(() => undefined)));
    httpServer.close();
    await fx.stop();
  });

  const connect = async (url: string, suffix: string) => {
    const client = await connectClient(url, { username: 'ops', password: secret, clientId: `ops.${suffix}` });
    open.push(client);
    return client;
  };
  const refusedCount = (listener: string) =>
    metricValue(fx.registry, 'mqtt_connections_refused_total', { listener, reason: 'max-connections' });

  it('refuses the connection past the cap on any listener, counts it, and admits again once one closes', async () => {
    await connect(fx.broker.tcp.url, 't1');
    await connect(fx.broker.tcp.url, 't2');
    await connect(wsUrl, 'w1');
    const fourth = await connect(wsUrl, 'w2');
    // Two per listener: neither listener's own count is at 4, all of them together are.
    const overWs = await connectClient(wsUrl, { username: 'ops', password: secret, clientId: 'ops.w3' }).catch(
      (err: { code?: unknown }) => err,
    );
    // Cut before any CONNACK: the client sees the close, or its CONNECT hitting the closed socket.
    expect((overWs as { code?: unknown }).code).to.be.oneOf(['closed', 'EPIPE', 'ECONNRESET']);
    const overTcp = await connectClient(fx.broker.tcp.url, {
      username: 'ops',
      password: secret,
      clientId: 'ops.t3',
    }).catch((err: { code?: unknown }) => err);
    expect((overTcp as { code?: unknown }).code).to.be.oneOf(['closed', 'EPIPE', 'ECONNRESET']);
    expect(await refusedCount('ws')).to.equal(1);
    expect(await refusedCount('tcp')).to.equal(1);
    expect(fx.broker.aedes.connectedClients).to.equal(4);

    await fourth.endAsync();
    open.splice(open.indexOf(fourth), 1);
    // The freed place is taken by the next connection (the close may take a moment to be seen by the broker).
    let again: MqttClient | undefined;
    for (let i = 0; i < 50 && !again; i++) {
      again = await connect(wsUrl, `w4-${i}`).catch(() => undefined);
      if (!again) await new Promise((resolve) => setTimeout(resolve, 50));
    }
    expect(again?.connected).to.equal(true);
  });
});
