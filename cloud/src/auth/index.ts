/**
 * Authentication, built once in startCloud: accounts, access and refresh tokens, login limits, mail, audit, the
 * route guard and the routes. Other domains get `requireUser` for their routes and the `accounts` service.
 *
 *   const auth = await createAuth({ config: config.auth, mail: config.mail, mongo, redis, clock, log });
 *   defineRoute({ …, security: [{ bearer: [] }], guards: [auth.requireUser({ verified: true })], … })
 */
import type { Middleware } from 'koa';
import type { Connection } from 'mongoose';
import type { Redis } from 'ioredis';
import { RateLimiterRedis, RateLimiterRes } from 'rate-limiter-flexible';
import type { Clock } from '../../../tools/runtime/clock.ts';
import type { Logger } from '../../../tools/runtime/logger.ts';
import { createAccountStore, type Account, type AccountStore } from '../accounts/store.ts';
import { createDummyHash } from '../accounts/password.ts';
import { createAuditLog, type AuditLog } from '../audit/audit-log.ts';
import type { RouteSpec } from '../http/route.ts';
import type { AppState } from '../http/state.ts';
import type { MailConfig } from '../mail/config.ts';
import { createMailer, type Mailer } from '../mail/mailer.ts';
import { createAccessTokens, type AccessClaims } from './access-tokens.ts';
import type { AuthConfig } from './config.ts';
import { createAuditThrottle } from './audit-throttle.ts';
import { createRequireUser, createSessionCheck, type RequireUserOptions } from './guard.ts';
import { loadKeyring, type Keyring } from './keyring.ts';
import { createLoginLimits } from './login-limits.ts';
import { createRefreshSessions, type RefreshSessions } from './refresh-sessions.ts';
import { authRoutes } from './routes.ts';
import { createAuthFlows, type Caller, type RegisterResult } from './service.ts';

export type { RequireUserOptions } from './guard.ts';
export type { RegisterResult, Caller } from './service.ts';
export type { Account } from '../accounts/store.ts';
export type { AuthConfig } from './config.ts';
export { TokenRefused } from './access-tokens.ts';

export interface AuthDeps {
  config: AuthConfig;
  mail: MailConfig;
  mongo: Connection;
  /** The cloud's client (REDIS_KEY_PREFIX applies; fail-fast options, see db/redis.ts). */
  redis: Redis;
  clock: Clock;
  log: Logger;
  /** Defaults to an audit log on `mongo`. */
  audit?: AuditLog;
}

export interface VerifiedAccess {
  userId: string;
  sessionId: string;
  tokenId: string;
  role: Account['role'];
  emailVerified: boolean;
  /** The token's expiry, epoch milliseconds. */
  expiresAtMs: number;
}

export interface AccountService {
  /**
   * Creates a member account pending verification and mails the verification link. An email that already has an
   * account creates nothing and mails its holder instead: `{ created: false }`. Throws Invalid (400) for a password
   * the policy refuses. Callers answer both outcomes alike (no enumeration).
   */
  register(input: { email: string; password: string; ip: string; userAgent: string }): Promise<RegisterResult>;
  findById(id: string): Promise<Account | undefined>;
  findByEmail(email: string): Promise<Account | undefined>;
  /** Admin operations: a suspension takes effect at the account's next request (the guard re-reads it). */
  setStatus(id: string, status: Account['status'], reason?: string | null): Promise<Account | undefined>;
  setRole(id: string, role: Account['role']): Promise<Account | undefined>;
}

