/**
 * The gateway's own MQTT broker for the branch's machines (Aedes ≥ 1.2 over TCP, 127.0.0.1:1884 by default).
 *
 * - Every connection goes through the frame guard first (tools/mqtt/frame-guard.ts): Aedes enforces no packet
 *   size, so an oversized frame is cut before it is buffered (RELIABILITY finding 3). Sockets use noDelay (Nagle
 *   stalls small QoS 0 streams), CONNECT must arrive within connectTimeout, topics have a level cap.
 * - Machines authenticate with username = client id = machine id and their secret, checked against the SHA-256
 *   hashes of the machines file; anything else gets CONNACK 5 (not authorized).
 * - A machine publishes only under its own `m/{machine}/…` (acl.ts) and subscribes only within its own
 *   `m/{machine}/cmd/+`. A refused PUBLISH disconnects it (MQTT 3.1.1 has no negative PUBACK), a refused SUBSCRIBE
 *   is granted 0x80. QoS 2 is refused (a PUBLISH at QoS 2 disconnects; a QoS 2 SUBSCRIBE is granted 0x80).
 * - Accepted PUBLISHes go through the intake inside authorizePublish, so the PUBACK follows the queue append.
 */
import { once } from 'node:events';
import net from 'node:net';
import { Aedes, type AuthenticateError, type Client, type PublishPacket, type Subscription } from 'aedes';
import { ID_MAX_LENGTH } from '../../../protocol/index.ts';
import type { MachineId } from '../../../protocol/index.ts';
import { createConnectionLimits } from '../../../tools/mqtt/connection-limits.ts';
import { createFrameGuardCounters, guardMqttStream, type FrameGuardCounters } from '../../../tools/mqtt/frame-guard.ts';
import { checkConnectIdentity } from '../../../tools/mqtt/identity.ts';
import type { Logger } from '../../../tools/runtime/logger.ts';
import type { LocalBrokerConfig } from '../config.ts';
import type { MachineRegistry } from '../machines-file.ts';
import type { GatewayMetrics } from '../metrics.ts';
import { machineMaySubscribe, machinePublishTopic } from './acl.ts';
import type { Intake } from './intake.ts';

/** Most topic levels accepted; the protocol's deepest machine topic has 7 (`nxg/v1/b/…/m/…/cmd/…/res`). */
const MAX_TOPIC_LEVELS = 16;
/** CONNACK return code 5: not authorized. */
const NOT_AUTHORIZED = 5;
/**
 * Connections from one address that have not sent their CONNECT yet (RELIABILITY A5, for the gateway's broker as
 * for the cloud's): past it a new one is closed at once, so a flood of idle sockets from one host on the gym's
 * network cannot pile up for connectTimeout each. A machine sends its CONNECT at once; 16 leaves room for a
 * handful of machines behind one address reconnecting together.
 */
export const MAX_PENDING_PER_ADDRESS = 16;

export interface LocalBrokerOptions {
  readonly config: LocalBrokerConfig;
  readonly machines: MachineRegistry;
  readonly intake: Intake;
  readonly metrics: GatewayMetrics;
  readonly log: Logger;
  /**
   * A machine's connection is ready (a new one, reconnects included), before any PUBLISH of it is handled: the
   * gateway forgets its refused records here (UplinkQueue.releaseSource, Intake.release).
   */
  readonly onMachineConnected?: (machine: MachineId) => void;
}

export interface LocalBroker {
  start(): Promise<void>;
  /** Stops accepting connections and closes every machine connection. */
  stop(): Promise<void>;
  /** The port it listens on (the chosen one when configured with 0); 0 before start. */
  readonly port: number;
  readonly machinesConnected: number;
  readonly frameCounters: FrameGuardCounters;
  /** Publishes to the machines (a command relayed from the cloud); resolves once Aedes has dispatched it. */
  publish(topic: string, payload: Buffer): Promise<void>;
  /** Closes the connection of every machine the registry no longer has (a new signed configuration removed it). */
  disconnectRemoved(): number;
}

