/**
 * Account persistence: the only code that reads or writes the accounts and account_tokens collections. Returns
 * plain objects; the password hash leaves it only through credentialsOf (for the login's verify).
 */
import { isDuplicateKey } from '../db/mongo.ts';
import { createHash, randomBytes } from 'node:crypto';
import { isValidObjectId, type Connection } from 'mongoose';
import type { Clock } from '../../../tools/runtime/clock.ts';
import type { AccountStatus, Role } from '../http/state.ts';
import { accountModels, type AccountDoc, type AccountModels, type AccountTokenPurpose } from './model.ts';

/** An account as the rest of the cloud sees it: no credentials. */
export interface Account {
  id: string;
  email: string;
  role: Role;
  status: AccountStatus;
  suspendedReason: string | null;
  emailVerified: boolean;
  createdAt: Date;
  passwordChangedAt: Date;
}

export interface AccountStore {
  /** Inserts a new member account; `undefined` when the email is taken (unique index, race-safe). */
  insert(input: { email: string; passwordHash: string }): Promise<Account | undefined>;
  findById(id: string): Promise<Account | undefined>;
  findByEmail(email: string): Promise<Account | undefined>;
  credentialsOf(email: string): Promise<{ account: Account; passwordHash: string } | undefined>;
  setPasswordHash(id: string, passwordHash: string): Promise<boolean>;
  /** Replaces `oldHash` by a re-hash of the same password (stronger parameters); false when the hash changed meanwhile. */
  upgradePasswordHash(id: string, oldHash: string, newHash: string): Promise<boolean>;
  markEmailVerified(id: string): Promise<Account | undefined>;
  /** For admin tooling and tests: status (with a reason when suspended) and role. */
  setStatus(id: string, status: AccountStatus, reason?: string | null): Promise<Account | undefined>;
  setRole(id: string, role: Role): Promise<Account | undefined>;
  remove(id: string): Promise<boolean>;
  /** A single-use token for a mailed link; only its SHA-256 is stored. Earlier tokens of that purpose are dropped. */
  issueToken(userId: string, purpose: AccountTokenPurpose, ttlS: number): Promise<string>;
  /** The user id a valid token was issued to, without consuming it (to check a new password first). */
  peekToken(token: string, purpose: AccountTokenPurpose): Promise<string | undefined>;
  /** The user id the token was issued to, consuming it; undefined when unknown, used or expired. */
  consumeToken(token: string, purpose: AccountTokenPurpose): Promise<string | undefined>;
  removeTokens(userId: string): Promise<void>;
}

const hashToken = (token: string) => createHash('sha256').update(token).digest('hex');
const TOKEN_SHAPE = /^[A-Za-z0-9_-]{43}$/;

function toAccount(doc: AccountDoc): Account {
  return {
    id: doc._id.toHexString(),
    email: doc.email,
    role: doc.role,
    status: doc.status,
    suspendedReason: doc.suspendedReason ?? null,
    emailVerified: doc.emailVerified,
    createdAt: doc.createdAt,
    passwordChangedAt: doc.passwordChangedAt,
  };
}

export async function createAccountStore(mongo: Connection, clock: Clock): Promise<AccountStore> {
  const { Account, AccountToken }: AccountModels = await accountModels(mongo);
  const byId = (id: string) => (isValidObjectId(id) && /^[a-f0-9]{24}$/.test(id) ? { _id: id } : undefined);

  async function update(id: string, set: Partial<AccountDoc>): Promise<Account | undefined> {
    const filter = byId(id);
    if (!filter) return undefined;
    const doc = await Account.findOneAndUpdate(
      filter,
      { $set: { ...set, updatedAt: clock.now() } },
      { returnDocument: 'after' },
    ).lean<AccountDoc>();
    return doc ? toAccount(doc) : undefined;
  }

  return {
    async insert({ email, passwordHash }) {
      const now = clock.now();
      try {
        const doc = await Account.create({
          email,
          passwordHash,
          role: 'member',
          status: 'pending_verification',
          emailVerified: false,
          passwordChangedAt: now,
          createdAt: now,
          updatedAt: now,
        });
        return toAccount(doc.toObject());
      } catch (err) {
        if (isDuplicateKey(err)) return undefined;
        throw err;
      }
    },

    async findById(id) {
      const filter = byId(id);
      if (!filter) return undefined;
      const doc = await Account.findOne(filter).lean<AccountDoc>();
      return doc ? toAccount(doc) : undefined;
    },

    async findByEmail(email) {
      const doc = await Account.findOne({ email: String(email) }).lean<AccountDoc>();
      return doc ? toAccount(doc) : undefined;
    },

    async credentialsOf(email) {
      const doc = await Account.findOne({ email: String(email) }).lean<AccountDoc>();
      return doc ? { account: toAccount(doc), passwordHash: doc.passwordHash } : undefined;
    },

    async setPasswordHash(id, passwordHash) {
      return (await update(id, { passwordHash, passwordChangedAt: clock.now() })) !== undefined;
    },

    async upgradePasswordHash(id, oldHash, newHash) {
      const filter = byId(id);
      if (!filter) return false;
      // Compare-and-set: a reset that set a new password since the login's verify must not be overwritten.
      const result = await Account.updateOne(
        { ...filter, passwordHash: String(oldHash) },
        { $set: { passwordHash: newHash, updatedAt: clock.now() } },
      );
      return result.modifiedCount === 1;
    },

    async markEmailVerified(id) {
      const filter = byId(id);
      if (!filter) return undefined;
      const now = clock.now();
      // Only a pending account becomes active: verifying must not lift a suspension.
      await Account.updateOne({ ...filter, status: 'pending_verification' }, { $set: { status: 'active' } });
      return update(id, { emailVerified: true, emailVerifiedAt: now });
    },

    setStatus: (id, status, reason) =>
      update(id, { status, suspendedReason: status === 'suspended' ? (reason ?? null) : null }),

    setRole: (id, role) => update(id, { role }),

    async remove(id) {
      const filter = byId(id);
      if (!filter) return false;
      return (await Account.deleteOne(filter)).deletedCount === 1;
    },

    async issueToken(userId, purpose, ttlS) {
      const token = randomBytes(32).toString('base64url');
      const now = clock.now();
      await AccountToken.deleteMany({ userId, purpose });
      await AccountToken.create({
        _id: hashToken(token),
        userId,
        purpose,
        createdAt: now,
        expiresAt: new Date(now.getTime() + ttlS * 1000),
      });
      return token;
    },

    async peekToken(token, purpose) {
      if (!TOKEN_SHAPE.test(token)) return undefined;
      const doc = await AccountToken.findOne({ _id: hashToken(token), purpose }).lean();
      if (!doc || doc.expiresAt.getTime() <= clock.nowMs()) return undefined;
      return doc.userId;
    },

    async consumeToken(token, purpose) {
      if (!TOKEN_SHAPE.test(token)) return undefined;
      // Deleted as it is read: a second use (or a concurrent one) finds nothing.
      const doc = await AccountToken.findOneAndDelete({ _id: hashToken(token), purpose }).lean();
      if (!doc || doc.expiresAt.getTime() <= clock.nowMs()) return undefined;
      return doc.userId;
    },

    async removeTokens(userId) {
      await AccountToken.deleteMany({ userId });
    },
  };
}
