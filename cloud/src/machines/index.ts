/**
 * The machines domain, assembled: member–machine links (REST, gateway requests, offline decisions), the linked
 * member's live workout, workout data (MQTT records, HTTP, inferred intervals), maintenance, heartbeats of HTTP
 * equipment, waitlists and per-machine figures — plus their jobs:
 *
 * - agenda `machines:release-idle` (every minute) releases links idle for MACHINE_LINK_IDLE_S (injected clock);
 * - agenda `machines:reconcile` (every minute) repairs what a crash left (link mirrors, claims of ended sessions,
 *   history rows without a claim, out-of-order flags);
 * - a timer every MACHINE_SWEEP_INTERVAL_S marks silent HTTP machines offline and hands lapsed waitlist holds on.
 *
 * cloud.ts builds the Redis overlay first (`createOverlays`) and hands it to ingest as `liveHooks`, with
 * `onTelemetry`, both bound late to this object; then it calls `createMachines` once sessions and access exist.
 */
import type { Aedes } from 'aedes';
import type { Redis } from 'ioredis';
import type { Db } from 'mongodb';
import type { Clock } from '../../../tools/runtime/clock.ts';
import { verifySecret } from '../../../tools/mqtt/secrets.ts';
import type { Logger } from '../../../tools/runtime/logger.ts';
import { TOPIC_POLICY, newReqId, topics } from '../../../protocol/index.ts';
import type {
  BranchId,
  Decision,
  MachineId,
  MachineStatusValue,
  SessionId,
  Telemetry,
  UserId,
} from '../../../protocol/index.ts';
import type { Credential } from '../../../protocol/messages/access.ts';
import type { GatewayRequests } from '../broker/gateway-requests.ts';
import { RetryLater, type StoredRecord } from '../ingest/stored-hooks.ts';
import { RECORD_COLLECTIONS } from '../ingest/store.ts';
import type { RouteSpec } from '../http/route.ts';
import type { Jobs } from '../jobs/jobs.ts';
import { createInference, type Inference } from '../workouts/inference.ts';
import { workoutRoutes } from '../workouts/routes.ts';
import { createWorkouts, ensureWorkoutCollections, type Workouts } from '../workouts/service.ts';
import type { MachinesConfig } from './config.ts';
import { createHeartbeats, createMachineAuth, type Heartbeats, type MachineIdentityReader } from './heartbeat.ts';
import {
  LINK_HISTORY_COLLECTION,
  createLinks,
  ensureLinkCollections,
  publishChecked,
  type LinkSessions,
  type Links,
} from './links.ts';
import { createLivePublisher } from './live-publisher.ts';
import type { LiveState } from './live-state.ts';
import { createLiveWorkout, type LiveWorkout } from './live-workout.ts';
import { createMaintenance, type Maintenance } from './maintenance.ts';
import type { Overlays } from './overlay.ts';
import { machineRoutes, type MachineAccess } from './routes.ts';
import { createWaitlists, type Waitlists } from './waitlist.ts';

export { createOverlays } from './overlay.ts';

/** Decisions for the gateways (the ids came from our own stores; the schema checks them on the way out). */
function allow(userId: string, sessionId: string): Decision {
  return { decision: 'allow', userId: userId as UserId, sessionId: sessionId as SessionId };
}
function deny(reason: string, userId?: string): Decision {
  return { decision: 'deny', reason, ...(userId ? { userId: userId as UserId } : {}) };
}

/**
 * The deny reason of a gateway `link` request that unlinked the member instead (they were the one linked): the
 * machine got `cmd/unlink` from the cloud; the gateway shows it as done, not as an error.
 */
export const MACHINE_UNLINKED = 'unlinked';

/**
 * How long after it was stored an offline link waits for the check-in it followed (an access scan, reconciled by
 * sessions — maybe in a later hook run, or retried after a failure) before the cloud gives up and undoes it.
 */
export const OFFLINE_LINK_WAIT_MS = 120_000;

export const MACHINE_JOBS = { releaseIdle: 'machines:release-idle', reconcile: 'machines:reconcile' } as const;

