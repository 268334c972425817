/**
 * The cloud MQTT broker (Aedes ≥ 1.2, MQTT 3.1.1): TLS for gateways, plain TCP on loopback for tools and tests,
 * and WebSocket on the API's HTTP server (websocket.ts). Every connection passes the frame guard
 * (tools/mqtt/frame-guard.ts) before Aedes sees a byte; CONNECTs are rate-limited per address and authenticated
 * against the identity store (auth.ts); every PUBLISH, SUBSCRIBE and delivery goes through the ACL (acl.ts).
 *
 * In-process users (ingest, live publishers) use `broker.aedes` directly: `aedes.subscribe(filter, deliver, cb)`
 * and `aedes.publish(packet, cb)` bypass authentication and the ACL, as the cloud's own traffic should.
 */
import { once } from 'node:events';
import net from 'node:net';
import type { Duplex } from 'node:stream';
import tls from 'node:tls';
import type { IncomingMessage, Server as HttpServer } from 'node:http';
import { Aedes, type AuthenticateError, type Client } from 'aedes';
import type { Registry } from 'prom-client';
import { createConnectionLimits, type ConnectionLimits } from '../../../tools/mqtt/connection-limits.ts';
import { guardMqttStream } from '../../../tools/mqtt/frame-guard.ts';
import type { Clock } from '../../../tools/runtime/clock.ts';
import type { Logger } from '../../../tools/runtime/logger.ts';
import { MAX_TOPIC_LEVELS } from '../../../protocol/topics.ts';
import type { HealthCheck } from '../health/health.ts';
import { checkPublish, checkSubscribe, grantsFor, mayReceive, topicClass, type Grants, type Principal } from './acl.ts';
import { createAuthenticator, type AppTokenAuthenticator, type ListenerName } from './auth.ts';
import { publishCloudState } from './cloud-state.ts';
import type { BrokerConfig } from './config.ts';
import type { IdentityStore } from './identities.ts';
import { createBrokerMetrics, type BrokerMetrics } from './metrics.ts';
import { loadTlsMaterial } from './tls.ts';
import { attachWebSocketListener, type WebSocketListener } from './websocket.ts';

/** What the broker knows about an authenticated client; read it with `sessionOf(client)`. */
export interface ClientSession {
  readonly principal: Principal;
  readonly grants: Grants;
  readonly listener: ListenerName;
  readonly ip: string;
}

/** Kept on the Aedes client object under a symbol: no clash with Aedes' own fields, invisible to JSON. */
const SESSION = Symbol('nxg.session');
type WithSession = Client & { [SESSION]?: ClientSession };

/** The identity and grants of an authenticated Aedes client (undefined before authentication). */
export function sessionOf(client: Client | null | undefined): ClientSession | undefined {
  return client ? (client as WithSession)[SESSION] : undefined;
}

export interface ListenerAddress {
  host: string;
  port: number;
  url: string;
}

export interface CloudBroker {
  /** The Aedes instance: subscribe and publish in-process (no ACL applies to the cloud's own traffic). */
  readonly aedes: Aedes;
  /** Plain MQTT on loopback, for tools and tests. */
  readonly tcp: ListenerAddress;
  /** MQTT over TLS, for gateways; `caFile` is the CA clients verify the server with. */
  readonly tls: ListenerAddress & { caFile: string | undefined };
  /** MQTT over WebSocket, once attached to the HTTP server: its paths. */
  readonly webSocketPaths: readonly string[];
  readonly metrics: BrokerMetrics;
  /** Attaches the WebSocket listener (`/mqtt`, `/api/ws/machines`) to the API's HTTP server. */
  attachWebSocket(server: HttpServer): void;
  /** Reports the broker in GET /health: listeners up, clients connected. */
  healthCheck(): HealthCheck;
  /** Publishes the cloud's offline state, disconnects every client and stops the listeners. */
  close(): Promise<void>;
}

