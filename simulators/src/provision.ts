/**
 * A run's own branches, set up the way a real branch is (scripts/demo-branch.ts does the same for npm start's demo):
 *
 * - the branch, open around the clock (a run may happen at any hour), in the branches store;
 * - its gateways in the gateways store, each enrolled with its one-time token over the cloud's HTTP API
 *   (`POST /api/v1/gateways/enrol`, edge-gateway/src/enrolment): at its first birth a gateway then receives its
 *   signed configuration (machines, readers, QR keys) and the branch's signed allow-list;
 * - the machines' MQTT identities on their gateway (`gatewaysPerBranch` gateways, more when a branch has more
 *   machines than one gateway configuration holds: MAX_GATEWAY_MACHINES);
 * - NFC door readers on the branch's first gateway (`doors` entrances and as many exits) in the equipment registry.
 *   They are line readers (a keyboard-wedge NFC reader types the card's UID and a newline): the simulator's members
 *   "tap" by appending their UID to the reader's file, which the gateway reads like `tail -f`;
 * - the members: accounts (active, verified, with a password nobody knows: they never log in), memberships granted
 *   by the gym, and one NFC card each whose UID follows from the branch and the member's number (memberCardUid),
 *   so every simulator process can tap any member's card without being told.
 *
 * Everything is created before the gateways start, so their first allow-list already holds the members.
 */
