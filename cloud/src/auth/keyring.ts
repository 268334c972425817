/**
 * The access-token signing keys: one active EC P-256 key that signs (ES256), and older keys that still verify
 * tokens signed before a rotation. Each key's id (`kid`) is its RFC 7638 JWK thumbprint, so it is derived from the
 * key and the same on every API node. The public halves are published as a JWKS (gateways verify with them).
 *
 * Rotation: make the new key AUTH_SIGNING_KEY_FILE, move the old file into AUTH_VERIFY_KEY_FILES, and drop it from
 * there once the last token it signed has expired (AUTH_ACCESS_TOKEN_TTL_S later).
 */
import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from '../../../tools/runtime/logger.ts';

export interface PublicJwk {
  kty: 'EC';
  crv: 'P-256';
  x: string;
  y: string;
  kid: string;
  alg: 'ES256';
  use: 'sig';
}

export interface Keyring {
  /** The key that signs new tokens. */
  readonly signing: { kid: string; privateKey: KeyObject };
  /** The public key for `kid`, for the active and every verify-only key; undefined for any other id. */
  verifyKey(kid: string): KeyObject | undefined;
  /** The JWKS document: every public key, active first. */
  jwks(): { keys: PublicJwk[] };
}

export interface KeyringOptions {
  signingKeyFile: string | undefined;
  verifyKeyFiles: readonly string[];
  /** Where a development key is created when no signing key is configured. */
  devKeyDir: string;
  /** False off loopback: then a missing AUTH_SIGNING_KEY_FILE stops the start. */
  allowDevKey: boolean;
  log: Logger;
}

export class KeyConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'KeyConfigError';
  }
}

function publicJwk(publicKey: KeyObject): Omit<PublicJwk, 'kid' | 'alg' | 'use'> {
  const jwk = publicKey.export({ format: 'jwk' });
  if (jwk.kty !== 'EC' || jwk.crv !== 'P-256' || !jwk.x || !jwk.y) {
    throw new KeyConfigError('access-token keys must be EC P-256 keys (ES256)');
  }
  return { kty: 'EC', crv: 'P-256', x: jwk.x, y: jwk.y };
}

/** RFC 7638: SHA-256 over the required members in lexicographic order, base64url. */
export function jwkThumbprint(publicKey: KeyObject): string {
  const { crv, kty, x, y } = publicJwk(publicKey);
  return createHash('sha256').update(JSON.stringify({ crv, kty, x, y })).digest('base64url');
}

async function readPem(file: string): Promise<string> {
  try {
    return await readFile(file, 'utf8');
  } catch (err) {
    throw new KeyConfigError(`cannot read key file ${file}: ${(err as Error).message}`);
  }
}

function toPublicKey(pem: string, file: string): KeyObject {
  try {
    // A private key file works as well: its public half is derived.
    return pem.includes('PRIVATE KEY') ? createPublicKey(createPrivateKey(pem)) : createPublicKey(pem);
  } catch (err) {
    throw new KeyConfigError(`${file} is not a PEM key: ${(err as Error).message}`);
  }
}

/** Reads the development key from `dir`, creating it (once, even with several processes racing) when missing. */
async function devSigningKey(dir: string, log: Logger): Promise<{ pem: string; file: string }> {
  const file = path.resolve(dir, 'dev-signing-key.pem');
  try {
    return { pem: await readFile(file, 'utf8'), file };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  await mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const pem = privateKey.export({ format: 'pem', type: 'pkcs8' }).toString();
  try {
    await writeFile(file, pem, { flag: 'wx', mode: 0o600 });
    log.warn({ file }, 'no AUTH_SIGNING_KEY_FILE: created a development signing key (do not use it in production)');
    return { pem, file };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    return { pem: await readFile(file, 'utf8'), file }; // another process created it first
  }
}

export async function loadKeyring(options: KeyringOptions): Promise<Keyring> {
  if (!options.signingKeyFile && !options.allowDevKey) {
    throw new KeyConfigError(
      'AUTH_SIGNING_KEY_FILE is required when HTTP_HOST is not a loopback address (development keys are loopback only)',
    );
  }
  const source = options.signingKeyFile
    ? { pem: await readPem(options.signingKeyFile), file: options.signingKeyFile }
    : await devSigningKey(options.devKeyDir, options.log);
  let privateKey: KeyObject;
  try {
    privateKey = createPrivateKey(source.pem);
  } catch (err) {
    throw new KeyConfigError(`${source.file} is not a PEM private key: ${(err as Error).message}`);
  }
  const activePublic = createPublicKey(privateKey);
  const signingKid = jwkThumbprint(activePublic);

  const byKid = new Map<string, KeyObject>([[signingKid, activePublic]]);
  for (const file of options.verifyKeyFiles) {
    const key = toPublicKey(await readPem(file), file);
    byKid.set(jwkThumbprint(key), key);
  }
  const jwks = {
    keys: [...byKid].map(([kid, key]) => ({ ...publicJwk(key), kid, alg: 'ES256' as const, use: 'sig' as const })),
  };
  options.log.info({ kid: signingKid, verifyOnly: byKid.size - 1 }, 'access-token keys loaded');
  return {
    signing: { kid: signingKid, privateKey },
    // A Map lookup: a kid such as "../../dev/null" is simply not a key we hold.
    verifyKey: (kid) => byKid.get(kid),
    jwks: () => jwks,
  };
}
