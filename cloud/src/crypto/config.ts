/**
 * Keys for field-level encryption (AES-256-GCM) and for pseudonymising deleted members' ids: the environment
 * entries cloud/src/config.ts spreads into its schema, and the mapper to this domain's slice of CloudConfig.
 *
 * Production sets FIELD_ENCRYPTION_KEYS and PSEUDONYM_KEY (from a secret store). Without them a development keyring
 * is generated once into DEV_KEYS_FILE (./data by default) — allowed only while the API listens on loopback, so a
 * deployment can never run on a key that lives in a container's scratch directory (keyring.ts refuses to start).
 */
import * as v from 'valibot';
import { ConfigError } from '../../../tools/runtime/env-config.ts';

/** A key id: stored beside every ciphertext, so it must stay short and never change meaning. */
export const KEY_ID_PATTERN = /^[A-Za-z0-9_-]{1,32}$/;

export interface FieldKey {
  kid: string;
  /** 32 bytes (AES-256). */
  key: Buffer;
}

function decodeKey(base64: string): Buffer | undefined {
  if (!/^[A-Za-z0-9+/_-]+={0,2}$/.test(base64)) return undefined;
  const key = Buffer.from(base64, base64.includes('-') || base64.includes('_') ? 'base64url' : 'base64');
  return key.length === 32 ? key : undefined;
}

/** `kid:base64key[,kid:base64key…]` → keys; undefined entries mark a malformed item. */
export function parseKeyList(value: string): (FieldKey | undefined)[] {
  return value
    .split(',')
    .map((item) => item.trim())
    .filter((item) => item.length > 0)
    .map((item) => {
      const colon = item.indexOf(':');
      if (colon <= 0) return undefined;
      const kid = item.slice(0, colon);
      const key = decodeKey(item.slice(colon + 1));
      return KEY_ID_PATTERN.test(kid) && key ? { kid, key } : undefined;
    });
}

export const cryptoEnvEntries = {
  /**
   * The field-encryption keyring: `kid:base64key` items, comma-separated, each key 32 random bytes
   * (`openssl rand -base64 32`). Keep retired keys listed until the rotation job has re-encrypted everything.
   */
  FIELD_ENCRYPTION_KEYS: v.optional(
    v.pipe(
      v.string(),
      v.check((s) => {
        const keys = parseKeyList(s);
        return keys.length > 0 && keys.every(Boolean) && new Set(keys.map((k) => k!.kid)).size === keys.length;
      }, 'expected kid:base64key items (32-byte keys, ids of 1-32 of A-Z a-z 0-9 _ -), comma-separated, ids unique'),
    ),
  ),
  /** The key id new ciphertexts use; default: the last key listed in FIELD_ENCRYPTION_KEYS. */
  FIELD_ENCRYPTION_ACTIVE_KEY: v.optional(v.pipe(v.string(), v.regex(KEY_ID_PATTERN, 'expected a key id'))),
  /** HMAC key (32+ bytes, base64) for the pseudonyms of deleted members (audit entry, tombstone). Never rotate it. */
  PSEUDONYM_KEY: v.optional(
    v.pipe(
      v.string(),
      v.check((s) => /^[A-Za-z0-9+/]+={0,2}$/.test(s) && Buffer.from(s, 'base64').length >= 32, 'expected 32+ bytes'),
    ),
  ),
  /** Where development keys are generated (and kept) when the two variables above are unset; loopback only. */
  DEV_KEYS_FILE: v.optional(v.pipe(v.string(), v.minLength(1)), './data/dev-keys.json'),
};

export type CryptoEnv = v.InferOutput<v.ObjectSchema<typeof cryptoEnvEntries, undefined>>;

export interface CryptoConfig {
  /** Undefined: use (or generate) the development keyring in devKeysFile. */
  fieldKeys: FieldKey[] | undefined;
  activeKeyId: string | undefined;
  pseudonymKey: Buffer | undefined;
  devKeysFile: string;
  /**
   * Development keys only while the API listens on loopback: a deployment must never run on a key generated into
   * a container's scratch directory (checked when the keyring is loaded, so parsing a deployment's configuration
   * without its secrets still works).
   */
  allowDevKeys: boolean;
}

export function cryptoConfig(e: CryptoEnv, { loopback }: { loopback: boolean }): { crypto: CryptoConfig } {
  const fieldKeys = e.FIELD_ENCRYPTION_KEYS ? (parseKeyList(e.FIELD_ENCRYPTION_KEYS) as FieldKey[]) : undefined;
  const problems: string[] = [];
  if (e.FIELD_ENCRYPTION_ACTIVE_KEY && !fieldKeys) {
    problems.push('FIELD_ENCRYPTION_ACTIVE_KEY: set only together with FIELD_ENCRYPTION_KEYS');
  }
  if (e.FIELD_ENCRYPTION_ACTIVE_KEY && fieldKeys && !fieldKeys.some((k) => k.kid === e.FIELD_ENCRYPTION_ACTIVE_KEY)) {
    problems.push('FIELD_ENCRYPTION_ACTIVE_KEY: names no key of FIELD_ENCRYPTION_KEYS');
  }
  if (problems.length > 0) throw new ConfigError(problems);
  return {
    crypto: {
      fieldKeys,
      activeKeyId: fieldKeys ? (e.FIELD_ENCRYPTION_ACTIVE_KEY ?? fieldKeys.at(-1)!.kid) : undefined,
      pseudonymKey: e.PSEUDONYM_KEY ? Buffer.from(e.PSEUDONYM_KEY, 'base64') : undefined,
      devKeysFile: e.DEV_KEYS_FILE,
      allowDevKeys: loopback,
    },
  };
}
