/**
 * Branch memberships: which gyms a member belongs to. One document per (member, branch) with that pair as its id,
 * so joining twice is one membership however the requests race (ARCHITECTURE "Persistence": claims keyed by what
 * must be unique).
 *
 * A membership grants door access, machine availability and the app's live topics only when the gym granted it:
 * staff of the branch or an admin (`grant`, the routes in cloud/src/branches/membership-routes.ts). A member asking
 * to join creates a `requested` membership (`request`), which grants nothing until staff approve it. An `active`
 * membership may end at `validUntil`; from then on it grants nothing either (ended by the gym: the document is
 * removed). Documents written before statuses existed have no `status`: they are active.
 */
import { trusted } from 'mongoose';
import { isDuplicateKey } from '../db/mongo.ts';
import { Conflict } from '../http/errors.ts';
import type { UsersContext } from './context.ts';
import type { MembershipDoc } from './models.ts';

/** A member of (or asking to join) more branches than this is a data-entry error or abuse. */
export const MAX_BRANCHES_PER_MEMBER = 20;

export const MEMBERSHIP_STATUSES = ['requested', 'active'] as const;
export type MembershipStatus = (typeof MEMBERSHIP_STATUSES)[number];

/** An active membership: what grants door access, availability and live topics. */
export interface MembershipView {
  branchId: string;
  joinedAt: string;
  /** End of the membership (exclusive), ISO; null: open-ended. */
  validUntil: string | null;
}

/** Any membership of the member, requested or active (the member's own list, the GDPR export). */
export interface MembershipRecord extends MembershipView {
  status: MembershipStatus | 'expired';
  requestedAt: string | null;
}

/** A branch's member as staff see it. */
export interface BranchMemberView {
  userId: string;
  status: MembershipStatus | 'expired';
  joinedAt: string;
  requestedAt: string | null;
  validUntil: string | null;
  grantedBy: string | null;
}

export interface BranchMembersPage {
  items: BranchMemberView[];
  nextCursor: string | null;
}

export interface MembershipService {
  /**
   * The gym's grant (staff/admin, and tests' setup): creates the membership active, or turns a request active. An
   * existing active membership is left as it is unless `validUntil` is given (null: open-ended). `created` is true
   * when the member holds an active membership only from now on.
   */
  join(
    userId: string,
    branchId: string,
    options?: { validUntil?: Date | null; by?: string },
  ): Promise<{ membership: MembershipView; created: boolean }>;
  /** The member asks to join: a `requested` membership (granting nothing), or the existing one unchanged. */
  request(userId: string, branchId: string): Promise<{ membership: MembershipRecord; created: boolean }>;
  /** Ends a membership or withdraws a request (either side); false when there was none. */
  leave(userId: string, branchId: string): Promise<boolean>;
  /** The member's ACTIVE memberships (not past validUntil): what grants anything. */
  list(userId: string): Promise<MembershipView[]>;
  /** Every membership of the member with its status (requests included). */
  listAll(userId: string): Promise<MembershipRecord[]>;
  /** The ACTIVE members of a branch (ids). */
  membersOf(branchId: string): Promise<string[]>;
  /** The ACTIVE members of a branch with their end (for the signed allow-list). */
  activeMembersOf(branchId: string): Promise<{ userId: string; validUntilMs?: number }[]>;
  /** A branch's memberships for staff, by user id, keyset paged; `status` filters. */
  page(
    branchId: string,
    query: { limit: number; cursor?: string; status?: MembershipStatus },
  ): Promise<BranchMembersPage>;
  /** The member's membership of the branch, any status. */
  get(userId: string, branchId: string): Promise<MembershipRecord | undefined>;
}

export const membershipId = (userId: string, branchId: string) => `${userId}:${branchId}`;

/**
 * The MongoDB filter part that selects memberships granting something at `now`: not a request (documents without a
 * status are active) and not past validUntil. `trusted`: the connection sanitises filters; these operators are ours.
 */
export function activeMembershipFilter(now: Date): Record<string, unknown> {
  return {
    status: trusted({ $ne: 'requested' }),
    $or: [{ validUntil: null }, { validUntil: trusted({ $gt: now }) }],
  };
}

type Lean = Pick<MembershipDoc, 'userId' | 'branchId' | 'joinedAt' | 'status' | 'validUntil' | 'requestedAt'> &
  Partial<Pick<MembershipDoc, 'grantedBy'>>;

const statusOf = (d: Lean, now: Date): MembershipRecord['status'] => {
  if (d.status === 'requested') return 'requested';
  return d.validUntil && d.validUntil.getTime() <= now.getTime() ? 'expired' : 'active';
};
const iso = (d: Date | null | undefined) => (d ? d.toISOString() : null);
const viewOf = (d: Lean): MembershipView => ({
  branchId: d.branchId,
  joinedAt: d.joinedAt.toISOString(),
  validUntil: iso(d.validUntil),
});
const recordOf = (d: Lean, now: Date): MembershipRecord => ({
  ...viewOf(d),
  status: statusOf(d, now),
  requestedAt: iso(d.requestedAt),
});

