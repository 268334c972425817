/**
 * Admission of scans before they cost a decision (an online request, a record in the durable queue, a nonce in the
 * replay cache): per source (a reader, or a machine's own camera/NFC pad)
 * - the same credential again within `repeatMs` is dropped as a repeat: a QR scanner in continuous mode reads the
 *   code held in front of it several times a second, and a second decision would deny `replayed-token` right
 *   after the first one allowed;
 * - more than `burst` scans, refilled at `perSecond`, are dropped as a flood: a stuck keyboard wedge, a hostile
 *   device on a serial line, or a machine publishing credential events in a loop cannot fill the queue or the
 *   replay cache, nor starve the other readers.
 * Each drop is counted by reason (and logged by the caller at a bounded rate). The state is bounded: at most
 * `maxSources` sources are tracked (the least recently seen one is forgotten first).
 */
import { createHash } from 'node:crypto';
import type { Credential } from '../../../protocol/index.ts';
import type { Logger } from '../../../tools/runtime/logger.ts';

export type ScanDrop = 'repeat' | 'flood';

export interface ScanLimiterOptions {
  /** The same credential at the same source within this is a repeat, ms (default 3 000). */
  readonly repeatMs?: number;
  /** Sustained scans per second per source (default 2). */
  readonly perSecond?: number;
  /** Scans a source may make at once (default 5). */
  readonly burst?: number;
  readonly maxSources?: number;
  readonly nowMs: () => number;
}

export interface ScanLimiter {
  /** Undefined when the scan may go on; otherwise why it is dropped. */
  admit(source: string, credential: Credential): ScanDrop | undefined;
  readonly dropped: Readonly<Record<ScanDrop, number>>;
}

interface SourceState {
  tokens: number;
  refilledAtMs: number;
  lastCredential: string | undefined;
  lastAtMs: number;
}

export function createScanLimiter(options: ScanLimiterOptions): ScanLimiter {
  const repeatMs = options.repeatMs ?? 3_000;
  const perSecond = options.perSecond ?? 2;
  const burst = options.burst ?? 5;
  const maxSources = options.maxSources ?? 1_024;
  const sources = new Map<string, SourceState>();
  const dropped: Record<ScanDrop, number> = { repeat: 0, flood: 0 };

  return {
    admit(source, credential) {
      const now = options.nowMs();
      // Only a digest is kept: no credential stays in memory longer than its decision needs.
      const digest = createHash('sha256')
        .update(credential.kind === 'nfc' ? `nfc:${credential.uid.toLowerCase()}` : `qr:${credential.token}`)
        .digest('base64url');
      let state = sources.get(source);
      if (state === undefined) {
        state = { tokens: burst, refilledAtMs: now, lastCredential: undefined, lastAtMs: 0 };
        if (sources.size >= maxSources) sources.delete(sources.keys().next().value!);
      } else {
        sources.delete(source); // re-inserted below: the map's order is least recently seen first
        const elapsed = Math.max(0, now - state.refilledAtMs);
        state.tokens = Math.min(burst, state.tokens + (elapsed / 1000) * perSecond);
        state.refilledAtMs = now;
      }
      sources.set(source, state);
      if (state.lastCredential === digest && Math.abs(now - state.lastAtMs) < repeatMs) {
        // Still held in front of the scanner: the window slides, so it is not decided again every `repeatMs`.
        state.lastAtMs = now;
        dropped.repeat += 1;
        return 'repeat';
      }
      if (state.tokens < 1) {
        dropped.flood += 1;
        return 'flood';
      }
      state.tokens -= 1;
      state.lastCredential = digest;
      state.lastAtMs = now;
      return undefined;
    },
    dropped,
  };
}

/**
 * A warning logged at most once per key per `intervalMs`, with how many were suppressed since: a flood of bad input
 * is counted in full but cannot flood the log.
 */
export function createThrottledWarn(log: Logger, nowMs: () => number, intervalMs = 10_000) {
  const lastAt = new Map<string, { atMs: number; suppressed: number }>();
  return (key: string, fields: Record<string, unknown>, message: string): void => {
    const now = nowMs();
    const seen = lastAt.get(key);
    if (seen !== undefined && now - seen.atMs < intervalMs && now >= seen.atMs) {
      seen.suppressed += 1;
      return;
    }
    if (lastAt.size >= 1_024 && seen === undefined) lastAt.delete(lastAt.keys().next().value!);
    log.warn(
      { ...fields, ...(seen !== undefined && seen.suppressed > 0 ? { suppressed: seen.suppressed } : {}) },
      message,
    );
    lastAt.set(key, { atMs: now, suppressed: 0 });
  };
}
