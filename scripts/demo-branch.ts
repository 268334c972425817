/**
 * The demo branch that `npm start` runs: one gateway, one observer and a fleet of machines, provisioned once per
 * data directory through the same functions as `npm run hub` (cloud/src/broker/provisioning.ts). Secrets are issued
 * once; the ones the local processes need are kept in files readable only by this user under the data directory,
 * so a restart reuses them.
 */
import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import mongoose from 'mongoose';
import * as v from 'valibot';
import { createIdentityStore } from '../cloud/src/broker/identities.ts';
import { addGateway, addMachine, addObserver, gatewayMachines } from '../cloud/src/broker/provisioning.ts';
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

  const mongo = await mongoose.createConnection(mongoUrl, { serverSelectionTimeoutMS: 10_000 }).asPromise();
  try {
    const store = createIdentityStore(mongo);
    const gatewayId = `gw-${branch}`;
    const gateway = await addGateway({ store }, { id: gatewayId, branch });
    const observer = await addObserver({ store }, { id: `${branch}-observer`, branches: [branch] });
    const credentials: { id: string; secret: string; type: string }[] = [];
    for (let i = 0; i < machines; i++) {
      const id = machineIdAt(i);
      const issued = await addMachine({ store }, { id, branch, gateway: gatewayId });
      credentials.push({ id, secret: issued.secret, type: typeAt(i) });
    }
    await writeFile(files.machinesFile, `${JSON.stringify(await gatewayMachines({ store }, gatewayId), null, 2)}\n`);
    await writePrivate(files.gatewaySecretFile, `${gateway.secret}\n`);
    await writePrivate(files.simulatorCredentialsFile, `${JSON.stringify(credentials, null, 2)}\n`);
    const summary = {
      branch,
      gatewayId,
      observer: { id: observer.identity.id, secret: observer.secret },
      machineCount: machines,
    };
    // Written last: its presence means every other file is complete.
    await writePrivate(files.summary, `${JSON.stringify(summary, null, 2)}\n`);
    return { ...summary, ...files, fresh: true };
  } finally {
    await mongo.close();
  }
}
