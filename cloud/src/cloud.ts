/**
 * Builds and starts the whole cloud process from its configuration: connections, health, metrics, the HTTP API.
 * main.ts calls it with the parsed environment; tests call it in-process with their own services.
 */
import { setTimeout as delay } from 'node:timers/promises';
import type { Connection } from 'mongoose';
import type { Redis } from 'ioredis';
import type { Clock } from '../../tools/runtime/clock.ts';
import type { Logger } from '../../tools/runtime/logger.ts';
import type { Access } from './access/index.ts';
import { createAuth, type AuthService } from './auth/index.ts';
import { startBranchDomains, type BranchDomains, type BranchesService } from './branches/index.ts';
import { createAppTokens, type AppTokens } from './broker/app-tokens.ts';
import { startCloudBroker, type CloudBroker } from './broker/broker.ts';
import { createGatewayRequests, type GatewayRequests } from './broker/gateway-requests.ts';
import { createIdentityStore, type IdentityStore } from './broker/identities.ts';
import { createCachedIdentityStore, type CachedIdentityStore } from './broker/identity-cache.ts';
import type { CloudConfig } from './config.ts';
import { createFieldCipher } from './crypto/field-cipher.ts';
import { loadKeyring } from './crypto/keyring.ts';
import { connectMongo, mongoHealthCheck } from './db/mongo.ts';
import { closeRedis, connectRedis, redisHealthCheck } from './db/redis.ts';
import { createHealth, type Health } from './health/health.ts';
import { healthRoutes } from './health/routes.ts';
import { createApp } from './http/app.ts';
import { listen, type HttpServer } from './http/server.ts';
import { startIngest, type Ingest } from './ingest/ingest.ts';
import type { MachineDirectory } from './ingest/sources.ts';
import { startJobs, type Jobs } from './jobs/jobs.ts';
import { createMachines, createOverlays, type Machines } from './machines/index.ts';
import { createMetrics, type CloudMetrics } from './metrics/metrics.ts';
import { metricsRoutes } from './metrics/routes.ts';
import { createErrorReporter, type ErrorReporter } from './observability/sentry.ts';
import { apiRateLimit } from './ratelimit/api-limit.ts';
import { createUsers, type Users } from './users/index.ts';
import { createSessions, type Sessions } from './sessions/index.ts';
import { createErasureCheck } from './privacy/index.ts';
import { version } from './version.ts';

/** The job that finishes GDPR deletions left pending by a failed deletion hook. */
export const PENDING_DELETIONS_JOB = 'privacy:retry-pending-deletions';

export interface RunningCloud {
  url: string;
  port: number;
  mongo: Connection;
  redis: Redis;
  health: Health;
  metrics: CloudMetrics;
  /** Authentication: `auth.requireUser(…)` guards other domains' routes; `auth.accounts` reads accounts. */
  auth: AuthService;
  /** The MQTT broker: `broker.aedes` for in-process subscribe/publish, listener addresses, metrics. */
  broker: CloudBroker;
  /** Members (profiles, body metrics …) and GDPR: `users.privacy.registerDeletionHook(…)`, `isDeleted(…)`. */
  users: Users;
  /** Uplink ingest and live machine state: `ingest.live.listBranch(…)`. */
  ingest: Ingest;
  /** Gateways' online requests (`gw/{gateway}/req/{name}`): `gatewayRequests.handle(name, handler)`. */
  gatewayRequests: GatewayRequests;
  /** Gym sessions: `sessions.current(userId)`, `onEnded(listener)`, `recordMachineUse(sessionId, machineId)`. */
  sessions: Sessions;
  /** Machines: links (`machines.links`), workouts, maintenance, waitlists, heartbeats, live workout forwarding. */
  machines: Machines;
  /** Branches: `branches.get(id)` (time zone, opening hours; helpers isOpenAt/closingAfter in branches/index.ts). */
  branches: BranchesService;
  /** Access: `access.resolver.resolve(credential, {branch, atMs})`, cards, QR tokens, allow-lists. */
  access: Access;
  /** Equipment registry, gateways (store, configuration/allow-list sync) — the whole domain assembly. */
  sites: BranchDomains;
  /** MQTT identities (cached per node): `identities.disable(id, at)` revokes on every node. */
  identities: CachedIdentityStore;
  /** Graceful: /health turns 503, in-flight requests finish (within the grace period), then connections close. */
  stop(): Promise<void>;
}

