/**
 * The demo branch that `npm start` runs: one gateway, one observer and a fleet of machines, provisioned once per
 * data directory through the same functions as `npm run hub` (cloud/src/broker/provisioning.ts). Secrets are issued
 * once; the ones the local processes need are kept in files readable only by this user under the data directory,
 * so a restart reuses them.
 *
 * Resumable: the secrets are drawn and written (`pending.json`) before any identity is stored, so a first start
 * interrupted half-way (Ctrl-C during the first minute) finishes the same provisioning on the next start, instead
 * of failing forever on identities whose secrets nobody kept.
 */
import { chmod, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import mongoose from 'mongoose';
import * as v from 'valibot';
import { createIdentityStore } from '../cloud/src/broker/identities.ts';
import { IdentityExists, type IdentityStore } from '../cloud/src/broker/identities.ts';
import { addGateway, addMachine, addObserver, gatewayMachines } from '../cloud/src/broker/provisioning.ts';
import { hashSecret, newSecret } from '../tools/mqtt/secrets.ts';
import { machineIdAt, typeAt } from '../simulators/src/machines/index.ts';

export interface DemoBranch {
  branch: string;
  gatewayId: string;
  observer: { id: string; secret: string };
  /** The gateway's machines file: {gatewayId, branch, machines: [{id, secretHash}]}. */
  machinesFile: string;
  /** The gateway's own secret (mode 0600). */
  gatewaySecretFile: string;
  /** The simulator's credentials: [{id, secret, type}] (mode 0600). */
  simulatorCredentialsFile: string;
  machineCount: number;
  /** True when this call issued the identities (a fresh data directory). */
  fresh: boolean;
}

const Stored = v.object({
  branch: v.string(),
  gatewayId: v.string(),
  observer: v.object({ id: v.string(), secret: v.string() }),
  machineCount: v.number(),
});

/** The secrets of a provisioning in progress, written before any identity is stored. */
const Pending = v.object({
  branch: v.string(),
  gateway: v.object({ id: v.string(), secret: v.string() }),
  observer: v.object({ id: v.string(), secret: v.string() }),
  machines: v.array(v.object({ id: v.string(), secret: v.string(), type: v.string() })),
});
type Pending = v.InferOutput<typeof Pending>;

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

export async function provisionDemoBranch({
  mongoUrl,
  dataDir,
  branch = 'demo',
  machines = 40,
}: {
  mongoUrl: string;
  dataDir: string;
  branch?: string;
  machines?: number;
}): Promise<DemoBranch> {
  const dir = path.join(dataDir, 'demo-branch');
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const files = {
    summary: path.join(dir, 'credentials.json'),
    machinesFile: path.join(dir, 'gateway-machines.json'),
    gatewaySecretFile: path.join(dir, 'gateway.secret'),
    simulatorCredentialsFile: path.join(dir, 'machines.credentials.json'),
  };
  const existing = await readFile(files.summary, 'utf8').catch(() => undefined);
  if (existing !== undefined) {
    const stored = v.parse(Stored, JSON.parse(existing));
    return {
      ...stored,
      machinesFile: files.machinesFile,
      gatewaySecretFile: files.gatewaySecretFile,
      simulatorCredentialsFile: files.simulatorCredentialsFile,
      fresh: false,
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
          gateway: { id: `gw-${branch}`, secret: newSecret() },
          observer: { id: `${branch}-observer`, secret: newSecret() },
          machines: Array.from({ length: machines }, (_, i) => ({
            id: machineIdAt(i),
            secret: newSecret(),
            type: typeAt(i),
          })),
        };
  // Before any identity is stored: whatever happens next, the next start knows every secret.
  await writePrivate(pendingFile, `${JSON.stringify(pending, null, 2)}\n`);

  const mongo = await mongoose.createConnection(mongoUrl, { serverSelectionTimeoutMS: 10_000 }).asPromise();
  try {
    const store = createIdentityStore(mongo);
    const { gateway, observer } = pending;
    await ensure(store, gateway.id, gateway.secret, () =>
      addGateway({ store }, { id: gateway.id, branch, secret: gateway.secret }),
    );
    await ensure(store, observer.id, observer.secret, () =>
      addObserver({ store }, { id: observer.id, branches: [branch], secret: observer.secret }),
    );
    for (const m of pending.machines) {
      await ensure(store, m.id, m.secret, () =>
        addMachine({ store }, { id: m.id, branch, gateway: gateway.id, secret: m.secret }),
      );
    }
    await writeFile(files.machinesFile, `${JSON.stringify(await gatewayMachines({ store }, gateway.id), null, 2)}\n`);
    await writePrivate(files.gatewaySecretFile, `${gateway.secret}\n`);
    await writePrivate(files.simulatorCredentialsFile, `${JSON.stringify(pending.machines, null, 2)}\n`);
    const summary = {
      branch,
      gatewayId: gateway.id,
      observer,
      machineCount: machines,
    };
    // Written last: its presence means every other file is complete.
    await writePrivate(files.summary, `${JSON.stringify(summary, null, 2)}\n`);
    await rm(pendingFile, { force: true });
    return { ...summary, ...files, fresh: true };
  } finally {
    await mongo.close();
  }
}