export interface AuthService {
  /** The route guard; see guard.ts for what it enforces. */
  requireUser(options?: RequireUserOptions): Middleware<AppState>;
  routes: RouteSpec[];
  accounts: AccountService;
  audit: AuditLog;
  /**
   * Everything the route guard checks, for callers outside HTTP (the broker's WebSocket logins, where the token is
   * the MQTT password): signature and claims, revocation, the login session, and an account that exists and is not
   * suspended. Undefined when any fails; rejects only when Redis or MongoDB is unreachable. Calling it again later
   * tells whether a connection opened with the token must be closed (logout, revoked session, suspension).
   */
  verifyAccessToken(token: string): Promise<VerifiedAccess | undefined>;
  /** Signs every login session of the user out (refresh families gone; their access tokens fail at once). */
  revokeAllSessions(userId: string, reason: string, caller?: Partial<Caller>): Promise<number>;
  /**
   * The credential side of a GDPR deletion: sessions, refresh tokens, mailed tokens, limiter keys and the account
   * document. False when there was no such account. The users domain runs its own deletion hooks around it.
   */
  deleteAccount(userId: string, caller?: Partial<Caller>): Promise<boolean>;
  keyring: Keyring;
  sessions: RefreshSessions;
  mailer: Mailer;
  /** Waits for work left after answers (reset requests) and mail being sent, then closes the transport. */
  close(): Promise<void>;
}

/** Mails a caller may trigger per account per hour (verification resend, password reset). */
const MAILS_PER_HOUR = 5;

export async function createAuth({
  config,
  mail,
  mongo,
  redis,
  clock,
  log,
  audit: givenAudit,
}: AuthDeps): Promise<AuthService> {
  const keyring = await loadKeyring({ ...config.keys, log });
  const audit = givenAudit ?? createAuditLog(mongo, { now: () => clock.now() });
  const store: AccountStore = await createAccountStore(mongo, clock);
  const tokens = createAccessTokens({
    keyring,
    issuer: config.issuer,
    audience: config.audience,
    ttlS: config.accessTokenTtlS,
    clock,
  });
  const sessions = createRefreshSessions({
    redis,
    clock,
    ttlS: config.refreshTokenTtlS,
    reuseGraceS: config.refreshReuseGraceS,
    maxAgeS: config.sessionMaxAgeS,
  });
  const limits = createLoginLimits({ redis, ...config.login });
  const mailLimiter = new RateLimiterRedis({
    storeClient: redis,
    keyPrefix: 'auth:mail',
    points: MAILS_PER_HOUR,
    duration: 3600,
    rejectIfRedisNotReady: true,
  });
  const mailer = createMailer(mail, log.child({ module: 'mail' }));
  const throttle = createAuditThrottle(() => clock.nowMs());
  const flows = createAuthFlows({
    config,
    appBaseUrl: mail.appBaseUrl,
    store,
    sessions,
    tokens,
    limits,
    mailLimit: async (key) => {
      try {
        await mailLimiter.consume(key);
        return true;
      } catch (res) {
        if (res instanceof RateLimiterRes) return false;
        throw res;
      }
    },
    clearMailLimit: (key) => mailLimiter.delete(key).then(() => undefined),
    audit,
    throttle,
    mailer,
    log,
    dummyHash: await createDummyHash(),
  });
  const requireUser = createRequireUser({ tokens, sessions, store, audit, throttle });
  const checkSession = createSessionCheck({ sessions, store });

  return {
    requireUser,
    routes: authRoutes({ flows, store, sessions, keyring, requireUser }),
    accounts: {
      register: (input) => flows.register(input),
      findById: (id) => store.findById(id),
      findByEmail: (email) => store.findByEmail(email),
      setStatus: (id, status, reason) => store.setStatus(id, status, reason),
      setRole: (id, role) => store.setRole(id, role),
    },
    audit,
    async verifyAccessToken(token) {
      let claims: AccessClaims;
      try {
        claims = tokens.verify(token);
      } catch {
        return undefined;
      }
      const { account } = await checkSession(claims);
      if (!account || account.status === 'suspended') return undefined;
      return {
        userId: account.id,
        sessionId: claims.sid,
        tokenId: claims.jti,
        role: account.role,
        emailVerified: account.emailVerified,
        expiresAtMs: claims.exp * 1000,
      };
    },
    revokeAllSessions: (userId, reason, caller) => flows.revokeAllSessions(userId, reason, caller),
    deleteAccount: (userId, caller) => flows.deleteAccount(userId, caller),
    keyring,
    sessions,
    mailer,
    async close() {
      await flows.settle();
      await mailer.close();
    },
  };
}
