/**
 * Member–machine links: a temporary, exclusive association (at most one member per machine) that tags the
 * machine's workout data with the member and feeds their live workout topic.
 *
 * The claim is a document `machine_links { _id: machineId }` created with an insert: a duplicate key means the
 * machine is taken (409 / deny `machine-busy`), whatever API nodes or gateways race (ARCHITECTURE "Persistence").
 * Each link also gets a history row (`machine_link_history`, open until released) — workouts find the member linked
 * at their event time there — and a Redis mirror (overlay.ts) for the hot paths.
 *
 * The same rules apply wherever a link comes from (the app's REST route, a gateway's `link` request, an offline
 * decision the gateway took alone): the machine is known in the branch, online and in service; the member has an
 * open session at that branch; the machine is free (or already theirs: idempotent). A link ends on unlink (member,
 * app or gateway), when the member's session ends, after `idleMs` without activity (the idle job), and when the
 * machine goes offline. Every change is published within the request to the apps (the machine's retained
 * availability, overlaid `in_use`; the member's `u/{user}/live/workout` link event) and to the machine
 * (`m/{machine}/cmd/link|unlink`, which its gateway relays).
 *
 * An offline link decision (`linkOffline`) is applied by its event time: to the member's visit open then (waiting —
 * `wait` — while its check-in is not reconciled yet), written to history only when it is over by now (its visit
 * ended, the machine was linked again, the gateway's unlink came, the machine went offline), refused when another
 * member's link covered that instant (`machine-busy`) or the machine is in maintenance. Its link id derives from its
 * msgId, so a retried run applies it once. A session's end releases its links at the session's end time.
 *
 * A crash between the claim and its mirror/history is repaired by `reconcile()` (a job): mirrors rewritten from
 * the claims, claims of ended sessions released, history rows without a claim closed.
 *
 * One tap, one effect: a gateway's link or unlink request records its reqId with its effect (the claim's and history
 * row's `reqId`, the history row's `endReqId`). A gateway that got no answer in time decides offline and its
 * OfflineDecision names the same reqId (`request.reqId`); `decidedOnline` tells the machines domain that the cloud
 * took that decision after all, and the record is not applied a second time.
 */
import { createHash, randomUUID } from 'node:crypto';
import type { Aedes } from 'aedes';
import type { Collection, Db } from 'mongodb';
import type { Clock } from '../../../tools/runtime/clock.ts';
import type { Logger } from '../../../tools/runtime/logger.ts';
import { TOPIC_POLICY, newReqId, topics, validatePayload } from '../../../protocol/index.ts';
import type {
  BranchId,
  MachineId,
  MachineStatusValue,
  PayloadName,
  SessionId,
  UserId,
  UserLiveWorkout,
} from '../../../protocol/index.ts';
import { isDuplicateKey } from '../db/mongo.ts';
import type { LivePublisher } from './live-publisher.ts';
import type { LiveState, MachineView } from './live-state.ts';
import type { Overlays } from './overlay.ts';

export const LINKS_COLLECTION = 'machine_links';
export const LINK_HISTORY_COLLECTION = 'machine_link_history';

export type LinkVia = 'app' | 'gateway' | 'offline' | 'staff';
export type UnlinkReason =
  | 'member'
  | 'idle-timeout'
  | 'session-ended'
  | 'machine-offline'
  | 'out-of-order'
  | 'reconciled'
  | 'offline-decision'
  | (string & {});

export interface LinkClaim {
  _id: string;
  branch: string;
  userId: string;
  sessionId: string;
  linkId: string;
  linkedAt: Date;
  via: LinkVia;
  /** The gateway request (reqId) that made the link (via `gateway`). */
  reqId?: string;
}

export interface LinkHistoryDoc {
  _id: string;
  machine: string;
  branch: string;
  userId: string;
  sessionId: string;
  startedAt: Date;
  endedAt: Date | null;
  endReason?: string;
  via: LinkVia;
  /** The gateway request (reqId) that made the link (via `gateway`). */
  reqId?: string;
  /** The gateway request (reqId) that ended it: an unlink, or a link request that toggled it off. */
  endReqId?: string;
}

