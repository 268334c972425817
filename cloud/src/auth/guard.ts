/**
 * The route guard (route.ts `guards`: runs before the body is read). Verifies the Bearer access token, checks the
 * revocation list and that its login session still exists (logout and "revoke session" apply at once), re-reads the
 * account (a suspension or role change applies at the next request), then enforces status and role:
 *   - suspended → 403, except on routes with allowSuspended (reading why);
 *   - pending verification passes, unless the route asks for `verified: true`;
 *   - roles, when given.
 * Anything wrong with the token is a 401 problem with `WWW-Authenticate: Bearer`; refusals are audited.
 */
import type { Middleware } from 'koa';
import type { AuditLog } from '../audit/audit-log.ts';
import type { Account, AccountStore } from '../accounts/store.ts';
import { AppError, Forbidden, Unauthorized } from '../http/errors.ts';
import type { AppState, Role } from '../http/state.ts';
import { TokenRefused, type AccessClaims, type AccessTokens } from './access-tokens.ts';
import type { AuditThrottle } from './audit-throttle.ts';
import type { RefreshSessions } from './refresh-sessions.ts';

export interface RequireUserOptions {
  /** The route needs a verified email (whatever involves other people, gym access or rewards). */
  verified?: boolean;
  /** Only these roles may pass. */
  roles?: readonly Role[];
  /** A suspended account may use this route (only to read why). */
  allowSuspended?: boolean;
}

export interface GuardDeps {
  tokens: AccessTokens;
  sessions: RefreshSessions;
  store: AccountStore;
  audit: AuditLog;
  /** Bounds the audit writes of refused tokens and denied requests (shared with the login's refusals). */
  throttle: AuditThrottle;
}

/** RFC 6750 2.1 (the scheme name is case-insensitive, RFC 9110 11.1). */
const BEARER = /^Bearer +([A-Za-z0-9._~+/=-]+) *$/i;

export class AccountSuspended extends AppError {
  constructor() {
    super('account-suspended', 403, 'this account is suspended; GET /api/auth/me tells why');
  }
}

export class EmailNotVerified extends AppError {
  constructor() {
    super('email-not-verified', 403, 'confirm your email address first (POST /api/auth/verify-email/resend)');
  }
}

export type SessionCheck =
  | { account: Account; refused?: undefined }
  | { account?: undefined; refused: 'revoked' | 'session-ended' | 'no-account' };

/**
 * What follows a valid signature, shared by the guard and verifyAccessToken: the revocation list and the login
 * session (one Redis round trip), then the account. The account read starts alongside the Redis check (they are
 * independent): one round-trip time instead of two on every authenticated request. Its outcome, failure included,
 * only counts once the token has passed the Redis check, as when the two ran one after the other.
 */
export function createSessionCheck({ sessions, store }: Pick<GuardDeps, 'sessions' | 'store'>) {
  return async function checkSession(claims: AccessClaims): Promise<SessionCheck> {
    const accountRead = store.findById(claims.sub);
    accountRead.catch(() => undefined); // handled: a failure surfaces below, where it used to
    const { revoked, sessionAlive } = await sessions.check(claims.jti, claims.sid);
    if (revoked) return { refused: 'revoked' };
    if (!sessionAlive) return { refused: 'session-ended' };
    const account = await accountRead;
    return account ? { account } : { refused: 'no-account' };
  };
}

export function createRequireUser({ tokens, sessions, store, audit, throttle }: GuardDeps) {
  const checkSession = createSessionCheck({ sessions, store });
  return function requireUser(options: RequireUserOptions = {}): Middleware<AppState> {
    return async (ctx, next) => {
      /** Records a refusal (bounded per throttle key) and returns the error to throw. */
      const audited = async <E extends AppError>(
        action: 'token_refused' | 'access_denied',
        throttleKey: string,
        actor: string | null,
        reason: string,
        error: E,
      ): Promise<E> => {
        const { write, suppressedBefore } = throttle(action, throttleKey);
        if (write) {
          await audit.record({
            actor,
            action,
            target: `${ctx.method} ${ctx.path}`,
            ip: ctx.ip,
            result: 'refused',
            details: { reason, ...(suppressedBefore > 0 ? { suppressedBefore } : {}) },
          });
        }
        return error;
      };
      const refuse = (reason: string, actor: string | null = null) =>
        audited(
          'token_refused',
          ctx.ip,
          actor,
          reason,
          new Unauthorized('the access token is missing, invalid, expired or revoked'),
        );
      // Bounded like token refusals, per account: a suspended account's client retrying in a loop is not a flood
      // of inserts, and other members behind the same address keep their entries.
      const deny = (reason: string, userId: string, error: AppError) =>
        audited('access_denied', userId, userId, reason, error);

      const header = ctx.get('Authorization');
      if (!header) throw new Unauthorized('authentication is required');
      const token = BEARER.exec(header)?.[1];
      if (!token) throw await refuse('not-bearer');
      let claims;
      try {
        claims = tokens.verify(token);
      } catch (err) {
        if (err instanceof TokenRefused) throw await refuse(err.reason);
        throw err;
      }
      const { account, refused } = await checkSession(claims);
      if (refused) throw await refuse(refused, claims.sub);

      if (account.status === 'suspended' && !options.allowSuspended) {
        throw await deny('suspended', account.id, new AccountSuspended());
      }
      if (options.verified && !account.emailVerified) {
        throw await deny('email-not-verified', account.id, new EmailNotVerified());
      }
      if (options.roles && !options.roles.includes(account.role)) {
        throw await deny('role', account.id, new Forbidden('your role may not do this'));
      }
      ctx.state.user = {
        id: account.id,
        role: account.role,
        status: account.status,
        emailVerified: account.emailVerified,
        tokenId: claims.jti,
        sessionId: claims.sid,
        expiresAt: claims.exp,
      };
      await next();
    };
  };
}
