/**
 * The demo branch that `npm start` runs, provisioned once per data directory the way a real branch is set up:
 *
 * - the branch (opening hours, time zone) in the branches store, an observer, and the simulated machines through
 *   the same functions as `npm run hub` (cloud/src/broker/provisioning.ts), with secrets kept in files readable
 *   only by this user, so a restart reuses them;
 * - the gateway created in the gateways store (a one-time enrolment token) and enrolled with that token over the
 *   running cloud's HTTP API (`POST /api/v1/gateways/enrol`, edge-gateway/src/enrolment), its credentials in
 *   `demo-branch/gateway/enrolment.json`: it then gets its signed configuration (machines, readers, QR keys) and
 *   the branch's signed allow-list at its first birth;
 * - two QR door readers (check-in, check-out) that are line readers on files under `demo-branch/`: appending a QR
 *   token as a line "scans" it (`npm run demo:scan -- in|out` does it for the demo member);
 * - a demo member account (registered, verified with the link from the development mail folder, a member of the
 *   branch) whose credentials are in `demo-branch/member.json`, so its QR token can be fetched
 *   (`GET /api/access/qr-token`).
 *
 * Resumable: the secrets, the member's password and the enrolment token are written (`pending.json`) before they
 * are used, so a first start interrupted half-way (Ctrl-C during the first minute) finishes the same provisioning on
 * the next start, instead of failing forever on identities whose secrets nobody kept. A data directory provisioned
 * before gateways enrolled (a machines file and a gateway secret, no branch document) keeps running that way.
 */