/** The sessions service as links use it (C2's `sessions`). */
export interface LinkSessions {
  current(userId: string): Promise<{ id: string; branchId: string; status?: string; startedAt?: string } | undefined>;
  /** The member's visit at the branch open at that instant (active, or ended since): offline links go by it. */
  openAt?(
    userId: string,
    branchId: string,
    atMs: number,
  ): Promise<{ id: string; status?: string; endedAt?: string } | undefined>;
  onEnded(
    listener: (event: { sessionId: string; userId: string; endedAtMs?: number }) => void | Promise<void>,
  ): () => void;
  recordMachineUse?(sessionId: string, machineId: string): Promise<void>;
}

/** `deadline-passed`: a gateway request past its deadline (the gateway decides offline) links nothing. */
export type LinkDenyReason =
  'not-checked-in' | 'machine-busy' | 'machine-unavailable' | 'unknown-machine' | 'deadline-passed';

export type LinkResult =
  | { ok: true; linkId: string; sessionId: string; userId: string; created: boolean }
  | { ok: false; reason: LinkDenyReason; detail: string };

/**
 * What applying an offline link decision did: `linked` (the machine's current link now, or already), `recorded` (a
 * link of the past — its visit, or the machine's use by it, is over by now — written to history only), `refused`
 * (the same rules say no: the gateway's link is undone), `wait` (no visit of the member open at that instant is
 * known yet: the check-in it followed has not been reconciled; try again later).
 */
export type OfflineLinkOutcome =
  | { kind: 'linked'; created: boolean }
  | { kind: 'recorded'; endReason: string; created: boolean }
  | { kind: 'refused'; reason: LinkDenyReason; detail: string }
  | { kind: 'wait'; detail: string };

/** The link id (and history row id) of an offline link decision: derived from its msgId, so a retry finds it. */
export function offlineLinkId(msgId: string): string {
  return `off-${createHash('sha256').update(msgId).digest('base64url').slice(0, 40)}`;
}

export type UnlinkResult = { ok: true; userId: string; sessionId: string; linkId: string } | { ok: false };

export interface LinkView {
  machine: string;
  branch: string;
  userId: string;
  sessionId: string;
  linkId: string;
  linkedAt: number;
}

/** What a released link tells listeners (workouts close an inferred interval). */
export interface LinkEnded extends LinkView {
  endedAt: number;
  reason: UnlinkReason;
}

export interface Links {
  link(input: {
    branch: BranchId;
    machine: MachineId;
    userId: string;
    via: LinkVia;
    /** When the link happened (an offline decision: its time at the gateway); default now. */
    atMs?: number;
    /** The gateway request deciding it, recorded with the link. */
    reqId?: string;
    /** A gateway request's deadline: once aborted, no link is made (`deadline-passed`). */
    signal?: AbortSignal;
    /** The link id to use (an offline decision's, derived from its msgId); default a new one. */
    linkId?: string;
  }): Promise<LinkResult>;
  /**
   * Applies a link the gateway decided offline (its allow-list is the authority while the cloud cannot answer) by
   * its event time `atMs`: the member's visit open then, the machine's use by others around then. Idempotent by
   * `msgId`. `endedBy` is a later decision of the same gateway already known to end it (an offline unlink).
   */
  linkOffline(input: {
    branch: BranchId;
    machine: MachineId;
    userId: string;
    atMs: number;
    msgId: string;
    endedBy?: { atMs: number; reason: UnlinkReason };
  }): Promise<OfflineLinkOutcome>;
  unlink(input: {
    machine: MachineId;
    userId?: string;
    reason: UnlinkReason;
    atMs?: number;
    /** The gateway request deciding it, recorded on the ended history row. */
    reqId?: string;
    /** A gateway request's deadline: once aborted, nothing is released (`{ok: false}`). */
    signal?: AbortSignal;
    /** Only a link made at or before this instant is ended (an offline unlink, by its event time). */
    linkedBeforeMs?: number;
  }): Promise<UnlinkResult>;
  /**
   * What the gateway request `reqId` of a branch did, if the cloud decided it: `linked` (it made a link, maybe
   * released since) or `unlinked` (it ended one). An offline decision naming it is the same tap.
   */
  decidedOnline(branch: string, reqId: string): Promise<'linked' | 'unlinked' | undefined>;
  /** The machine's current link. */
  current(machine: string): Promise<LinkView | undefined>;
  /** The member's current links (usually one). */
  ofUser(userId: string): Promise<LinkView[]>;
  /** Who was linked to the machine at that instant (history, for late workout data). */
  at(machine: string, atMs: number): Promise<LinkHistoryDoc | undefined>;
  /** Releases links idle for longer than idleMs (by the injected clock); resolves with how many. */
  releaseIdle(): Promise<number>;
  /** Repairs what a crash left; resolves with what it fixed. */
  reconcile(): Promise<{ mirrored: number; released: number; closed: number }>;
  /** A machine status was published (observer of the live publisher): offline releases its link. */
  machineStatus(branch: BranchId, machine: MachineId, status: MachineStatusValue): void;
  onLinked(listener: (link: LinkView) => void): void;
  onEnded(listener: (ended: LinkEnded) => void | Promise<void>): void;
  /** Republishes the machine's retained availability (after a link or service change). */
  republish(branch: BranchId, machine: MachineId): Promise<void>;
  /** Waits for the releases started by observers (tests, stop). */
  idle(): Promise<void>;
}