export interface CloudBrokerOptions {
  config: BrokerConfig;
  log: Logger;
  clock: Clock;
  identities: IdentityStore;
  /** The cloud's prom-client registry. */
  registry: Registry;
  /** The cloud's version, for the `sys/cloud/state` birth. */
  version: string;
  /** Accounts' app-token check for the WebSocket listener; without it only observers connect there. */
  appTokens?: AppTokenAuthenticator;
}

interface ConnectionInfo {
  listener: ListenerName;
  ip: string;
  pending: boolean;
}

/** At most `perSecond` log lines of a kind per second: a flood of refusals must not flood the log. */
function logBudget(perSecond: number) {
  let windowStart = 0;
  let used = 0;
  return () => {
    const now = Date.now();
    if (now - windowStart >= 1000) {
      windowStart = now;
      used = 0;
    }
    used += 1;
    return used <= perSecond;
  };
}

/**
 * Distinct filters one connection may hold. Aedes bounds neither the filters per SUBSCRIBE nor the subscriptions
 * per client: one authenticated app or observer could otherwise grow the broker's subscription tree without end
 * (one `live/machines/{id}` per guessed id). Gateways hold five; a dashboard a handful.
 */
export const MAX_SUBSCRIPTIONS_PER_CLIENT = 64;

function authError(returnCode: number, message: string): AuthenticateError {
  const err = new Error(message) as AuthenticateError;
  (err as { returnCode: number }).returnCode = returnCode;
  return err;
}

