/**
 * Administration of members: search and filter with keyset pagination, and suspension / reactivation with a
 * reason, each audited. The account itself belongs to cloud/src/accounts; this module changes only its status and
 * the reason shown to the member.
 */
import { Types, trusted } from 'mongoose';
import type { AccountDoc } from '../accounts/model.ts';
import { Conflict, Invalid, NotFound } from '../http/errors.ts';
import type { AuthenticatedUser } from '../http/state.ts';
import type { UsersContext } from './context.ts';
import { activeMembershipFilter, type MembershipService } from './memberships.ts';
import type { AdminUserQuery } from './schemas.ts';

export interface AdminUserView {
  id: string;
  email: string;
  role: AccountDoc['role'];
  status: AccountDoc['status'];
  emailVerified: boolean;
  suspendedReason: string | null;
  firstName: string | null;
  lastName: string | null;
  branches: string[];
  createdAt: string;
}

export interface AdminService {
  search(query: AdminUserQuery): Promise<{ items: AdminUserView[]; nextCursor: string | null }>;
  get(userId: string): Promise<AdminUserView>;
  suspend(admin: AuthenticatedUser, userId: string, reason: string, ip: string): Promise<AdminUserView>;
  reactivate(admin: AuthenticatedUser, userId: string, reason: string, ip: string): Promise<AdminUserView>;
}

const escapeRegex = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/** The cursor is the last account id of the previous page (schemas.ts AccountCursor). */
function decodeCursor(cursor: string): Types.ObjectId {
  if (!/^[a-f0-9]{24}$/.test(cursor)) {
    throw new Invalid([{ in: 'query', field: 'cursor', reason: 'expected a cursor returned by a previous page' }]);
  }
  return new Types.ObjectId(cursor);
}

export function createAdminService(ctx: UsersContext, memberships: MembershipService): AdminService {
  const { Account, models, audit, clock } = ctx;

  async function views(accounts: Omit<AccountDoc, 'passwordHash'>[]): Promise<AdminUserView[]> {
    const ids = accounts.map((a) => a._id.toHexString());
    const [profiles, links] = await Promise.all([
      models.Profile.find({ _id: trusted({ $in: ids }) }, { firstName: 1, lastName: 1 }).lean(),
      models.Membership.find(
        { userId: trusted({ $in: ids }), ...activeMembershipFilter(clock.now()) },
        { userId: 1, branchId: 1 },
      ).lean(),
    ]);
    const profileOf = new Map(profiles.map((p) => [p._id, p]));
    return accounts.map((a) => {
      const id = a._id.toHexString();
      return {
        id,
        email: a.email,
        role: a.role,
        status: a.status,
        emailVerified: a.emailVerified,
        suspendedReason: a.suspendedReason ?? null,
        firstName: profileOf.get(id)?.firstName ?? null,
        lastName: profileOf.get(id)?.lastName ?? null,
        branches: links.filter((l) => l.userId === id).map((l) => l.branchId),
        createdAt: a.createdAt.toISOString(),
      };
    });
  }

  async function load(userId: string): Promise<Omit<AccountDoc, 'passwordHash'>> {
    const account = await Account.findById(userId, { passwordHash: 0 }).lean();
    if (!account) throw new NotFound('no such user');
    return account;
  }

  async function setStatus(
    admin: AuthenticatedUser,
    userId: string,
    reason: string,
    ip: string,
    action: 'account_suspended' | 'account_reactivated',
  ): Promise<AdminUserView> {
    if (userId === admin.id) throw new Conflict('own-account', 'administrators cannot change their own status');
    const before = await load(userId);
    const suspend = action === 'account_suspended';
    if (suspend && before.status === 'suspended') throw new Conflict('already-suspended', 'the account is suspended');
    if (!suspend && before.status !== 'suspended') throw new Conflict('not-suspended', 'the account is not suspended');
    const status = suspend ? 'suspended' : before.emailVerified ? 'active' : 'pending_verification';
    // Conditional on the status read: two administrators acting at once cannot both succeed.
    const result = await Account.updateOne(
      { _id: before._id, status: before.status },
      { $set: { status, suspendedReason: suspend ? reason : null, updatedAt: clock.now() } },
    );
    if (result.matchedCount !== 1) throw new Conflict('status-changed', 'the account changed meanwhile; reload');
    await audit.record({
      actor: admin.id,
      action,
      target: userId,
      ip,
      result: 'success',
      details: { reason, from: before.status, to: status },
    });
    return (await views([await load(userId)]))[0]!;
  }

  return {
    async search(query) {
      const and: Record<string, unknown>[] = [];
      if (query.email) {
        and.push({ email: trusted({ $regex: `^${escapeRegex(query.email.trim().toLowerCase())}` }) });
      }
      if (query.role) and.push({ role: query.role });
      if (query.status) and.push({ status: query.status });
      if (query.branch) {
        const ids = (await memberships.membersOf(query.branch)).filter((id) => Types.ObjectId.isValid(id));
        and.push({ _id: trusted({ $in: ids.map((id) => new Types.ObjectId(id)) }) });
      }
      if (query.cursor) and.push({ _id: trusted({ $gt: decodeCursor(query.cursor) }) });
      const accounts = await Account.find(and.length > 0 ? { $and: and } : {}, { passwordHash: 0 })
        .sort({ _id: 1 })
        .limit(query.limit + 1)
        .lean();
      const page = accounts.slice(0, query.limit);
      const last = page.at(-1);
      return {
        items: await views(page),
        nextCursor: accounts.length > query.limit && last ? last._id.toHexString() : null,
      };
    },
    async get(userId) {
      return (await views([await load(userId)]))[0]!;
    },
    suspend: (admin, userId, reason, ip) => setStatus(admin, userId, reason, ip, 'account_suspended'),
    reactivate: (admin, userId, reason, ip) => setStatus(admin, userId, reason, ip, 'account_reactivated'),
  };
}