export interface LinksDeps {
  db: Db;
  aedes: Aedes;
  live: LiveState;
  overlays: Overlays;
  publisher: LivePublisher;
  sessions: LinkSessions;
  clock: Clock;
  log: Logger;
  /** A link without activity (telemetry, workout data, heartbeat) for this long is released. */
  idleMs: number;
  /** A claim younger than this is never "repaired" (it may be between its writes). */
  claimGraceMs?: number;
  /** Whether this member may take the machine now (a waitlist hold for someone else says no: `machine-busy`). */
  mayLink?: (branch: string, machine: string, userId: string) => Promise<boolean>;
}

const OFFLINE: ReadonlySet<MachineStatusValue> = new Set(['offline']);
const UNAVAILABLE: ReadonlySet<MachineStatusValue> = new Set(['offline', 'unknown', 'maintenance']);
/**
 * An offline decision is applied later, by the gateway's word: a machine the cloud shows `unknown` (its gateway was
 * out of touch — the reason the gateway decided alone) or `offline` (gone since; handled by event time) is no
 * reason to refuse it. Maintenance is.
 */
const UNAVAILABLE_OFFLINE: ReadonlySet<MachineStatusValue> = new Set(['maintenance']);

export async function ensureLinkCollections(db: Db): Promise<void> {
  for (const name of [LINKS_COLLECTION, LINK_HISTORY_COLLECTION]) {
    try {
      await db.createCollection(name);
    } catch (err) {
      if ((err as { code?: number }).code !== 48) throw err;
    }
  }
  await db.collection(LINK_HISTORY_COLLECTION).createIndex({ machine: 1, startedAt: -1 }, { name: 'machine_started' });
  await db.collection(LINK_HISTORY_COLLECTION).createIndex({ userId: 1, startedAt: -1 }, { name: 'user_started' });
  await db.collection(LINKS_COLLECTION).createIndex({ userId: 1 }, { name: 'user' });
  await db.collection(LINKS_COLLECTION).createIndex({ reqId: 1 }, { name: 'req', sparse: true });
  // An offline decision naming the gateway request tried first finds what that request did (decidedOnline).
  await db.collection(LINK_HISTORY_COLLECTION).createIndex({ reqId: 1 }, { name: 'req', sparse: true });
  await db.collection(LINK_HISTORY_COLLECTION).createIndex({ endReqId: 1 }, { name: 'end_req', sparse: true });
}

/** Publishes a payload after checking it against its schema (apps and machines trust what the cloud sends). */
export function publishChecked(
  aedes: Aedes,
  topic: string,
  name: PayloadName,
  payload: unknown,
  policy: { qos: 0 | 1 | 2; retained: boolean },
): Promise<void> {
  const checked = validatePayload(name, payload);
  if (!checked.ok) return Promise.reject(new Error(`invalid ${name} (${checked.path ?? checked.reason})`));
  return new Promise((resolve, reject) => {
    aedes.publish(
      {
        cmd: 'publish',
        topic,
        payload: Buffer.from(JSON.stringify(checked.value)),
        qos: policy.qos,
        retain: policy.retained,
        dup: false,
      },
      (err) => (err ? reject(err) : resolve()),
    );
  });
}

