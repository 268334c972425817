/**
 * The authentication flows, each a short story: register, login, refresh, logout, email verification, password
 * reset, and the credential side of account deletion. Routes (routes.ts) only translate HTTP to these calls.
 */
import { createHash } from 'node:crypto';
import type { Logger } from '../../../tools/runtime/logger.ts';
import type { AuditLog, AuditResult } from '../audit/audit-log.ts';
import { normaliseEmail } from '../accounts/email.ts';
import { hashPassword, passwordNeedsRehash, passwordProblem, verifyPassword } from '../accounts/password.ts';
import type { Account, AccountStore } from '../accounts/store.ts';
import { AppError, Invalid, ServiceUnavailable, TooManyRequests, Unauthorized } from '../http/errors.ts';
import type { Mailer } from '../mail/mailer.ts';
import type { AccessTokens } from './access-tokens.ts';
import type { AuthConfig } from './config.ts';
import { alreadyRegisteredEmail, passwordChangedEmail, resetPasswordEmail, verificationEmail } from './emails.ts';
import type { AuditThrottle } from './audit-throttle.ts';
import type { LoginLimits } from './login-limits.ts';
import type { RefreshSessions } from './refresh-sessions.ts';

/** Who is calling, as far as the audit log and the session's device record are concerned. */
export interface Caller {
  ip: string;
  userAgent: string;
}

export type RegisterResult =
  /** A new account (pending verification); a verification email is on its way. */
  | { created: true; userId: string }
  /** The email already has an account: nothing was created; the holder was told by email. Answer as if created. */
  | { created: false };

export interface TokenPair {
  accessToken: string;
  tokenType: 'Bearer';
  expiresIn: number;
  refreshToken: string;
  refreshExpiresIn: number;
  sessionId: string;
}

export interface AuthFlows {
  register(input: { email: string; password: string } & Caller): Promise<RegisterResult>;
  login(input: { email: string; password: string } & Caller): Promise<TokenPair & { account: Account }>;
  refresh(input: { refreshToken: string } & Caller): Promise<TokenPair>;
  logout(input: { userId: string; jti: string; expiresAt: number; sessionId: string } & Caller): Promise<void>;
  verifyEmail(input: { token: string } & Caller): Promise<Account>;
  resendVerification(input: { userId: string } & Caller): Promise<void>;
  forgotPassword(input: { email: string } & Caller): Promise<void>;
  resetPassword(input: { token: string; password: string } & Caller): Promise<void>;
  revokeAllSessions(userId: string, reason: string, caller?: Partial<Caller>): Promise<number>;
  /** Revokes one of the user's sessions; false (→ 404) when it is not theirs or does not exist. */
  revokeSession(userId: string, sessionId: string, caller: Caller): Promise<boolean>;
  deleteAccount(userId: string, caller?: Partial<Caller>): Promise<boolean>;
  /** Waits for work that runs after its answer (a password-reset request's token, audit entry and mail). */
  settle(): Promise<void>;
}

export interface AuthFlowDeps {
  config: AuthConfig;
  appBaseUrl: string;
  store: AccountStore;
  sessions: RefreshSessions;
  tokens: AccessTokens;
  limits: LoginLimits;
  /** Per-account limits on mails a caller can trigger (verification resend, password reset). */
  mailLimit: (key: string) => Promise<boolean>;
  clearMailLimit: (key: string) => Promise<void>;
  audit: AuditLog;
  /** Bounds the audit writes of refused logins (a locked account under a flood). */
  throttle: AuditThrottle;
  mailer: Mailer;
  log: Logger;
  /** A hash verified against for unknown emails, so they cost what a wrong password costs. */
  dummyHash: string;
}

export class InvalidToken extends AppError {
  constructor() {
    super('invalid-token', 400, 'the link is invalid, has been used or has expired');
  }
}

const badCredentials = () => new Unauthorized('invalid email or password');

/** The login limiter's key for an email: a digest, so Redis never lists the addresses people tried. */
export const limitKeyOf = (email: string) => createHash('sha256').update(email).digest('base64url');

