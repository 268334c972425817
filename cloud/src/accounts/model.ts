/**
 * The account: who may log in, with which role and status. Credentials only — the member's profile, body metrics
 * and the rest live with the users domain (cloud/src/users), keyed by the same id.
 */
import { Schema, type Connection, type Model, type Types } from 'mongoose';
import type { AccountStatus, Role } from '../http/state.ts';

export const ROLES: readonly Role[] = ['member', 'staff', 'admin'];
export const ACCOUNT_STATUSES: readonly AccountStatus[] = ['pending_verification', 'active', 'suspended'];

export interface AccountDoc {
  _id: Types.ObjectId;
  /** Normalised (trimmed, lower case); unique. */
  email: string;
  /** argon2id PHC string (parameters inside); never leaves this module's service. */
  passwordHash: string;
  role: Role;
  status: AccountStatus;
  /** Shown to a suspended member (GET /api/auth/me). */
  suspendedReason?: string | null;
  emailVerified: boolean;
  emailVerifiedAt?: Date | null;
  passwordChangedAt: Date;
  createdAt: Date;
  updatedAt: Date;
}

const AccountSchema = new Schema<AccountDoc>(
  {
    email: { type: String, required: true, unique: true, maxlength: 254 },
    passwordHash: { type: String, required: true },
    role: { type: String, enum: ROLES, required: true, default: 'member' },
    status: { type: String, enum: ACCOUNT_STATUSES, required: true, default: 'pending_verification' },
    suspendedReason: { type: String, default: null, maxlength: 500 },
    emailVerified: { type: Boolean, required: true, default: false },
    emailVerifiedAt: { type: Date, default: null },
    passwordChangedAt: { type: Date, required: true },
    createdAt: { type: Date, required: true },
    updatedAt: { type: Date, required: true },
  },
  { collection: 'accounts', versionKey: false, strict: 'throw' },
);

/** Single-use tokens mailed to the account holder (email verification, password reset). Stored as SHA-256. */
export type AccountTokenPurpose = 'verify_email' | 'reset_password';

export interface AccountTokenDoc {
  /** SHA-256 (hex) of the token: a database leak gives no usable link. */
  _id: string;
  userId: string;
  purpose: AccountTokenPurpose;
  createdAt: Date;
  expiresAt: Date;
}

const AccountTokenSchema = new Schema<AccountTokenDoc>(
  {
    _id: { type: String, required: true },
    userId: { type: String, required: true, index: true },
    purpose: { type: String, enum: ['verify_email', 'reset_password'], required: true },
    createdAt: { type: Date, required: true },
    // Declared for real MongoDB; the stand-in ignores TTL indexes, so expiry is also a query condition.
    expiresAt: { type: Date, required: true, index: { expires: 0 } },
  },
  { collection: 'account_tokens', versionKey: false, strict: 'throw' },
);

export interface AccountModels {
  Account: Model<AccountDoc>;
  AccountToken: Model<AccountTokenDoc>;
}

/** Defines the models on the process's connection and creates their collections and indexes before traffic. */
export async function accountModels(mongo: Connection): Promise<AccountModels> {
  const Account = (mongo.models.Account ?? mongo.model('Account', AccountSchema)) as Model<AccountDoc>;
  const AccountToken = (mongo.models.AccountToken ??
    mongo.model('AccountToken', AccountTokenSchema)) as Model<AccountTokenDoc>;
  await Promise.all([Account.init(), AccountToken.init()]);
  return { Account, AccountToken };
}