export interface MachinesDeps {
  db: Db;
  redis: Redis;
  aedes: Aedes;
  live: LiveState;
  overlays: Overlays;
  sessions: LinkSessions;
  /** C1's credential resolver, for the gateways' link requests. */
  credentials: {
    resolve(
      credential: Credential,
      ctx: { branch: string; atMs: number },
    ): Promise<{ ok: true; userId: string } | { ok: false; reason: string; userId?: string }>;
  };
  gatewayRequests?: Pick<GatewayRequests, 'handle'>;
  ingest?: {
    onStored(
      kind: 'workout',
      handler: (records: StoredRecord<'workout'>[]) => Promise<void>,
      o: { name: string },
    ): void;
    onStored(
      kind: 'offline-decision',
      handler: (records: StoredRecord<'offline-decision'>[]) => Promise<void>,
      o: { name: string },
    ): void;
  };
  jobs?: Pick<Jobs, 'repeat'>;
  identities: MachineIdentityReader;
  access: MachineAccess;
  /** GDPR (users.privacy): export sections and the deletion hook that releases the member's links. */
  privacy?: {
    registerDeletionHook(name: string, hook: (userId: string) => Promise<void>): void;
    registerExportSection(name: string, section: (userId: string) => Promise<unknown>): void;
  };
  clock: Clock;
  log: Logger;
  config: MachinesConfig;
}

export interface Machines {
  links: Links;
  workouts: Workouts;
  inference: Inference;
  maintenance: Maintenance;
  waitlists: Waitlists;
  heartbeats: Heartbeats;
  liveWorkout: LiveWorkout;
  routes: RouteSpec[];
  /** ingest's onTelemetry (bound late in cloud.ts). */
  onTelemetry(branch: BranchId, samples: readonly Telemetry[]): void;
  /** ingest's live publisher observer (bound late in cloud.ts). */
  observe(branch: BranchId, availability: { machine: MachineId; status: MachineStatusValue }): void;
  /**
   * ingest.onStored('offline-decision'). Rejects with RetryLater while a link waits for the member's check-in to be
   * reconciled (up to OFFLINE_LINK_WAIT_MS after it was stored); the batch's other decisions are applied meanwhile.
   */
  applyOfflineDecisions(records: readonly StoredRecord<'offline-decision'>[]): Promise<void>;
  /** ingest.onStored('workout'). */
  acceptWorkoutRecords(records: readonly StoredRecord<'workout'>[]): Promise<void>;
  /** The sweep timer's work (heartbeats, waitlist holds), callable from tests. */
  sweep(): Promise<void>;
  /** Waits for work started in the background (link releases, live forwarding, inference). */
  idle(): Promise<void>;
  stop(): Promise<void>;
}

