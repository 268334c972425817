/**
 * Door decisions a gateway took offline (from its cached allow-list) reach the cloud later as access scans in the
 * access lane. Ingest stores them and hands each new one over once (`ingest.onStored('access-scan', …)`, durable:
 * a failed or interrupted run is retried), and this applies the allowed ones to sessions by their event time:
 *
 * - check-in: opens the session at the scan's time — unless the member had a session open at that instant (one
 *   active session: this later check-in is recorded as a `conflict`), or a later check-in is already known (then this
 *   visit is recorded as ended when that one began, `superseded`), or its auto-end instant has passed (recorded as
 *   ended then);
 * - check-out: ends the member's session that was open at that instant, or corrects the end of one that ended by
 *   itself after the member had left, or — no session yet, its check-in is in a batch that ingest retries later —
 *   is held until that check-in arrives and ends the visit then (batches are not applied in event order); a later
 *   check-in already recorded as a `conflict` with the visit it ends (stored before this check-out) is placed again
 *   and becomes a visit of its own.
 *
 * Online decisions (`decidedBy: 'online'`) were applied when the cloud took them; denies change nothing. A scan's
 * session id is derived from its msgId, so a retried run finds what the first run wrote (idempotent).
 *
 * One tap, one effect: an offline scan names the online request its gateway tried first (`reqId`). When the cloud
 * took that decision after all — after its deadline, answered `timeout` — the tap already took effect: nothing more
 * is applied (`same-tap`; the scan's msgId is noted on that session). An unknown reqId (the request never reached
 * the cloud, or was refused at its deadline) is reconciled as above.
 */
import { createHash } from 'node:crypto';
import type { Logger } from '../../../tools/runtime/logger.ts';
import type { AccessScan } from '../../../protocol/messages/access.ts';
import type { SessionCredentials, SessionService, OfflineOutcome } from './service.ts';

/** What reconciliation needs of a stored access scan (ingest's StoredRecord<'access-scan'>). */
export interface StoredScan {
  msgId: string;
  branch: string;
  gateway: string;
  payload: AccessScan;
}

/** The session id of an offline check-in: derived from the scan, so a retry of the same scan is a no-op. */
export function offlineSessionId(msgId: string): string {
  return `off-${createHash('sha256').update(msgId).digest('base64url').slice(0, 40)}`;
}

/** How far a scan's event time may lie in the cloud's future before the cloud's clock is used instead. */
const FUTURE_SKEW_MS = 60_000;

export function createScanReconciler({
  sessions,
  credentials,
  log,
  nowMs,
}: {
  sessions: Pick<SessionService, 'applyOfflineCheckIn' | 'applyOfflineCheckOut'>;
  credentials: SessionCredentials;
  log: Logger;
  nowMs: () => number;
}) {
  /** The member of an offline decision: the scan names it; a bare NFC card is looked up. */
  async function memberOf(scan: AccessScan, branch: string, atMs: number): Promise<string | undefined> {
    if (scan.userId) return scan.userId;
    if (scan.credential.kind !== 'nfc') return undefined; // a QR token's nonce was spent at the door
    const resolved = await credentials.resolve(scan.credential, { branch, atMs });
    return resolved.userId;
  }

  async function apply(record: StoredScan): Promise<OfflineOutcome | 'ignored' | 'unknown-member'> {
    const scan = record.payload;
    if (scan.decidedBy !== 'offline' || scan.decision !== 'allow') return 'ignored';
    const atMs = Math.min(scan.ts, nowMs() + FUTURE_SKEW_MS);
    const userId = await memberOf(scan, record.branch, atMs);
    if (!userId) return 'unknown-member';
    const via = {
      origin: 'offline' as const,
      gateway: record.gateway,
      reader: scan.reader,
      credentialKind: scan.credential.kind,
      scanMsgId: record.msgId,
    };
    const event = {
      userId,
      branchId: record.branch,
      atMs,
      sessionId: offlineSessionId(record.msgId),
      via,
      ...(scan.reqId === undefined ? {} : { onlineReqId: scan.reqId }),
    };
    return scan.action === 'check-in' ? sessions.applyOfflineCheckIn(event) : sessions.applyOfflineCheckOut(event);
  }

  return {
    /**
     * Applies a batch's newly stored scans in their order (the gateway queues them in event order); a failure
     * rejects, so ingest's sweep retries the batch — the scans applied before it find their own work done.
     */
    async reconcile(records: readonly StoredScan[]): Promise<void> {
      for (const record of records) {
        const outcome = await apply(record);
        if (outcome === 'ignored') continue;
        const fields = { msgId: record.msgId, gateway: record.gateway, action: record.payload.action, outcome };
        if (outcome === 'unknown-member') log.warn(fields, 'offline door decision without a known member');
        else log.info(fields, 'offline door decision reconciled');
      }
    },
  };
}
