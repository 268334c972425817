/**
 * Branch memberships: which gyms a member belongs to. One document per (member, branch) with that pair as its id,
 * so joining twice is one membership however the requests race (ARCHITECTURE "Persistence": claims keyed by what
 * must be unique).
 */
import { isDuplicateKey } from '../db/mongo.ts';
import { Conflict } from '../http/errors.ts';
import type { UsersContext } from './context.ts';

/** A member of more branches than this is a data-entry error or abuse. */
export const MAX_BRANCHES_PER_MEMBER = 20;

export interface MembershipView {
  branchId: string;
  joinedAt: string;
}

export interface MembershipService {
  join(userId: string, branchId: string): Promise<{ membership: MembershipView; created: boolean }>;
  leave(userId: string, branchId: string): Promise<boolean>;
  list(userId: string): Promise<MembershipView[]>;
  /** Members of a branch (admin search). */
  membersOf(branchId: string): Promise<string[]>;
}

export const membershipId = (userId: string, branchId: string) => `${userId}:${branchId}`;

export function createMembershipService({ models, clock }: UsersContext): MembershipService {
  const { Membership } = models;
  return {
    async join(userId, branchId) {
      const _id = membershipId(userId, branchId);
      const existing = await Membership.findById(_id).lean();
      if (existing) {
        return { membership: { branchId, joinedAt: existing.joinedAt.toISOString() }, created: false };
      }
      if ((await Membership.countDocuments({ userId })) >= MAX_BRANCHES_PER_MEMBER) {
        throw new Conflict('too-many-branches', `a member may belong to at most ${MAX_BRANCHES_PER_MEMBER} branches`);
      }
      const joinedAt = clock.now();
      try {
        await Membership.create({ _id, userId, branchId, joinedAt });
        return { membership: { branchId, joinedAt: joinedAt.toISOString() }, created: true };
      } catch (err) {
        if (!isDuplicateKey(err)) throw err;
        const raced = await Membership.findById(_id).lean();
        return {
          membership: { branchId, joinedAt: (raced?.joinedAt ?? joinedAt).toISOString() },
          created: false,
        };
      }
    },
    async leave(userId, branchId) {
      const result = await Membership.deleteOne({ _id: membershipId(userId, branchId) });
      return result.deletedCount === 1;
    },
    async list(userId) {
      const docs = await Membership.find({ userId }).sort({ joinedAt: 1 }).lean();
      return docs.map((d) => ({ branchId: d.branchId, joinedAt: d.joinedAt.toISOString() }));
    },
    async membersOf(branchId) {
      const docs = await Membership.find({ branchId }, { userId: 1 }).lean();
      return docs.map((d) => d.userId);
    },
  };
}