export async function startCloud({
  config,
  log,
  clock,
}: {
  config: CloudConfig;
  log: Logger;
  clock: Clock;
}): Promise<RunningCloud> {
  // Whatever was opened is closed again if a later step fails, so a failed start leaves no reconnecting client
  // or timer behind (in a test process that would keep mocha alive).
  const opened: (() => Promise<unknown>)[] = [];
  try {
    const mongo = await connectMongo({ ...config.mongo, log: log.child({ module: 'mongo' }) });
    opened.push(() => mongo.close());
    const redis = await connectRedis({ ...config.redis, name: 'nxg-cloud', log: log.child({ module: 'redis' }) });
    opened.push(() => closeRedis(redis));

    const metrics = createMetrics();
    const health = createHealth({
      clock,
      timeoutMs: config.health.checkTimeoutMs,
      version,
      log: log.child({ module: 'health' }),
    });
    health.add(mongoHealthCheck(mongo));
    health.add(redisHealthCheck(redis));
    // Apps' token check needs auth and the users domain, built below; the WebSocket listener opens after both.
    const late: { appTokens?: AppTokens } = {};
    // Cached for CONNECTs (and machine heartbeats); revocations through it reach every node over Redis.
    const identities = await createCachedIdentityStore({
      store: createIdentityStore(mongo),
      redis,
      redisKeyPrefix: config.redis.keyPrefix,
      ...config.mqtt.identityCache,
      clock,
      log: log.child({ module: 'identity-cache' }),
      registry: metrics.registry,
    });
    opened.push(() => identities.close());
    const broker = await startCloudBroker({
      config: config.mqtt,
      log: log.child({ module: 'broker' }),
      clock,
      identities,
      registry: metrics.registry,
      version,
      appTokens: (token, connection) =>
        late.appTokens
          ? late.appTokens.authenticate(token, connection)
          : Promise.reject(new Error('app tokens not ready')),
    });
    opened.push(() => broker.close());
    health.add(broker.healthCheck());
    const cipher = createFieldCipher(await loadKeyring(config.crypto, { log: log.child({ module: 'crypto' }) }));
    // Machines' Redis overlay (linked → in_use, out of order → maintenance) applies to what ingest publishes; the
    // machines domain itself is built once sessions exist, and bound late.
    const overlays = createOverlays(redis);
    const late2: { machines?: Machines } = {};
    const ingest = await startIngest({
      aedes: broker.aedes,
      mongo,
      redis,
      log: log.child({ module: 'ingest' }),
      clock,
      metrics,
      config: config.ingest,
      telemetryRetentionDays: config.jobs.telemetryRetentionDays,
      machines: machineDirectory(identities),
      erasedMembers: createErasureCheck({ mongo, cipher }),
      liveHooks: { overlay: overlays, observe: (branch, a) => late2.machines?.observe(branch, a) },
      onTelemetry: (branch, samples) => late2.machines?.onTelemetry(branch, samples),
    });
    opened.push(() => ingest.stop());
    // Registered before any batch can be stored, so every door scan is marked pending for sessions (a gateway's
    // access lane drains first after a restart); until sessions exist a run fails and ingest's sweep retries it.
    const lateSessions: { sessions?: Sessions } = {};
    ingest.onStored(
      'access-scan',
      (records) =>
        lateSessions.sessions
          ? lateSessions.sessions.reconcileScans(records)
          : Promise.reject(new Error('sessions not ready')),
      { name: 'sessions' },
    );
    const gatewayRequests = createGatewayRequests({
      aedes: broker.aedes,
      redis,
      log: log.child({ module: 'gateway-requests' }),
      registry: metrics.registry,
      clock,
      ...config.sessions.gatewayRequests,
    });
    opened.push(() => gatewayRequests.stop());
    const jobs = await startJobs({
      mongoUrl: config.mongo.url,
      db: mongo.db!,
      clock,
      log: log.child({ module: 'jobs' }),
      config: config.jobs,
      connectTimeoutMs: config.mongo.timeoutMs,
    });
    opened.push(() => jobs.stop());
    const auth = await createAuth({
      config: config.auth,
      mail: config.mail,
      mongo,
      redis,
      clock,
      log: log.child({ module: 'auth' }),
    });
    opened.push(() => auth.close());
    const users = await createUsers({
      mongo,
      redis,
      redisKeyPrefix: config.redis.keyPrefix,
      auth,
      audit: auth.audit,
      cipher,
      clock,
      log: log.child({ module: 'users' }),
    });
    // A deletion whose hook failed stays pending (202); this finishes it once the hook's dependency is back.
    await jobs.repeat(PENDING_DELETIONS_JOB, 15, async () => {
      const { completed, stillPending } = await users.privacy.retryPending();
      if (completed + stillPending > 0) log.info({ completed, stillPending }, 'pending GDPR deletions retried');
    });
    // Staff also read their assigned branches (as over REST); the branches service starts just below.
    const lateSites: { staffOf?: (userId: string) => Promise<readonly string[]> } = {};
    const appTokens = await createAppTokens({
      auth,
      memberships: users.services.memberships,
      staffBranches: (userId) =>
        lateSites.staffOf ? lateSites.staffOf(userId) : Promise.reject(new Error('branches not started yet')),
      mongo,
      aedes: broker.aedes,
      clock,
      log: log.child({ module: 'app-tokens' }),
    });
    late.appTokens = appTokens;
    opened.push(() => Promise.resolve(appTokens.stop()));
    const sites = await startBranchDomains({
      mongo,
      redis,
      aedes: broker.aedes,
      identities,
      auth,
      users,
      clock,
      log: log.child({ module: 'sites' }),
      config: { access: config.access, gateways: config.gateways },
    });
    opened.push(() => sites.stop());
    lateSites.staffOf = (userId) => sites.branches.staff.branchesOf(userId);
    const sessions = await createSessions({
      mongo,
      clock,
      log: log.child({ module: 'sessions' }),
      config: config.sessions,
      jobs,
      credentials: sites.access.resolver,
      branches: sites.branches,
      requireUser: (options) => auth.requireUser(options),
      canManage: (user, branchId) => sites.branches.canManage(user, branchId),
      gatewayRequests,
      aedes: broker.aedes,
      privacy: users.privacy,
    });
    opened.push(() => sessions.stop());
    // Door decisions a gateway took offline, applied to sessions by event time (durable: ingest retries failures).
    lateSessions.sessions = sessions;
    const memberOf = async (userId: string, branchId: string) =>
      (await users.services.memberships.list(userId)).some((m) => m.branchId === branchId);
    const machines = await createMachines({
      db: mongo.db!,
      redis,
      aedes: broker.aedes,
      live: ingest.live,
      overlays,
      sessions,
      credentials: sites.access.resolver,
      gatewayRequests,
      ingest,
      jobs,
      identities,
      privacy: users.privacy,
      access: {
        guard: auth.requireUser(),
        staffGuard: auth.requireUser({ roles: ['staff', 'admin'] }),
        canManage: (user, branchId) => sites.branches.canManage(user, branchId),
        // As the MQTT app tokens: memberships count with a verified email; staff also see their branches.
        canSee: async (user, branchId) =>
          user.role === 'admin' ||
          (user.role === 'staff' && (await sites.branches.canManage(user, branchId))) ||
          (user.emailVerified && (await memberOf(user.id, branchId))),
      },
      clock,
      log: log.child({ module: 'machines' }),
      config: config.machines,
    });
    late2.machines = machines;
    opened.push(() => machines.stop());
    // Every request handler is registered (check-in/out: sessions; link/unlink: machines): gateways may ask now.
    await gatewayRequests.start();

    const errorReporter = createErrorReporter({
      config: config.sentry,
      release: version,
      log: log.child({ module: 'sentry' }),
    });
    opened.push(() => errorReporter.close(2000));
    const app = createApp({
      config: config.http,
      log: log.child({ module: 'http' }),
      metrics,
      version,
      routes: [
        ...healthRoutes(health),
        ...metricsRoutes(metrics, config.metrics),
        ...auth.routes,
        ...users.routes,
        ...sites.routes,
        ...sessions.routes,
        ...machines.routes,
      ],
      rateLimit: apiRateLimit({ redis, config: config.rateLimit, log: log.child({ module: 'ratelimit' }) }),
      errorReporter,
    });
    const http = await listen(app, config.http);
    broker.attachWebSocket(http.server);
    log.info({ url: http.url }, 'cloud API listening');
    return running(config, log, {
      http,
      mongo,
      redis,
      health,
      metrics,
      errorReporter,
      auth,
      broker,
      users,
      ingest,
      sites,
      gatewayRequests,
      sessions,
      machines,
      jobs,
      identities,
    });
  } catch (err) {
    await Promise.allSettled(opened.reverse().map((close) => close()));
    throw err;
  }
}