export async function createMachines(deps: MachinesDeps): Promise<Machines> {
  const { db, redis, aedes, live, overlays, sessions, clock, log, config } = deps;
  await ensureLinkCollections(db);
  await ensureWorkoutCollections(db);

  const ref: { links?: Links } = {};
  const publisher = createLivePublisher({
    aedes,
    log,
    hooks: {
      overlay: overlays,
      observe: (branch, a) => ref.links?.machineStatus(branch, a.machine, a.status),
    },
  });
  const waitlists = createWaitlists({
    redis,
    db,
    aedes,
    clock,
    log: log.child({ part: 'waitlist' }),
    holdMs: config.waitlistHoldMs,
  });
  const links = createLinks({
    db,
    aedes,
    live,
    overlays,
    publisher,
    sessions,
    clock,
    log: log.child({ part: 'links' }),
    idleMs: config.linkIdleMs,
    mayLink: (branch, machine, userId) => waitlists.mayLink(branch, machine, userId),
  });
  ref.links = links;
  const workouts = createWorkouts({
    db,
    aedes,
    links: { at: (m, at) => links.at(m, at), touch: (b, m, at) => overlays.touch(b, m, at) },
    clock,
    log: log.child({ part: 'workouts' }),
  });
  const inference = createInference({
    redis,
    log: log.child({ part: 'inference' }),
    accept: (input, ctx) => workouts.accept(input, ctx),
  });
  const liveWorkout = createLiveWorkout({
    aedes,
    overlays,
    clock,
    log: log.child({ part: 'live-workout' }),
    onLinkedSamples: (branch, samples) => inference.samples(branch, samples),
  });
  const maintenance = createMaintenance({ db, overlays, links, clock, log: log.child({ part: 'maintenance' }) });
  const heartbeats = createHeartbeats({
    redis,
    live,
    publisher,
    clock,
    log: log.child({ part: 'heartbeat' }),
    timeoutMs: config.heartbeatTimeoutMs,
  });

  links.onLinked((link) => {
    void waitlists.linked(link).catch((err: unknown) => {
      log.warn({ err: { message: (err as Error).message } }, 'waitlist not updated after a link');
    });
  });
  links.onEnded(async (ended) => {
    await inference.close(ended.machine);
    await waitlists.advance(ended.branch, ended.machine);
  });

  const isFree = async (branch: string, machine: string) => {
    const overlay = await overlays.get(branch, machine);
    return !overlay.userId && !overlay.outOfOrder;
  };

  const decisions = db.collection(RECORD_COLLECTIONS['offline-decision']);
  /**
   * A later offline unlink of the machine by its gateway, already stored: when batches were applied out of order
   * (a retried one), it ends a link applied only now.
   */
  async function laterUnlink(branch: BranchId, machine: MachineId, atMs: number) {
    const later = await decisions.findOne(
      { branch, name: 'unlink', 'request.machine': machine, 'decision.decision': 'allow', at: { $gt: new Date(atMs) } },
      { sort: { at: 1 }, projection: { at: 1 } },
    );
    return later ? { endedBy: { atMs: (later['at'] as Date).getTime(), reason: 'offline-decision' } } : {};
  }

  async function applyOfflineDecisions(records: readonly StoredRecord<'offline-decision'>[]): Promise<void> {
    // Machines and members with a link that waits for its check-in: their later decisions wait with it (in order);
    // the others are applied now. A retried run applies the whole batch again: a link is found by its msgId, an
    // unlink only ends a link made before it (event time), so nothing is applied twice or out of order.
    const waiting = new Set<string>();
    let firstWaiting: string | undefined;
    for (const r of records) {
      const d = r.payload;
      if (d.decision.decision !== 'allow') continue; // a deny changed nothing at the machine
      const userId = d.decision.userId;
      const subject = ('userId' in d.request ? d.request.userId : undefined) ?? userId;
      if (waiting.has(`m:${d.request.machine}`) || (subject && waiting.has(`u:${subject}`))) {
        waiting.add(`m:${d.request.machine}`);
        if (subject) waiting.add(`u:${subject}`);
        continue;
      }
      // One tap, one effect: the gateway asked the cloud first (request.reqId) and the cloud took that decision after
      // all, answered too late. It stands; this record is not applied again. Only a link the cloud answered with an
      // unlink (the member was linked there: a toggle) leaves the machine showing the gateway's link: undone.
      const online = await links.decidedOnline(r.branch, d.request.reqId);
      if (online !== undefined) {
        log.info(
          { machine: d.request.machine, name: d.name, online, msgId: r.msgId },
          'offline decision of a tap decided online',
        );
        if (d.name === 'link' && online === 'unlinked' && userId) {
          const current = await links.current(d.request.machine);
          if (current?.userId !== userId) await publishUndo(r.branch, d.request.machine, userId);
        }
        continue;
      }
      if (d.name === 'link') {
        if (!userId) continue;
        const machine = d.request.machine;
        const outcome = await links.linkOffline({
          branch: r.branch,
          machine,
          userId,
          atMs: d.ts,
          msgId: r.msgId,
          ...(await laterUnlink(r.branch, machine, d.ts)),
        });
        if (outcome.kind === 'linked' || outcome.kind === 'recorded') continue;
        if (outcome.kind === 'wait' && clock.nowMs() - r.ingestedAtMs < OFFLINE_LINK_WAIT_MS) {
          // The gateway allowed it after the member's check-in, which has not been reconciled yet (the access lane
          // and the records lane are applied independently): retried with what follows it for this machine/member.
          waiting.add(`m:${machine}`).add(`u:${userId}`);
          firstWaiting ??= r.msgId;
          continue;
        }
        const reason = outcome.kind === 'wait' ? 'not-checked-in' : outcome.reason;
        // The same rules say no (machine taken or in maintenance, no visit): undo the gateway's link at the machine.
        log.info({ machine, reason, msgId: r.msgId }, 'offline link undone');
        const current = await links.current(machine);
        if (current?.userId !== userId) {
          await links.republish(r.branch, machine);
          await publishUndo(r.branch, machine, userId);
        }
      } else {
        await links.unlink({
          machine: d.request.machine,
          ...(d.request.userId ? { userId: d.request.userId } : userId ? { userId } : {}),
          reason: 'offline-decision',
          atMs: d.ts,
          // By event time: a link made after this unlink (a later tap, applied first) is not its to end.
          linkedBeforeMs: d.ts,
        });
      }
    }
    if (firstWaiting) throw new RetryLater(`offline link ${firstWaiting} waits for the member's check-in`);
  }

  async function publishUndo(branch: BranchId, machine: MachineId, userId: string): Promise<void> {
    await publishChecked(
      aedes,
      topics.machineCommand(branch, machine, 'unlink'),
      'MachineUnlinkCommand',
      { reqId: newReqId(), expiresAt: clock.nowMs() + 60_000, userId, reason: 'offline-decision-undone' },
      TOPIC_POLICY['machine-command'],
    ).catch((err: unknown) => {
      log.warn({ machine, err: { message: (err as Error).message } }, 'undo of an offline link not sent');
    });
  }

  async function acceptWorkoutRecords(records: readonly StoredRecord<'workout'>[]): Promise<void> {
    const failures: Error[] = [];
    for (const r of records) {
      try {
        await inference.markPublisher(r.payload.source);
        const result = await workouts.accept(r.payload, { branch: r.branch, origin: 'mqtt' });
        if (!result.ok) log.warn({ msgId: r.msgId, path: result.path }, 'stored workout record not valid');
      } catch (err) {
        failures.push(err as Error);
      }
    }
    // Rejecting leaves the batch's records pending: ingest's sweep retries them (accept is idempotent by msgId).
    if (failures.length > 0) throw failures[0]!;
  }

  // Each gateway request records its reqId with what it did, and writes nothing once its deadline passed (the gateway
  // decides offline then): an offline decision naming that reqId is the same tap (applyOfflineDecisions).
  deps.gatewayRequests?.handle('link', async (request, { branch, receivedAtMs, signal }): Promise<Decision> => {
    const who = await deps.credentials.resolve(request.credential, { branch, atMs: receivedAtMs });
    if (!who.ok) return deny(who.reason, who.userId);
    const { reqId } = request;
    const result = await links.link({
      branch,
      machine: request.machine,
      userId: who.userId,
      via: 'gateway',
      reqId,
      signal,
    });
    if (!result.ok)
      return deny(result.reason === 'unknown-machine' ? 'machine-unavailable' : result.reason, who.userId);
    if (result.created) return allow(who.userId, result.sessionId);
    // A tap at a machine-mounted reader by the member who is linked there unlinks them (GatewayReaderConfig): the
    // gateway asked `link` because it did not know (linked from the app, or after its restart). The cloud releases
    // the link itself — apps and the machine (`cmd/unlink`) are told by links.unlink — and answers a deny
    // `unlinked`, so that a gateway never shows `cmd/link` for it (docs/access.md "Machine-mounted readers").
    // (Released concurrently — session end, idle — is the same outcome: the member is no longer linked.)
    // A claim left from an earlier, ended session (not yet reconciled) is no link of today's visit: replaced.
    const stale = (await sessions.current(who.userId))?.id !== result.sessionId;
    await links.unlink({
      machine: request.machine,
      userId: who.userId,
      reason: stale ? 'session-ended' : 'member',
      atMs: receivedAtMs,
      reqId,
      signal,
    });
    if (signal.aborted) return deny('deadline-passed', who.userId);
    if (stale) {
      const again = await links.link({
        branch,
        machine: request.machine,
        userId: who.userId,
        via: 'gateway',
        reqId,
        signal,
      });
      if (!again.ok) return deny(again.reason === 'unknown-machine' ? 'machine-unavailable' : again.reason, who.userId);
      return allow(who.userId, again.sessionId);
    }
    return deny(MACHINE_UNLINKED, who.userId);
  });
  deps.gatewayRequests?.handle('unlink', async (request, { receivedAtMs, signal }): Promise<Decision> => {
    const result = await links.unlink({
      machine: request.machine,
      ...(request.userId ? { userId: request.userId } : {}),
      reason: request.reason,
      atMs: receivedAtMs,
      reqId: request.reqId,
      signal,
    });
    return result.ok ? allow(result.userId, result.sessionId) : deny('not-linked');
  });
  deps.ingest?.onStored('workout', (records) => acceptWorkoutRecords(records), { name: 'workouts' });
  deps.ingest?.onStored('offline-decision', (records) => applyOfflineDecisions(records), {
    name: 'machine-links',
  });

  // Deletion: MongoDB documents naming the member are swept by the privacy service; what lives elsewhere is not —
  // the link mirror in Redis, the machine's console (cmd/unlink), waitlist entries. Idempotent.
  deps.privacy?.registerDeletionHook('machineLinks', async (userId) => {
    for (const link of await links.ofUser(userId)) {
      await links.unlink({ machine: link.machine as MachineId, userId, reason: 'member-deleted' });
    }
    await waitlists.removeUser(userId);
  });
  deps.privacy?.registerExportSection('workouts', async (userId) =>
    (await workouts.records(userId, { limit: 100_000 })).map((r) => ({ ...r })),
  );
  deps.privacy?.registerExportSection('machineLinks', async (userId) =>
    (await db.collection(LINK_HISTORY_COLLECTION).find({ userId }).sort({ startedAt: 1 }).toArray()).map(
      ({ _id, userId: _u, ...rest }) => ({ id: _id, ...rest }),
    ),
  );

  if (deps.jobs) {
    await deps.jobs.repeat(MACHINE_JOBS.releaseIdle, 1, async () => {
      await links.releaseIdle();
    });
    await deps.jobs.repeat(MACHINE_JOBS.reconcile, 1, async () => {
      await links.reconcile();
      await maintenance.reconcile();
    });
  }

  async function sweep(): Promise<void> {
    await heartbeats.sweep();
    await waitlists.sweep(isFree);
  }
  let sweeping = false;
  const timer = setInterval(() => {
    if (sweeping) return;
    sweeping = true;
    void sweep()
      .catch((err: unknown) => log.warn({ err: { message: (err as Error).message } }, 'machines sweep failed'))
      .finally(() => {
        sweeping = false;
      });
  }, config.sweepIntervalMs);
  timer.unref();

  const routes: RouteSpec[] = [
    ...machineRoutes({
      live,
      nowMs: () => clock.nowMs(),
      access: {
        ...deps.access,
        observerBranches: async (id, secret) => {
          const identity = await deps.identities.find(id);
          // The secret is checked whether or not the observer exists (same cost: no existence oracle by timing).
          const matches = verifySecret(secret, identity?.secretHash ?? '0'.repeat(64));
          const ok = identity?.role === 'observer' && !identity.disabled && matches;
          return ok ? identity.branches : undefined;
        },
      },
      overlays,
      links,
      heartbeats,
      machineAuth: createMachineAuth(deps.identities),
      maintenance,
      waitlists,
      workouts,
      machineBranches: async (machine) => {
        const identity = await deps.identities.find(machine);
        return identity && identity.role === 'machine' && !identity.disabled ? identity.branches : undefined;
      },
      db,
      clock,
    }),
    ...workoutRoutes({ workouts, guard: deps.access.guard }),
  ];

  const idle = async () => {
    await Promise.all([links.idle(), liveWorkout.idle(), inference.idle()]);
  };
  return {
    links,
    workouts,
    inference,
    maintenance,
    waitlists,
    heartbeats,
    liveWorkout,
    routes,
    onTelemetry: (branch, samples) => liveWorkout.onTelemetry(branch, samples),
    observe: (branch, a) => links.machineStatus(branch, a.machine, a.status),
    applyOfflineDecisions,
    acceptWorkoutRecords,
    sweep,
    idle,
    async stop() {
      clearInterval(timer);
      await idle();
    },
  };
}