export function createLinks(deps: LinksDeps): Links {
  const { db, aedes, live, overlays, publisher, sessions, clock, log } = deps;
  const claims: Collection<LinkClaim> = db.collection<LinkClaim>(LINKS_COLLECTION);
  const history: Collection<LinkHistoryDoc> = db.collection<LinkHistoryDoc>(LINK_HISTORY_COLLECTION);
  const claimGraceMs = deps.claimGraceMs ?? 30_000;
  const linkedListeners: ((link: LinkView) => void)[] = [];
  const endedListeners: ((ended: LinkEnded) => void | Promise<void>)[] = [];
  const pending = new Set<Promise<unknown>>();

  const track = <T>(work: Promise<T>): Promise<T> => {
    pending.add(work);
    void work.finally(() => pending.delete(work)).catch(() => undefined);
    return work;
  };

  const viewOf = (c: LinkClaim): LinkView => ({
    machine: c._id,
    branch: c.branch,
    userId: c.userId,
    sessionId: c.sessionId,
    linkId: c.linkId,
    linkedAt: c.linkedAt.getTime(),
  });

  async function machineView(branch: BranchId, machine: MachineId): Promise<MachineView | undefined> {
    return live.get(branch, machine);
  }

  /**
   * `known`: the machine's view just read by the caller (one Redis round trip saved per link).
   */
  async function republish(branch: BranchId, machine: MachineId, known?: MachineView): Promise<void> {
    const view = known ?? (await machineView(branch, machine));
    if (!view) return;
    const { machine: id, status, since, type, displayName } = view;
    await publisher.publish(
      branch,
      { machine: id, status, since, ...(type ? { type } : {}), ...(displayName ? { displayName } : {}) },
      clock.nowMs(),
    );
  }

  /** Apps and the machine hear about a link change; failures are logged, never undo the change. */
  async function announce(
    change: 'linked' | 'unlinked',
    link: LinkView,
    extra: { reason?: string; greeting?: string; view?: MachineView } = {},
  ): Promise<void> {
    const branch = link.branch as BranchId;
    const machine = link.machine as MachineId;
    const now = clock.nowMs();
    const userEvent: UserLiveWorkout = {
      type: 'link',
      machine,
      ts: now,
      state: change,
      sessionId: link.sessionId as SessionId,
    };
    const command =
      change === 'linked'
        ? {
            reqId: newReqId(),
            expiresAt: now + 60_000,
            userId: link.userId,
            sessionId: link.sessionId,
            ...(extra.greeting ? { greeting: extra.greeting } : {}),
          }
        : { reqId: newReqId(), expiresAt: now + 60_000, userId: link.userId, reason: extra.reason ?? 'member' };
    const results = await Promise.allSettled([
      publishChecked(
        aedes,
        topics.userLive(link.userId as UserId, 'workout'),
        'UserLiveWorkout',
        userEvent,
        TOPIC_POLICY['user-live'],
      ),
      publishChecked(
        aedes,
        topics.machineCommand(branch, machine, change === 'linked' ? 'link' : 'unlink'),
        change === 'linked' ? 'MachineLinkCommand' : 'MachineUnlinkCommand',
        command,
        TOPIC_POLICY['machine-command'],
      ),
      republish(branch, machine, extra.view),
    ]);
    for (const r of results) {
      if (r.status === 'rejected') {
        log.warn({ machine, change, err: { message: (r.reason as Error).message } }, 'link change not announced');
      }
    }
  }

  async function release(claim: LinkClaim, reason: UnlinkReason, atMs: number, reqId?: string): Promise<UnlinkResult> {
    // Conditional on the link id: of two racing releases exactly one deletes the claim and announces it.
    const deleted = await claims.findOneAndDelete({ _id: claim._id, linkId: claim.linkId });
    if (!deleted) return { ok: false };
    const endedAt = new Date(Math.max(atMs, deleted.linkedAt.getTime()));
    const ended = { endedAt, endReason: reason, ...(reqId === undefined ? {} : { endReqId: reqId }) };
    await Promise.all([
      history.updateOne({ _id: deleted.linkId, endedAt: null }, { $set: ended }),
      overlays.clearLink(deleted.branch, deleted._id, deleted.linkId),
    ]);
    const view = viewOf(deleted);
    await announce('unlinked', view, { reason });
    for (const listener of endedListeners) {
      try {
        await listener({ ...view, endedAt: endedAt.getTime(), reason });
      } catch (err) {
        log.warn({ machine: view.machine, err: { message: (err as Error).message } }, 'link-ended listener failed');
      }
    }
    log.info({ machine: view.machine, branch: view.branch, reason }, 'machine unlinked');
    return { ok: true, userId: deleted.userId, sessionId: deleted.sessionId, linkId: deleted.linkId };
  }

  sessions.onEnded(async ({ userId, sessionId, endedAtMs }) => {
    const held = await claims.find({ userId, sessionId }).toArray();
    // Released when the visit ended (an offline check-out applied late ends it in the past): the machine's history
    // shows it free from then on, so an offline link of the next member at that time is no `machine-busy`.
    const at = Math.min(endedAtMs ?? clock.nowMs(), clock.nowMs());
    for (const claim of held) await track(release(claim, 'session-ended', at));
  });

  /** Links.link, with the machine's view when the caller has just read it. */
  async function linkMachine(
    { branch, machine, userId, via, atMs, reqId, signal, linkId }: Parameters<Links['link']>[0],
    known?: MachineView,
  ): Promise<LinkResult> {
    const now = clock.nowMs();
    const at = Math.min(atMs ?? now, now);
    const view = known ?? (await machineView(branch, machine));
    if (!view) return { ok: false, reason: 'unknown-machine', detail: `no machine ${machine} in branch ${branch}` };
    const overlay = await overlays.get(branch, machine);
    if (overlay.outOfOrder || (via === 'offline' ? UNAVAILABLE_OFFLINE : UNAVAILABLE).has(view.status)) {
      const why = overlay.outOfOrder ? 'out of order' : view.status;
      return { ok: false, reason: 'machine-unavailable', detail: `machine ${machine} is ${why}` };
    }
    const session = await sessions.current(userId);
    if (!session || session.branchId !== branch || (session.status && session.status !== 'active')) {
      return { ok: false, reason: 'not-checked-in', detail: `check in at ${branch} first` };
    }
    if (deps.mayLink && !(await deps.mayLink(branch, machine, userId))) {
      const holder = await claims.findOne({ _id: machine });
      if (holder?.userId !== userId) {
        return {
          ok: false,
          reason: 'machine-busy',
          detail: `machine ${machine} is held for the next member waiting`,
        };
      }
    }
    const claim: LinkClaim = {
      _id: machine,
      branch,
      userId,
      sessionId: session.id,
      linkId: linkId ?? randomUUID(),
      linkedAt: new Date(at),
      via,
      ...(reqId === undefined ? {} : { reqId }),
    };
    // The gateway was answered `timeout` meanwhile and decides offline: its decision is the one that counts.
    if (signal?.aborted) return { ok: false, reason: 'deadline-passed', detail: 'decided after the deadline' };
    try {
      await claims.insertOne(claim);
    } catch (err) {
      if (!isDuplicateKey(err)) throw err;
      const holder = await claims.findOne({ _id: machine });
      if (holder && holder.userId === userId) {
        // Already theirs (a retried request, a second tap): the same link, nothing announced twice.
        return { ok: true, linkId: holder.linkId, sessionId: holder.sessionId, userId, created: false };
      }
      return { ok: false, reason: 'machine-busy', detail: `machine ${machine} is in use by another member` };
    }
    await Promise.all([
      history.insertOne({
        _id: claim.linkId,
        machine,
        branch,
        userId,
        sessionId: session.id,
        startedAt: claim.linkedAt,
        endedAt: null,
        via,
        ...(reqId === undefined ? {} : { reqId }),
      }),
      overlays.setLink(branch, machine, {
        userId,
        sessionId: session.id,
        linkId: claim.linkId,
        linkedAt: at,
      }),
      sessions.recordMachineUse?.(session.id, machine).catch((err: unknown) => {
        log.warn({ err: { message: (err as Error).message } }, 'machine use not recorded on the session');
      }),
    ]);
    const linkView = viewOf(claim);
    await announce('linked', linkView, { view });
    for (const listener of linkedListeners) listener(linkView);
    log.info({ machine, branch, via }, 'machine linked');
    return { ok: true, linkId: claim.linkId, sessionId: session.id, userId, created: true };
  }

  const links: Links = {
    link: (input) => linkMachine(input),

    async linkOffline({ branch, machine, userId, atMs, msgId, endedBy }) {
      const at = Math.min(atMs, clock.nowMs());
      const linkId = offlineLinkId(msgId);
      // A retried run (the sweep, after a failure of this batch): applied already, whatever happened to it since.
      const done = await history.findOne({ _id: linkId }, { projection: { endedAt: 1, endReason: 1 } });
      if (done) {
        return done.endedAt === null
          ? { kind: 'linked', created: false }
          : { kind: 'recorded', endReason: done.endReason ?? 'ended', created: false };
      }
      const view = await machineView(branch, machine);
      if (!view) return { kind: 'refused', reason: 'unknown-machine', detail: `no machine ${machine} in ${branch}` };
      const overlay = await overlays.get(branch, machine);
      if (overlay.outOfOrder || UNAVAILABLE_OFFLINE.has(view.status)) {
        const why = overlay.outOfOrder ? 'out of order' : view.status;
        return { kind: 'refused', reason: 'machine-unavailable', detail: `machine ${machine} is ${why}` };
      }
      // The visit the link belongs to is the one open at its event time — not necessarily today's open one.
      const current = sessions.openAt ? undefined : await sessions.current(userId);
      const session: { id: string; status?: string; endedAt?: string } | undefined = sessions.openAt
        ? await sessions.openAt(userId, branch, at)
        : current?.branchId === branch
          ? current
          : undefined;
      if (!session) {
        return { kind: 'wait', detail: `no visit of the member open at ${new Date(at).toISOString()} known yet` };
      }
      // Another member's link covering that instant: the machine was busy (machine-busy, as online).
      const around = await history
        .find({ machine, startedAt: { $lte: new Date(at) } })
        .sort({ startedAt: -1 })
        .limit(5)
        .toArray();
      const taken = around.find((r) => r.userId !== userId && (r.endedAt === null || r.endedAt.getTime() > at));
      if (taken) return { kind: 'refused', reason: 'machine-busy', detail: `machine ${machine} was in use then` };
      // What ended it already, by event time: its visit, a later link of the machine, a later unlink of the
      // gateway's, the machine going offline. The earliest counts.
      const ends: { at: number; reason: UnlinkReason }[] = [];
      if (session.status !== undefined && session.status !== 'active' && session.endedAt) {
        ends.push({ at: Date.parse(session.endedAt), reason: 'session-ended' });
      }
      const [next] = await history
        .find({ machine, startedAt: { $gt: new Date(at) } })
        .sort({ startedAt: 1 })
        .limit(1)
        .toArray();
      if (next) ends.push({ at: next.startedAt.getTime(), reason: 'superseded' });
      if (endedBy && endedBy.atMs > at) ends.push({ at: endedBy.atMs, reason: endedBy.reason });
      if (view.status === 'offline') ends.push({ at: Math.max(at, view.since), reason: 'machine-offline' });
      if (ends.length === 0) {
        const result = await linkMachine({ branch, machine, userId, via: 'offline', atMs: at, linkId }, view);
        return result.ok ? { kind: 'linked', created: result.created } : { kind: 'refused', ...result };
      }
      const end = ends.reduce((a, b) => (b.at < a.at ? b : a));
      try {
        await history.insertOne({
          _id: linkId,
          machine,
          branch,
          userId,
          sessionId: session.id,
          startedAt: new Date(at),
          endedAt: new Date(Math.max(end.at, at)),
          endReason: end.reason,
          via: 'offline',
        });
      } catch (err) {
        if (!isDuplicateKey(err)) throw err;
        return { kind: 'recorded', endReason: end.reason, created: false };
      }
      await sessions.recordMachineUse?.(session.id, machine);
      log.info({ machine, branch, endReason: end.reason }, 'offline machine link recorded (over by now)');
      return { kind: 'recorded', endReason: end.reason, created: true };
    },

    async unlink({ machine, userId, reason, atMs, reqId, signal, linkedBeforeMs }) {
      const claim = await claims.findOne({ _id: machine });
      if (!claim || (userId !== undefined && claim.userId !== userId)) return { ok: false };
      if (linkedBeforeMs !== undefined && claim.linkedAt.getTime() > linkedBeforeMs) return { ok: false };
      if (signal?.aborted) return { ok: false };
      return track(release(claim, reason, atMs ?? clock.nowMs(), reqId));
    },

    async decidedOnline(branch, reqId) {
      // A link it made is held by its claim before its history row is written: both are looked at.
      if (await claims.findOne({ branch, reqId }, { projection: { _id: 1 } })) return 'linked';
      if (await history.findOne({ branch, reqId }, { projection: { _id: 1 } })) return 'linked';
      if (await history.findOne({ branch, endReqId: reqId }, { projection: { _id: 1 } })) return 'unlinked';
      return undefined;
    },

    async current(machine) {
      const claim = await claims.findOne({ _id: machine });
      return claim ? viewOf(claim) : undefined;
    },

    async ofUser(userId) {
      return (await claims.find({ userId }).toArray()).map(viewOf);
    },

    async at(machine, atMs) {
      const when = new Date(atMs);
      const rows = await history
        .find({ machine, startedAt: { $lte: when } })
        .sort({ startedAt: -1 })
        .limit(5)
        .toArray();
      return rows.find((r) => r.endedAt === null || r.endedAt.getTime() >= atMs);
    },

    async releaseIdle() {
      const now = clock.nowMs();
      let released = 0;
      for (const claim of await claims.find({}).toArray()) {
        const overlay = await overlays.get(claim.branch, claim._id);
        const activity = Math.max(claim.linkedAt.getTime(), overlay.activityAt ?? 0);
        if (now - activity < deps.idleMs) continue;
        if ((await track(release(claim, 'idle-timeout', now))).ok) released += 1;
      }
      return released;
    },

    async reconcile() {
      const now = clock.nowMs();
      let mirrored = 0;
      let released = 0;
      let closed = 0;
      const held = await claims.find({}).toArray();
      const heldIds = new Set(held.map((c) => c.linkId));
      for (const claim of held) {
        if (now - claim.linkedAt.getTime() < claimGraceMs) continue;
        const session = await sessions.current(claim.userId);
        if (!session || session.id !== claim.sessionId) {
          if ((await track(release(claim, 'session-ended', now))).ok) released += 1;
          continue;
        }
        const overlay = await overlays.get(claim.branch, claim._id);
        if (overlay.linkId !== claim.linkId) {
          await overlays.setLink(claim.branch, claim._id, {
            userId: claim.userId,
            sessionId: claim.sessionId,
            linkId: claim.linkId,
            linkedAt: claim.linkedAt.getTime(),
          });
          await history.updateOne(
            { _id: claim.linkId },
            {
              $setOnInsert: {
                machine: claim._id,
                branch: claim.branch,
                userId: claim.userId,
                sessionId: claim.sessionId,
                startedAt: claim.linkedAt,
                endedAt: null,
                via: claim.via,
              },
            },
            { upsert: true },
          );
          mirrored += 1;
          await republish(claim.branch as BranchId, claim._id as MachineId);
        }
      }
      const open = await history.find({ endedAt: null }).toArray();
      for (const row of open) {
        if (heldIds.has(row._id) || now - row.startedAt.getTime() < claimGraceMs) continue;
        // Its claim is gone (released by a process that crashed before closing the row, or never written).
        await history.updateOne(
          { _id: row._id, endedAt: null },
          { $set: { endedAt: new Date(now), endReason: 'reconciled' } },
        );
        await overlays.clearLink(row.branch, row.machine, row._id);
        closed += 1;
      }
      if (mirrored + released + closed > 0) log.info({ mirrored, released, closed }, 'machine links reconciled');
      return { mirrored, released, closed };
    },

    machineStatus(branch, machine, status) {
      if (!OFFLINE.has(status)) return;
      void track(
        (async () => {
          const claim = await claims.findOne({ _id: machine, branch });
          if (claim) await release(claim, 'machine-offline', clock.nowMs());
        })(),
      ).catch((err: unknown) => {
        log.warn({ machine, err: { message: (err as Error).message } }, 'link of an offline machine not released');
      });
    },

    onLinked(listener) {
      linkedListeners.push(listener);
    },
    onEnded(listener) {
      endedListeners.push(listener);
    },
    republish: (branch, machine) => republish(branch, machine),
    async idle() {
      while (pending.size > 0) await Promise.allSettled([...pending]);
    },
  };
  return links;
}
