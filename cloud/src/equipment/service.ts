/**
 * The equipment registry of a branch: machines (category and concrete kind, model, capabilities, location) and
 * readers (at a door, or mounted on a machine). A machine's MQTT identity is issued through the broker's
 * provisioning (one identity store, `mqtt_identities`) and its secret is returned once; the registry keeps what
 * staff and apps need to know about it. Every change that alters a gateway's configuration is announced with
 * `onConfigChange(gateway)` so the signed configuration is re-issued and pushed.
 */
import { Schema, type Connection, type Model } from 'mongoose';
import type { Clock } from '../../../tools/runtime/clock.ts';
import { MAX_GATEWAY_MACHINES, type GatewayReaderConfig } from '../../../protocol/messages/command.ts';
import { machineCategory, type MachineCategory, type MachineType } from '../../../protocol/messages/machine-type.ts';
import type { IdentityStore } from '../broker/identities.ts';
import { ProvisioningError, addMachine, revokeIdentity } from '../broker/provisioning.ts';
import { isDuplicateKey } from '../db/mongo.ts';
import { Conflict, Invalid, NotFound } from '../http/errors.ts';

/** Most readers on one gateway (GatewayConfigDocument.readers). */
export const MAX_GATEWAY_READERS = 32;

export interface MachineView {
  id: string;
  branch: string;
  gateway: string;
  type: MachineCategory;
  kind: MachineType;
  model: string;
  capabilities: string[];
  location: string | null;
  displayName: string | null;
  createdAt: string;
  updatedAt: string;
}

interface MachineDoc {
  _id: string;
  branch: string;
  gateway: string;
  type: MachineCategory;
  kind: MachineType;
  model: string;
  capabilities: string[];
  location: string | null;
  displayName: string | null;
  createdAt: Date;
  updatedAt: Date;
}

export type ReaderView = GatewayReaderConfig & { branch: string; gateway: string; location: string | null };

interface ReaderDoc {
  _id: string;
  branch: string;
  reader: string;
  gateway: string;
  kind: 'nfc' | 'qr';
  action: 'check-in' | 'check-out' | 'link';
  machine: string | null;
  location: string | null;
  createdAt: Date;
}

const MachineSchema = new Schema<MachineDoc>(
  {
    _id: { type: String, required: true },
    branch: { type: String, required: true, index: true },
    gateway: { type: String, required: true, index: true },
    type: { type: String, required: true },
    kind: { type: String, required: true },
    model: { type: String, required: true },
    capabilities: { type: [String], default: [] },
    location: { type: String, default: null },
    displayName: { type: String, default: null },
    createdAt: { type: Date, required: true },
    updatedAt: { type: Date, required: true },
  },
  { collection: 'equipment_machines', versionKey: false, strict: 'throw' },
);

const ReaderSchema = new Schema<ReaderDoc>(
  {
    _id: { type: String, required: true },
    branch: { type: String, required: true, index: true },
    reader: { type: String, required: true },
    gateway: { type: String, required: true, index: true },
    kind: { type: String, required: true },
    action: { type: String, required: true },
    machine: { type: String, default: null },
    location: { type: String, default: null },
    createdAt: { type: Date, required: true },
  },
  { collection: 'equipment_readers', versionKey: false, strict: 'throw' },
);

export interface MachineInput {
  id: string;
  gateway: string;
  kind: MachineType;
  model: string;
  capabilities: string[];
  location?: string | undefined;
  displayName?: string | undefined;
}

export interface ReaderInput {
  reader: string;
  gateway: string;
  kind: 'nfc' | 'qr';
  action: 'check-in' | 'check-out' | 'link';
  machine?: string | undefined;
  location?: string | undefined;
}

export interface Equipment {
  addMachine(branch: string, input: MachineInput): Promise<{ machine: MachineView; secret: string }>;
  updateMachine(
    branch: string,
    id: string,
    patch: Partial<Pick<MachineInput, 'model' | 'capabilities' | 'location' | 'displayName'>>,
  ): Promise<MachineView>;
  removeMachine(branch: string, id: string): Promise<void>;
  machines(branch: string): Promise<MachineView[]>;
  machine(branch: string, id: string): Promise<MachineView>;
  addReader(branch: string, input: ReaderInput): Promise<ReaderView>;
  removeReader(branch: string, reader: string): Promise<void>;
  readers(branch: string): Promise<ReaderView[]>;
  /**
   * A gateway is being retired: its machines' MQTT identities (registered here or provisioned with the hub CLI) are
   * revoked and its machines and readers leave the registry. Idempotent, so a retirement interrupted half-way is
   * completed by trying again.
   */
  retireGatewayEquipment(branch: string, gateway: string): Promise<{ machines: number; readers: number }>;
  /** What a gateway's configuration holds of the registry: its active machines' secret hashes and its readers. */
  configOf(gateway: string): Promise<{
    machines: { machine: string; secretSha256: string }[];
    readers: GatewayReaderConfig[];
  }>;
}

