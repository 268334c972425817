/**
 * Revisions of what the cloud signs for gateways (configurations, allow-lists). A gateway refuses a revision older
 * than the one it holds (`stale-revision`), and the cloud pushes only when a gateway's birth reports an older one,
 * so a revision number must never be handed out twice or go backwards — not even when its counter is lost: a
 * database restored from a backup, or a dropped collection, holds older counters (or none) than the gateways in the
 * field, which would then refuse every push until the counter caught up.
 *
 * A revision is therefore at least the wall-clock time in ms, and always above the previous one: it keeps
 * increasing across restarts, API nodes and lost counters (as long as the clock is not set back further than the
 * time since the lost revisions were issued), and stays a safe integer for the protocol.
 */
export function nextRevision(previous: number, nowMs: number): number {
  return Math.max(previous + 1, Math.floor(nowMs));
}
