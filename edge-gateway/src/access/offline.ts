/**
 * Offline decisions, taken by the gateway alone when the cloud does not answer: from the signed allow-list (card
 * hashes, membership end) and a QR token already verified (credentials.ts) and claimed in the replay cache.
 * - check-in and link: the member must be in an allow-list that is not stale, with a membership that has not
 *   ended; otherwise `allow-list-stale`, `unknown-credential` or `membership-inactive`.
 * - check-out: a recognised member may always leave (the list's age or membership end does not matter).
 * - unlink: always allowed (releasing a machine never needs a credential).
 * The gateway's clock is trusted only as far as the list allows: a clock behind the list's own signing time (an RTC
 * that lost its time and reads 1970, before NTP) cannot tell the list's age nor whether a membership ended, so the
 * list counts as stale — fail safe: no offline check-in or link until the clock is right. (QR tokens fail alike:
 * their `iat` is then in the future, credentials.ts.)
 */
import type { Decision, UserId } from '../../../protocol/index.ts';
import type { AllowList } from '../cloud-config/allow-list.ts';
import type { QrCheck } from './credentials.ts';

export type Identified =
  | { readonly kind: 'nfc'; readonly uidHash: string }
  | { readonly kind: 'qr'; readonly check: QrCheck; readonly replayed: boolean };

export interface OfflineContext {
  readonly allowList: AllowList;
  /** Oldest allow-list age allowed, s. */
  readonly maxAgeS: number;
  readonly nowMs: number;
}

/** How far the gateway's clock may be behind the cloud's (the list's issuedAt) before it is not trusted, ms. */
export const CLOCK_BEHIND_TOLERANCE_MS = 5 * 60_000;

export function allowListStale(ctx: OfflineContext): boolean {
  const issuedAt = ctx.allowList.issuedAt;
  if (issuedAt === undefined) return true;
  if (ctx.nowMs < issuedAt - CLOCK_BEHIND_TOLERANCE_MS) return true; // clock not set (or far behind)
  return ctx.nowMs - issuedAt > ctx.maxAgeS * 1000;
}

/** The member a credential names, as far as the gateway can tell without the cloud. */
export function memberOf(identified: Identified, allowList: AllowList): UserId | undefined {
  if (identified.kind === 'qr') return identified.check.ok ? identified.check.claims.sub : undefined;
  return allowList.byCard(identified.uidHash)?.userId;
}

export function decideOffline(
  action: 'check-in' | 'check-out' | 'link',
  identified: Identified,
  ctx: OfflineContext,
): Decision {
  if (identified.kind === 'qr') {
    if (!identified.check.ok) return { decision: 'deny', reason: identified.check.reason };
    if (identified.replayed) return { decision: 'deny', reason: 'replayed-token', userId: identified.check.claims.sub };
  }
  const userId = memberOf(identified, ctx.allowList);
  if (action === 'check-out') {
    return userId === undefined ? { decision: 'deny', reason: 'unknown-credential' } : { decision: 'allow', userId };
  }
  if (allowListStale(ctx)) {
    return userId === undefined
      ? { decision: 'deny', reason: 'allow-list-stale' }
      : { decision: 'deny', reason: 'allow-list-stale', userId };
  }
  if (userId === undefined) return { decision: 'deny', reason: 'unknown-credential' };
  const member = ctx.allowList.byUser(userId);
  if (member === undefined) return { decision: 'deny', reason: 'membership-inactive', userId };
  if (member.validUntil !== undefined && member.validUntil < ctx.nowMs) {
    return { decision: 'deny', reason: 'membership-inactive', userId };
  }
  return { decision: 'allow', userId };
}
