/**
 * Gym sessions: check in, check out, the member's current session and history, a branch's analytics, and the two
 * jobs that keep the data right without a person (auto-termination, claim reconciliation). REST routes, the
 * gateways' door requests and the reconciliation of offline door decisions all go through this one service, so the
 * same rules apply wherever a member checks in:
 *
 * 1. the branch exists and is open (C1's opening hours in the branch's time zone);
 * 2. the credential (NFC card or QR token) resolves to a member of that branch (access/credentials.ts);
 * 3. the claim `active_sessions {_id: userId}` is inserted — a duplicate key is `already-checked-in` — and then the
 *    session, with its auto-end instant: 4 hours after check-in or the branch's closing time, whichever is first.
 *
 * Ending is a conditional update (`status: 'active'` → `ended`), so of two racing check-outs (member and job, two
 * nodes) exactly one ends it and emits `onEnded`; the claim is deleted after it.
 *
 * One tap, one effect: a gateway's door request records its reqId with the decision (`startedVia.reqId`,
 * `endedVia.reqId`, and on the claim while the check-in is being written). When the cloud decided it too late to
 * answer, the gateway decided offline and its access scan names the same reqId: reconciliation finds the online
 * decision and applies nothing more (`same-tap`). Past the request's deadline a check-in writes no session and a
 * check-out ends none (`deadline-passed`), so most late decisions are never taken at all.
 */
import { randomUUID } from 'node:crypto';
import type { Clock } from '../../../tools/runtime/clock.ts';
import type { Logger } from '../../../tools/runtime/logger.ts';
import type { Credential } from '../../../protocol/messages/access.ts';
import { closingAfter, isOpenAt, localDayOf, WEEKDAYS, type BranchHours } from '../branches/hours.ts';
import { trusted } from 'mongoose';
import { isDuplicateKey } from '../db/mongo.ts';
import type {
  ClaimDoc,
  EndReason,
  PendingCheckOutDoc,
  SessionDoc,
  SessionModels,
  SessionOrigin,
  SessionStatus,
  Via,
} from './model.ts';

/** A branch as sessions need it (C1's `branches.get`). */
export interface SessionBranch extends BranchHours {
  id: string;
}

/** C1's credential resolver, as sessions use it. */
export interface SessionCredentials {
  resolve(
    credential: Credential,
    ctx: { branch: string; atMs: number },
  ): Promise<{ ok: true; userId: string } | { ok: false; reason: string; userId?: string }>;
}

export interface SessionsDeps {
  models: SessionModels;
  clock: Clock;
  log: Logger;
  credentials: SessionCredentials;
  branches: { get(id: string): Promise<SessionBranch | undefined> };
  /** Sessions end this long after check-in at the latest (4 hours). */
  maxDurationMs: number;
  /** A claim younger than this is never taken for a crash's leftover (a check-in may be between its two writes). */
  claimGraceMs: number;
}

/** A session as its member (and staff) see it. */
export interface SessionView {
  id: string;
  userId: string;
  branchId: string;
  status: SessionStatus;
  startedAt: string;
  endedAt?: string;
  durationMs?: number;
  endReason?: EndReason;
  /** When it ends by itself if nobody checks out, and why then. */
  autoEndAt: string;
  autoEndReason: 'auto-timeout' | 'branch-closed';
  origin: SessionOrigin;
  machinesUsed: string[];
  /** For a `conflict`: the session that was already open when this check-in was decided offline. */
  conflictWith?: string;
}

/** What `onEnded` listeners get: enough for a notification ("your session ended: branch closed"). */
export interface SessionEnded {
  sessionId: string;
  userId: string;
  branch: string;
  startedAtMs: number;
  endedAtMs: number;
  durationMs: number;
  reason: EndReason;
  machinesUsed: string[];
}

export type SessionEndedListener = (event: SessionEnded) => void | Promise<void>;

export type CheckInResult =
  { ok: true; userId: string; session: SessionView } | { ok: false; reason: string; userId?: string };

export type CheckOutResult =
  { ok: true; userId: string; session: SessionView } | { ok: false; reason: string; userId?: string };

export interface HistoryQuery {
  from?: Date;
  to?: Date;
  branchId?: string;
  cursor?: string;
  limit: number;
}

export interface UsageFigures {
  /** Sessions in the range (conflicts not counted). */
  visits: number;
  totalDurationMs: number;
  /** Over ended sessions; null when none ended. */
  averageDurationMs: number | null;
  /** Distinct machines used. */
  machinesUsed: number;
  /** Offline check-ins recorded as conflicts. */
  conflicts: number;
}

export interface HistoryPage {
  items: SessionView[];
  /** Pass as `cursor` for the next page; null on the last page. */
  nextCursor: string | null;
  usage: UsageFigures;
}

export interface BranchAnalytics {
  branchId: string;
  from: string;
  to: string;
  visits: number;
  members: number;
  averageDurationMs: number | null;
  /** Check-ins per local hour of day, 0–23 (every hour listed). */
  checkInsByHour: { hour: number; visits: number }[];
  /** The busiest hours, most check-ins first (up to three, ties by hour). */
  peakHours: number[];
  /** Visits per local day of the week, Monday first. */
  visitsByWeekday: { weekday: (typeof WEEKDAYS)[number]; visits: number }[];
}

