/**
 * The keys the cloud encrypts health fields with, and the key it pseudonymises deleted members' ids with: from
 * configuration, or — on a developer machine — from a keyring file generated on first start.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { ConfigError } from '../../../tools/runtime/env-config.ts';
import type { Logger } from '../../../tools/runtime/logger.ts';
import { KEY_ID_PATTERN, type CryptoConfig, type FieldKey } from './config.ts';

export interface Keyring {
  /** Every key that can decrypt, by id; the active one also encrypts. */
  readonly keys: ReadonlyMap<string, Buffer>;
  readonly activeKeyId: string;
  /** HMAC key for pseudonyms (32+ bytes). */
  readonly pseudonymKey: Buffer;
}

interface DevKeysFile {
  fieldKeys: { kid: string; key: string }[];
  activeKeyId: string;
  pseudonymKey: string;
}

export function keyringOf(fieldKeys: readonly FieldKey[], activeKeyId: string, pseudonymKey: Buffer): Keyring {
  const keys = new Map(fieldKeys.map((k) => [k.kid, k.key]));
  if (!keys.has(activeKeyId)) throw new Error(`the active key ${activeKeyId} is not in the keyring`);
  if (pseudonymKey.length < 32) throw new Error('the pseudonym key must have 32 bytes or more');
  return { keys, activeKeyId, pseudonymKey };
}

function parseDevKeys(text: string, file: string): DevKeysFile {
  // Never JSON.parse's own message: it quotes the text, and the text is key material.
  const invalid = () => new Error(`${file}: not a development keyring (delete it to generate a new one)`);
  let data: Partial<DevKeysFile> | null;
  try {
    data = JSON.parse(text) as Partial<DevKeysFile> | null;
  } catch {
    throw invalid();
  }
  const valid =
    typeof data === 'object' &&
    data !== null &&
    Array.isArray(data.fieldKeys) &&
    data.fieldKeys.every(
      (k: unknown) =>
        typeof k === 'object' &&
        k !== null &&
        typeof (k as { kid?: unknown }).kid === 'string' &&
        typeof (k as { key?: unknown }).key === 'string' &&
        KEY_ID_PATTERN.test((k as { kid: string }).kid) &&
        Buffer.from((k as { key: string }).key, 'base64').length === 32,
    ) &&
    typeof data.activeKeyId === 'string' &&
    typeof data.pseudonymKey === 'string';
  if (!valid) throw invalid();
  return data as DevKeysFile;
}

/** Reads the development keyring, generating it (mode 0600) when absent and `create` allows. */
async function devKeys(file: string, create: boolean, log: Logger): Promise<DevKeysFile> {
  try {
    return parseDevKeys(await readFile(file, 'utf8'), file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || !create) throw err;
  }
  const generated: DevKeysFile = {
    fieldKeys: [{ kid: 'dev-1', key: randomBytes(32).toString('base64') }],
    activeKeyId: 'dev-1',
    pseudonymKey: randomBytes(32).toString('base64'),
  };
  await mkdir(dirname(file), { recursive: true });
  // Written aside and renamed: a crash never leaves half a keyring, and a concurrent first start of a second
  // process on the same file reads one whole keyring (whichever rename came last), never a torn one.
  const temp = `${file}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  await writeFile(temp, `${JSON.stringify(generated, null, 2)}\n`, { mode: 0o600, flag: 'wx' });
  await rename(temp, file);
  log.warn({ file }, 'generated a development keyring: set FIELD_ENCRYPTION_KEYS and PSEUDONYM_KEY in production');
  return parseDevKeys(await readFile(file, 'utf8'), file);
}

/**
 * The keyring the configuration describes. Configured keys win; what is not configured comes from the development
 * keyring file (generated on first use when `create` is true — the CLI tools pass false, so they never invent keys
 * that would make existing data unreadable).
 */
export async function loadKeyring(
  config: CryptoConfig,
  { log, create = true }: { log: Logger; create?: boolean },
): Promise<Keyring> {
  if (config.fieldKeys && config.activeKeyId && config.pseudonymKey) {
    return keyringOf(config.fieldKeys, config.activeKeyId, config.pseudonymKey);
  }
  if (!config.allowDevKeys) {
    throw new ConfigError([
      'FIELD_ENCRYPTION_KEYS and PSEUDONYM_KEY: required when HTTP_HOST is not a loopback address ' +
        '(generated development keys are for a developer machine only)',
    ]);
  }
  const dev = await devKeys(config.devKeysFile, create, log);
  const fieldKeys = config.fieldKeys ?? dev.fieldKeys.map((k) => ({ kid: k.kid, key: Buffer.from(k.key, 'base64') }));
  const activeKeyId = config.fieldKeys ? config.activeKeyId! : dev.activeKeyId;
  return keyringOf(fieldKeys, activeKeyId, config.pseudonymKey ?? Buffer.from(dev.pseudonymKey, 'base64'));
}
