/**
 * Private files of the gateway (enrolment credentials, signed configuration, allow-list, QR replay cache) under
 * GATEWAY_DATA_DIR: the directory is mode 0700, each file 0600, and every write is atomic — a temporary file in the
 * same directory, fsynced, renamed over the old one, then the directory fsynced — so a power cut leaves either the
 * old file or the new one, never half of either.
 */
import { randomBytes } from 'node:crypto';
import { chmod, mkdir, open, readdir, readFile, rename, rm } from 'node:fs/promises';
import path from 'node:path';

/** The signed state kept under GATEWAY_DATA_DIR, bound to the gateway's identity (gateway id, branch). */
export const CONFIG_FILE_NAME = 'config.jws';
export const ALLOW_LIST_FILE_NAME = 'allow-list.json';

export const PRIVATE_DIR_MODE = 0o700;
export const PRIVATE_FILE_MODE = 0o600;

/** Creates `dir` (and parents) if missing and makes it 0700. */
export async function ensurePrivateDir(dir: string): Promise<void> {
  await mkdir(dir, { recursive: true, mode: PRIVATE_DIR_MODE });
  await chmod(dir, PRIVATE_DIR_MODE);
}

/** Writes `data` to `file` atomically with mode 0600 (the directory must exist). */
export async function writeFileAtomic(file: string, data: string | Uint8Array): Promise<void> {
  const dir = path.dirname(file);
  const temp = path.join(dir, `.${path.basename(file)}.${randomBytes(6).toString('hex')}.tmp`);
  const handle = await open(temp, 'wx', PRIVATE_FILE_MODE);
  try {
    await handle.writeFile(data);
    await handle.sync();
  } catch (err) {
    await handle.close();
    await rm(temp, { force: true });
    throw err;
  }
  await handle.close();
  try {
    await rename(temp, file);
  } catch (err) {
    await rm(temp, { force: true });
    throw err;
  }
  await syncDir(dir);
}

/** What writeFileAtomic names its temporary files. */
const TEMP_NAME = /^\.[^/]+\.[0-9a-f]{12}\.tmp$/;

/**
 * Removes temporary files a crash in the middle of writeFileAtomic left in `dir` (call at start, before any write:
 * the file they were to replace is intact). Resolves with how many were removed.
 */
export async function removeLeftoverTemps(dir: string): Promise<number> {
  let removed = 0;
  for (const name of await readdir(dir)) {
    if (!TEMP_NAME.test(name)) continue;
    await rm(path.join(dir, name), { force: true });
    removed += 1;
  }
  return removed;
}

/** The file's text, or undefined when it does not exist. */
export async function readOptional(file: string): Promise<string | undefined> {
  try {
    return await readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

async function syncDir(dir: string): Promise<void> {
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } catch {
    // Some filesystems refuse fsync on a directory; the rename itself is still atomic.
  } finally {
    await handle.close();
  }
}
