/**
 * What the hub stored of the simulated members' visits, read back through the documented collections
 * (docs/sessions.md, docs/access.md) and nothing of the cloud's code: gym sessions (`gym_sessions`, one per check-in
 * decided allow, `status` ended once checked out, `conflict` for a check-in that found one open) and machine links (`machine_link_history`, one per link).
 */
import { MongoClient } from 'mongodb';
import type { StoredAccess } from './report.ts';

export const SESSIONS_COLLECTION = 'gym_sessions';
export const LINK_HISTORY_COLLECTION = 'machine_link_history';

export async function readStoredAccess(mongoUrl: string, branches: readonly string[]): Promise<StoredAccess> {
  const client = await MongoClient.connect(mongoUrl, { serverSelectionTimeoutMS: 10_000 });
  try {
    const db = client.db();
    const sessions = db.collection(SESSIONS_COLLECTION);
    const [all, ended, conflicts, links] = await Promise.all([
      sessions.countDocuments({ branchId: { $in: [...branches] } }),
      sessions.countDocuments({ branchId: { $in: [...branches] }, status: 'ended' }),
      sessions.countDocuments({ branchId: { $in: [...branches] }, status: 'conflict' }),
      db.collection(LINK_HISTORY_COLLECTION).countDocuments({ branch: { $in: [...branches] } }),
    ]);
    return { sessions: all - conflicts, sessionsEnded: ended, conflicts, links };
  } finally {
    await client.close();
  }
}

/**
 * Reads the stored visits until they account for every tap (sessions and conflicts for the check-ins, ended sessions
 * for the check-outs, links for the links the machines received), or they stop changing for `quietMs`, or
 * `timeoutMs` runs out: the cloud applies offline decisions after it stored their records, a little later.
 */
export async function waitForStoredAccess(
  mongoUrl: string,
  branches: readonly string[],
  expected: { readonly checkIns: number; readonly checkOuts: number; readonly links: number },
  { timeoutMs, quietMs = 20_000, pollMs = 2_000 }: { timeoutMs: number; quietMs?: number; pollMs?: number },
): Promise<StoredAccess & { readonly waitedS: number }> {
  const started = Date.now();
  let last = '';
  let changedAt = started;
  for (;;) {
    const stored = await readStoredAccess(mongoUrl, branches);
    const complete =
      stored.sessions + stored.conflicts >= expected.checkIns &&
      stored.sessionsEnded >= expected.checkOuts &&
      stored.links >= expected.links;
    const key = JSON.stringify(stored);
    if (key !== last) {
      last = key;
      changedAt = Date.now();
    }
    const now = Date.now();
    if (complete || now - changedAt >= quietMs || now - started >= timeoutMs)
      return { ...stored, waitedS: Math.round((now - started) / 1000) };
    await new Promise((resolve) => setTimeout(resolve, pollMs));
  }
}