export function createAuthFlows(deps: AuthFlowDeps): AuthFlows {
  const { config, store, sessions, tokens, limits, audit, mailer, log } = deps;
  const links = { appBaseUrl: deps.appBaseUrl };

  const record = (
    action: string,
    result: AuditResult,
    caller: Partial<Caller>,
    actor: string | null,
    target: string | null,
    details?: Record<string, unknown>,
  ) =>
    audit.record({
      actor,
      action,
      target,
      ip: caller.ip ?? null,
      result,
      details: { ...(caller.userAgent ? { userAgent: caller.userAgent } : {}), ...details },
    });

  function issuePair(userId: string, sessionId: string, refreshToken: string): TokenPair {
    const access = tokens.issue({ userId, sessionId });
    return {
      accessToken: access.token,
      tokenType: 'Bearer',
      expiresIn: access.expiresInS,
      refreshToken,
      refreshExpiresIn: config.refreshTokenTtlS,
      sessionId,
    };
  }

  async function sendVerification(account: Account): Promise<void> {
    const token = await store.issueToken(account.id, 'verify_email', config.verifyEmailTtlS);
    mailer.sendLater(verificationEmail(account.email, token, config.verifyEmailTtlS, links));
  }

  /** Work that must not delay (and so reveal anything through) the answer; failures are logged. */
  const background = new Set<Promise<void>>();
  function later(what: string, task: () => Promise<void>): void {
    const running = task()
      .catch((err: unknown) => {
        log.error({ err: { name: (err as Error).name, message: (err as Error).message } }, `${what} failed`);
      })
      .finally(() => background.delete(running));
    background.add(running);
  }

  async function revokeAllSessions(userId: string, reason: string, caller: Partial<Caller> = {}): Promise<number> {
    const count = await sessions.revokeAll(userId);
    await record('sessions_revoked', 'success', caller, userId, userId, { reason, count });
    return count;
  }

  return {
    async register({ email: rawEmail, password, ip, userAgent }) {
      const email = normaliseEmail(rawEmail);
      const problem = passwordProblem(password, email);
      if (problem) throw new Invalid([{ in: 'body', field: 'password', reason: problem }]);
      // Hashed before we know whether the email is taken: both answers cost the same time.
      const passwordHash = await hashPassword(password);
      const account = await store.insert({ email, passwordHash });
      if (!account) {
        const existing = await store.findByEmail(email);
        mailer.sendLater(alreadyRegisteredEmail(email, links));
        await record('register', 'refused', { ip, userAgent }, null, existing?.id ?? email, { reason: 'email-taken' });
        return { created: false };
      }
      await sendVerification(account);
      await record('register', 'success', { ip, userAgent }, account.id, account.id);
      return { created: true, userId: account.id };
    },

    async login({ email: rawEmail, password, ip, userAgent }) {
      const email = normaliseEmail(rawEmail);
      let reserved;
      try {
        reserved = await limits.reserve(limitKeyOf(email), ip);
      } catch (err) {
        // Fail closed: without the limiter, nothing would stop a flood from reaching argon2 (RELIABILITY C3).
        log.warn({ err: { message: (err as Error).message } }, 'login limiter unavailable');
        throw new ServiceUnavailable('login is temporarily unavailable, try again shortly');
      }
      if (!reserved.allowed) {
        const { write, suppressedBefore } = deps.throttle('login_locked', ip);
        if (write) {
          await record('login_locked', 'refused', { ip, userAgent }, null, email, {
            scope: reserved.scope,
            ...(suppressedBefore > 0 ? { suppressedBefore } : {}),
          });
        }
        throw new TooManyRequests(reserved.retryAfterS, 'too many failed logins; try again later');
      }
      const credentials = await store.credentialsOf(email);
      const ok = credentials
        ? await verifyPassword(credentials.passwordHash, password)
        : (await verifyPassword(deps.dummyHash, password)) && false;
      if (!credentials || !ok) {
        const left = await limits.remaining(limitKeyOf(email));
        await record('login_failed', 'failure', { ip, userAgent }, null, credentials?.account.id ?? email, {
          reason: credentials ? 'wrong-password' : 'unknown-email',
        });
        if (left === 0)
          await record('account_locked', 'refused', { ip, userAgent }, null, credentials?.account.id ?? email);
        throw badCredentials();
      }
      const { account, passwordHash } = credentials;
      await limits.succeeded(limitKeyOf(email), ip);
      const started = await sessions.start({ userId: account.id, userAgent, ip });
      // A password reset may have completed between our verify and the session's start: its "revoke all" could not
      // see this session, so it would outlive the reset. Re-read after starting: a changed hash means the password
      // we verified no longer opens the account (a reset that comes later sees the session and revokes it).
      const current = await store.credentialsOf(email);
      if (current?.account.id !== account.id || current.passwordHash !== passwordHash) {
        await sessions.revoke(started.sessionId, account.id);
        await record('login_failed', 'failure', { ip, userAgent }, null, account.id, { reason: 'password-changed' });
        throw badCredentials();
      }
      if (passwordNeedsRehash(passwordHash)) {
        // Parameters were raised since this hash was made: upgrade it while we hold the password — only if it is
        // still the hash we verified (never over a new password set meanwhile).
        await store.upgradePasswordHash(account.id, passwordHash, await hashPassword(password));
      }
      await record('login', 'success', { ip, userAgent }, account.id, account.id, { sessionId: started.sessionId });
      return { ...issuePair(account.id, started.sessionId, started.refreshToken), account };
    },

    async refresh({ refreshToken, ip, userAgent }) {
      const outcome = await sessions.rotate({ refreshToken, userAgent, ip });
      if (outcome.kind === 'reuse') {
        await record('refresh_reuse_detected', 'refused', { ip, userAgent }, outcome.userId, outcome.sessionId, {
          action: 'session revoked',
        });
        throw new Unauthorized('the refresh token is invalid or expired');
      }
      if (outcome.kind === 'invalid') {
        await record('refresh_failed', 'failure', { ip, userAgent }, null, null, { reason: 'invalid' });
        throw new Unauthorized('the refresh token is invalid or expired');
      }
      const account = await store.findById(outcome.userId);
      if (!account) {
        await sessions.revoke(outcome.sessionId);
        throw new Unauthorized('the refresh token is invalid or expired');
      }
      await record('refresh', 'success', { ip, userAgent }, account.id, outcome.sessionId, {
        ...(outcome.grace ? { grace: true } : {}),
      });
      return issuePair(account.id, outcome.sessionId, outcome.refreshToken);
    },

    async logout({ userId, jti, expiresAt, sessionId, ip, userAgent }) {
      await sessions.revokeAccessToken(jti, expiresAt);
      await sessions.revoke(sessionId, userId);
      await record('logout', 'success', { ip, userAgent }, userId, sessionId);
    },

    async verifyEmail({ token, ip, userAgent }) {
      const userId = await store.consumeToken(token, 'verify_email');
      const account = userId ? await store.markEmailVerified(userId) : undefined;
      if (!account) {
        await record('email_verify', 'failure', { ip, userAgent }, null, null, { reason: 'invalid-token' });
        throw new InvalidToken();
      }
      await record('email_verify', 'success', { ip, userAgent }, account.id, account.id);
      return account;
    },

    async resendVerification({ userId, ip, userAgent }) {
      const account = await store.findById(userId);
      if (!account || account.emailVerified) return;
      if (!(await deps.mailLimit(`verify:${account.id}`))) {
        await record('email_verify_resend', 'refused', { ip, userAgent }, account.id, account.id, { reason: 'limit' });
        return;
      }
      await sendVerification(account);
      await record('email_verify_resend', 'success', { ip, userAgent }, account.id, account.id);
    },

    async forgotPassword({ email: rawEmail, ip, userAgent }) {
      const email = normaliseEmail(rawEmail);
      const account = await store.findByEmail(email);
      // The rest runs after the answer: a known address costs a limiter call, a token write and an audit entry
      // more than an unknown one, and the time to answer must not tell them apart (no enumeration by timing).
      later('password reset request', async () => {
        if (!account) {
          await record('password_reset_requested', 'failure', { ip, userAgent }, null, email, {
            reason: 'unknown-email',
          });
          return;
        }
        if (!(await deps.mailLimit(`reset:${account.id}`))) {
          await record('password_reset_requested', 'refused', { ip, userAgent }, null, account.id, {
            reason: 'limit',
          });
          return;
        }
        const token = await store.issueToken(account.id, 'reset_password', config.resetPasswordTtlS);
        mailer.sendLater(resetPasswordEmail(account.email, token, config.resetPasswordTtlS, links));
        await record('password_reset_requested', 'success', { ip, userAgent }, null, account.id);
      });
    },

    async resetPassword({ token, password, ip, userAgent }) {
      const userId = await store.peekToken(token, 'reset_password');
      const account = userId ? await store.findById(userId) : undefined;
      if (!account) {
        await record('password_reset', 'failure', { ip, userAgent }, null, null, { reason: 'invalid-token' });
        throw new InvalidToken();
      }
      // Checked before the token is spent: a refused password leaves the link usable.
      const problem = passwordProblem(password, account.email);
      if (problem) throw new Invalid([{ in: 'body', field: 'password', reason: problem }]);
      const passwordHash = await hashPassword(password);
      if ((await store.consumeToken(token, 'reset_password')) !== account.id) throw new InvalidToken();
      await store.setPasswordHash(account.id, passwordHash);
      // Whoever can read the mailbox controls the address.
      if (!account.emailVerified) await store.markEmailVerified(account.id);
      await limits.clear(limitKeyOf(account.email));
      await record('password_reset', 'success', { ip, userAgent }, account.id, account.id);
      await revokeAllSessions(account.id, 'password-reset', { ip, userAgent });
      mailer.sendLater(passwordChangedEmail(account.email, links));
    },

    revokeAllSessions,

    async revokeSession(userId, sessionId, caller) {
      const revoked = await sessions.revoke(sessionId, userId);
      await record('session_revoked', revoked ? 'success' : 'refused', caller, userId, sessionId, {
        ...(revoked ? {} : { reason: 'not-found' }),
      });
      return revoked;
    },

    async settle() {
      while (background.size > 0) await Promise.allSettled([...background]);
    },

    async deleteAccount(userId, caller = {}) {
      const account = await store.findById(userId);
      if (!account) return false;
      await sessions.revokeAll(userId);
      await store.removeTokens(userId);
      await limits.clear(limitKeyOf(account.email));
      await Promise.all([deps.clearMailLimit(`verify:${userId}`), deps.clearMailLimit(`reset:${userId}`)]);
      const removed = await store.remove(userId);
      await record('account_deleted', 'success', caller, userId, userId);
      return removed;
    },
  };
}
