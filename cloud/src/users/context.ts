/**
 * What the members domain needs from the rest of the cloud, in one place: its models, the accounts it reads (owned
 * by cloud/src/accounts), the field cipher, the audit log, and the parts of authentication it calls.
 */
import type { Middleware } from 'koa';
import type { Model } from 'mongoose';
import type { Clock } from '../../../tools/runtime/clock.ts';
import type { Logger } from '../../../tools/runtime/logger.ts';
import type { AccountDoc } from '../accounts/model.ts';
import type { AuditLog } from '../audit/index.ts';
import type { RequireUserOptions } from '../auth/guard.ts';
import type { FieldCipher } from '../crypto/field-cipher.ts';
import type { AppState } from '../http/state.ts';
import type { UserModels } from './models.ts';

/** The slice of cloud/src/auth this domain uses. */
export interface UsersAuth {
  requireUser(options?: RequireUserOptions): Middleware<AppState>;
  accounts: {
    /** `created: false`: the address already has an account (its holder was mailed); nothing was created. */
    register(input: {
      email: string;
      password: string;
      ip: string;
      userAgent: string;
    }): Promise<{ created: true; userId: string } | { created: false }>;
  };
  revokeAllSessions(userId: string, reason: string): Promise<unknown>;
  deleteAccount(userId: string): Promise<unknown>;
  /** The member's login sessions (devices), for the GDPR export. */
  sessions: { list(userId: string): Promise<unknown[]> };
}

export interface UsersContext {
  models: UserModels;
  Account: Model<AccountDoc>;
  cipher: FieldCipher;
  audit: AuditLog;
  clock: Clock;
  log: Logger;
}
