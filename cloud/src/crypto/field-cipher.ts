/**
 * Field-level encryption of health data at rest: AES-256-GCM, a random 96-bit IV per value, the key id stored
 * beside the ciphertext (so keys can rotate), and additional authenticated data binding each ciphertext to its
 * collection, its member and its field — a value copied into another member's document, or into another field,
 * fails authentication instead of decrypting (ASVS 5 11.3.2, 11.3.3; RELIABILITY P2).
 *
 * A value is any JSON value; it is serialised before encryption, so a number, a list of conditions or a whole set
 * of measurements is one sealed field.
 */
import { createCipheriv, createDecipheriv, createHmac, randomBytes } from 'node:crypto';
import { AppError } from '../http/errors.ts';
import type { Keyring } from './keyring.ts';

/** What is stored in MongoDB in place of the plaintext. */
export interface SealedValue {
  /** Format version. */
  v: 1;
  /** Id of the key that encrypted it. */
  kid: string;
  /** 12-byte IV, base64. */
  iv: string;
  /** Ciphertext, base64. */
  ct: string;
  /** 16-byte GCM tag, base64. */
  tag: string;
}

/** Where a sealed value lives: all three are authenticated with it. */
export interface SealContext {
  collection: string;
  userId: string;
  field: string;
}

const IV_BYTES = 12;
const TAG_BYTES = 16;

/**
 * Stored data that cannot be decrypted: tampered with, or sealed with a key no longer in the keyring. It is an
 * answer (409, problem+json), never a 500: the request was fine, the stored value is not.
 */
export class UnreadableField extends AppError {
  readonly field: string;
  readonly kid: string | undefined;
  constructor(context: SealContext, kid: string | undefined, reason: 'unknown-key' | 'integrity' | 'format') {
    super(
      'unreadable-data',
      409,
      `stored ${context.field} data failed its integrity check and cannot be shown; it has been reported`,
      { extensions: { field: context.field } },
    );
    this.field = context.field;
    this.kid = kid;
    this.cause = reason;
  }
}

export function isSealedValue(value: unknown): value is SealedValue {
  if (value === null || typeof value !== 'object') return false;
  const s = value as Record<string, unknown>;
  return (
    s.v === 1 &&
    typeof s.kid === 'string' &&
    typeof s.iv === 'string' &&
    typeof s.ct === 'string' &&
    typeof s.tag === 'string'
  );
}

function aad({ collection, userId, field }: SealContext): Buffer {
  // NUL-separated: none of the three can contain NUL, so distinct contexts never serialise alike.
  return Buffer.from(`nxg-field-v1\0${collection}\0${userId}\0${field}`, 'utf8');
}

export interface FieldCipher {
  readonly activeKeyId: string;
  seal(value: unknown, context: SealContext): SealedValue;
  /** Throws UnreadableField when the value was tampered with or its key is gone. */
  open<T = unknown>(sealed: SealedValue, context: SealContext): T;
  /** True when the value is sealed with a key other than the active one. */
  needsRotation(sealed: SealedValue): boolean;
  /** A keyed hash (HMAC-SHA-256, hex) of an identifier: stable, not reversible without the pseudonym key. */
  pseudonym(id: string): string;
}

export function createFieldCipher(keyring: Keyring): FieldCipher {
  const activeKey = keyring.keys.get(keyring.activeKeyId);
  if (!activeKey) throw new Error(`the active key ${keyring.activeKeyId} is not in the keyring`);
  return {
    activeKeyId: keyring.activeKeyId,
    seal(value, context) {
      const iv = randomBytes(IV_BYTES);
      const cipher = createCipheriv('aes-256-gcm', activeKey, iv, { authTagLength: TAG_BYTES });
      cipher.setAAD(aad(context));
      const ct = Buffer.concat([cipher.update(JSON.stringify(value ?? null), 'utf8'), cipher.final()]);
      return {
        v: 1,
        kid: keyring.activeKeyId,
        iv: iv.toString('base64'),
        ct: ct.toString('base64'),
        tag: cipher.getAuthTag().toString('base64'),
      };
    },
    open<T>(sealed: SealedValue, context: SealContext): T {
      if (!isSealedValue(sealed)) throw new UnreadableField(context, undefined, 'format');
      const key = keyring.keys.get(sealed.kid);
      if (!key) throw new UnreadableField(context, sealed.kid, 'unknown-key');
      const iv = Buffer.from(sealed.iv, 'base64');
      const tag = Buffer.from(sealed.tag, 'base64');
      // A short tag would weaken GCM's check (Node accepts 4-byte tags unless told the length): insist on 16.
      if (iv.length !== IV_BYTES || tag.length !== TAG_BYTES) throw new UnreadableField(context, sealed.kid, 'format');
      try {
        const decipher = createDecipheriv('aes-256-gcm', key, iv, { authTagLength: TAG_BYTES });
        decipher.setAAD(aad(context));
        decipher.setAuthTag(tag);
        const plain = Buffer.concat([decipher.update(Buffer.from(sealed.ct, 'base64')), decipher.final()]);
        return JSON.parse(plain.toString('utf8')) as T;
      } catch {
        throw new UnreadableField(context, sealed.kid, 'integrity');
      }
    },
    needsRotation(sealed) {
      return sealed.kid !== keyring.activeKeyId;
    },
    pseudonym(id) {
      return createHmac('sha256', keyring.pseudonymKey).update(`nxg-pseudonym-v1\0${id}`).digest('hex');
    },
  };
}
