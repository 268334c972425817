import type { Logger } from '../../../tools/runtime/logger.ts';
import type { ProblemDocument } from './problem.ts';

export type Role = 'member' | 'staff' | 'admin';
export type AccountStatus = 'pending_verification' | 'active' | 'suspended';

/** The caller, as the authentication guard (cloud/src/auth) found it: token verified, account re-read. */
export interface AuthenticatedUser {
  /** The account's id (MongoDB ObjectId as hex). */
  id: string;
  role: Role;
  status: AccountStatus;
  emailVerified: boolean;
  /** The access token's jti (for revocation on logout). */
  tokenId: string;
  /** The login session (refresh-token family) the token belongs to. */
  sessionId: string;
  /** The access token's expiry, epoch seconds. */
  expiresAt: number;
}

/** What middleware puts on ctx.state for the handlers after it. */
export interface AppState {
  /** Set by the authentication guard on protected routes. */
  user?: AuthenticatedUser;
  requestId: string;
  /** The request's logger: carries reqId on every line. */
  log: Logger;
  /** Set when the response is a problem document (for the access log). */
  problem?: ProblemDocument;
  /** Validated inputs (see route.ts). */
  body?: unknown;
  query?: unknown;
  params?: unknown;
}