export function createLocalBroker(options: LocalBrokerOptions): LocalBroker {
  const { config, machines, intake, metrics, log } = options;
  const branch = machines.branch;
  const authenticated = new WeakMap<Client, MachineId>();
  /** Machines connected now (for disconnectRemoved). */
  const connected = new Map<Client, MachineId>();
  const frameCounters = createFrameGuardCounters();
  // Pending (no CONNECT yet) connections per address; no CONNECT rate limit here (machines are provisioned).
  const limits = createConnectionLimits({ maxPendingPerIp: MAX_PENDING_PER_ADDRESS, connectsPerWindow: 0, windowS: 1 });
  const pendingAddress = new WeakMap<object, string>();
  const releasePending = (stream: object) => {
    const address = pendingAddress.get(stream);
    if (address === undefined) return;
    pendingAddress.delete(stream);
    limits.release(address);
  };
  let aedes: Aedes | undefined;
  let server: net.Server | undefined;
  let port = 0;

  function refuseConnect(client: Client, reason: string, done: (err: AuthenticateError, ok: null) => void) {
    metrics.machineConnects.inc({ result: 'refused' });
    log.warn({ clientId: client.id, reason }, 'machine connection refused');
    const err = new Error(`not authorized: ${reason}`) as AuthenticateError;
    err.returnCode = NOT_AUTHORIZED;
    done(err, null);
  }

  const authenticate = (
    client: Client,
    username: string | undefined,
    password: Buffer | undefined,
    done: (err: AuthenticateError | null, ok: boolean | null) => void,
  ): void => {
    const identity = checkConnectIdentity(username, client.id);
    // A machine's client id is exactly its id (no observer-style suffixes on a gateway's broker).
    if (!identity.ok) return refuseConnect(client, identity.reason, done);
    if (client.id !== identity.identityId) return refuseConnect(client, 'bad-client-id', done);
    const machine = machines.verify(identity.identityId, password);
    if (machine === undefined) return refuseConnect(client, 'unknown-or-wrong-secret', done);
    authenticated.set(client, machine);
    metrics.machineConnects.inc({ result: 'ok' });
    done(null, true);
  };

  const authorizePublish = (client: Client | null, packet: PublishPacket, done: (err?: Error | null) => void): void => {
    const machine = client === null ? undefined : authenticated.get(client);
    if (machine === undefined) return done(new Error('not authenticated'));
    if (packet.qos === 2) {
      log.warn({ machine, topic: packet.topic }, 'QoS 2 publish refused: disconnecting');
      return done(new Error('QoS 2 is not accepted'));
    }
    const topic = machinePublishTopic(branch, machine, packet.topic);
    if (topic === undefined) {
      log.warn({ machine, topic: packet.topic }, 'publish outside the machine subtree refused: disconnecting');
      return done(new Error('topic not allowed'));
    }
    // PUBACK after the append, never in 'published' (RELIABILITY finding 1).
    intake.accept(machine, topic, packet).then(
      () => done(null),
      (err: unknown) => {
        // A full queue raised its alarm once (log, /health, state topic): not one error line per refused record.
        const full = err instanceof Error && (err.name === 'QueueFullError' || err.name === 'IntakeRefusedError');
        const fields = { err, machine, topic: packet.topic };
        if (full) log.debug(fields, 'record refused: no PUBACK, disconnecting');
        else log.error(fields, 'record could not be queued: no PUBACK, disconnecting');
        done(err instanceof Error ? err : new Error(String(err)));
      },
    );
  };

  const authorizeSubscribe = (
    client: Client,
    subscription: Subscription,
    done: (err: Error | null, subscription?: Subscription | null) => void,
  ): void => {
    const machine = authenticated.get(client);
    // QoS 2 is refused rather than downgraded: Aedes 1.2 grants the requested QoS whatever the handler returns.
    if (machine === undefined || subscription.qos === 2 || !machineMaySubscribe(branch, machine, subscription.topic)) {
      log.warn(
        { machine: machine ?? client.id, filter: subscription.topic, qos: subscription.qos },
        'subscription refused',
      );
      return done(null, null);
    }
    done(null, subscription);
  };

  function updateConnected(): void {
    metrics.machinesConnected.set(aedes?.connectedClients ?? 0);
  }

  return {
    async start() {
      const broker = await Aedes.createBroker({
        // The CONNECT arrived: this connection no longer counts as pending for its address.
        preConnect: (client, _packet, callback) => {
          releasePending(client.conn);
          callback(null, true);
        },
        connectTimeout: config.connectTimeoutMs,
        maxTopicLevels: MAX_TOPIC_LEVELS,
        maxClientsIdLength: ID_MAX_LENGTH,
        authenticate,
        authorizePublish,
        authorizeSubscribe,
      });
      aedes = broker;
      broker.on('clientReady', (client) => {
        const machine = authenticated.get(client);
        if (machine !== undefined) {
          connected.set(client, machine);
          options.onMachineConnected?.(machine);
        }
        updateConnected();
      });
      broker.on('clientDisconnect', (client) => {
        connected.delete(client);
        updateConnected();
      });
      broker.on('clientError', (client, err) => {
        log.debug({ clientId: client.id, err: err.message }, 'machine connection error');
      });
      broker.on('connectionError', (client, err) => {
        log.debug({ clientId: client.id, err: err.message }, 'machine connection error before CONNECT');
      });
      const srv = net.createServer({ noDelay: true }, (socket) => {
        socket.on('error', () => undefined);
        const address = socket.remoteAddress ?? 'unknown';
        if (!limits.admit(address)) {
          metrics.framesRefused.inc({ reason: 'too-many-pending' });
          socket.destroy();
          return;
        }
        const guarded = guardMqttStream(socket, {
          maxPacketBytes: config.maxPacketBytes,
          counters: frameCounters,
          onRefused: (reason, detail) => {
            metrics.framesRefused.inc({ reason });
            log.warn({ reason, remote: socket.remoteAddress, ...detail }, 'machine connection cut by frame guard');
          },
        });
        pendingAddress.set(guarded, address);
        guarded.once('close', () => releasePending(guarded));
        broker.handle(guarded);
      });
      server = srv;
      srv.listen(config.port, config.host);
      await Promise.race([
        once(srv, 'listening'),
        once(srv, 'error').then(([err]) => {
          throw err;
        }),
      ]);
      port = (srv.address() as net.AddressInfo).port;
      log.info({ host: config.host, port, machines: machines.size }, 'local broker for machines listening');
    },

    async stop() {
      const srv = server;
      const broker = aedes;
      server = undefined;
      aedes = undefined;
      const closing = srv === undefined ? Promise.resolve() : new Promise<void>((r) => srv.close(() => r()));
      if (broker !== undefined) await new Promise<void>((r) => broker.close(() => r()));
      await closing;
      metrics.machinesConnected.set(0);
    },

    get port() {
      return port;
    },
    get machinesConnected() {
      return aedes?.connectedClients ?? 0;
    },
    frameCounters,
    disconnectRemoved() {
      let closed = 0;
      for (const [client, machine] of connected) {
        if (machines.has(machine)) continue;
        log.warn({ machine }, 'machine removed by the configuration: disconnecting');
        client.close();
        closed += 1;
      }
      return closed;
    },
    publish(topic, payload) {
      const broker = aedes;
      if (broker === undefined) return Promise.reject(new Error('local broker is not running'));
      return new Promise((resolve, reject) => {
        broker.publish({ cmd: 'publish', topic, payload, qos: 1, retain: false, dup: false }, (err) =>
          err ? reject(err) : resolve(),
        );
      });
    },
  };
}
