/**
 * Machine and gateway credentials (ARCHITECTURE.md, "Identities and credentials"): 256-bit random secrets, issued
 * once and stored as SHA-256 hashes. A high-entropy secret needs no slow hash — nobody can guess 2^256 values,
 * offline or online — and argon2 would cap MQTT connects near 57/s on two cores (RELIABILITY finding 7).
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';

/** Bytes of randomness in a secret (256 bits). */
export const SECRET_BYTES = 32;
/** A secret as issued: 43 characters of base64url. */
export const SECRET_PATTERN = /^[A-Za-z0-9_-]{43}$/;
/** A stored hash: SHA-256 in lowercase hex. */
export const SECRET_HASH_PATTERN = /^[0-9a-f]{64}$/;
/**
 * Longest password verifySecret hashes at all: MQTT allows 64 KiB, and a flood of those would be hashing work for
 * nothing. Anything longer cannot be an issued secret.
 */
export const MAX_PRESENTED_SECRET_BYTES = 256;

/** A new 256-bit secret, base64url (43 characters, no padding). */
export function newSecret(): string {
  return randomBytes(SECRET_BYTES).toString('base64url');
}

/** The stored form of a secret: SHA-256, lowercase hex. */
export function hashSecret(secret: string | Uint8Array): string {
  return createHash('sha256').update(secret).digest('hex');
}

// Compared against when the stored hash is malformed, so a bad record costs the same time as a good one.
const DUMMY_DIGEST = Buffer.alloc(32);

/**
 * Whether `presented` (an MQTT password: string or bytes) is the secret whose hash is `storedHash`, compared in
 * constant time over the digests. A missing, over-long or malformed input is simply false.
 */
export function verifySecret(presented: string | Uint8Array | undefined | null, storedHash: string): boolean {
  if (presented === undefined || presented === null) return false;
  const bytes = typeof presented === 'string' ? Buffer.from(presented, 'utf8') : presented;
  const validHash = typeof storedHash === 'string' && SECRET_HASH_PATTERN.test(storedHash);
  const expected = validHash ? Buffer.from(storedHash, 'hex') : DUMMY_DIGEST;
  const tooLong = bytes.length > MAX_PRESENTED_SECRET_BYTES;
  const actual = createHash('sha256')
    .update(tooLong ? bytes.subarray(0, 0) : bytes)
    .digest();
  return timingSafeEqual(actual, expected) && validHash && !tooLong && bytes.length > 0;
}
