/**
 * Gym sessions (check-in to check-out) and the claim that keeps one open session per member.
 *
 * - `gym_sessions`: one document per visit, `_id` the session id. `status` is `active` while open, `ended` once
 *   closed (with `endedAt`, `durationMs`, `endReason`), or `conflict` for a check-in that was decided offline while
 *   the member already had a session (kept for the member's history, never counted as a visit).
 * - `active_sessions { _id: userId, sessionId }`: the claim (ARCHITECTURE "Persistence"). It is inserted before the
 *   session and deleted after it ends, so a duplicate key on insert means "already checked in", however many API
 *   nodes or gateways race. A crash between the two steps leaves a claim without an open session: the reconciliation
 *   job (service.ts `reconcileClaims`) removes it.
 *
 * - `offline_check_outs`: an offline check-out that found no session to end, kept until the check-in it belongs to
 *   arrives (ingest retries a failed batch later, so a check-in can reach sessions after its own check-out).
 *
 * The analytics read `localHour` and `localWeekday` (the check-in's wall-clock hour and day in the branch's time
 * zone), computed once at check-in: the MongoDB stand-in has no time-zone date operators worth relying on, and a
 * stored field is indexable on real MongoDB.
 */
import { Schema, type Connection, type Model } from 'mongoose';

export const SESSION_COLLECTIONS = {
  sessions: 'gym_sessions',
  claims: 'active_sessions',
  pendingCheckOuts: 'offline_check_outs',
} as const;

export const SESSION_STATUSES = ['active', 'ended', 'conflict'] as const;
export type SessionStatus = (typeof SESSION_STATUSES)[number];

/** How a session ended. */
export const END_REASONS = [
  /** The member (app) or staff closed it. */
  'member',
  /** Checked out at an exit reader (online or offline). */
  'check-out',
  /** The 4-hour limit. */
  'auto-timeout',
  /** The branch closed. */
  'branch-closed',
  /** A later check-in of the same member showed it was over (reconciliation of offline decisions). */
  'superseded',
] as const;
export type EndReason = (typeof END_REASONS)[number];

/** Where a check-in or check-out was decided. */
export const SESSION_ORIGINS = ['app', 'gateway', 'offline'] as const;
export type SessionOrigin = (typeof SESSION_ORIGINS)[number];

export interface Via {
  origin: SessionOrigin;
  gateway?: string;
  reader?: string;
  credentialKind?: 'nfc' | 'qr';
  /**
   * The gateway request (reqId) an online door decision answered. A gateway that got no answer in time decides
   * offline and names the same reqId in its access scan: that scan is the same tap, never applied a second time.
   */
  reqId?: string;
  /**
   * The access scan (msgId) an offline decision came in — or, on an online decision, the gateway's offline record of
   * the same tap (it decided offline too, the answer being late), kept for audit.
   */
  scanMsgId?: string;
}

export interface SessionDoc {
  _id: string;
  userId: string;
  branchId: string;
  status: SessionStatus;
  startedAt: Date;
  /** When the auto-termination job ends it, and why then (4 hours, or the branch's closing time). */
  autoEndAt: Date;
  autoEndReason: 'auto-timeout' | 'branch-closed';
  endedAt?: Date;
  durationMs?: number;
  endReason?: EndReason;
  startedVia: Via;
  endedVia?: Via;
  /** For a `conflict`: the session that was already open. */
  conflictWith?: string;
  /** Machines the member was linked to during the session (recorded by the machines domain). */
  machinesUsed: string[];
  localHour: number;
  /** 0 = Monday … 6 = Sunday, in the branch's time zone. */
  localWeekday: number;
  createdAt: Date;
}

export interface ClaimDoc {
  /** The member. */
  _id: string;
  sessionId: string;
  branchId: string;
  /** The gateway request of an online check-in, while its session is being written (see Via.reqId). */
  reqId?: string;
  createdAt: Date;
}

/** An offline check-out that arrived before its check-in (service.ts `applyOfflineCheckOut`). */
export interface PendingCheckOutDoc {
  /** Derived from the scan's msgId: a retried run inserts nothing new. */
  _id: string;
  userId: string;
  branchId: string;
  at: Date;
  via: Via;
  createdAt: Date;
}