export function createMembershipService({ models, clock }: UsersContext): MembershipService {
  const { Membership } = models;

  const assertRoom = async (userId: string) => {
    if ((await Membership.countDocuments({ userId })) >= MAX_BRANCHES_PER_MEMBER) {
      throw new Conflict('too-many-branches', `a member may belong to at most ${MAX_BRANCHES_PER_MEMBER} branches`);
    }
  };

  const service: MembershipService = {
    async join(userId, branchId, options = {}) {
      const _id = membershipId(userId, branchId);
      const now = clock.now();
      for (let attempt = 0; attempt < 3; attempt++) {
        const existing = await Membership.findById(_id).lean<MembershipDoc>();
        if (existing) {
          const was = statusOf(existing, now);
          const set: Record<string, unknown> = {};
          if (was !== 'active') Object.assign(set, { status: 'active', joinedAt: now, grantedBy: options.by ?? null });
          // A renewed (expired) membership without a new end runs open-ended.
          if (options.validUntil !== undefined || was === 'expired') set.validUntil = options.validUntil ?? null;
          if (Object.keys(set).length === 0) return { membership: viewOf(existing), created: false };
          // Conditional on the status read: a request withdrawn meanwhile is not resurrected as a grant.
          const updated = await Membership.findOneAndUpdate(
            { _id, status: existing.status ?? null },
            { $set: set },
            { returnDocument: 'after' },
          ).lean<MembershipDoc>();
          if (updated)
            return { membership: viewOf(updated), created: was !== 'active' && statusOf(updated, now) === 'active' };
          continue;
        }
        await assertRoom(userId);
        try {
          const doc = await Membership.create({
            _id,
            userId,
            branchId,
            joinedAt: now,
            status: 'active',
            validUntil: options.validUntil ?? null,
            requestedAt: null,
            grantedBy: options.by ?? null,
          });
          const created = doc.toObject();
          return { membership: viewOf(created), created: statusOf(created, now) === 'active' };
        } catch (err) {
          if (!isDuplicateKey(err)) throw err;
        }
      }
      throw new Conflict('membership-changed', 'the membership changed meanwhile; retry');
    },
    async request(userId, branchId) {
      const _id = membershipId(userId, branchId);
      const existing = await Membership.findById(_id).lean<MembershipDoc>();
      if (existing && statusOf(existing, clock.now()) === 'expired') {
        // Asking again after the membership ended: a new request (the gym decides again).
        const now = clock.now();
        const renewed = await Membership.findOneAndUpdate(
          { _id, status: existing.status ?? null, validUntil: existing.validUntil ?? null },
          { $set: { status: 'requested', validUntil: null, requestedAt: now, grantedBy: null } },
          { returnDocument: 'after' },
        ).lean<MembershipDoc>();
        const current = renewed ?? (await Membership.findById(_id).lean<MembershipDoc>());
        if (current) return { membership: recordOf(current, now), created: renewed !== null };
      }
      if (existing && statusOf(existing, clock.now()) !== 'expired') {
        return { membership: recordOf(existing, clock.now()), created: false };
      }
      await assertRoom(userId);
      const now = clock.now();
      try {
        const doc = await Membership.create({
          _id,
          userId,
          branchId,
          joinedAt: now,
          status: 'requested',
          validUntil: null,
          requestedAt: now,
          grantedBy: null,
        });
        return { membership: recordOf(doc.toObject(), now), created: true };
      } catch (err) {
        if (!isDuplicateKey(err)) throw err;
        const raced = await Membership.findById(_id).lean<MembershipDoc>();
        if (!raced) throw err;
        return { membership: recordOf(raced, now), created: false };
      }
    },
    async leave(userId, branchId) {
      const result = await Membership.deleteOne({ _id: membershipId(userId, branchId) });
      return result.deletedCount === 1;
    },
    async list(userId) {
      const docs = await Membership.find({ userId, ...activeMembershipFilter(clock.now()) })
        .sort({ joinedAt: 1 })
        .lean<MembershipDoc[]>();
      return docs.map(viewOf);
    },
    async listAll(userId) {
      const now = clock.now();
      const docs = await Membership.find({ userId }).sort({ joinedAt: 1 }).lean<MembershipDoc[]>();
      return docs.map((d) => recordOf(d, now));
    },
    async membersOf(branchId) {
      return (await service.activeMembersOf(branchId)).map((m) => m.userId);
    },
    async activeMembersOf(branchId) {
      const docs = await Membership.find(
        { branchId, ...activeMembershipFilter(clock.now()) },
        { userId: 1, validUntil: 1 },
      ).lean<Pick<MembershipDoc, 'userId' | 'validUntil'>[]>();
      return docs.map((d) =>
        d.validUntil ? { userId: d.userId, validUntilMs: d.validUntil.getTime() } : { userId: d.userId },
      );
    },
    async page(branchId, query) {
      const and: Record<string, unknown>[] = [{ branchId }];
      if (query.status === 'requested') and.push({ status: 'requested' });
      if (query.status === 'active') and.push(activeMembershipFilter(clock.now()));
      if (query.cursor) and.push({ userId: trusted({ $gt: query.cursor }) });
      const docs = await Membership.find({ $and: and })
        .sort({ userId: 1 })
        .limit(query.limit + 1)
        .lean<MembershipDoc[]>();
      const now = clock.now();
      const page = docs.slice(0, query.limit);
      return {
        items: page.map((d) => ({
          userId: d.userId,
          status: statusOf(d, now),
          joinedAt: d.joinedAt.toISOString(),
          requestedAt: iso(d.requestedAt),
          validUntil: iso(d.validUntil),
          grantedBy: d.grantedBy ?? null,
        })),
        nextCursor: docs.length > query.limit ? (page.at(-1)?.userId ?? null) : null,
      };
    },
    async get(userId, branchId) {
      const doc = await Membership.findById(membershipId(userId, branchId)).lean<MembershipDoc>();
      return doc ? recordOf(doc, clock.now()) : undefined;
    },
  };
  return service;
}
