/**
 * The gym sessions domain, assembled: models, the service, its REST routes, the gateways' door requests, the
 * reconciliation of offline door decisions, and the two jobs (agenda, run with the injected clock):
 *
 * - `sessions:auto-end` ends sessions whose auto-end instant (4 hours, or the branch's closing time) has passed,
 *   emitting `onEnded` with reason `auto-timeout` / `branch-closed`;
 * - `sessions:reconcile-claims` clears claims a crash left behind (and re-claims open sessions that lost theirs).
 *
 * cloud.ts calls `createSessions` once; other domains use `sessions.current(userId)`, `sessions.onEnded(listener)`
 * and `sessions.recordMachineUse(sessionId, machineId)`.
 */
import type { Aedes } from 'aedes';
import type { Connection } from 'mongoose';
import type { Clock } from '../../../tools/runtime/clock.ts';
import type { Logger } from '../../../tools/runtime/logger.ts';
import type { GatewayRequests } from '../broker/gateway-requests.ts';
import type { RouteSpec } from '../http/route.ts';
import type { Jobs } from '../jobs/jobs.ts';
import type { SessionsConfig } from './config.ts';
import { registerDoorRequests } from './gateway.ts';
import { createEndNotifier } from './notify.ts';
import { sessionModels, type SessionDoc } from './model.ts';
import { createScanReconciler, type StoredScan } from './reconcile.ts';
import { sessionRoutes, type SessionRoutesDeps } from './routes.ts';
import { createSessionService, type SessionBranch, type SessionCredentials, type SessionService } from './service.ts';

export type { SessionEnded, SessionEndedListener, SessionView } from './service.ts';

export const SESSION_JOBS = {
  autoEnd: 'sessions:auto-end',
  claims: 'sessions:reconcile-claims',
} as const;
export type SessionJob = keyof typeof SESSION_JOBS;

export interface SessionsDeps {
  mongo: Connection;
  clock: Clock;
  log: Logger;
  config: SessionsConfig;
  jobs: Pick<Jobs, 'repeat' | 'agenda'>;
  credentials: SessionCredentials;
  branches: { get(id: string): Promise<SessionBranch | undefined> };
  requireUser: SessionRoutesDeps['requireUser'];
  canManage: SessionRoutesDeps['canManage'];
  /** Where the door requests are registered (check-in, check-out). */
  gatewayRequests?: Pick<GatewayRequests, 'handle'>;
  /** Publishes the in-app notice of a session that ended by itself (u/{user}/live/notification). */
  aedes?: Aedes;
  /** GDPR export section registration (users.privacy). */
  privacy?: { registerExportSection(name: string, section: (userId: string) => Promise<unknown>): void };
}

export interface Sessions extends SessionService {
  routes: RouteSpec[];
  /** ingest.onStored('access-scan', …): applies offline door decisions; rejects on failure (ingest retries). */
  reconcileScans(records: readonly StoredScan[]): Promise<void>;
  /** Runs one of the session jobs now through agenda and resolves when it finished (rejects if it failed). */
  runJobNow(job: SessionJob, timeoutMs?: number): Promise<void>;
  stop(): Promise<void>;
}

export async function createSessions(deps: SessionsDeps): Promise<Sessions> {
  const { mongo, clock, log, config, jobs } = deps;
  const models = await sessionModels(mongo);
  const service = createSessionService({
    models,
    clock,
    log,
    credentials: deps.credentials,
    branches: deps.branches,
    maxDurationMs: config.maxDurationMs,
    claimGraceMs: config.claimGraceMs,
  });
  const reconciler = createScanReconciler({
    sessions: service,
    credentials: deps.credentials,
    log: log.child({ part: 'reconcile' }),
    nowMs: () => clock.nowMs(),
  });
  if (deps.gatewayRequests) registerDoorRequests(deps.gatewayRequests, service);
  if (deps.aedes) service.onEnded(createEndNotifier({ aedes: deps.aedes, log }));
  deps.privacy?.registerExportSection('gymSessions', async (userId) =>
    (await models.Session.find({ userId }).sort({ startedAt: 1 }).lean<SessionDoc[]>()).map(
      ({ _id, userId: _u, ...rest }) => ({ id: _id, ...rest }),
    ),
  );

  const everyMinutes = config.jobsIntervalSeconds / 60;
  const lock = { lockLifetimeMs: config.jobsLockMs };
  await jobs.repeat(
    SESSION_JOBS.autoEnd,
    everyMinutes,
    async () => {
      await service.autoEndDue();
    },
    lock,
  );
  await jobs.repeat(
    SESSION_JOBS.claims,
    everyMinutes,
    async () => {
      await service.reconcileClaims();
    },
    lock,
  );

  const routes = sessionRoutes({
    sessions: service,
    requireUser: deps.requireUser,
    canManage: deps.canManage,
    nowMs: () => clock.nowMs(),
  });

  return {
    ...service,
    routes,
    reconcileScans: (records) => reconciler.reconcile(records),
    async runJobNow(job, timeoutMs = 30_000) {
      const name = SESSION_JOBS[job];
      const { agenda } = jobs;
      let timer: NodeJS.Timeout | undefined;
      let onSuccess: (() => void) | undefined;
      let onFail: ((err: Error) => void) | undefined;
      const finished = new Promise<void>((resolve, reject) => {
        onSuccess = resolve;
        onFail = reject;
        agenda.once(`success:${name}`, onSuccess);
        agenda.once(`fail:${name}`, onFail);
        timer = setTimeout(() => reject(new Error(`${name} did not finish within ${timeoutMs} ms`)), timeoutMs);
      });
      try {
        await agenda.now(name);
        await finished;
      } finally {
        clearTimeout(timer);
        if (onSuccess) agenda.off(`success:${name}`, onSuccess);
        if (onFail) agenda.off(`fail:${name}`, onFail);
      }
    },
    stop: () => service.idle(),
  };
}