const ViaSchema = new Schema<Via>(
  {
    origin: { type: String, enum: SESSION_ORIGINS, required: true },
    gateway: String,
    reader: String,
    credentialKind: { type: String, enum: ['nfc', 'qr'] },
    reqId: String,
    scanMsgId: String,
  },
  { _id: false },
);

const SessionSchema = new Schema<SessionDoc>(
  {
    _id: { type: String, required: true },
    userId: { type: String, required: true },
    branchId: { type: String, required: true },
    status: { type: String, enum: SESSION_STATUSES, required: true },
    startedAt: { type: Date, required: true },
    autoEndAt: { type: Date, required: true },
    autoEndReason: { type: String, enum: ['auto-timeout', 'branch-closed'], required: true },
    endedAt: Date,
    durationMs: Number,
    endReason: { type: String, enum: END_REASONS },
    startedVia: { type: ViaSchema, required: true },
    endedVia: ViaSchema,
    conflictWith: String,
    machinesUsed: { type: [String], default: [] },
    localHour: { type: Number, required: true },
    localWeekday: { type: Number, required: true },
    createdAt: { type: Date, required: true },
  },
  { collection: SESSION_COLLECTIONS.sessions, versionKey: false, strict: 'throw' },
);
// A member's history (newest first, cursor on startedAt then _id); a branch's analytics; the auto-end sweep.
SessionSchema.index({ userId: 1, startedAt: -1, _id: -1 });
SessionSchema.index({ branchId: 1, startedAt: -1 });
SessionSchema.index({ status: 1, autoEndAt: 1 });
// A retried offline check-out finds the session its scan already ended.
SessionSchema.index({ 'endedVia.scanMsgId': 1 }, { sparse: true });
// An offline door record naming the request its gateway tried first finds the online decision of the same tap.
SessionSchema.index({ 'startedVia.reqId': 1 }, { sparse: true });
SessionSchema.index({ 'endedVia.reqId': 1 }, { sparse: true });

const ClaimSchema = new Schema<ClaimDoc>(
  {
    _id: { type: String, required: true },
    sessionId: { type: String, required: true },
    branchId: { type: String, required: true },
    reqId: String,
    createdAt: { type: Date, required: true },
  },
  { collection: SESSION_COLLECTIONS.claims, versionKey: false, strict: 'throw' },
);
// An offline record of a tap whose online check-in is being written finds its claim (service.ts sameTapCheckIn).
ClaimSchema.index({ reqId: 1 }, { sparse: true });

const PendingCheckOutSchema = new Schema<PendingCheckOutDoc>(
  {
    _id: { type: String, required: true },
    userId: { type: String, required: true },
    branchId: { type: String, required: true },
    at: { type: Date, required: true },
    via: { type: ViaSchema, required: true },
    createdAt: { type: Date, required: true },
  },
  { collection: SESSION_COLLECTIONS.pendingCheckOuts, versionKey: false, strict: 'throw' },
);
PendingCheckOutSchema.index({ userId: 1, at: 1 });

export interface SessionModels {
  Session: Model<SessionDoc>;
  Claim: Model<ClaimDoc>;
  PendingCheckOut: Model<PendingCheckOutDoc>;
}

/** The models on a connection, collections and indexes created before traffic (ARCHITECTURE: the stand-in races). */
export async function sessionModels(mongo: Connection): Promise<SessionModels> {
  const Session = (mongo.models.GymSession ?? mongo.model('GymSession', SessionSchema)) as Model<SessionDoc>;
  const Claim = (mongo.models.ActiveSession ?? mongo.model('ActiveSession', ClaimSchema)) as Model<ClaimDoc>;
  const PendingCheckOut = (mongo.models.OfflineCheckOut ??
    mongo.model('OfflineCheckOut', PendingCheckOutSchema)) as Model<PendingCheckOutDoc>;
  await Promise.all([Session.init(), Claim.init(), PendingCheckOut.init()]);
  return { Session, Claim, PendingCheckOut };
}