import { appendFile, chmod, mkdir, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import mongoose, { type Connection } from 'mongoose';
import * as v from 'valibot';
import { createAuditLog } from '../cloud/src/audit/index.ts';
import { createBranches } from '../cloud/src/branches/service.ts';
import { createIdentityStore } from '../cloud/src/broker/identities.ts';
import { IdentityExists, type IdentityStore } from '../cloud/src/broker/identities.ts';
import { addMachine, addObserver } from '../cloud/src/broker/provisioning.ts';
import { createGatewayStore } from '../cloud/src/gateways/service.ts';
import { enrolGateway } from '../edge-gateway/src/enrolment/enrol.ts';
import { enrolmentFilePath } from '../edge-gateway/src/enrolment/credentials.ts';
import { version as gatewayVersion } from '../edge-gateway/src/version.ts';
import { systemClock } from '../tools/runtime/clock.ts';
import { equipmentForSetup, membershipsForSetup } from '../tools/setup/branch-setup.ts';
import { hashSecret, newSecret } from '../tools/mqtt/secrets.ts';
import { machineIdAt, typeAt } from '../simulators/src/machines/index.ts';
import { asReaderId } from '../protocol/index.ts';

export interface DemoScanner {
  reader: string;
  action: 'check-in' | 'check-out';
  /** The file the gateway reads as a QR scanner: each line appended to it is one scan. */
  file: string;
}

export interface DemoBranch {
  branch: string;
  gatewayId: string;
  observer: { id: string; secret: string };
  /** The simulator's credentials: [{id, secret, type}] (mode 0600). */
  simulatorCredentialsFile: string;
  machineCount: number;
  /** True when this call provisioned the branch (a fresh data directory). */
  fresh: boolean;
  /** The gateway's GATEWAY_DATA_DIR: its enrolment (0600), signed configuration, allow-list and queue. */
  gatewayDataDir: string;
  /** The QR line readers of the doors (empty for a data directory provisioned before enrolment). */
  scanners: DemoScanner[];
  /** The demo member's login (mode 0600); undefined for a data directory provisioned before enrolment. */
  member?: { email: string; password: string; file: string };
  /** A data directory provisioned before enrolment: the gateway runs with a machines file and a secret file. */
  legacy?: { machinesFile: string; gatewaySecretFile: string };
}

const Member = v.object({ email: v.string(), password: v.string() });

const Stored = v.object({
  branch: v.string(),
  gatewayId: v.string(),
  observer: v.object({ id: v.string(), secret: v.string() }),
  machineCount: v.number(),
  /** Absent in data directories provisioned before enrolment. */
  enrolled: v.optional(v.boolean()),
  member: v.optional(Member),
});

/** What is drawn before anything is stored or used. */
const Pending = v.object({
  branch: v.string(),
  gatewayId: v.string(),
  observer: v.object({ id: v.string(), secret: v.string() }),
  machines: v.array(v.object({ id: v.string(), secret: v.string(), type: v.string() })),
  member: Member,
  /** The gateway's one-time token, once the gateway exists in the gateways store and until it is enrolled. */
  enrolmentToken: v.optional(v.string()),
});
type Pending = v.InferOutput<typeof Pending>;

const SCANNERS = [
  { reader: 'door-in', action: 'check-in', name: 'door-in.scanner' },
  { reader: 'door-out', action: 'check-out', name: 'door-out.scanner' },
] as const;
const SETUP_ACTOR = 'npm-start-demo';
const ENROLMENT_TOKEN_TTL_S = 3_600;
const WEEK = ['monday', 'tuesday', 'wednesday', 'thursday', 'friday', 'saturday', 'sunday'] as const;

/**
 * Stores an identity with the secret drawn for it, or accepts it as already stored by an interrupted earlier run
 * (same id, and the stored hash is that secret's). Anything else under the id is an error the user must see.
 */
async function ensure(store: IdentityStore, id: string, secret: string, add: () => Promise<unknown>): Promise<void> {
  try {
    await add();
  } catch (err) {
    if (!(err instanceof IdentityExists)) throw err;
    const existing = await store.find(id);
    if (existing?.secretHash !== hashSecret(secret)) {
      throw new Error(
        `identity ${id} already exists with another secret: remove the demo's data directory or use another MONGO_URL`,
        { cause: err },
      );
    }
  }
}

async function writePrivate(file: string, content: string): Promise<void> {
  await writeFile(file, content, { mode: 0o600 });
  await chmod(file, 0o600); // writeFile's mode applies only when it creates the file
}

const exists = (file: string) =>
  stat(file).then(
    () => true,
    () => false,
  );

/** The host's IANA time zone (the demo gym is where the computer is), UTC when unknown. */
function hostTimeZone(): string {
  const zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
  return zone && zone.includes('/') ? zone : 'UTC';
}

async function http(
  apiUrl: string,
  method: string,
  urlPath: string,
  { token, body }: { token?: string; body?: unknown } = {},
): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(`${apiUrl}${urlPath}`, {
    method,
    headers: {
      ...(token ? { Authorization: `Bearer ${token}` } : {}),
      ...(body === undefined ? {} : { 'Content-Type': 'application/json' }),
    },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await res.text();
  return { status: res.status, body: (text ? JSON.parse(text) : {}) as Record<string, unknown> };
}

function expectStatus(res: { status: number; body: unknown }, ok: number[], what: string): void {
  if (!ok.includes(res.status)) throw new Error(`${what}: HTTP ${res.status} ${JSON.stringify(res.body)}`);
}

/**
 * The newest verification token mailed to `email`, from the cloud's development mail folder (MAIL_DIR: without
 * SMTP_URL, each message is a JSON file there).
 */
export function verificationTokenFromMailDir(mailDir: string) {
  return async (email: string, notBeforeMs: number): Promise<string | undefined> => {
    const names = (await readdir(mailDir).catch(() => [] as string[])).filter((n) => n.endsWith('-verify-email.json'));
    for (const name of names.sort().reverse()) {
      const file = path.join(mailDir, name);
      if ((await stat(file)).mtimeMs < notBeforeMs - 1_000) continue;
      const text = await readFile(file, 'utf8');
      if (!text.includes(email)) continue;
      const token = /verify-email#token=([A-Za-z0-9_-]+)/.exec(text)?.[1];
      if (token) return token;
    }
    return undefined;
  };
}

/**
 * Registers (or logs in) the demo member, verifies the address from the mail, asks to join the branch, and has the
 * gym grant the membership (what the branch's staff do with `PUT /api/branches/:id/members/:userId`), through the
 * members domain's service since the demo has no staff account.
 */
async function ensureMember(
  mongo: Connection,
  apiUrl: string,
  branch: string,
  member: { email: string; password: string },
  verificationToken: (email: string, notBeforeMs: number) => Promise<string | undefined>,
): Promise<void> {
  const startedMs = Date.now();
  expectStatus(await http(apiUrl, 'POST', '/api/auth/register', { body: member }), [202], 'register the demo member');
  const login = await http(apiUrl, 'POST', '/api/auth/login', { body: member });
  expectStatus(login, [200], 'log the demo member in');
  const token = String(login.body.accessToken);
  const join = () => http(apiUrl, 'POST', `/api/users/branches/${branch}`, { token });
  let joined = await join();
  if (joined.status === 403) {
    // Not verified yet: the registration's mail, or (a resumed start) a new one.
    let sent = await waitFor(() => verificationToken(member.email, startedMs), 5_000);
    if (sent === undefined) {
      const resentAt = Date.now();
      await http(apiUrl, 'POST', '/api/auth/verify-email/resend', { token });
      sent = await waitFor(() => verificationToken(member.email, resentAt), 15_000);
    }
    if (sent === undefined) throw new Error(`no verification mail for ${member.email} in the mail folder`);
    expectStatus(
      await http(apiUrl, 'POST', '/api/auth/verify-email', { body: { token: sent } }),
      [200],
      'verify the demo member',
    );
    joined = await join();
  }
  expectStatus(joined, [200, 201, 202], 'ask to join the demo branch');
  if (joined.body.status === 'requested') {
    const userId = String((login.body.user as { id: string }).id);
    const memberships = await membershipsForSetup(mongo);
    await memberships.join(userId, branch, { by: SETUP_ACTOR });
  }
}

async function waitFor<T>(probe: () => Promise<T | undefined>, timeoutMs: number): Promise<T | undefined> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined || Date.now() > deadline) return value;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

export async function provisionDemoBranch({
  mongoUrl,
  dataDir,
  apiUrl,
  mailDir = path.join(dataDir, 'mail'),
  verificationToken = verificationTokenFromMailDir(mailDir),
  branch = 'demo',
  machines = 40,
}: {
  mongoUrl: string;
  dataDir: string;
  /** The running cloud: the gateway enrols and the member registers there. */
  apiUrl: string;
  /** The cloud's MAIL_DIR (npm start: <data dir>/mail), where the member's verification mail lands. */
  mailDir?: string;
  /** Where the member's verification token comes from (default: the mail folder). */
  verificationToken?: (email: string, notBeforeMs: number) => Promise<string | undefined>;
  branch?: string;
  machines?: number;
}): Promise<DemoBranch> {
  const dir = path.join(dataDir, 'demo-branch');
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const files = {
    summary: path.join(dir, 'credentials.json'),
    simulatorCredentialsFile: path.join(dir, 'machines.credentials.json'),
    // Where npm start runs the gateway (GATEWAY_DATA_DIR): its enrolment beside its queue.
    gatewayDataDir: path.join(dataDir, 'gateway'),
    memberFile: path.join(dir, 'member.json'),
  };
  const scanners: DemoScanner[] = SCANNERS.map((s) => ({
    reader: s.reader,
    action: s.action,
    file: path.join(dir, s.name),
  }));
  const existing = await readFile(files.summary, 'utf8').catch(() => undefined);
  if (existing !== undefined) {
    const stored = v.parse(Stored, JSON.parse(existing));
    const common = {
      branch: stored.branch,
      gatewayId: stored.gatewayId,
      observer: stored.observer,
      machineCount: stored.machineCount,
      simulatorCredentialsFile: files.simulatorCredentialsFile,
      gatewayDataDir: files.gatewayDataDir,
      fresh: false,
    };
    if (stored.enrolled !== true) {
      return {
        ...common,
        scanners: [],
        legacy: {
          machinesFile: path.join(dir, 'gateway-machines.json'),
          gatewaySecretFile: path.join(dir, 'gateway.secret'),
        },
      };
    }
    for (const s of scanners) if (!(await exists(s.file))) await writePrivate(s.file, '');
    return {
      ...common,
      scanners,
      ...(stored.member ? { member: { ...stored.member, file: files.memberFile } } : {}),
    };
  }

  const pendingFile = path.join(dir, 'pending.json');
  const resumed = await readFile(pendingFile, 'utf8').then(
    (text) => v.parse(Pending, JSON.parse(text)),
    () => undefined,
  );
  const pending: Pending =
    resumed?.branch === branch && resumed.machines.length === machines
      ? resumed
      : {
          branch,
          gatewayId: `gw-${branch}`,
          observer: { id: `${branch}-observer`, secret: newSecret() },
          machines: Array.from({ length: machines }, (_, i) => ({
            id: machineIdAt(i),
            secret: newSecret(),
            type: typeAt(i),
          })),
          member: { email: `member@${branch}.nxg.local`, password: newSecret().slice(0, 24) },
        };
  const savePending = () => writePrivate(pendingFile, `${JSON.stringify(pending, null, 2)}\n`);
  // Before anything is stored: whatever happens next, the next start knows every secret.
  await savePending();

  const mongo = await mongoose.createConnection(mongoUrl, { serverSelectionTimeoutMS: 10_000 }).asPromise();
  try {
    const store = createIdentityStore(mongo);
    const { gatewayId, observer } = pending;
    await ensureBranch(mongo, branch);
    await ensureEnrolled(mongo, store, {
      apiUrl,
      branch,
      gatewayId,
      dataDir: files.gatewayDataDir,
      pending,
      savePending,
    });
    await ensure(store, observer.id, observer.secret, () =>
      addObserver({ store }, { id: observer.id, branches: [branch], secret: observer.secret }),
    );
    for (const m of pending.machines) {
      await ensure(store, m.id, m.secret, () =>
        addMachine({ store }, { id: m.id, branch, gateway: gatewayId, secret: m.secret }),
      );
    }
    await ensureReaders(mongo, store, branch, gatewayId);
    for (const s of scanners) if (!(await exists(s.file))) await writePrivate(s.file, '');
    await ensureMember(mongo, apiUrl, branch, pending.member, verificationToken);
    await writePrivate(files.memberFile, `${JSON.stringify(pending.member, null, 2)}\n`);
    await writePrivate(files.simulatorCredentialsFile, `${JSON.stringify(pending.machines, null, 2)}\n`);
    const summary = {
      branch,
      gatewayId,
      observer,
      machineCount: machines,
      enrolled: true,
      member: pending.member,
    };
    // Written last: its presence means every other file is complete.
    await writePrivate(files.summary, `${JSON.stringify(summary, null, 2)}\n`);
    await rm(pendingFile, { force: true });
    return {
      branch,
      gatewayId,
      observer,
      machineCount: machines,
      simulatorCredentialsFile: files.simulatorCredentialsFile,
      gatewayDataDir: files.gatewayDataDir,
      scanners,
      member: { ...pending.member, file: files.memberFile },
      fresh: true,
    };
  } finally {
    await mongo.close();
  }
}

/** The branch document (time zone of the host, open around the clock so the demo works at any hour). */
async function ensureBranch(mongo: Connection, branch: string): Promise<void> {
  const branches = await createBranches({ mongo, clock: systemClock, audit: createAuditLog(mongo) });
  if (await branches.get(branch)) return;
  await branches.create(SETUP_ACTOR, branch, {
    name: 'NXG demo gym',
    timeZone: hostTimeZone(),
    openingHours: Object.fromEntries(WEEK.map((d) => [d, [{ open: '00:00', close: '24:00' }]])) as never,
  });
}

/**
 * The gateway in the gateways store, enrolled with its one-time token over the cloud's API. The token is kept in
 * pending.json until the enrolment file exists (a resumed start uses it, or a fresh one once it expired). A token
 * spent by an enrolment whose answer was lost (interrupted between the cloud's answer and the file, which
 * enrolGateway writes atomically right after it) cannot be recovered: that is reported with the way out.
 */
async function ensureEnrolled(
  mongo: Connection,
  identities: IdentityStore,
  options: {
    apiUrl: string;
    branch: string;
    gatewayId: string;
    dataDir: string;
    pending: Pending;
    savePending: () => Promise<void>;
  },
): Promise<void> {
  const { apiUrl, branch, gatewayId, dataDir, pending, savePending } = options;
  if (await exists(enrolmentFilePath(dataDir))) return;
  const gateways = await createGatewayStore({ mongo, clock: systemClock, identities });
  const doc = await gateways.get(gatewayId);
  if (doc?.enrolledAt) {
    // Its secret was only in the lost answer, and a revoked gateway id is never issued again.
    throw new Error(
      `gateway ${gatewayId} is enrolled but ${enrolmentFilePath(dataDir)} is missing (a start interrupted while it ` +
        `enrolled): remove the demo's data directory and its database (or use another MONGO_URL) to start afresh`,
    );
  }
  if (doc === undefined) {
    pending.enrolmentToken = (
      await gateways.create({
        branch,
        id: gatewayId,
        name: 'Demo gateway',
        by: SETUP_ACTOR,
        ttlS: ENROLMENT_TOKEN_TTL_S,
      })
    ).token;
  } else if (pending.enrolmentToken === undefined || (doc.enrolment.expiresAt?.getTime() ?? 0) <= Date.now()) {
    pending.enrolmentToken = (await gateways.reissueToken(branch, gatewayId, ENROLMENT_TOKEN_TTL_S)).token;
  }
  await savePending();
  await enrolGateway({ cloud: apiUrl, token: pending.enrolmentToken, dataDir, version: gatewayVersion });
}

/** The QR door readers of the gateway (check-in and check-out), in the equipment registry. */
async function ensureReaders(
  mongo: Connection,
  identities: IdentityStore,
  branch: string,
  gatewayId: string,
): Promise<void> {
  const equipment = await equipmentForSetup(mongo, identities);
  const have = new Set<string>((await equipment.readers(branch)).map((r) => r.reader));
  for (const s of SCANNERS) {
    if (have.has(s.reader)) continue;
    await equipment.addReader(branch, {
      reader: asReaderId(s.reader),
      gateway: gatewayId,
      kind: 'qr',
      action: s.action,
      location: s.action === 'check-in' ? 'entrance' : 'exit',
    });
  }
}

/**
 * `npm run demo:scan -- in|out` (node scripts/demo-branch.ts scan …): the demo member's phone at a door — logs in, fetches a QR token and
 * appends it to that door's scanner file (what a person at the desk would do with `echo <token> >> <file>`).
 */
async function scanCli(argv: string[]): Promise<void> {
  const door = argv[0] === 'out' ? 'door-out' : 'door-in';
  const dataDir = process.env.NXG_DATA_DIR ?? path.resolve(import.meta.dirname, '..', 'data');
  const dir = path.join(dataDir, 'demo-branch');
  const hub = JSON.parse(await readFile(path.join(dataDir, 'hub.json'), 'utf8')) as { apiUrl: string };
  const member = v.parse(Member, JSON.parse(await readFile(path.join(dir, 'member.json'), 'utf8')));
  const login = await http(hub.apiUrl, 'POST', '/api/auth/login', { body: member });
  expectStatus(login, [200], 'log the demo member in');
  const qr = await http(hub.apiUrl, 'GET', '/api/access/qr-token', { token: String(login.body.accessToken) });
  expectStatus(qr, [200], 'fetch a QR token');
  const scanner = SCANNERS.find((s) => s.reader === door)!;
  await appendFile(path.join(dir, scanner.name), `${String(qr.body.token)}\n`);
  process.stdout.write(
    `scanned ${member.email}'s QR token at ${door} (${scanner.action}); ` +
      `see the gateway's log, or GET ${hub.apiUrl}/api/sessions/current as that member\n`,
  );
}

if (import.meta.main) {
  const [command, ...rest] = process.argv.slice(2);
  if (command !== 'scan' || !(rest[0] === undefined || rest[0] === 'in' || rest[0] === 'out')) {
    process.stderr.write('usage: npm run demo:scan -- [in|out]\n');
    process.exit(64);
  }
  await scanCli(rest).catch((err: unknown) => {
    process.stderr.write(`scan failed: ${(err as Error).message}\n`);
    process.exit(1);
  });
}