export interface SessionService {
  /**
   * Resolves the credential and opens a session at the branch, or says why not (a deny reason). With `signal`, no
   * session opens once it aborted (`deadline-passed`): a door request the gateway was already told `timeout` about
   * must not leave an open session behind — the gateway decided offline, and that decision reaches the cloud later.
   */
  checkIn(input: {
    credential: Credential;
    branchId: string;
    via: Via;
    expectUserId?: string;
    signal?: AbortSignal;
  }): Promise<CheckInResult>;
  /** Ends the member's open session (any branch). */
  checkOut(input: { userId: string; via: Via; reason?: EndReason }): Promise<CheckOutResult>;
  /**
   * Resolves the credential (a member whose membership lapsed may still leave) and ends their session. With
   * `signal`, no session is ended once it aborted (`deadline-passed`), as for a check-in.
   */
  checkOutByCredential(input: {
    credential: Credential;
    branchId: string;
    via: Via;
    signal?: AbortSignal;
  }): Promise<CheckOutResult>;
  /** The member's open session, if any. */
  current(userId: string): Promise<SessionView | undefined>;
  /** One of the member's own sessions (undefined for anyone else's: no existence leak). */
  get(userId: string, sessionId: string): Promise<SessionView | undefined>;
  history(userId: string, query: HistoryQuery): Promise<HistoryPage>;
  analytics(branchId: string, range: { from: Date; to: Date }): Promise<BranchAnalytics>;
  /** Called once per ended session, after it ended (listener failures are logged). Returns an unsubscribe. */
  onEnded(listener: SessionEndedListener): () => void;
  /** The machines domain records each machine a session's member linked to. */
  recordMachineUse(sessionId: string, machineId: string): Promise<void>;
  /** Ends the sessions whose auto-end instant has passed; resolves with how many it ended. */
  autoEndDue(): Promise<number>;
  /** Removes claims whose session ended or never got written; re-claims or closes open sessions without one. */
  reconcileClaims(): Promise<{ removed: number; reclaimed: number; superseded: number }>;
  /**
   * The member's visit at the branch that was open at `atMs` (active, or ended after it; a conflict is no visit) —
   * what an offline machine link decided at that instant belongs to. Starts up to 30 s after `atMs` count (the
   * check-in may have been decided by the cloud's clock, the link by the gateway's).
   */
  openAt(userId: string, branchId: string, atMs: number): Promise<SessionView | undefined>;
  /** Applies a door decision the gateway took offline (see reconcile.ts). */
  applyOfflineCheckIn(input: OfflineDoorEvent): Promise<OfflineOutcome>;
  applyOfflineCheckOut(input: OfflineDoorEvent): Promise<OfflineOutcome>;
  /** Waits (bounded) for the onEnded listeners still running. */
  idle(timeoutMs?: number): Promise<void>;
}

export interface OfflineDoorEvent {
  userId: string;
  branchId: string;
  atMs: number;
  /** Deterministic: a retried reconciliation of the same scan finds its own session. */
  sessionId: string;
  /** `via.gateway` is the gateway that decided; `via.scanMsgId` its access scan. */
  via: Via;
  /**
   * The online request the gateway tried first (the scan's `reqId`): when the cloud took that decision after all,
   * answered too late, this is the same tap and nothing more is applied (`same-tap`).
   */
  onlineReqId?: string;
}

export type OfflineOutcome =
  | 'opened'
  | 'recorded-ended'
  | 'superseded'
  | 'conflict'
  | 'closed'
  | 'end-corrected'
  | 'check-out-held'
  | 'same-visit'
  | 'same-tap'
  | 'already-applied';

const BATCH = 500;
/** Offline check-outs still waiting for their check-in are dropped after this (ingest retries within minutes). */
const PENDING_CHECK_OUT_KEEP_MS = 7 * 86_400_000;
/** Two check-ins of a member at one branch this close together (gateway and cloud clocks included) are one visit. */
const SAME_VISIT_MS = 30_000;
/**
 * How long reconciliation waits for the session of an online check-in of the same tap whose claim is written and
 * its session not yet (then it fails, and ingest retries the scan later).
 */
const SAME_TAP_WAIT_MS = 3_000;
const SAME_TAP_POLL_MS = 25;

export function toView(d: SessionDoc): SessionView {
  return {
    id: d._id,
    userId: d.userId,
    branchId: d.branchId,
    status: d.status,
    startedAt: d.startedAt.toISOString(),
    ...(d.endedAt ? { endedAt: d.endedAt.toISOString() } : {}),
    ...(d.durationMs === undefined || d.durationMs === null ? {} : { durationMs: d.durationMs }),
    ...(d.endReason ? { endReason: d.endReason } : {}),
    autoEndAt: d.autoEndAt.toISOString(),
    autoEndReason: d.autoEndReason,
    origin: d.startedVia.origin,
    machinesUsed: d.machinesUsed ?? [],
    ...(d.conflictWith ? { conflictWith: d.conflictWith } : {}),
  };
}

/** History cursor: `<startedAt epoch ms>-<session id>` of the previous page's last item. */
export const HISTORY_CURSOR = /^(-?\d{1,13})-([A-Za-z0-9_-]{1,64})$/;

function encodeCursor(d: Pick<SessionDoc, 'startedAt' | '_id'>): string {
  return `${d.startedAt.getTime()}-${d._id}`;
}

/** Every value the pattern allows is a position (the page after it), so a well-formed cursor is never refused. */
export function decodeCursor(cursor: string): { startedAt: Date; id: string } | undefined {
  const match = HISTORY_CURSOR.exec(cursor);
  return match ? { startedAt: new Date(Number(match[1])), id: match[2]! } : undefined;
}

