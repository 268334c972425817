/**
 * The access domain: NFC cards, member QR tokens, the credential resolver every online decision uses, and the
 * branches' signed allow-lists for offline decisions. cloud/src/branches/domains.ts builds it once.
 */
import { randomBytes, type KeyObject } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { Middleware } from 'koa';
import type { Connection } from 'mongoose';
import type { Clock } from '../../../tools/runtime/clock.ts';
import type { Logger } from '../../../tools/runtime/logger.ts';
import type { UserId } from '../../../protocol/ids.ts';
import { JWS_TYPES, signJws, type QrTokenClaims } from '../../../protocol/jws.ts';
import type { AuditLog } from '../audit/index.ts';
import type { RequireUserOptions } from '../auth/guard.ts';
import type { BranchesService } from '../branches/service.ts';
import type { RouteSpec } from '../http/route.ts';
import type { AppState } from '../http/state.ts';
import { TooManyRequests } from '../http/errors.ts';
import { consumePoint, createRedisRateLimiter } from '../ratelimit/limiter.ts';
import { createAllowLists, type AllowLists } from './allow-list.ts';
import { createCardStore, type CardStore } from './cards.ts';
import type { AccessConfig } from './config.ts';
import { createCredentialResolver, type CredentialResolver } from './credentials.ts';
import { accessRoutes } from './routes.ts';

export type { CredentialResolver, DenyReason, ResolveResult } from './credentials.ts';
export { cardUidHash } from './cards.ts';

/**
 * Card enrolments and blocks one account may make per minute. Each one rebuilds allow-lists of whole branches, so a
 * script looping on them must not turn the API into a rebuild loop; a desk enrolling a queue of members stays well
 * under it.
 */
const CARD_CHANGES_PER_MINUTE = 30;

export interface AccessDeps {
  mongo: Connection;
  redis: Redis;
  clock: Clock;
  log: Logger;
  config: AccessConfig;
  keyring: {
    readonly signing: { kid: string; privateKey: KeyObject };
    verifyKey(kid: string): KeyObject | undefined;
  };
  /** Active memberships only (a request or an ended membership grants nothing): users/memberships.ts. */
  memberships: {
    list(userId: string): Promise<{ branchId: string }[]>;
    activeMembersOf(branchId: string): Promise<{ userId: string; validUntilMs?: number }[]>;
  };
  accounts: { findById(id: string): Promise<{ status: string } | undefined> };
  audit: AuditLog;
  branches: BranchesService;
  requireUser(options?: RequireUserOptions): Middleware<AppState>;
  /** Told which branches' allow-lists may have changed (a card enrolled or blocked). */
  onAllowListChange(branches: readonly string[]): void;
}

export interface Access {
  /** Credential → member allowed at a branch, or a deny reason (see credentials.ts). */
  resolver: CredentialResolver;
  cards: CardStore;
  allowLists: AllowLists;
  /** A member QR token: ES256 JWS, typ nxg-qr+jwt, valid config.qrTokenTtlS, random nonce. */
  issueQrToken(userId: string): { token: string; expiresAtMs: number };
  routes: RouteSpec[];
}

export async function createAccess(deps: AccessDeps): Promise<Access> {
  const { mongo, redis, clock, config, keyring, memberships, accounts } = deps;
  const cards = await createCardStore({ mongo, clock });
  const resolver = createCredentialResolver({
    cards,
    memberships,
    verifyKey: (kid) => keyring.verifyKey(kid),
    redis,
    accounts,
    // A token a gateway accepted offline is reconciled up to allowListMaxAgeS later: its nonce must still be known.
    nonceRetentionS: config.allowListMaxAgeS,
  });
  const allowLists = await createAllowLists({
    mongo,
    clock,
    cards,
    memberships,
    signingKey: () => keyring.signing,
    maxAgeS: config.allowListMaxAgeS,
  });
  const qrLimiter = createRedisRateLimiter({
    redis,
    name: 'access-qr',
    points: config.qrTokensPerMinute,
    windowS: 60,
  });

  const issueQrToken = (userId: string) => {
    const iat = Math.floor(clock.nowMs() / 1000);
    const claims: QrTokenClaims = {
      sub: userId as UserId,
      nonce: randomBytes(16).toString('base64url'),
      iat,
      exp: iat + config.qrTokenTtlS,
    };
    return { token: signJws(JWS_TYPES.qr, claims, keyring.signing), expiresAtMs: claims.exp * 1000 };
  };

  const cardLimiter = createRedisRateLimiter({
    redis,
    name: 'access-cards',
    points: CARD_CHANGES_PER_MINUTE,
    windowS: 60,
  });
  const limit = (limiter: typeof qrLimiter, what: string) => async (userId: string) => {
    const decision = await consumePoint(limiter, userId);
    if (!decision.allowed) throw new TooManyRequests(decision.resetMs / 1000, `too many ${what}`);
  };

  return {
    resolver,
    cards,
    allowLists,
    issueQrToken,
    routes: accessRoutes({
      requireUser: (options) => deps.requireUser(options),
      branches: deps.branches,
      memberships,
      cards,
      audit: deps.audit,
      issueQrToken,
      limitQr: limit(qrLimiter, 'QR tokens'),
      limitCards: limit(cardLimiter, 'card changes'),
      onCardsChanged: async (userId) => {
        const branches = (await memberships.list(userId)).map((m) => m.branchId);
        deps.onAllowListChange(branches);
      },
    }),
  };
}
