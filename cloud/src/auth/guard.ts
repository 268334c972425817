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
import type { AccountStore } from '../accounts/store.ts';
import { AppError, Forbidden, Unauthorized } from '../http/errors.ts';
import type { AppState, Role } from '../http/state.ts';
import { TokenRefused, type AccessTokens } from './access-tokens.ts';
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

export function createRequireUser({ tokens, sessions, store, audit, throttle }: GuardDeps) {
  return function requireUser(options: RequireUserOptions = {}): Middleware<AppState> {
    return async (ctx, next) => {
      const refuse = async (reason: string, actor: string | null = null) => {
        const { write, suppressedBefore } = throttle('token_refused', ctx.ip);
        if (write) {
          await audit.record({
            actor,
            action: 'token_refused',
            target: `${ctx.method} ${ctx.path}`,
            ip: ctx.ip,
            result: 'refused',
            details: { reason, ...(suppressedBefore > 0 ? { suppressedBefore } : {}) },
          });
        }
        return new Unauthorized('the access token is missing, invalid, expired or revoked');
      };
      const deny = async (reason: string, userId: string, error: AppError) => {
        // Bounded like token refusals, per account: a suspended account's client retrying in a loop is not a flood
        // of inserts, and other members behind the same address keep their entries.
        const { write, suppressedBefore } = throttle('access_denied', userId);
        if (write) {
          await audit.record({
            actor: userId,
            action: 'access_denied',
            target: `${ctx.method} ${ctx.path}`,
            ip: ctx.ip,
            result: 'refused',
            details: { reason, ...(suppressedBefore > 0 ? { suppressedBefore } : {}) },
          });
        }
        return error;
      };

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
      const { revoked, sessionAlive } = await sessions.check(claims.jti, claims.sid);
      if (revoked) throw await refuse('revoked', claims.sub);
      if (!sessionAlive) throw await refuse('session-ended', claims.sub);
      const account = await store.findById(claims.sub);
      if (!account) throw await refuse('no-account', claims.sub);

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
