/**
 * Who is at the reader: turns a credential (an NFC card UID or a member QR token) into a member allowed at a branch,
 * or a deny reason. Used by every online decision (check-in/out, link/unlink over MQTT and REST) and by the
 * reconciliation of offline decisions, so all of them apply the same rules:
 *
 * - NFC: SHA-256 of the lowercase UID against the enrolled cards; unknown → `unknown-credential`, blocked →
 *   `blocked` (with the member).
 * - QR: an ES256 JWS of typ `nxg-qr+jwt` verified with the cloud's keys (active and verify-only, so a rotation does
 *   not refuse tokens in flight), claims per protocol `QrTokenClaims`; past `exp` → `expired-token`; the nonce is
 *   single-use (Redis SET NX, kept beyond the token's life for as long as offline decisions may be reconciled) → a
 *   second use is `replayed-token`.
 * - then the member must hold a membership of the branch and an account that is not suspended or deleted →
 *   otherwise `membership-inactive`.
 *
 * Never throws for a bad credential; rejects only when MongoDB or Redis fails (the caller answers an error then).
 */
import type { KeyObject } from 'node:crypto';
import type { Redis } from 'ioredis';
import * as v from 'valibot';
import type { BranchId, UserId } from '../../../protocol/ids.ts';
import { JWS_TYPES, QrTokenClaims, verifyJws } from '../../../protocol/jws.ts';
import { MAX_QR_TOKEN_LENGTH, type Credential, type DENY_REASONS } from '../../../protocol/messages/access.ts';
import { cardUidHash, type CardStore } from './cards.ts';

export type DenyReason = (typeof DENY_REASONS)[number];

export type ResolveResult = { ok: true; userId: UserId } | { ok: false; reason: DenyReason; userId?: UserId };

export interface CredentialResolver {
  resolve(credential: Credential, ctx: { branch: BranchId; atMs: number }): Promise<ResolveResult>;
}

export interface CredentialResolverDeps {
  cards: Pick<CardStore, 'findByHash'>;
  memberships: { list(userId: string): Promise<{ branchId: string }[]> };
  /** The public key for a JWS kid (the auth keyring's verifyKey). */
  verifyKey: (kid: string) => KeyObject | undefined;
  /** The cloud's Redis client (its key prefix applies). */
  redis: Redis;
  /** An account that is missing (deleted) or suspended may not enter. */
  accounts?: { findById(id: string): Promise<{ status: string } | undefined> };
  /**
   * How long a used nonce is remembered beyond the token's expiry, s: at least as long as a gateway may decide
   * offline (its allowListMaxAgeS), so a token replayed at a second, offline gateway is still recognised when that
   * decision is reconciled. Default: two minutes (online decisions only).
   */
  nonceRetentionS?: number;
}

/** A token's `iat` may lie this far ahead of the decision time (API nodes' clocks differ slightly), ms. */
const IAT_SKEW_MS = 30_000;
/** The default nonceRetentionS: covers clock skew between API nodes for online decisions. */
const DEFAULT_NONCE_RETENTION_S = 120;

export const qrNonceKey = (nonce: string) => `access:qr-nonce:${nonce}`;

export function createCredentialResolver(deps: CredentialResolverDeps): CredentialResolver {
  const { cards, memberships, verifyKey, redis, accounts } = deps;
  const nonceRetentionS = deps.nonceRetentionS ?? DEFAULT_NONCE_RETENTION_S;

  const memberOf = async (userId: UserId, branch: BranchId): Promise<ResolveResult> => {
    const [list, account] = await Promise.all([
      memberships.list(userId),
      accounts ? accounts.findById(userId) : Promise.resolve({ status: 'active' }),
    ]);
    if (!account || account.status === 'suspended') return { ok: false, reason: 'membership-inactive', userId };
    if (!list.some((m) => m.branchId === branch)) return { ok: false, reason: 'membership-inactive', userId };
    return { ok: true, userId };
  };

  return {
    async resolve(credential, { branch, atMs }) {
      if (credential.kind === 'nfc') {
        const card = await cards.findByHash(cardUidHash(credential.uid));
        if (!card) return { ok: false, reason: 'unknown-credential' };
        const userId = card.userId as UserId;
        if (card.blocked) return { ok: false, reason: 'blocked', userId };
        return memberOf(userId, branch);
      }
      const verified = verifyJws(credential.token, JWS_TYPES.qr, verifyKey, MAX_QR_TOKEN_LENGTH);
      if (!verified.ok) return { ok: false, reason: 'invalid-token' };
      const claims = v.safeParse(QrTokenClaims, verified.payload);
      if (!claims.success) return { ok: false, reason: 'invalid-token' };
      const { sub, nonce, iat, exp } = claims.output;
      if (exp * 1000 <= atMs) return { ok: false, reason: 'expired-token', userId: sub };
      if (iat * 1000 > atMs + IAT_SKEW_MS) return { ok: false, reason: 'invalid-token' };
      const ttlS = Math.max(1, Math.ceil((exp * 1000 - atMs) / 1000) + nonceRetentionS);
      const first = await redis.set(qrNonceKey(nonce), sub, 'EX', ttlS, 'NX');
      if (first !== 'OK') return { ok: false, reason: 'replayed-token', userId: sub };
      return memberOf(sub, branch);
    },
  };
}
