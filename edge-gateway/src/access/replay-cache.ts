/**
 * QR token nonces seen by this gateway, kept for each token's lifetime (≤ 60 s plus leeway) and persisted
 * (`qr-nonces.json`, 0600, atomic), so a token shown once cannot be shown again offline — not even across a
 * gateway restart. Small by construction: only unexpired nonces are kept, and never more than MAX_NONCES (a token
 * that would need one more is refused — fail safe: evicting a nonce would let its token through again).
 *
 * A cache file that cannot be read at start (damaged, not ours) means the gateway does not know which tokens it
 * has seen: until every token issued before the start has expired, such tokens are refused (`claim` answers
 * false), tokens issued after the start are claimed as usual.
 */
import * as v from 'valibot';
import type { Logger } from '../../../tools/runtime/logger.ts';
import { readOptional, writeFileAtomic } from '../cloud-config/files.ts';

export interface ReplayCache {
  /**
   * Records `nonce` (valid until `untilMs`) and resolves true if it was new, false if it was seen before and has
   * not expired. Persisted before it resolves.
   */
  claim(nonce: string, untilMs: number, issuedAtMs?: number): Promise<boolean>;
  readonly size: number;
  load(): Promise<void>;
}

const Stored = v.record(v.string(), v.number());

/** Most nonces held (tokens live ≤ 65 s: far more than a branch's readers can be shown in that time). */
export const MAX_NONCES = 10_000;
/** A token's longest life plus leeway on both ends, ms: what an unreadable cache may have held. */
const BLIND_WINDOW_MS = (60 + 10) * 1000;

export function createReplayCache(options: {
  file: string;
  nowMs: () => number;
  log: Logger;
  maxNonces?: number;
}): ReplayCache {
  const { file, nowMs, log } = options;
  const maxNonces = options.maxNonces ?? MAX_NONCES;
  const seen = new Map<string, number>();
  /** After an unreadable cache: tokens issued before this may have been seen, ms (until blindUntilMs). */
  let blindBeforeMs: number | undefined;
  let blindUntilMs = 0;
  let chain: Promise<unknown> = Promise.resolve();

  function prune(now: number): void {
    for (const [nonce, until] of seen) if (until < now) seen.delete(nonce);
  }

  async function claimNow(nonce: string, untilMs: number, issuedAtMs: number | undefined): Promise<boolean> {
    const now = nowMs();
    prune(now);
    if (seen.has(nonce)) return false;
    if (
      blindBeforeMs !== undefined &&
      now <= blindUntilMs &&
      (issuedAtMs === undefined || issuedAtMs < blindBeforeMs)
    ) {
      log.warn('QR token issued before a start whose nonce cache was unreadable: refused');
      return false;
    }
    if (seen.size >= maxNonces) {
      log.error({ held: seen.size }, 'QR nonce cache full: token refused');
      return false;
    }
    seen.set(nonce, untilMs);
    try {
      await writeFileAtomic(file, JSON.stringify(Object.fromEntries(seen)));
    } catch (err) {
      // Still refused in memory for this run; a restart within the token's life could let it through once.
      log.error({ err, file }, 'QR nonce cache not stored');
    }
    return true;
  }

  return {
    claim(nonce, untilMs, issuedAtMs) {
      const result = chain.then(() => claimNow(nonce, untilMs, issuedAtMs));
      chain = result.catch(() => undefined);
      return result;
    },
    get size() {
      return seen.size;
    },
    async load() {
      const text = await readOptional(file);
      if (text === undefined) return;
      try {
        const stored = v.parse(Stored, JSON.parse(text));
        const now = nowMs();
        for (const [nonce, until] of Object.entries(stored)) if (until >= now) seen.set(nonce, until);
      } catch {
        const now = nowMs();
        blindBeforeMs = now;
        blindUntilMs = now + BLIND_WINDOW_MS;
        log.error({ file }, 'QR nonce cache unreadable: tokens issued before now are refused until they expire');
      }
    },
  };
}