export interface EquipmentDeps {
  mongo: Connection;
  clock: Clock;
  identities: IdentityStore;
  /** Whether the gateway exists, belongs to `branch` and is enrolled (has its MQTT identity). */
  gatewayOf: (branch: string, gateway: string) => Promise<{ enrolled: boolean } | undefined>;
  onConfigChange: (gateway: string) => void;
}

const machineView = (d: MachineDoc): MachineView => ({
  id: d._id,
  branch: d.branch,
  gateway: d.gateway,
  type: d.type,
  kind: d.kind,
  model: d.model,
  capabilities: [...d.capabilities],
  location: d.location ?? null,
  displayName: d.displayName ?? null,
  createdAt: d.createdAt.toISOString(),
  updatedAt: d.updatedAt.toISOString(),
});

const readerConfig = (d: ReaderDoc): GatewayReaderConfig =>
  (d.action === 'link'
    ? { reader: d.reader, kind: d.kind, action: 'link', machine: d.machine }
    : { reader: d.reader, kind: d.kind, action: d.action }) as GatewayReaderConfig;

const readerView = (d: ReaderDoc): ReaderView => ({
  ...readerConfig(d),
  branch: d.branch,
  gateway: d.gateway,
  location: d.location ?? null,
});

export async function createEquipment(deps: EquipmentDeps): Promise<Equipment> {
  const { mongo, clock, identities, gatewayOf, onConfigChange } = deps;
  const Machine = (mongo.models.EquipmentMachine ??
    mongo.model('EquipmentMachine', MachineSchema)) as Model<MachineDoc>;
  const Reader = (mongo.models.EquipmentReader ?? mongo.model('EquipmentReader', ReaderSchema)) as Model<ReaderDoc>;
  await Promise.all([Machine.init(), Reader.init()]);
  const provisioning = { store: identities, now: () => clock.now() };

  const requireGateway = async (branch: string, gateway: string) => {
    const gw = await gatewayOf(branch, gateway);
    if (!gw) throw new Invalid([{ in: 'body', field: 'gateway', reason: 'no such gateway in this branch' }]);
    return gw;
  };

  const equipment: Equipment = {
    async addMachine(branch, input) {
      const gw = await requireGateway(branch, input.gateway);
      if (!gw.enrolled) {
        throw new Conflict('gateway-not-enrolled', 'enrol the gateway before adding its machines');
      }
      if (await Machine.exists({ _id: input.id })) throw new Conflict('machine-exists', `machine ${input.id} exists`);
      // One more than the signed configuration may list would leave the gateway without any new configuration.
      const onGateway = await identities.list({ role: 'machine', gateway: input.gateway });
      if (onGateway.filter((m) => !m.disabled).length >= MAX_GATEWAY_MACHINES) {
        throw new Conflict('too-many-machines', `a gateway serves at most ${MAX_GATEWAY_MACHINES} machines`);
      }
      let issued;
      try {
        issued = await addMachine(provisioning, { id: input.id, branch, gateway: input.gateway });
      } catch (err) {
        if (err instanceof ProvisioningError) throw new Conflict('machine-not-provisioned', err.message);
        if ((err as Error).name === 'IdentityExists') {
          throw new Conflict('identity-exists', `the id ${input.id} is taken by another identity`);
        }
        throw err;
      }
      const now = clock.now();
      const doc: MachineDoc = {
        _id: input.id,
        branch,
        gateway: input.gateway,
        type: machineCategory(input.kind),
        kind: input.kind,
        model: input.model,
        capabilities: [...new Set(input.capabilities)],
        location: input.location ?? null,
        displayName: input.displayName ?? null,
        createdAt: now,
        updatedAt: now,
      };
      try {
        await Machine.create(doc);
      } catch (err) {
        if (isDuplicateKey(err)) throw new Conflict('machine-exists', `machine ${input.id} exists`);
        throw err;
      }
      onConfigChange(input.gateway);
      return { machine: machineView(doc), secret: issued.secret };
    },
    async updateMachine(branch, id, patch) {
      const set: Record<string, unknown> = { updatedAt: clock.now() };
      for (const key of ['model', 'capabilities', 'location', 'displayName'] as const) {
        if (patch[key] !== undefined) set[key] = patch[key];
      }
      const doc = await Machine.findOneAndUpdate(
        { _id: String(id), branch },
        { $set: set },
        { returnDocument: 'after' },
      ).lean<MachineDoc>();
      if (!doc) throw new NotFound('no such machine');
      return machineView(doc);
    },
    async removeMachine(branch, id) {
      const doc = await Machine.findOne({ _id: String(id), branch }).lean<MachineDoc>();
      if (!doc) throw new NotFound('no such machine');
      await revokeIdentity(provisioning, doc._id).catch((err: unknown) => {
        if (!(err instanceof ProvisioningError)) throw err;
      });
      await Machine.deleteOne({ _id: doc._id });
      // Readers mounted on it go with it.
      await Reader.deleteMany({ branch, machine: doc._id });
      onConfigChange(doc.gateway);
    },
    async machines(branch) {
      const docs = await Machine.find({ branch: String(branch) })
        .sort({ _id: 1 })
        .lean<MachineDoc[]>();
      return docs.map(machineView);
    },
    async machine(branch, id) {
      const doc = await Machine.findOne({ _id: String(id), branch: String(branch) }).lean<MachineDoc>();
      if (!doc) throw new NotFound('no such machine');
      return machineView(doc);
    },
    async addReader(branch, input) {
      await requireGateway(branch, input.gateway);
      if (input.action === 'link') {
        if (!input.machine) {
          throw new Invalid([{ in: 'body', field: 'machine', reason: 'a machine-mounted reader names its machine' }]);
        }
        const machine = await Machine.findOne({ _id: input.machine, branch }).lean<MachineDoc>();
        if (!machine || machine.gateway !== input.gateway) {
          throw new Invalid([{ in: 'body', field: 'machine', reason: 'no such machine on this gateway' }]);
        }
      } else if (input.machine) {
        throw new Invalid([{ in: 'body', field: 'machine', reason: 'only machine-mounted (link) readers name one' }]);
      }
      if ((await Reader.countDocuments({ gateway: input.gateway })) >= MAX_GATEWAY_READERS) {
        throw new Conflict('too-many-readers', `a gateway has at most ${MAX_GATEWAY_READERS} readers`);
      }
      const doc: ReaderDoc = {
        _id: `${branch}/${input.reader}`,
        branch,
        reader: input.reader,
        gateway: input.gateway,
        kind: input.kind,
        action: input.action,
        machine: input.action === 'link' ? input.machine! : null,
        location: input.location ?? null,
        createdAt: clock.now(),
      };
      try {
        await Reader.create(doc);
      } catch (err) {
        if (isDuplicateKey(err)) throw new Conflict('reader-exists', `reader ${input.reader} exists in this branch`);
        throw err;
      }
      onConfigChange(input.gateway);
      return readerView(doc);
    },
    async removeReader(branch, reader) {
      const doc = await Reader.findOneAndDelete({ _id: `${branch}/${reader}` }).lean<ReaderDoc>();
      if (!doc) throw new NotFound('no such reader');
      onConfigChange(doc.gateway);
    },
    async readers(branch) {
      const docs = await Reader.find({ branch: String(branch) })
        .sort({ reader: 1 })
        .lean<ReaderDoc[]>();
      return docs.map(readerView);
    },
    async retireGatewayEquipment(branch, gateway) {
      const machines = (await identities.list({ role: 'machine', gateway: String(gateway) })).filter(
        (m) => !m.disabled && m.branches.includes(branch),
      );
      for (const m of machines) {
        await revokeIdentity(provisioning, m.id).catch((err: unknown) => {
          if (!(err instanceof ProvisioningError)) throw err;
        });
      }
      await Machine.deleteMany({ branch: String(branch), gateway: String(gateway) });
      const readers = await Reader.deleteMany({ branch: String(branch), gateway: String(gateway) });
      return { machines: machines.length, readers: readers.deletedCount };
    },
    async configOf(gateway) {
      const [machines, readers] = await Promise.all([
        identities.list({ role: 'machine', gateway }),
        Reader.find({ gateway: String(gateway) })
          .sort({ reader: 1 })
          .lean<ReaderDoc[]>(),
      ]);
      return {
        machines: machines.filter((m) => !m.disabled).map((m) => ({ machine: m.id, secretSha256: m.secretHash })),
        readers: readers.map(readerConfig),
      };
    },
  };
  return equipment;
}
