/**
 * Enrolment: exchanges a one-time token for the gateway's credentials (`POST /api/v1/gateways/enrol`, protocol
 * GatewayEnrolmentRequest → GatewayEnrolmentResponse) and stores them under GATEWAY_DATA_DIR. HTTPS only, except
 * to a loopback address (development and tests); `--ca` names the CA that signed the cloud's certificate when it
 * is not a public one, and is kept beside the credentials for the MQTT uplink too. The token and the secret are
 * never logged or printed.
 */
import { chmod, copyFile, readFile, rm } from 'node:fs/promises';
import http from 'node:http';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import * as v from 'valibot';
import { EnrolmentToken, parsePayload } from '../../../protocol/index.ts';
import type { GatewayEnrolmentRequest, GatewayEnrolmentResponse } from '../../../protocol/index.ts';
import {
  ALLOW_LIST_FILE_NAME,
  CONFIG_FILE_NAME,
  ensurePrivateDir,
  PRIVATE_FILE_MODE,
  readOptional,
} from '../cloud-config/files.ts';
import {
  brokerUrlRefusal,
  enrolmentFilePath,
  loadEnrolment,
  saveEnrolment,
  type EnrolmentFile,
} from './credentials.ts';

export const ENROL_PATH = 'api/v1/gateways/enrol';
const MAX_RESPONSE_BYTES = 16 * 1024;

export interface EnrolOptions {
  /** The cloud's base URL, e.g. `https://hub.example.com`. */
  readonly cloud: string;
  readonly token: string;
  /** PEM file of the CA that signed the cloud's HTTPS certificate. */
  readonly caFile?: string | undefined;
  readonly dataDir: string;
  readonly version: string;
  readonly hostname?: string;
  /** Replace an existing enrolment. */
  readonly force?: boolean;
  readonly timeoutMs?: number;
  readonly nowMs?: () => number;
}

export class EnrolmentError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'EnrolmentError';
  }
}

const LOOPBACK = new Set(['127.0.0.1', 'localhost', '[::1]', '::1']);

/** The enrolment endpoint under `cloud` (a base URL, possibly with a path prefix). */
export function enrolUrl(cloud: string): URL {
  let base: URL;
  try {
    base = new URL(cloud.endsWith('/') ? cloud : `${cloud}/`);
  } catch {
    throw new EnrolmentError(`--cloud ${JSON.stringify(cloud)} is not a URL`);
  }
  if (base.protocol !== 'https:' && !(base.protocol === 'http:' && LOOPBACK.has(base.hostname))) {
    throw new EnrolmentError('--cloud must be an https:// URL (http:// only to a loopback address)');
  }
  if (base.username !== '' || base.password !== '') throw new EnrolmentError('--cloud must not carry credentials');
  return new URL(ENROL_PATH, base);
}