import { createHash, randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import mongoose, { type Connection } from 'mongoose';
import { createAccountStore } from '../../cloud/src/accounts/store.ts';
import { hashPassword } from '../../cloud/src/accounts/password.ts';
import { createCardStore } from '../../cloud/src/access/cards.ts';
import { createAuditLog } from '../../cloud/src/audit/index.ts';
import { createBranches } from '../../cloud/src/branches/service.ts';
import { createIdentityStore, type IdentityStore } from '../../cloud/src/broker/identities.ts';
import { addMachine } from '../../cloud/src/broker/provisioning.ts';
import { createGatewayStore } from '../../cloud/src/gateways/service.ts';
import { enrolGateway } from '../../edge-gateway/src/enrolment/enrol.ts';
import { version as gatewayVersion } from '../../edge-gateway/src/version.ts';
import { MAX_GATEWAY_MACHINES } from '../../protocol/messages/command.ts';
import { asReaderId } from '../../protocol/ids.ts';
import { systemClock } from '../../tools/runtime/clock.ts';
import { forEachLimited } from '../../tools/runtime/concurrency.ts';
import { findFreePort } from '../../tools/services/index.ts';
import { equipmentForSetup, membershipsForSetup } from '../../tools/setup/branch-setup.ts';
import type { FleetMachine } from './fleet.ts';
import { machineIdAt, typeAt, type SimulatedMachineType } from './machines/index.ts';

const SETUP_ACTOR = 'simulator';
const WEEK = ['monday', 'tuesday', 'wednesday', 'thursday', 'friday', 'saturday', 'sunday'] as const;
/** Members set up at once: the MongoDB stand-in handles a handful of writers best. */
const PROVISION_CONCURRENCY = 8;

/** A branch's door readers and its members, as the simulator processes need them (front-desk.ts). */
export interface BranchDesk {
  readonly branch: string;
  /** The entrance readers' files (a line = a tap), and the exits'. */
  readonly doorsIn: readonly string[];
  readonly doorsOut: readonly string[];
  /** Members are numbered 1…members; their card UIDs follow (memberCardUid). */
  readonly members: number;
}

export interface PlannedGateway {
  readonly id: string;
  readonly branch: string;
  /** Its GATEWAY_DATA_DIR: the enrolment file, signed configuration, allow-list and durable queue. */
  readonly dataDir: string;
  readonly port: number;
  readonly machines: FleetMachine[];
  /** Line readers (reader id → file) this gateway reads: the branch's doors, on its first gateway. */
  readonly lineReaders: readonly { readonly reader: string; readonly file: string }[];
}

export interface ProvisionedRun {
  readonly gateways: PlannedGateway[];
  readonly desks: BranchDesk[];
  /** The run's MQTT identities (gateways and machines), disabled by `retire` when the run is over. */
  readonly identities: readonly string[];
}

/** The card UID (7 bytes, hex, as an NFC reader reports it) of member `n` of `branch`. */
export function memberCardUid(branch: string, n: number): string {
  return createHash('sha256').update(`${branch}/member/${n}`).digest('hex').slice(0, 14);
}

export const memberEmail = (branch: string, n: number) => `m${n}@${branch.toLowerCase()}.sim.nxg.local`;

/** Gateways a branch needs: at least `wanted`, and enough that none holds more than MAX_GATEWAY_MACHINES. */
export function gatewaysNeeded(machines: number, wanted: number): number {
  return Math.max(wanted, Math.ceil(machines / MAX_GATEWAY_MACHINES));
}

/**
 * Door readers per direction: one per ~150 machines (a reader takes ~1.4 members/s; at a peak a machine's member
 * changes every few minutes and a visit lasts ~3 machines), 1…15 (a configuration holds 32 readers).
 */
export function doorsFor(machines: number): number {
  return Math.min(15, Math.max(1, Math.ceil(machines / 150)));
}

/** The machines of a branch: `mix` cycles through its types, or the fleet's usual mix (machines/index.ts). */
export function branchMachines(
  tag: string,
  count: number,
  mix?: readonly SimulatedMachineType[],
): { id: string; type: SimulatedMachineType }[] {
  return Array.from({ length: count }, (_, i) => {
    const type = mix && mix.length > 0 ? mix[i % mix.length]! : typeAt(i);
    return {
      id: `${tag}-${machineIdAt(i, type).replace(/-(\d{3})$/, (_m, d: string) => `-${d.padStart(4, '0')}`)}`,
      type,
    };
  });
}

/**
 * Provisions `branches` branches (ids `${runTag}-b1`…) with their gateways (enrolled through `apiUrl`), machines,
 * door readers and members; gateway data directories go under `dir`.
 */
export async function provisionRun(
  mongoUrl: string,
  apiUrl: string,
  options: {
    runTag: string;
    branches: number;
    gatewaysPerBranch: number;
    machinesPerBranch: number;
    membersPerBranch: number;
    mix?: readonly SimulatedMachineType[] | undefined;
    dir: string;
    log?: (msg: string) => void;
  },
): Promise<ProvisionedRun> {
  const mongo = await mongoose.createConnection(mongoUrl, { serverSelectionTimeoutMS: 10_000 }).asPromise();
  try {
    const identities = createIdentityStore(mongo);
    const gatewayStore = await createGatewayStore({ mongo, clock: systemClock, identities });
    const branches = await createBranches({ mongo, clock: systemClock, audit: createAuditLog(mongo) });
    const equipment = await equipmentForSetup(mongo, identities);
    const members = await memberSetup(mongo);
    const planned: PlannedGateway[] = [];
    const desks: BranchDesk[] = [];
    const ids: string[] = [];
    const gatewayCount = gatewaysNeeded(options.machinesPerBranch, options.gatewaysPerBranch);
    const doors = doorsFor(options.machinesPerBranch);
    for (let b = 1; b <= options.branches; b++) {
      const branch = `${options.runTag}-b${b}`;
      await branches.create(SETUP_ACTOR, branch, {
        name: `Simulated gym ${b} (${options.runTag})`,
        timeZone: 'UTC',
        openingHours: Object.fromEntries(WEEK.map((d) => [d, [{ open: '00:00', close: '24:00' }]])) as never,
      });
      const doorsIn = Array.from({ length: doors }, (_, i) => path.join(options.dir, `${branch}-door-in-${i + 1}.nfc`));
      const doorsOut = Array.from({ length: doors }, (_, i) =>
        path.join(options.dir, `${branch}-door-out-${i + 1}.nfc`),
      );
      const gateways: PlannedGateway[] = [];
      for (let g = 1; g <= gatewayCount; g++) {
        const id = `${branch}-gw${g}`;
        const { token } = await gatewayStore.create({ branch, id, name: `Gateway ${g}`, by: SETUP_ACTOR, ttlS: 3_600 });
        const dataDir = path.join(options.dir, `${id}-data`);
        await enrolGateway({ cloud: apiUrl, token, dataDir, version: gatewayVersion });
        ids.push(id);
        gateways.push({
          id,
          branch,
          dataDir,
          port: await findFreePort(),
          machines: [],
          lineReaders:
            g === 1
              ? [
                  ...doorsIn.map((file, i) => ({ reader: `door-in-${i + 1}`, file })),
                  ...doorsOut.map((file, i) => ({ reader: `door-out-${i + 1}`, file })),
                ]
              : [],
        });
      }
      for (const reader of gateways[0]!.lineReaders) {
        await writeFile(reader.file, '', { mode: 0o600 });
        await equipment.addReader(branch, {
          reader: asReaderId(reader.reader),
          gateway: gateways[0]!.id,
          kind: 'nfc',
          action: reader.reader.startsWith('door-in') ? 'check-in' : 'check-out',
          location: reader.reader.startsWith('door-in') ? 'entrance' : 'exit',
        });
      }
      const machines = branchMachines(branch, options.machinesPerBranch, options.mix);
      await forEachLimited([...machines.entries()], PROVISION_CONCURRENCY, async ([i, m]) => {
        const gateway = gateways[i % gateways.length]!;
        const { secret } = await addMachine({ store: identities }, { id: m.id, branch, gateway: gateway.id });
        gateway.machines.push({ id: m.id, type: m.type, secret, branch, url: `mqtt://127.0.0.1:${gateway.port}` });
      });
      // Machine order on a gateway as provisioned (the fleet spreads ticks by index).
      for (const gateway of gateways) gateway.machines.sort((x, y) => x.id.localeCompare(y.id));
      ids.push(...machines.map((m) => m.id));
      options.log?.(`branch ${branch}: provisioning ${options.membersPerBranch} members with NFC cards`);
      const numbers = Array.from({ length: options.membersPerBranch }, (_, i) => i + 1);
      await forEachLimited(numbers, PROVISION_CONCURRENCY, (n) => members.add(branch, n));
      planned.push(...gateways);
      desks.push({ branch, doorsIn, doorsOut, members: options.membersPerBranch });
    }
    return { gateways: planned, desks, identities: ids };
  } finally {
    await mongo.close();
  }
}

/** Accounts, memberships and cards through the cloud's own services (their invariants hold for simulated members). */
async function memberSetup(mongo: Connection) {
  const accounts = await createAccountStore(mongo, systemClock);
  const cards = await createCardStore({ mongo, clock: systemClock });
  const memberships = await membershipsForSetup(mongo);
  // One hash for all: a password nobody holds (simulated members tap cards, they never log in).
  const passwordHash = await hashPassword(randomBytes(32).toString('base64url'));
  return {
    async add(branch: string, n: number) {
      const account = await accounts.insert({ email: memberEmail(branch, n), passwordHash });
      if (!account) throw new Error(`member ${memberEmail(branch, n)} exists already`);
      await accounts.markEmailVerified(account.id);
      await memberships.join(account.id, branch, { by: SETUP_ACTOR });
      await cards.enrol({
        userId: account.id,
        uid: memberCardUid(branch, n),
        label: 'Simulated card',
        by: SETUP_ACTOR,
      });
    },
  };
}

/** When the run is over: its MQTT identities can no longer connect (their secrets were in the run's temp files). */
export async function retireRun(mongoUrl: string, identities: readonly string[]): Promise<number> {
  const mongo = await mongoose.createConnection(mongoUrl, { serverSelectionTimeoutMS: 10_000 }).asPromise();
  try {
    const store: IdentityStore = createIdentityStore(mongo);
    const at = new Date();
    let disabled = 0;
    for (const id of identities) if (await store.disable(id, at)) disabled += 1;
    return disabled;
  } finally {
    await mongo.close();
  }
}