export function createSessionService(deps: SessionsDeps): SessionService {
  const { models, clock, log, credentials, branches } = deps;
  const { Session, Claim, PendingCheckOut } = models;
  const listeners = new Set<SessionEndedListener>();
  const running = new Set<Promise<void>>();

  function autoEndOf(branch: SessionBranch | undefined, atMs: number) {
    const limit = atMs + deps.maxDurationMs;
    const closing = branch ? closingAfter(branch, atMs) : undefined;
    return closing !== undefined && closing < limit
      ? { at: closing, reason: 'branch-closed' as const }
      : { at: limit, reason: 'auto-timeout' as const };
  }

  function localOf(branch: SessionBranch | undefined, atMs: number) {
    const local = localDayOf(atMs, branch?.timeZone ?? 'UTC');
    return { localHour: local.hour, localWeekday: WEEKDAYS.indexOf(local.weekday) };
  }

  function emit(d: SessionDoc): void {
    if (!d.endedAt || !d.endReason) return;
    const event: SessionEnded = {
      sessionId: d._id,
      userId: d.userId,
      branch: d.branchId,
      startedAtMs: d.startedAt.getTime(),
      endedAtMs: d.endedAt.getTime(),
      durationMs: d.durationMs ?? 0,
      reason: d.endReason,
      machinesUsed: d.machinesUsed ?? [],
    };
    for (const listener of listeners) {
      const run = (async () => {
        try {
          await listener(event);
        } catch (err) {
          log.error({ err, sessionId: d._id }, 'session-ended listener failed');
        }
      })();
      running.add(run);
      void run.finally(() => running.delete(run));
    }
  }

  /** Ends an open session at `endedAtMs`; undefined when it was no longer open (someone else ended it). */
  async function finish(
    session: Pick<SessionDoc, '_id' | 'userId' | 'startedAt'>,
    endedAtMs: number,
    reason: EndReason,
    via: Via,
  ): Promise<SessionDoc | undefined> {
    const endedAt = new Date(Math.max(endedAtMs, session.startedAt.getTime()));
    const ended = await Session.findOneAndUpdate(
      { _id: session._id, status: 'active' },
      {
        $set: {
          status: 'ended',
          endedAt,
          durationMs: endedAt.getTime() - session.startedAt.getTime(),
          endReason: reason,
          endedVia: via,
        },
      },
      { returnDocument: 'after' },
    ).lean<SessionDoc>();
    if (!ended) return undefined;
    // The end happened: listeners hear of it even if the claim's removal fails (the claim job removes it then).
    emit(ended);
    await Claim.deleteOne({ _id: session.userId, sessionId: session._id });
    return ended;
  }

  /**
   * A claim that is in the way: removed when it is a leftover (its session ended, or was never written and the
   * claim is older than the grace period), its session ended when that was due. True when the caller may try again.
   */
  async function clearStaleClaim(userId: string): Promise<boolean> {
    const claim = await Claim.findById(userId).lean<ClaimDoc>();
    if (!claim) return true;
    const session = await Session.findById(claim.sessionId).lean<SessionDoc>();
    if (session?.status === 'active' && session.autoEndAt.getTime() <= clock.nowMs()) {
      // Over by now, the auto-end job just has not got to it (it runs every minute, or is down): end it as the job
      // would, rather than refuse the member at the door.
      await finish(session, session.autoEndAt.getTime(), session.autoEndReason, { origin: 'app' });
      return true;
    }
    const stale = session ? session.status !== 'active' : claim.createdAt.getTime() < clock.nowMs() - deps.claimGraceMs;
    if (!stale) return false;
    await Claim.deleteOne({ _id: userId, sessionId: claim.sessionId });
    log.info({ userId, sessionId: claim.sessionId }, 'stale session claim removed');
    return true;
  }

  /** Claims the member and writes the open session; `already-checked-in` when another session holds the claim. */
  async function open(
    userId: string,
    branchId: string,
    branch: SessionBranch | undefined,
    atMs: number,
    via: Via,
    sessionId: string = randomUUID(),
    signal?: AbortSignal,
  ): Promise<{ ok: true; session: SessionDoc } | { ok: false; reason: 'already-checked-in' | 'deadline-passed' }> {
    const createdAt = clock.now();
    // An online door check-in's claim names its request: an offline record of the same tap that arrives while the
    // session is being written waits for it (sameTapCheckIn).
    const reqId = via.reqId === undefined ? {} : { reqId: via.reqId };
    for (let attempt = 0; ; attempt++) {
      try {
        await Claim.create({ _id: userId, sessionId, branchId, ...reqId, createdAt });
        break;
      } catch (err) {
        if (!isDuplicateKey(err)) throw err;
        if (attempt > 0 || !(await clearStaleClaim(userId))) return { ok: false, reason: 'already-checked-in' };
      }
    }
    if (signal?.aborted) {
      // The gateway was answered `timeout` meanwhile and decides offline: its decision is the one that counts.
      await Claim.deleteOne({ _id: userId, sessionId });
      return { ok: false, reason: 'deadline-passed' };
    }
    const autoEnd = autoEndOf(branch, atMs);
    const doc: SessionDoc = {
      _id: sessionId,
      userId,
      branchId,
      status: 'active',
      startedAt: new Date(atMs),
      autoEndAt: new Date(autoEnd.at),
      autoEndReason: autoEnd.reason,
      startedVia: via,
      machinesUsed: [],
      ...localOf(branch, atMs),
      createdAt,
    };
    try {
      await Session.create(doc);
    } catch (err) {
      await Claim.deleteOne({ _id: userId, sessionId }).catch(() => undefined);
      throw err;
    }
    // Without transactions the claim and the session are two writes: a check-in stalled between them for longer
    // than the grace period had its claim taken for a crash's leftover, and another session may hold it now. Then
    // this one is the intruder: ended at once (kept in history as superseded), and the check-in refused.
    const holder = await Claim.findById(userId, { sessionId: 1 }).lean<Pick<ClaimDoc, 'sessionId'>>();
    if (holder?.sessionId !== sessionId) {
      log.warn({ userId, sessionId, holder: holder?.sessionId }, 'session claim lost during check-in');
      if (!holder) {
        // Nobody holds it (only removed): claim it again rather than refuse a valid check-in.
        try {
          await Claim.create({ _id: userId, sessionId, branchId, ...reqId, createdAt: clock.now() });
          return { ok: true, session: doc };
        } catch (err) {
          if (!isDuplicateKey(err)) throw err;
        }
      }
      await finish(doc, atMs, 'superseded', via);
      return { ok: false, reason: 'already-checked-in' };
    }
    return { ok: true, session: doc };
  }

  async function endOpenSession(
    userId: string,
    via: Via,
    reason: EndReason,
    signal?: AbortSignal,
  ): Promise<CheckOutResult> {
    const session = await Session.findOne({ userId, status: 'active' }).sort({ startedAt: -1 }).lean<SessionDoc>();
    if (!session) return { ok: false, reason: 'not-checked-in', userId };
    // The gateway was answered `timeout` and decides offline: its check-out reaches the cloud as an access scan.
    if (signal?.aborted) return { ok: false, reason: 'deadline-passed', userId };
    const ended = await finish(session, clock.nowMs(), reason, via);
    if (!ended) return { ok: false, reason: 'not-checked-in', userId };
    return { ok: true, userId, session: toView(ended) };
  }

  /** An open session found without its claim: claimed again, or — another session holds the claim — ended. */
  async function reclaimOrEnd(
    session: SessionDoc,
    claim: ClaimDoc | undefined,
    outcome: { reclaimed: number; superseded: number },
  ): Promise<void> {
    if (claim?.sessionId === session._id) return;
    if (!claim) {
      try {
        await Claim.create({
          _id: session.userId,
          sessionId: session._id,
          branchId: session.branchId,
          createdAt: clock.now(),
        });
        outcome.reclaimed++;
        return;
      } catch (err) {
        if (!isDuplicateKey(err)) throw err;
      }
    }
    if (await finish(session, clock.nowMs(), 'superseded', { origin: 'app' })) outcome.superseded++;
  }

  /**
   * Whether the gateway request `reqId` of this gateway opened a session (online, answered too late): then an offline
   * check-in naming it is the same tap. Its session may still be being written (claim first, then the session):
   * waited for, a bounded time — longer, and this throws so that ingest retries the scan later. The offline scan is
   * noted on the session for audit.
   */
  async function sameTapCheckIn(gateway: string, reqId: string, scanMsgId?: string): Promise<boolean> {
    const startedMs = performance.now();
    const online = () =>
      Session.findOne({ 'startedVia.reqId': reqId, 'startedVia.gateway': gateway }, { _id: 1 }).lean<
        Pick<SessionDoc, '_id'>
      >();
    for (;;) {
      let found = await online();
      if (!found) {
        const claim = await Claim.findOne({ reqId }).lean<ClaimDoc>();
        // A claim older than the grace period without its session is a crash's leftover: no online check-in.
        const writing = claim && claim.createdAt.getTime() >= clock.nowMs() - deps.claimGraceMs;
        // Read again after the claim: the session may have been written (and even ended) in between.
        if (!writing) found = await online();
        else if (performance.now() - startedMs > SAME_TAP_WAIT_MS) {
          throw new Error(`the online check-in of request ${reqId} is still being written`);
        } else {
          await new Promise((resolve) => setTimeout(resolve, SAME_TAP_POLL_MS));
          continue;
        }
      }
      if (!found) return false;
      if (scanMsgId) {
        await Session.updateOne(
          { _id: found._id, 'startedVia.scanMsgId': trusted({ $exists: false }) },
          { $set: { 'startedVia.scanMsgId': scanMsgId } },
        );
      }
      return true;
    }
  }

  /** Inserts a session document the reconciliation decided on (no claim); false when it was already there. */
  async function insertRecorded(doc: SessionDoc): Promise<boolean> {
    try {
      await Session.create(doc);
      return true;
    } catch (err) {
      if (isDuplicateKey(err)) return false;
      throw err;
    }
  }

  type Placement =
    | { kind: 'same-visit' }
    | { kind: 'conflict'; conflictWith: string }
    | {
        kind: 'ended';
        fields: Pick<SessionDoc, 'endedAt' | 'durationMs' | 'endReason' | 'endedVia'>;
        /** The held check-out that ends it (removed once the visit is written). */
        checkOutId?: string;
      }
    | { kind: 'open' };

  /**
   * Where an offline check-in of `doc.userId` at `doc.startedAt` belongs by event time (docs/sessions.md "Offline
   * door decisions"), among the member's other sessions — `doc` itself is not among them (it is not written yet, or
   * is the conflict being placed again).
   */
  async function placeCheckIn(doc: SessionDoc): Promise<Placement> {
    const { _id: self, userId, branchId, startedAt: at, startedVia: via } = doc;
    const atMs = at.getTime();
    // The same visit decided twice: the cloud opened it, but its answer did not reach the gateway in time, which
    // then decided offline. Two check-ins of a member at one branch this close together are one visit.
    const twin = await Session.exists({
      _id: trusted({ $ne: self }),
      userId,
      branchId,
      status: trusted({ $in: ['active', 'ended'] }),
      startedAt: trusted({ $gte: new Date(atMs - SAME_VISIT_MS), $lte: new Date(atMs + SAME_VISIT_MS) }),
    });
    if (twin) return { kind: 'same-visit' };
    // A session of the member that was open at that instant: one active session, so this later check-in is a
    // conflict, kept in the member's history. A session still `active` whose auto-end instant came before T was
    // over by then (the auto-end job has not got to it yet).
    const covering = await Session.findOne({
      _id: trusted({ $ne: self }),
      userId,
      startedAt: trusted({ $lte: at }),
      $or: [
        { status: 'active', autoEndAt: trusted({ $gt: at }) },
        { status: 'ended', endedAt: trusted({ $gt: at }) },
      ],
    })
      .sort({ startedAt: -1 })
      .lean<SessionDoc>();
    if (covering) return { kind: 'conflict', conflictWith: covering._id };
    // A later check-in of the member (already known to the cloud) shows when this visit was over at the latest.
    const next = await Session.findOne({
      _id: trusted({ $ne: self }),
      userId,
      status: trusted({ $in: ['active', 'ended'] }),
      startedAt: trusted({ $gt: at }),
    })
      .sort({ startedAt: 1 })
      .lean<SessionDoc>();
    // Its own check-out may have come first (ingest retries a failed batch later): it ends this visit.
    const autoEnd = { at: doc.autoEndAt.getTime(), reason: doc.autoEndReason };
    const ends = [
      { at: autoEnd.at, reason: autoEnd.reason as EndReason, via: undefined as Via | undefined },
      ...(next ? [{ at: next.startedAt.getTime(), reason: 'superseded' as EndReason, via: undefined }] : []),
    ];
    const checkOut = await PendingCheckOut.findOne({
      userId,
      at: trusted({ $gt: at, $lte: new Date(Math.min(...ends.map((e) => e.at))) }),
    })
      .sort({ at: 1 })
      .lean<PendingCheckOutDoc>();
    if (checkOut) ends.push({ at: checkOut.at.getTime(), reason: 'check-out', via: checkOut.via });
    // The earliest end wins; on a tie the member's own check-out names it.
    const end = ends.reduce((a, b) => (b.at < a.at || (b.at === a.at && b.reason === 'check-out') ? b : a));
    if (checkOut || next || end.at <= clock.nowMs()) {
      return {
        kind: 'ended',
        fields: {
          endedAt: new Date(end.at),
          durationMs: end.at - atMs,
          endReason: end.reason,
          endedVia: end.via ?? { origin: 'offline', ...(via.scanMsgId ? { scanMsgId: via.scanMsgId } : {}) },
        },
        ...(checkOut ? { checkOutId: checkOut._id } : {}),
      };
    }
    return { kind: 'open' };
  }

  /**
   * Offline check-ins of the member recorded as `conflict` that no session covers any more — the session they
   * conflicted with was ended by an offline check-out applied after them, with an event time before them — are
   * placed again by event time: a visit of their own (ended, or open with the claim). Conditional on the status
   * `conflict`, so a retried or concurrent run changes nothing twice; one still covered stays a conflict.
   */
  async function reviveConflicts(userId: string): Promise<void> {
    const conflicts = await Session.find({ userId, status: 'conflict', 'startedVia.origin': 'offline' })
      .sort({ startedAt: 1 })
      .lean<SessionDoc[]>();
    for (const conflict of conflicts) {
      const placed = await placeCheckIn(conflict);
      if (placed.kind === 'same-visit' || placed.kind === 'conflict') continue;
      if (placed.kind === 'ended') {
        const { modifiedCount } = await Session.updateOne(
          { _id: conflict._id, status: 'conflict' },
          { $set: { status: 'ended', ...placed.fields }, $unset: { conflictWith: 1 } },
        );
        if (placed.checkOutId) await PendingCheckOut.deleteOne({ _id: placed.checkOutId });
        if (modifiedCount > 0) log.info({ userId, sessionId: conflict._id }, 'offline conflict placed as a visit');
        continue;
      }
      // Open by event time: it takes the member's claim (the session it conflicted with released it on its end).
      const claimed = await claimFor(conflict);
      if (!claimed) continue; // another session holds the claim (opened meanwhile): a conflict still
      const { modifiedCount } = await Session.updateOne(
        { _id: conflict._id, status: 'conflict' },
        { $set: { status: 'active' }, $unset: { conflictWith: 1 } },
      );
      if (modifiedCount === 0) await Claim.deleteOne({ _id: userId, sessionId: conflict._id });
      else log.info({ userId, sessionId: conflict._id }, 'offline conflict reopened as the open visit');
    }
  }

  /** Inserts the claim of `session` (a stale claim in the way is cleared first); false when another holds it. */
  async function claimFor(session: SessionDoc): Promise<boolean> {
    for (let attempt = 0; ; attempt++) {
      try {
        await Claim.create({
          _id: session.userId,
          sessionId: session._id,
          branchId: session.branchId,
          createdAt: clock.now(),
        });
        return true;
      } catch (err) {
        if (!isDuplicateKey(err)) throw err;
        const held = await Claim.findById(session.userId).lean<ClaimDoc>();
        if (held?.sessionId === session._id) return true; // a retried run: it is ours already
        if (attempt > 0 || !(await clearStaleClaim(session.userId))) return false;
      }
    }
  }

  /** An offline check-out (see applyOfflineCheckOut), without the revival of conflicts it may settle. */
  async function applyCheckOut({
    userId,
    branchId,
    atMs,
    sessionId,
    via,
    onlineReqId,
  }: OfflineDoorEvent): Promise<OfflineOutcome> {
    const at = new Date(atMs);
    // A retried run: this scan already ended (or corrected) a session, or waits for its check-in.
    if (via.scanMsgId && (await Session.exists({ 'endedVia.scanMsgId': via.scanMsgId }))) return 'already-applied';
    if (await PendingCheckOut.exists({ _id: sessionId })) return 'already-applied';
    // The cloud ended the session on the online request of this tap (answered too late): no second check-out.
    // Ending is one conditional write, so there is nothing in between to wait for.
    if (onlineReqId && via.gateway) {
      const online = await Session.findOne(
        { 'endedVia.reqId': onlineReqId, 'endedVia.gateway': via.gateway },
        { _id: 1 },
      ).lean<Pick<SessionDoc, '_id'>>();
      if (online) {
        if (via.scanMsgId) {
          await Session.updateOne(
            { _id: online._id, 'endedVia.scanMsgId': trusted({ $exists: false }) },
            { $set: { 'endedVia.scanMsgId': via.scanMsgId } },
          );
        }
        return 'same-tap';
      }
    }
    const active = await Session.findOne({ userId, status: 'active', startedAt: trusted({ $lte: at }) })
      .sort({ startedAt: -1 })
      .lean<SessionDoc>();
    if (active) return (await finish(active, atMs, 'check-out', via)) ? 'closed' : 'already-applied';
    // The session already ended by itself (timeout, closing time, a later check-in) after the member had left:
    // the check-out gives its real end.
    const ended = await Session.findOne({
      userId,
      status: 'ended',
      startedAt: trusted({ $lte: at }),
      endedAt: trusted({ $gt: at }),
      endReason: trusted({ $in: ['auto-timeout', 'branch-closed', 'superseded'] }),
    })
      .sort({ startedAt: -1 })
      .lean<SessionDoc>();
    if (!ended) {
      // No session to end yet: its check-in may still be on its way (a batch retried later). Kept for it.
      try {
        await PendingCheckOut.create({ _id: sessionId, userId, branchId, at, via, createdAt: clock.now() });
        return 'check-out-held';
      } catch (err) {
        if (isDuplicateKey(err)) return 'already-applied';
        throw err;
      }
    }
    const { modifiedCount } = await Session.updateOne(
      { _id: ended._id, status: 'ended', endedAt: trusted({ $gt: at }) },
      {
        $set: {
          endedAt: at,
          durationMs: Math.max(0, atMs - ended.startedAt.getTime()),
          endReason: 'check-out',
          endedVia: via,
        },
      },
    );
    return modifiedCount > 0 ? 'end-corrected' : 'already-applied';
  }

  return {
    async checkIn({ credential, branchId, via, expectUserId, signal }) {
      const atMs = clock.nowMs();
      const branch = await branches.get(branchId);
      if (!branch) return { ok: false, reason: 'unknown-branch' };
      if (!isOpenAt(branch, atMs)) return { ok: false, reason: 'outside-opening-hours' };
      const resolved = await credentials.resolve(credential, { branch: branchId, atMs });
      if (!resolved.ok) {
        return { ok: false, reason: resolved.reason, ...(resolved.userId ? { userId: resolved.userId } : {}) };
      }
      const { userId } = resolved;
      if (expectUserId !== undefined && userId !== expectUserId) {
        return { ok: false, reason: 'credential-of-another-member' };
      }
      if (signal?.aborted) return { ok: false, reason: 'deadline-passed', userId };
      const opened = await open(
        userId,
        branchId,
        branch,
        atMs,
        { ...via, credentialKind: credential.kind },
        undefined,
        signal,
      );
      if (!opened.ok) return { ok: false, reason: opened.reason, userId };
      log.info({ userId, sessionId: opened.session._id, branchId, origin: via.origin }, 'checked in');
      return { ok: true, userId, session: toView(opened.session) };
    },

    async checkOut({ userId, via, reason = 'member' }) {
      return endOpenSession(userId, via, reason);
    },

    async checkOutByCredential({ credential, branchId, via, signal }) {
      const resolved = await credentials.resolve(credential, { branch: branchId, atMs: clock.nowMs() });
      // Leaving is never refused for a lapsed membership or a blocked card: the member is recognised, and is going.
      const userId =
        resolved.ok || resolved.reason === 'membership-inactive' || resolved.reason === 'blocked'
          ? resolved.userId
          : undefined;
      if (!userId) return { ok: false, reason: resolved.ok ? 'unknown-credential' : resolved.reason };
      return endOpenSession(userId, { ...via, credentialKind: credential.kind }, 'check-out', signal);
    },

    async current(userId) {
      const claim = await Claim.findById(userId).lean<ClaimDoc>();
      if (!claim) return undefined;
      const session = await Session.findOne({ _id: claim.sessionId, status: 'active' }).lean<SessionDoc>();
      return session ? toView(session) : undefined;
    },

    async get(userId, sessionId) {
      const session = await Session.findOne({ _id: sessionId, userId }).lean<SessionDoc>();
      return session ? toView(session) : undefined;
    },

    async history(userId, { from, to, branchId, cursor, limit }) {
      const base: Record<string, unknown> = { userId };
      if (branchId) base.branchId = branchId;
      if (from || to) base.startedAt = trusted({ ...(from ? { $gte: from } : {}), ...(to ? { $lt: to } : {}) });
      const after = cursor ? decodeCursor(cursor) : undefined;
      const page = after
        ? {
            $and: [
              base,
              {
                $or: [
                  { startedAt: trusted({ $lt: after.startedAt }) },
                  { startedAt: after.startedAt, _id: trusted({ $lt: after.id }) },
                ],
              },
            ],
          }
        : base;
      const [docs, figures] = await Promise.all([
        Session.find(page)
          .sort({ startedAt: -1, _id: -1 })
          .limit(limit + 1)
          .lean<SessionDoc[]>(),
        Session.aggregate<{
          usage: { visits: number; total: number; avg: number | null }[];
          machines: { n: number }[];
          conflicts: { n: number }[];
        }>([
          { $match: base },
          {
            $facet: {
              usage: [
                { $match: { status: trusted({ $in: ['active', 'ended'] }) } },
                {
                  $group: {
                    _id: null,
                    visits: { $sum: 1 },
                    total: { $sum: '$durationMs' },
                    avg: { $avg: '$durationMs' },
                  },
                },
              ],
              machines: [
                { $match: { status: trusted({ $in: ['active', 'ended'] }) } },
                { $unwind: '$machinesUsed' },
                { $group: { _id: '$machinesUsed' } },
                { $count: 'n' },
              ],
              conflicts: [{ $match: { status: 'conflict' } }, { $count: 'n' }],
            },
          },
        ]),
      ]);
      const more = docs.length > limit;
      const items = more ? docs.slice(0, limit) : docs;
      const f = figures[0];
      const usage = f?.usage[0];
      return {
        items: items.map(toView),
        nextCursor: more ? encodeCursor(items.at(-1)!) : null,
        usage: {
          visits: usage?.visits ?? 0,
          totalDurationMs: usage?.total ?? 0,
          averageDurationMs: usage?.avg === null || usage?.avg === undefined ? null : Math.round(usage.avg),
          machinesUsed: f?.machines[0]?.n ?? 0,
          conflicts: f?.conflicts[0]?.n ?? 0,
        },
      };
    },

    async analytics(branchId, { from, to }) {
      const [result] = await Session.aggregate<{
        byHour: { _id: number; visits: number }[];
        byWeekday: { _id: number; visits: number }[];
        durations: { avg: number | null }[];
        members: { n: number }[];
      }>([
        {
          $match: {
            branchId,
            status: trusted({ $in: ['active', 'ended'] }),
            startedAt: trusted({ $gte: from, $lt: to }),
          },
        },
        {
          $facet: {
            byHour: [{ $group: { _id: '$localHour', visits: { $sum: 1 } } }],
            byWeekday: [{ $group: { _id: '$localWeekday', visits: { $sum: 1 } } }],
            durations: [{ $match: { status: 'ended' } }, { $group: { _id: null, avg: { $avg: '$durationMs' } } }],
            members: [{ $group: { _id: '$userId' } }, { $count: 'n' }],
          },
        },
      ]);
      const hours = new Map((result?.byHour ?? []).map((h) => [h._id, h.visits]));
      const days = new Map((result?.byWeekday ?? []).map((d) => [d._id, d.visits]));
      const checkInsByHour = Array.from({ length: 24 }, (_, hour) => ({ hour, visits: hours.get(hour) ?? 0 }));
      const avg = result?.durations[0]?.avg;
      return {
        branchId,
        from: from.toISOString(),
        to: to.toISOString(),
        visits: checkInsByHour.reduce((sum, h) => sum + h.visits, 0),
        members: result?.members[0]?.n ?? 0,
        averageDurationMs: avg === null || avg === undefined ? null : Math.round(avg),
        checkInsByHour,
        peakHours: checkInsByHour
          .filter((h) => h.visits > 0)
          .sort((a, b) => b.visits - a.visits || a.hour - b.hour)
          .slice(0, 3)
          .map((h) => h.hour),
        visitsByWeekday: WEEKDAYS.map((weekday, i) => ({ weekday, visits: days.get(i) ?? 0 })),
      };
    },

    onEnded(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },

    async openAt(userId, branchId, atMs) {
      const at = new Date(atMs);
      const session = await Session.findOne({
        userId,
        branchId,
        startedAt: trusted({ $lte: new Date(atMs + SAME_VISIT_MS) }),
        $or: [
          { status: 'active', autoEndAt: trusted({ $gt: at }) },
          { status: 'ended', endedAt: trusted({ $gt: at }) },
        ],
      })
        .sort({ startedAt: -1 })
        .lean<SessionDoc>();
      return session ? toView(session) : undefined;
    },

    async recordMachineUse(sessionId, machineId) {
      await Session.updateOne({ _id: sessionId }, { $addToSet: { machinesUsed: machineId } });
    },

    async autoEndDue() {
      const now = clock.now();
      let ended = 0;
      for (;;) {
        const due = await Session.find({ status: 'active', autoEndAt: trusted({ $lte: now }) })
          .sort({ autoEndAt: 1 })
          .limit(BATCH)
          .lean<SessionDoc[]>();
        for (const session of due) {
          // Ended at the instant it was due, not when the job got to it: the duration is the real one.
          const done = await finish(session, session.autoEndAt.getTime(), session.autoEndReason, { origin: 'app' });
          if (done) {
            ended++;
            log.info({ sessionId: session._id, reason: session.autoEndReason }, 'session ended automatically');
          }
        }
        if (due.length < BATCH) return ended;
      }
    },

    async reconcileClaims() {
      const outcome = { removed: 0, reclaimed: 0, superseded: 0 };
      const settled = new Date(clock.nowMs() - deps.claimGraceMs);
      // Claims left without an open session (a crash between the two writes of a check-in or check-out). Every
      // member in the gym holds a claim, so they are read in pages and their sessions looked up a page at a time.
      for (let after = ''; ;) {
        const claims = await Claim.find({ _id: trusted({ $gt: after }), createdAt: trusted({ $lte: settled }) })
          .sort({ _id: 1 })
          .limit(BATCH)
          .lean<ClaimDoc[]>();
        const sessions = await Session.find(
          { _id: trusted({ $in: claims.map((c) => c.sessionId) }) },
          { status: 1, userId: 1 },
        ).lean<Pick<SessionDoc, '_id' | 'status' | 'userId'>[]>();
        const byId = new Map(sessions.map((d) => [d._id, d]));
        for (const claim of claims) {
          const session = byId.get(claim.sessionId);
          if (session?.status === 'active' && session.userId === claim._id) continue;
          const { deletedCount } = await Claim.deleteOne({ _id: claim._id, sessionId: claim.sessionId });
          outcome.removed += deletedCount;
        }
        if (claims.length < BATCH) break;
        after = claims.at(-1)!._id;
      }
      // Open sessions without their claim: claim them again, or — when another session holds the claim — end them.
      for (let after = ''; ;) {
        const open = await Session.find({
          _id: trusted({ $gt: after }),
          status: 'active',
          createdAt: trusted({ $lte: settled }),
        })
          .sort({ _id: 1 })
          .limit(BATCH)
          .lean<SessionDoc[]>();
        const claims = await Claim.find({ _id: trusted({ $in: open.map((d) => d.userId) }) }).lean<ClaimDoc[]>();
        const claimOf = new Map(claims.map((c) => [c._id, c]));
        for (const session of open) await reclaimOrEnd(session, claimOf.get(session.userId), outcome);
        if (open.length < BATCH) break;
        after = open.at(-1)!._id;
      }
      // Offline check-outs whose check-in never came.
      await PendingCheckOut.deleteMany({ at: trusted({ $lt: new Date(clock.nowMs() - PENDING_CHECK_OUT_KEEP_MS) }) });
      if (outcome.removed + outcome.reclaimed + outcome.superseded > 0) log.info(outcome, 'session claims reconciled');
      return outcome;
    },

    async applyOfflineCheckIn({ userId, branchId, atMs, sessionId, via, onlineReqId }) {
      if (await Session.exists({ _id: sessionId })) return 'already-applied';
      // The cloud took the online decision of this tap after all (answered too late): applied once, already.
      if (onlineReqId && via.gateway && (await sameTapCheckIn(via.gateway, onlineReqId, via.scanMsgId))) {
        return 'same-tap';
      }
      const branch = await branches.get(branchId);
      const at = new Date(atMs);
      const autoEnd = autoEndOf(branch, atMs);
      const base: SessionDoc = {
        _id: sessionId,
        userId,
        branchId,
        status: 'active',
        startedAt: at,
        autoEndAt: new Date(autoEnd.at),
        autoEndReason: autoEnd.reason,
        startedVia: via,
        machinesUsed: [],
        ...localOf(branch, atMs),
        createdAt: clock.now(),
      };
      const placed = await placeCheckIn(base);
      if (placed.kind === 'same-visit') return 'same-visit';
      if (placed.kind === 'conflict') {
        const inserted = await insertRecorded({ ...base, status: 'conflict', conflictWith: placed.conflictWith });
        return inserted ? 'conflict' : 'already-applied';
      }
      if (placed.kind === 'ended') {
        const inserted = await insertRecorded({ ...base, status: 'ended', ...placed.fields });
        if (placed.checkOutId) await PendingCheckOut.deleteOne({ _id: placed.checkOutId });
        if (!inserted) return 'already-applied';
        return placed.fields.endReason === 'superseded' ? 'superseded' : 'recorded-ended';
      }
      const opened = await open(userId, branchId, branch, atMs, via, sessionId);
      if (opened.ok) return 'opened';
      // The claim belongs to a session the queries above did not see (written meanwhile): a conflict after all.
      const claim = await Claim.findById(userId).lean<ClaimDoc>();
      const inserted = await insertRecorded({
        ...base,
        status: 'conflict',
        ...(claim ? { conflictWith: claim.sessionId } : {}),
      });
      return inserted ? 'conflict' : 'already-applied';
    },

    async applyOfflineCheckOut(event) {
      const outcome = await applyCheckOut(event);
      // A check-in the cloud recorded as a conflict because this check-out (earlier by event time) had not been
      // applied yet is a visit of its own: placed again now that the session it conflicted with is over. Run on a
      // retried check-out too (`already-applied`), so a run interrupted between the two steps completes.
      if (outcome !== 'same-tap' && outcome !== 'check-out-held') await reviveConflicts(event.userId);
      return outcome;
    },

    async idle(timeoutMs = 5_000) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        Promise.allSettled([...running]),
        new Promise((resolve) => (timer = setTimeout(resolve, timeoutMs))),
      ]);
      clearTimeout(timer);
    },
  };
}