/** Enrols the gateway and stores its credentials; resolves with what was stored. */
export async function enrolGateway(
  options: EnrolOptions,
): Promise<{ file: string; enrolment: EnrolmentFile; warnings: readonly string[] }> {
  if (!v.is(EnrolmentToken, options.token)) {
    throw new EnrolmentError('--token: expected the 32–128 character token the cloud issued');
  }
  const url = enrolUrl(options.cloud);
  // Any enrolment file — even one that no longer loads (bad mode, damaged) — is replaced only with --force.
  const existingFile = enrolmentFilePath(options.dataDir);
  if (options.force !== true && (await readOptional(existingFile)) !== undefined) {
    throw new EnrolmentError(`already enrolled (${existingFile}); pass --force to replace it`);
  }
  const previous = await loadEnrolment(options.dataDir).catch(() => undefined);
  const ca = options.caFile === undefined ? undefined : await readCa(options.caFile);
  const request: GatewayEnrolmentRequest = {
    token: options.token,
    version: options.version,
    hostname: (options.hostname ?? os.hostname()).slice(0, 64),
  };
  const { status, body } = await postJson(url, request, ca, options.timeoutMs ?? 15_000);
  if (status < 200 || status >= 300) {
    throw new EnrolmentError(`the cloud refused the enrolment: HTTP ${status}${problemTitle(body)}`);
  }
  const parsed = parsePayload('GatewayEnrolmentResponse', body);
  if (!parsed.ok) {
    throw new EnrolmentError(
      `the cloud's answer is not a GatewayEnrolmentResponse (${parsed.reason}${parsed.path === undefined ? '' : ` at ${parsed.path}`})`,
    );
  }
  const response: GatewayEnrolmentResponse = parsed.value;
  if (response.mqtt.username !== response.gateway) {
    throw new EnrolmentError('the cloud’s answer names an MQTT username other than the gateway id');
  }
  // The token is spent by now: a broker URL the gateway may not use is left out (and said), not a reason to fail.
  const warnings: string[] = [];
  let brokerUrl = response.mqtt.url;
  const refusal = brokerUrl === undefined ? undefined : brokerUrlRefusal(brokerUrl);
  if (refusal !== undefined) {
    warnings.push(`the cloud's broker URL is not used (${refusal}): set GATEWAY_UPLINK_URL to its mqtts:// URL`);
    brokerUrl = undefined;
  }
  await ensurePrivateDir(options.dataDir);
  let caFile: string | undefined;
  if (options.caFile !== undefined) {
    caFile = path.join(options.dataDir, 'cloud-ca.pem');
    await copyFile(options.caFile, caFile);
    await chmod(caFile, PRIVATE_FILE_MODE);
  }
  const enrolment: EnrolmentFile = {
    gateway: response.gateway,
    branch: response.branch,
    secret: response.mqtt.password,
    ...(brokerUrl === undefined ? {} : { brokerUrl }),
    configKeys: response.configKeys,
    cloud: url.origin,
    enrolledAt: (options.nowMs ?? Date.now)(),
    ...(caFile === undefined ? {} : { caFile }),
  };
  const file = await saveEnrolment(options.dataDir, enrolment);
  if (previous === undefined || previous.gateway !== enrolment.gateway || previous.branch !== enrolment.branch) {
    // Re-enrolled as another gateway: the signed configuration and allow-list of the old identity go (the cloud
    // sends this gateway's own after it connects); left in place they would be refused at every start.
    for (const name of [CONFIG_FILE_NAME, ALLOW_LIST_FILE_NAME])
      await rm(path.join(options.dataDir, name), { force: true });
  }
  return { file, enrolment, warnings };
}

async function readCa(file: string): Promise<Buffer> {
  try {
    return await readFile(file);
  } catch (err) {
    throw new EnrolmentError(`--ca ${file}: cannot read it (${(err as NodeJS.ErrnoException).code ?? 'error'})`, {
      cause: err,
    });
  }
}

function postJson(
  url: URL,
  body: unknown,
  ca: Buffer | undefined,
  timeoutMs: number,
): Promise<{ status: number; body: Buffer }> {
  const data = Buffer.from(JSON.stringify(body));
  const transport = url.protocol === 'https:' ? https : http;
  return new Promise((resolve, reject) => {
    const req = transport.request(
      url,
      {
        method: 'POST',
        headers: { 'content-type': 'application/json', accept: 'application/json', 'content-length': data.length },
        timeout: timeoutMs,
        ...(url.protocol === 'https:' && ca !== undefined ? { ca } : {}),
      },
      (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (chunk: Buffer) => {
          size += chunk.length;
          if (size > MAX_RESPONSE_BYTES) {
            req.destroy(new EnrolmentError('the cloud’s answer is too large'));
            return;
          }
          chunks.push(chunk);
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks) }));
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new EnrolmentError(`no answer from ${url.origin} within ${timeoutMs} ms`)));
    req.on('error', (err) =>
      reject(err instanceof EnrolmentError ? err : new EnrolmentError(`cannot reach ${url.origin}: ${err.message}`)),
    );
    req.end(data);
  });
}

function problemTitle(body: Buffer): string {
  try {
    const problem = JSON.parse(body.toString('utf8')) as { title?: unknown; detail?: unknown };
    const title = typeof problem.title === 'string' ? problem.title.slice(0, 200) : undefined;
    return title === undefined ? '' : ` (${title})`;
  } catch {
    return '';
  }
}