export async function startCloudBroker(options: CloudBrokerOptions): Promise<CloudBroker> {
  const { config, log, clock, identities, registry, version } = options;
  const metrics = createBrokerMetrics(registry, () => clientsByRole());
  const limits: ConnectionLimits = createConnectionLimits({
    maxPendingPerIp: config.maxPendingPerIp,
    connectsPerWindow: config.connectLimitPerIp,
    windowS: config.connectLimitWindowS,
  });
  const authenticator = createAuthenticator({ identities, appTokens: options.appTokens });
  const connections = new WeakMap<Duplex, ConnectionInfo>();
  const mayLog = logBudget(20);
  const expiryTimers = new Map<Client, NodeJS.Timeout>();
  const subscriptionsOf = new WeakMap<Client, Set<string>>();

  const aedes = new Aedes({
    connectTimeout: config.connectTimeoutMs,
    keepaliveLimit: config.keepaliveLimitS,
    drainTimeout: config.drainTimeoutMs,
    maxClientsIdLength: 96,
    maxTopicLevels: MAX_TOPIC_LEVELS,
    // QoS 2 is refused in authorizePublish before anything is stored; this bound is a second line (GHSA-5jvp).
    maxInflightInbound: 100,
    // Packets a client may send before its CONNECT is through authentication.
    queueLimit: 42,

    preConnect(client, _packet, callback) {
      const info = connections.get(client.conn);
      // A refusal must carry an error: with (null, false) Aedes 1.2 keeps the socket open, without a CONNACK.
      if (!info) return callback(new Error('unknown connection'), false);
      if (info.pending) {
        info.pending = false;
        limits.release(info.ip);
      }
      limits.allowConnect(info.ip).then(
        (allowed) => {
          if (!allowed) {
            metrics.refused.inc({ listener: info.listener, reason: 'rate-limited' });
            if (mayLog()) log.warn({ ip: info.ip, listener: info.listener }, 'mqtt connect rate limit reached');
          }
          callback(allowed ? null : new Error('connect rate limit'), allowed);
        },
        (err: Error) => callback(err, false),
      );
    },

    authenticate(client, username, password, done) {
      const info = connections.get(client.conn);
      if (!info) return done(authError(5, 'not authorized'), false);
      authenticator
        .authenticate({ listener: info.listener, clientId: client.id, username, password })
        .then((result) => {
          if (!result.ok) {
            metrics.refused.inc({ listener: info.listener, reason: result.reason });
            if (mayLog()) {
              log.info({ listener: info.listener, ip: info.ip, reason: result.reason }, 'mqtt connect refused');
            }
            return done(authError(result.returnCode, result.reason), false);
          }
          const session: ClientSession = {
            principal: result.principal,
            grants: grantsFor(result.principal),
            listener: info.listener,
            ip: info.ip,
          };
          // The CONNECT's last will, checked now as if published now. Aedes stores it after authentication and
          // checks it again only when a live client dies; a will swept up for a client on a dead node is
          // authorized with no client at all (authorizePublish below), so nothing unchecked may be stored.
          const will = (client as { _will?: { topic: string; qos: number; retain?: boolean } | null })._will;
          const willDenial = will ? checkPublish(session.grants, will) : undefined;
          if (willDenial) {
            metrics.refused.inc({ listener: info.listener, reason: 'will-not-allowed' });
            if (mayLog()) {
              log.info(
                { listener: info.listener, ip: info.ip, clientId: client.id, reason: willDenial },
                'mqtt connect refused: last will not allowed',
              );
            }
            return done(authError(5, 'will-not-allowed'), false);
          }
          (client as WithSession)[SESSION] = session;
          if (result.expiresAtMs !== undefined) scheduleExpiry(client, result.expiresAtMs);
          done(null, true);
        })
        .catch((err: unknown) => {
          log.error({ err }, 'mqtt authentication failed');
          done(authError(3, 'server unavailable'), false);
        });
    },

    authorizePublish(client, packet, callback) {
      const session = sessionOf(client);
      if (!session) {
        // Only Aedes' will sweep publishes without a live client: a will of a client whose node died, checked
        // against that client's grants at its CONNECT (authenticate). Nothing but the tree may be published.
        return callback(client === null && !packet.topic.startsWith('$') ? null : new Error('not authorized'));
      }
      const denial = checkPublish(session.grants, packet);
      if (denial) {
        metrics.authzDenied.inc({ action: 'publish', reason: denial });
        if (mayLog()) {
          log.warn(
            {
              clientId: session.principal.id,
              role: session.principal.role,
              topic: packet.topic.slice(0, 200),
              reason: denial,
            },
            'mqtt publish refused; disconnecting',
          );
        }
        // MQTT 3.1.1 has no negative PUBACK: an error closes the connection (RELIABILITY M2).
        return callback(new Error(`publish refused: ${denial}`));
      }
      metrics.messagesIn.inc({ class: topicClass(packet.topic) });
      callback(null);
    },

    authorizeSubscribe(client, subscription, callback) {
      const session = sessionOf(client);
      const denial = session ? checkSubscribe(session.grants, subscription.topic) : 'out-of-scope';
      if (denial) {
        metrics.authzDenied.inc({ action: 'subscribe', reason: denial });
        if (mayLog()) {
          log.info(
            { clientId: session?.principal.id, filter: subscription.topic.slice(0, 200), reason: denial },
            'mqtt subscription refused',
          );
        }
        // null negates: SUBACK 0x80 for this filter (aedes #48), the connection stays.
        return callback(null, null);
      }
      let held = subscriptionsOf.get(client);
      if (!held) {
        held = new Set();
        subscriptionsOf.set(client, held);
      }
      if (!held.has(subscription.topic) && held.size >= MAX_SUBSCRIPTIONS_PER_CLIENT) {
        metrics.authzDenied.inc({ action: 'subscribe', reason: 'too-many-subscriptions' });
        if (mayLog()) {
          log.warn({ clientId: client.id, max: MAX_SUBSCRIPTIONS_PER_CLIENT }, 'mqtt subscription refused: too many');
        }
        return callback(null, null);
      }
      held.add(subscription.topic);
      // In place: Aedes stores `packet.subscriptions` for persistent sessions, not what we return.
      if (subscription.qos > 1) subscription.qos = 1;
      callback(null, subscription);
    },

    authorizeForward(client, packet) {
      const session = sessionOf(client);
      if (!session || !mayReceive(session.grants, packet.topic)) {
        metrics.authzDenied.inc({ action: 'forward', reason: 'out-of-scope' });
        return null;
      }
      metrics.messagesOut.inc({ class: topicClass(packet.topic) });
      return packet;
    },
  });

  function scheduleExpiry(client: Client, expiresAtMs: number) {
    const delayMs = Math.max(0, expiresAtMs - clock.nowMs());
    // setTimeout's ceiling is ~24.8 days; a longer token is checked again at that point.
    const timer = setTimeout(
      () => {
        expiryTimers.delete(client);
        if (clock.nowMs() >= expiresAtMs) client.close();
        else scheduleExpiry(client, expiresAtMs);
      },
      Math.min(delayMs, 2 ** 31 - 1),
    );
    timer.unref();
    expiryTimers.set(client, timer);
  }

  aedes.on('clientReady', (client) => {
    const session = sessionOf(client);
    if (!session) return;
    metrics.connects.inc({ listener: session.listener, role: session.principal.role });
    log.debug(
      { clientId: client.id, role: session.principal.role, listener: session.listener },
      'mqtt client connected',
    );
  });
  aedes.on('unsubscribe', (unsubscriptions, client) => {
    const held = subscriptionsOf.get(client);
    for (const filter of unsubscriptions) held?.delete(filter);
  });
  aedes.on('clientDisconnect', (client) => {
    log.debug({ clientId: client.id }, 'mqtt client disconnected');
    const timer = expiryTimers.get(client);
    if (timer) {
      clearTimeout(timer);
      expiryTimers.delete(client);
    }
  });
  (aedes as unknown as NodeJS.EventEmitter).on('error', (err: Error) => log.error({ err }, 'mqtt broker error'));

  const connectedClients = () => Object.values((aedes as unknown as { clients: Record<string, Client> }).clients);
  function clientsByRole(): Record<string, number> {
    const counts: Record<string, number> = { gateway: 0, observer: 0, app: 0 };
    for (const client of connectedClients()) {
      const role = sessionOf(client)?.principal.role;
      if (role) counts[role] = (counts[role] ?? 0) + 1;
    }
    return counts;
  }

  /** Connections open now, all listeners together (the WebSocket listener has no server-side cap of its own). */
  let open = 0;
  /** Every accepted connection, whatever the listener: limits, guard, then Aedes. */
  function accept(listener: ListenerName, stream: Duplex, ip: string, req?: IncomingMessage): void {
    if (open >= config.maxConnections) {
      metrics.refused.inc({ listener, reason: 'max-connections' });
      if (mayLog()) log.warn({ ip, listener, max: config.maxConnections }, 'mqtt: connection limit reached');
      stream.destroy();
      return;
    }
    if (!limits.admit(ip)) {
      metrics.refused.inc({ listener, reason: 'too-many-pending' });
      if (mayLog()) log.warn({ ip, listener }, 'mqtt: too many connections without CONNECT from one address');
      stream.destroy();
      return;
    }
    const info: ConnectionInfo = { listener, ip, pending: true };
    const guarded = guardMqttStream(stream, {
      maxPacketBytes: config.maxPacketBytes,
      maxConnectBytes: config.maxConnectBytes,
      onRefused: (reason, detail) => {
        metrics.refused.inc({ listener, reason });
        if (mayLog()) log.warn({ ip, listener, reason, ...detail }, 'mqtt connection cut by the frame guard');
      },
    });
    connections.set(guarded, info);
    open += 1;
    let counted = true;
    const uncount = () => {
      if (!counted) return;
      counted = false;
      open -= 1;
    };
    stream.once('close', uncount);
    guarded.once('close', uncount);
    guarded.once('close', () => {
      if (info.pending) {
        info.pending = false;
        limits.release(ip);
      }
    });
    const client = aedes.handle(guarded, req);
    capSubscribeQos(client);
  }

  const sockets = new Set<net.Socket>();
  function track(socket: net.Socket) {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  }

  const tlsMaterial = await loadTlsMaterial(config, log);
  await aedes.listen();

  const tcpServer = net.createServer((socket) => {
    track(socket);
    socket.setNoDelay(true);
    socket.on('error', () => undefined);
    accept('tcp', socket, socket.remoteAddress ?? 'unknown');
  });
  const tlsServer = tls.createServer(
    { cert: tlsMaterial.cert, key: tlsMaterial.key, minVersion: 'TLSv1.2', handshakeTimeout: config.connectTimeoutMs },
    (socket) => {
      socket.setNoDelay(true);
      socket.on('error', () => undefined);
      accept('tls', socket, socket.remoteAddress ?? 'unknown');
    },
  );
  // Raw sockets of the TLS listener, so a close can cut handshakes in progress too.
  tlsServer.on('connection', track);
  tlsServer.on('tlsClientError', () => metrics.refused.inc({ listener: 'tls', reason: 'tls-handshake' }));
  tcpServer.maxConnections = config.maxConnections;
  tlsServer.maxConnections = config.maxConnections;
  // Past maxConnections Node closes a new socket itself ('drop'); counted like every other refusal. An accept that
  // fails (EMFILE: out of file descriptors, ENFILE, ENOMEM) is an 'error' on the server: without a listener it
  // would be an uncaught exception, and a broker must refuse a connection, never die of one.
  for (const [listener, server] of [
    ['tcp', tcpServer],
    ['tls', tlsServer],
  ] as const) {
    server.on('drop', () => {
      metrics.refused.inc({ listener, reason: 'max-connections' });
      if (mayLog()) log.warn({ listener, max: config.maxConnections }, 'mqtt: connection limit reached');
    });
  }

  const listenOn = async (server: net.Server, host: string, port: number): Promise<ListenerAddress> => {
    server.listen(port, host);
    await Promise.race([
      once(server, 'listening'),
      once(server, 'error').then(([err]) => Promise.reject(err as Error)),
    ]);
    const address = server.address() as net.AddressInfo;
    return { host, port: address.port, url: '' };
  };

  let websocket: WebSocketListener | undefined;
  try {
    const tcpAddress = await listenOn(tcpServer, config.tcp.host, config.tcp.port);
    const tlsAddress = await listenOn(tlsServer, config.tls.host, config.tls.port);
    for (const [listener, server] of [
      ['tcp', tcpServer],
      ['tls', tlsServer],
    ] as const) {
      server.on('error', (err: NodeJS.ErrnoException) => {
        metrics.refused.inc({ listener, reason: 'accept-failed' });
        if (mayLog()) log.error({ listener, err: err.message, code: err.code }, 'mqtt: accepting a connection failed');
      });
    }
    tcpAddress.url = `mqtt://${tcpAddress.host}:${tcpAddress.port}`;
    tlsAddress.url = `mqtts://${tlsAddress.host.includes(':') ? `[${tlsAddress.host}]` : tlsAddress.host}:${tlsAddress.port}`;
    await publishCloudState(aedes, { online: true, since: clock.nowMs(), version });
    log.info(
      { tcp: tcpAddress.url, tls: tlsAddress.url, caFile: tlsMaterial.caFile, tlsSource: tlsMaterial.source },
      'mqtt broker listening',
    );

    let closing: Promise<void> | undefined;
    const broker: CloudBroker = {
      aedes,
      tcp: tcpAddress,
      tls: { ...tlsAddress, caFile: tlsMaterial.caFile },
      get webSocketPaths() {
        return websocket?.paths ?? [];
      },
      metrics,
      attachWebSocket(server) {
        if (websocket) throw new Error('the WebSocket listener is already attached');
        websocket = attachWebSocketListener({
          server,
          maxPayloadBytes: config.wsMaxPayloadBytes,
          accept: (stream, ip, req) => accept('ws', stream, ip, req),
          onRefused: (reason) => metrics.refused.inc({ listener: 'ws', reason }),
        });
      },
      healthCheck() {
        return {
          name: 'broker',
          check: () => {
            if (aedes.closed || !tcpServer.listening || !tlsServer.listening) {
              return Promise.reject(new Error('mqtt broker is not listening'));
            }
            return Promise.resolve({ clients: aedes.connectedClients, pending: limits.pending() });
          },
        };
      },
      close() {
        closing ??= (async () => {
          clearInterval(recheck);
          websocket?.close();
          const closed = Promise.all([
            new Promise<void>((resolve) => tcpServer.close(() => resolve())),
            new Promise<void>((resolve) => tlsServer.close(() => resolve())),
          ]);
          // Subscribers (gateways) see the cloud go offline before their connection drops.
          await publishCloudState(aedes, { online: false, since: clock.nowMs(), version }).catch(() => undefined);
          await new Promise((resolve) => setTimeout(resolve, 50));
          // The clients are not dying, the cloud is: their wills ("gateway offline") would be false news, to
          // subscribers now and to ingest. Aedes publishes a will on any close without DISCONNECT, so drop them.
          for (const client of connectedClients()) (client as unknown as { will: unknown }).will = null;
          await new Promise<void>((resolve) => aedes.close(() => resolve()));
          for (const timer of expiryTimers.values()) clearTimeout(timer);
          expiryTimers.clear();
          for (const socket of sockets) socket.destroy();
          await closed;
          log.info('mqtt broker stopped');
        })();
        return closing;
      },
    };

    // A revoked identity is dropped at the next check: MQTT 3.1.1 cannot re-authenticate a live connection.
    const recheck = setInterval(() => {
      void disconnectRevoked();
    }, config.identityRecheckMs);
    recheck.unref();
    async function disconnectRevoked() {
      const byIdentity = connectedClients().filter((c) => {
        const role = sessionOf(c)?.principal.role;
        return role === 'gateway' || role === 'observer';
      });
      if (byIdentity.length === 0) return;
      const ids = [...new Set(byIdentity.map((c) => identityIdOf(sessionOf(c)!.principal)))];
      let active: Set<string>;
      try {
        active = await identities.activeAmong(ids);
      } catch {
        return; // the store is down: keep the connections, try again next time
      }
      for (const client of byIdentity) {
        const id = identityIdOf(sessionOf(client)!.principal);
        if (!active.has(id)) {
          log.info({ clientId: client.id }, 'mqtt identity revoked: disconnecting');
          client.close();
        }
      }
    }

    return broker;
  } catch (err) {
    websocket?.close();
    tcpServer.close();
    tlsServer.close();
    await new Promise<void>((resolve) => aedes.close(() => resolve()));
    throw err;
  }
}

/**
 * Aedes 1.2 answers a SUBSCRIBE with the QoS the client asked for, taken before authorizeSubscribe runs, even when
 * the subscription is stored at a lower one. Lowering QoS 2 requests to 1 as the packet is parsed makes the SUBACK
 * tell the truth (MQTT-3.9.3: the granted QoS may be lower). `_parser` is Aedes' mqtt-packet parser; should a later
 * Aedes drop it, authorizeSubscribe still stores QoS 1 and only the SUBACK code would say 2.
 */
function capSubscribeQos(client: Client): void {
  const parser = (client as unknown as { _parser?: NodeJS.EventEmitter })._parser;
  parser?.prependListener('packet', (packet: { cmd?: string; subscriptions?: { qos: number }[] }) => {
    if (packet.cmd !== 'subscribe' || !Array.isArray(packet.subscriptions)) return;
    for (const sub of packet.subscriptions) if (sub.qos > 1) sub.qos = 1;
  });
}

function identityIdOf(principal: Principal): string {
  return principal.id;
}
