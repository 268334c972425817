/**
 * The gateway's enrolment: what `npm run gateway -- enrol` received from the cloud (gateway id, branch, MQTT
 * secret, broker URL, the keys that verify its signed configuration), kept in `${GATEWAY_DATA_DIR}/enrolment.json`
 * with mode 0600 in a 0700 directory, written atomically. When it exists it supplies what GATEWAY_SECRET and the
 * machines file's identity supply otherwise.
 */
import { stat } from 'node:fs/promises';
import path from 'node:path';
import * as v from 'valibot';
import { BranchId, GatewayId, QrVerificationKey, Timestamp } from '../../../protocol/index.ts';
import { ensurePrivateDir, readOptional, writeFileAtomic } from '../cloud-config/files.ts';

export const ENROLMENT_FILE_NAME = 'enrolment.json';

export const EnrolmentFile = v.object({
  gateway: GatewayId,
  branch: BranchId,
  /** The gateway's MQTT secret on the cloud broker (the username is the gateway id). */
  secret: v.pipe(v.string(), v.minLength(16), v.maxLength(128)),
  /** The cloud broker's URL when the cloud told it. */
  brokerUrl: v.optional(v.pipe(v.string(), v.maxLength(512))),
  /** Public keys (JWK) that verify the signed configuration and allow-list. */
  configKeys: v.pipe(v.array(QrVerificationKey), v.minLength(1), v.maxLength(4)),
  /** The cloud's HTTPS base URL it enrolled with. */
  cloud: v.pipe(v.string(), v.maxLength(512)),
  enrolledAt: Timestamp,
  /** A CA file (PEM) given with `--ca`, copied next to this file: it verifies the cloud's certificates. */
  caFile: v.optional(v.string()),
});
export type EnrolmentFile = v.InferOutput<typeof EnrolmentFile>;

export class EnrolmentFileError extends Error {
  constructor(file: string, detail: string) {
    super(`enrolment file ${file}: ${detail}`);
    this.name = 'EnrolmentFileError';
  }
}

const LOOPBACK_HOSTS = new Set(['127.0.0.1', 'localhost', '[::1]', '::1']);

/**
 * Why a broker URL may not carry the gateway's secret, or undefined when it may: `mqtts://`, or `mqtt://` only to
 * a loopback address (the secret would cross the network in clear otherwise).
 */
export function brokerUrlRefusal(url: string): string | undefined {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return 'not a URL';
  }
  if (parsed.protocol === 'mqtts:') return undefined;
  if (parsed.protocol === 'mqtt:' && LOOPBACK_HOSTS.has(parsed.hostname)) return undefined;
  return parsed.protocol === 'mqtt:' ? 'plain mqtt:// off loopback would send the secret in clear' : 'not mqtts://';
}

export function enrolmentFilePath(dataDir: string): string {
  return path.join(dataDir, ENROLMENT_FILE_NAME);
}

/** The stored enrolment, or undefined when the gateway is not enrolled. Throws on a file that is not valid. */
export async function loadEnrolment(dataDir: string): Promise<EnrolmentFile | undefined> {
  const file = enrolmentFilePath(dataDir);
  const text = await readOptional(file);
  if (text === undefined) return undefined;
  const { mode } = await stat(file);
  if ((mode & 0o077) !== 0) {
    throw new EnrolmentFileError(file, `mode ${(mode & 0o777).toString(8)} lets others read the secret: chmod 600`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new EnrolmentFileError(file, 'not JSON');
  }
  const parsed = v.safeParse(EnrolmentFile, json);
  if (!parsed.success) {
    throw new EnrolmentFileError(file, `${v.getDotPath(parsed.issues[0]) ?? '(file)'}: ${parsed.issues[0].message}`);
  }
  return parsed.output;
}

/** Stores the enrolment (directory 0700, file 0600, atomically). */
export async function saveEnrolment(dataDir: string, enrolment: EnrolmentFile): Promise<string> {
  await ensurePrivateDir(dataDir);
  const file = enrolmentFilePath(dataDir);
  await writeFileAtomic(file, `${JSON.stringify(v.parse(EnrolmentFile, enrolment), null, 2)}\n`);
  return file;
}
