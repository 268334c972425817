/**
 * Test accounts made the way members make them: through the real HTTP routes (register, the verification link from
 * the real email, login). Only what no API may set — a role, a suspension — is written to MongoDB directly.
 *
 *   const tc = await startTestCloud();                        // cloud + SMTP capture + own db/prefix/key
 *   const a = await createTestAccount(tc);                    // verified member, logged in
 *   const admin = await createTestAccount(tc, { role: 'admin' });
 *   await fetch(`${tc.url}/api/users/profile`, { headers: bearer(a.accessToken) });
 *   await tc.stop();
 */
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Types, type Connection } from 'mongoose';
import { pino } from 'pino';
import { systemClock, type Clock } from '../../tools/runtime/clock.ts';
import { startCloud, type RunningCloud } from '../../cloud/src/cloud.ts';
import { loadCloudConfig } from '../../cloud/src/config.ts';
import type { AccountStatus, Role } from '../../cloud/src/http/state.ts';
import { linkIn, startSmtpCapture, type SmtpCapture } from '../../cloud/src/mail/smtp-capture.ts';
import { testServices, uniqueDbName } from './services.ts';

/** Where verification and reset links point in tests. */
export const TEST_APP_BASE_URL = 'http://app.nxg.test';

export interface TestCloud extends RunningCloud {
  /** The SMTP capture the cloud sends to. */
  mail: SmtpCapture;
  /** The REDIS_KEY_PREFIX of this cloud. */
  redisKeyPrefix: string;
  /** Stops the cloud and the SMTP capture, and removes its temporary directory (signing key, development keys). */
  stop(): Promise<void>;
}

export interface StartTestCloudOptions {
  /** More environment (overrides the defaults below), e.g. { AUTH_LOGIN_ACCOUNT_FAILURES: '3' }. */
  env?: Record<string, string>;
  clock?: Clock;
  /** Database name prefix; a unique name is made from it. */
  dbPrefix?: string;
}

/**
 * A whole cloud on the run's MongoDB and Redis with its own database, Redis key prefix, signing key and SMTP
 * capture process; HTTP and MQTT on free ports. Logs are silent unless TEST_LOG_LEVEL is set.
 */
export async function startTestCloud(options: StartTestCloudOptions = {}): Promise<TestCloud> {
  const { mongoUrl, redisUrl } = testServices();
  const mail = await startSmtpCapture();
  const keyDir = await mkdtemp(path.join(os.tmpdir(), 'nxg-test-keys-'));
  try {
    const keyFile = path.join(keyDir, 'signing.pem');
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    await writeFile(keyFile, privateKey.export({ format: 'pem', type: 'pkcs8' }).toString(), { mode: 0o600 });
    const redisKeyPrefix = `test:${process.pid}:${randomBytes(4).toString('hex')}:`;
    const config = loadCloudConfig({
      MONGO_URL: `${mongoUrl}/${uniqueDbName(options.dbPrefix ?? 'cloud')}`,
      REDIS_URL: redisUrl,
      REDIS_KEY_PREFIX: redisKeyPrefix,
      HTTP_PORT: '0',
      SHUTDOWN_GRACE_MS: '2000',
      MONGO_TIMEOUT_MS: '2000',
      SMTP_URL: mail.url,
      APP_BASE_URL: TEST_APP_BASE_URL,
      AUTH_SIGNING_KEY_FILE: keyFile,
      // Other suites' clouds may run at the same time: free MQTT ports, and development material of its own.
      MQTT_TCP_PORT: '0',
      MQTT_TLS_PORT: '0',
      MQTT_DATA_DIR: path.join(keyDir, 'mqtt'),
      DEV_KEYS_FILE: path.join(keyDir, 'dev-keys.json'),
      ...options.env,
    });
    const cloud = await startCloud({
      config,
      log: pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' }),
      clock: options.clock ?? systemClock,
    });
    const stopCloud = cloud.stop.bind(cloud);
    return Object.assign(cloud, {
      mail,
      redisKeyPrefix,
      async stop() {
        try {
          await stopCloud();
        } finally {
          await Promise.allSettled([mail.stop(), rm(keyDir, { recursive: true, force: true })]);
        }
      },
    });
  } catch (err) {
    await Promise.allSettled([mail.stop(), rm(keyDir, { recursive: true, force: true })]);
    throw err;
  }
}