/** What startCloud built, handed to running() for the RunningCloud it returns and for the ordered stop. */
interface CloudParts {
  http: HttpServer;
  mongo: Connection;
  redis: Redis;
  health: Health;
  metrics: CloudMetrics;
  errorReporter: ErrorReporter;
  auth: AuthService;
  broker: CloudBroker;
  users: Users;
  ingest: Ingest;
  sites: BranchDomains;
  gatewayRequests: GatewayRequests;
  sessions: Sessions;
  machines: Machines;
  jobs: Jobs;
  identities: CachedIdentityStore;
}

function running(config: CloudConfig, log: Logger, parts: CloudParts): RunningCloud {
  const { http, mongo, redis, health, metrics, errorReporter, auth, broker, users, ingest, gatewayRequests, jobs } =
    parts;
  let stopping: Promise<void> | undefined;
  return {
    url: http.url,
    port: http.port,
    mongo,
    redis,
    health,
    metrics,
    auth,
    broker,
    users,
    ingest,
    branches: parts.sites.branches,
    access: parts.sites.access,
    sites: parts.sites,
    gatewayRequests,
    sessions: parts.sessions,
    machines: parts.machines,
    identities: parts.identities,
    stop() {
      stopping ??= (async () => {
        health.markShuttingDown();
        // Keep serving while load balancers notice the 503 on /health, then stop accepting.
        if (config.http.shutdownDrainDelayMs > 0) await delay(config.http.shutdownDrainDelayMs);
        // Before the broker: batches being written still get their acks out.
        await ingest.stop();
        await parts.machines.stop(); // link releases and live forwarding still running
        // Before the broker: its subscriptions and pushes to gateways end first.
        await parts.sites.stop();
        await gatewayRequests.stop();
        await parts.sessions.stop(); // session-ended listeners still running
        // First: it publishes the cloud's offline state and ends the WebSocket connections the HTTP server holds.
        await broker.close();
        await http.close(config.http.shutdownGraceMs);
        await auth.close(); // mail still being sent
        await jobs.stop();
        // Queued error events are sent before the process goes (bounded: Sentry may be unreachable).
        await Promise.allSettled([
          mongo.close(),
          closeRedis(redis),
          parts.identities.close(),
          errorReporter.close(2000),
        ]);
        log.info('cloud stopped');
      })();
      return stopping;
    },
  };
}

/** Ingest's view of the identity store: the enabled machines provisioned for a gateway in a branch. */
function machineDirectory(identities: IdentityStore): MachineDirectory {
  return {
    async machinesOf(branch, gateway) {
      const machines = await identities.list({ role: 'machine', gateway });
      return new Set(machines.filter((m) => !m.disabled && m.branches.includes(branch)).map((m) => m.id));
    },
  };
}
