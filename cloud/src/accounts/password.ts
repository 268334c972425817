/**
 * Passwords: the policy a new password must meet, and argon2id hashing.
 *
 * Policy (NIST SP 800-63B 3.1.1.2, ASVS 5 6.2): 12 to 128 characters, any characters (no composition rules), not on a
 * list of commonly used or breached passwords, not the account's own email. The list is zxcvbn-ts' common
 * password dictionary (@zxcvbn-ts/language-common, MIT; ~49,000 passwords from public breach corpora).
 */
import { availableParallelism } from 'node:os';
import argon2 from 'argon2';
import { dictionary } from '@zxcvbn-ts/language-common';
import pLimit from 'p-limit';
import { ServiceUnavailable } from '../http/errors.ts';

/**
 * argon2id at OWASP's minimum recommendation (Password Storage Cheat Sheet): m = 19 MiB, t = 2, p = 1. Measured here
 * at ≈ 28 ms per verify on one core (RELIABILITY finding 7): higher settings would cap logins on 2 cores well below
 * 50/s. Stored hashes carry their parameters, so raising these later re-hashes on the next login (needsRehash).
 */
export const ARGON2_OPTIONS = {
  type: argon2.argon2id,
  memoryCost: 19_456, // KiB = 19 MiB
  timeCost: 2,
  parallelism: 1,
  hashLength: 32,
} as const;

export const PASSWORD_MIN_LENGTH = 12;
export const PASSWORD_MAX_LENGTH = 128;

const COMMON = new Set<string>(dictionary['passwords-common'].map((p) => p.toLowerCase()));

/** Characters, not UTF-16 units: an emoji counts once (NIST: "each Unicode code point counts as one character"). */
function length(password: string): number {
  return [...password].length;
}

/**
 * Why `password` may not be used, or undefined when it may. Never echoes the password. `email` is the account's
 * (normalised) email address.
 */
export function passwordProblem(password: string, email?: string): string | undefined {
  const n = length(password);
  if (n < PASSWORD_MIN_LENGTH) return `must be at least ${PASSWORD_MIN_LENGTH} characters long`;
  if (n > PASSWORD_MAX_LENGTH) return `must be at most ${PASSWORD_MAX_LENGTH} characters long`;
  const lower = password.normalize('NFKC').toLowerCase();
  if (COMMON.has(lower)) return 'is a commonly used password; choose another';
  // A common word padded with digits or symbols to reach the length ("dragon123456", "password!!!!").
  const stem = lower.replace(/[\d\W_]+$/u, '').replace(/^[\d\W_]+/u, '');
  if (stem.length >= 4 && stem.length < lower.length && COMMON.has(stem)) {
    return 'is a common password with characters added; choose another';
  }
  if (new Set(lower).size < 4) return 'uses too few different characters';
  if (email) {
    const local = email.split('@')[0] ?? '';
    if (lower === email || (local.length >= 4 && lower.includes(local))) return 'may not contain your email address';
  }
  return undefined;
}

/** True when `password` is on the common-password list (for tests and diagnostics). */
export function isCommonPassword(password: string): boolean {
  return COMMON.has(password.normalize('NFKC').toLowerCase());
}

/**
 * At most this many argon2 computations at once. argon2 runs on libuv's pool (4 threads): a burst of logins that
 * passed the limiters would otherwise take every core, and the event loop — /health, every other request — stalls
 * for seconds (measured: /health p99 5.4 s under a 500/s bad-login flood). One core stays free for the event loop.
 */
export const ARGON2_CONCURRENCY = Math.max(1, availableParallelism() - 1);
/**
 * Most computations waiting for a slot; beyond it a login or sign-up is refused at once with 503 + Retry-After
 * instead of queueing for seconds (≈ 28 ms each: 64 waiting is ~2 s on one core).
 */
export const ARGON2_MAX_WAITING = 64;

const argon2Slots = pLimit(ARGON2_CONCURRENCY);

function withArgon2Slot<T>(work: () => Promise<T>): Promise<T> {
  if (argon2Slots.pendingCount >= ARGON2_MAX_WAITING) {
    return Promise.reject(new ServiceUnavailable('too many sign-ins at once, try again shortly', 1));
  }
  return argon2Slots(work);
}

export function hashPassword(password: string): Promise<string> {
  return withArgon2Slot(() => argon2.hash(password, ARGON2_OPTIONS));
}

export async function verifyPassword(hash: string, password: string): Promise<boolean> {
  return withArgon2Slot(async () => {
    try {
      return await argon2.verify(hash, password);
    } catch {
      // A malformed stored hash is a failed login, never a 500 that would tell the account apart.
      return false;
    }
  });
}

export function passwordNeedsRehash(hash: string): boolean {
  return argon2.needsRehash(hash, ARGON2_OPTIONS);
}

/**
 * A hash of a random password with the same parameters, verified against when the email is unknown so that an
 * unknown email costs the same argon2 time as a wrong password (no enumeration by timing).
 */
export async function createDummyHash(): Promise<string> {
  const { randomBytes } = await import('node:crypto');
  return hashPassword(randomBytes(24).toString('base64url'));
}