export interface TestAccountOptions {
  role?: Role;
  /** Default true: the verification link from the email is followed. */
  verified?: boolean;
  /** Default: active when verified, else pending_verification. 'suspended' is set in MongoDB (no API sets it). */
  status?: AccountStatus;
  suspendedReason?: string;
  email?: string;
  password?: string;
  userAgent?: string;
}

export interface TestAccount {
  userId: string;
  email: string;
  password: string;
  accessToken: string;
  refreshToken: string;
  sessionId: string;
}

let accountCounter = 0;

/** Headers with a bearer token (and JSON content type). */
export function bearer(accessToken: string): Record<string, string> {
  return { Authorization: `Bearer ${accessToken}`, 'Content-Type': 'application/json' };
}

/** POST JSON to the cloud; returns the response. */
export function postJson(
  cloud: Pick<RunningCloud, 'url'>,
  urlPath: string,
  body: unknown,
  headers: Record<string, string> = {},
): Promise<Response> {
  return fetch(`${cloud.url}${urlPath}`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', ...headers },
    body: JSON.stringify(body),
  });
}

async function expectStatus(res: Response, status: number, what: string): Promise<void> {
  if (res.status !== status) throw new Error(`${what}: expected ${status}, got ${res.status}: ${await res.text()}`);
}

/** The token from the newest verification (or reset) email sent to `email`. */
export async function tokenFromEmail(
  cloud: { mail: SmtpCapture },
  email: string,
  kind: 'verify-email' | 'reset-password',
): Promise<string> {
  const subject = kind === 'verify-email' ? /Confirm your email/ : /Reset your/;
  const mail = await cloud.mail.waitFor((m) => m.to.includes(email) && subject.test(m.subject));
  const link = linkIn(mail, `${TEST_APP_BASE_URL}/${kind}`);
  const token = new URLSearchParams(link.hash.slice(1)).get('token');
  if (!token) throw new Error(`no token in ${kind} link`);
  return token;
}

/**
 * Registers, verifies (unless verified: false) and logs in a new account through the HTTP API; sets role and
 * status in MongoDB where asked. Unique email per call.
 */
export async function createTestAccount(
  cloud: { url: string; mongo: Connection; mail: SmtpCapture },
  options: TestAccountOptions = {},
): Promise<TestAccount> {
  const email = options.email ?? `member-${process.pid}-${++accountCounter}-${randomBytes(3).toString('hex')}@nxg.test`;
  const password = options.password ?? `test-pass-${randomBytes(9).toString('base64url')}`;
  const ua = { 'User-Agent': options.userAgent ?? 'nxg-test/1.0' };
  await expectStatus(await postJson(cloud, '/api/auth/register', { email, password }, ua), 202, 'register');

  const verified = options.verified ?? true;
  if (verified) {
    const token = await tokenFromEmail(cloud, email, 'verify-email');
    await expectStatus(await postJson(cloud, '/api/auth/verify-email', { token }, ua), 200, 'verify-email');
  }
  const login = await postJson(cloud, '/api/auth/login', { email, password }, ua);
  await expectStatus(login, 200, 'login');
  const tokens = (await login.json()) as {
    accessToken: string;
    refreshToken: string;
    sessionId: string;
    user: { id: string };
  };

  const set: Record<string, unknown> = {};
  if (options.role && options.role !== 'member') set.role = options.role;
  if (options.status && options.status !== (verified ? 'active' : 'pending_verification')) {
    set.status = options.status;
    if (options.status === 'suspended') set.suspendedReason = options.suspendedReason ?? 'suspended by a test';
  }
  if (Object.keys(set).length > 0) {
    await cloud.mongo.collection('accounts').updateOne({ _id: new Types.ObjectId(tokens.user.id) }, { $set: set });
  }
  return {
    userId: tokens.user.id,
    email,
    password,
    accessToken: tokens.accessToken,
    refreshToken: tokens.refreshToken,
    sessionId: tokens.sessionId,
  };
}
