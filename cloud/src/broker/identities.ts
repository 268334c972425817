/**
 * MQTT identities (ARCHITECTURE.md, "Identities and credentials"): gateways, machines and observers, each with a
 * 256-bit secret stored only as its SHA-256 hash, in the `mqtt_identities` collection. One collection for every
 * role, keyed by id, so an id names one identity whatever its role (a machine can never share a gateway's id).
 */
import { isDuplicateKey } from '../db/mongo.ts';
import mongoose, { Schema, type Connection, type Model } from 'mongoose';
import { IDENTITY_ROLES, type IdentityRole } from '../../../tools/mqtt/identity.ts';

export interface IdentityRecord {
  id: string;
  role: IdentityRole;
  /** Gateways and machines: exactly one; observers: one or more. */
  branches: string[];
  /** Machines only: the gateway whose broker they connect to. */
  gateway?: string;
  secretHash: string;
  createdAt: Date;
  disabled: boolean;
  disabledAt?: Date;
}

/** An identity as stored: keyed by its id. */
type IdentityDoc = Omit<IdentityRecord, 'id'> & { _id: string };

const IdentitySchema = new Schema<IdentityDoc>(
  {
    _id: { type: String, required: true },
    role: { type: String, enum: IDENTITY_ROLES, required: true },
    branches: { type: [String], required: true },
    gateway: { type: String },
    secretHash: { type: String, required: true },
    createdAt: { type: Date, required: true },
    disabled: { type: Boolean, required: true, default: false },
    disabledAt: { type: Date },
  },
  { collection: 'mqtt_identities', versionKey: false, strict: 'throw' },
);
// The gateway's machine list (`hub gateway machines`) filters on it; the stand-in ignores non-unique indexes.
IdentitySchema.index({ gateway: 1 });

export class IdentityExists extends Error {
  constructor(id: string) {
    super(`identity ${id} already exists`);
    this.name = 'IdentityExists';
  }
}

export interface IdentityStore {
  find(id: string): Promise<IdentityRecord | undefined>;
  /** Throws IdentityExists if the id is taken (by any role, disabled or not). */
  insert(record: IdentityRecord): Promise<void>;
  list(filter?: { role?: IdentityRole; gateway?: string }): Promise<IdentityRecord[]>;
  /** Marks it disabled; false if there is no such identity. */
  disable(id: string, at: Date): Promise<boolean>;
  /** Of the given ids, those that exist and are not disabled. */
  activeAmong(ids: readonly string[]): Promise<Set<string>>;
}

function toRecord(doc: IdentityDoc): IdentityRecord {
  return {
    id: doc._id,
    role: doc.role,
    branches: [...doc.branches],
    ...(doc.gateway === undefined || doc.gateway === null ? {} : { gateway: doc.gateway }),
    secretHash: doc.secretHash,
    createdAt: doc.createdAt,
    disabled: doc.disabled,
    ...(doc.disabledAt ? { disabledAt: doc.disabledAt } : {}),
  };
}

/** Most identities one lookup query asks for. */
const FIND_BATCH = 500;

export function createIdentityStore(mongo: Connection): IdentityStore {
  const Identity = (mongo.models.MqttIdentity ?? mongo.model('MqttIdentity', IdentitySchema)) as Model<IdentityDoc>;
  // Lookups asked for in the same turn of the event loop share one query: a storm of CONNECTs (a fleet coming back
  // after a restart, a load test) costs one round trip per batch instead of one per client (bench:broker measured
  // 343 connects/s against the MongoDB stand-in with one findById per CONNECT).
  let waiting: Map<string, { resolve: (r: IdentityRecord | undefined) => void; reject: (e: unknown) => void }[]> =
    new Map();
  const flush = () => {
    const batch = waiting;
    waiting = new Map();
    const ids = [...batch.keys()];
    for (let i = 0; i < ids.length; i += FIND_BATCH) {
      const chunk = ids.slice(i, i + FIND_BATCH);
      // Ids are validated before a lookup and are strings here; the operator is ours, not input (sanitizeFilter).
      const inIds = mongoose.trusted({ $in: chunk }) as unknown as string;
      Identity.find({ _id: inIds })
        .lean<IdentityDoc[]>()
        .then(
          (docs) => {
            const byId = new Map(docs.map((doc) => [doc._id, doc]));
            for (const id of chunk) {
              const doc = byId.get(id);
              for (const waiter of batch.get(id)!) waiter.resolve(doc ? toRecord(doc) : undefined);
            }
          },
          (err: unknown) => {
            for (const id of chunk) for (const waiter of batch.get(id)!) waiter.reject(err);
          },
        );
    }
  };
  return {
    find(id) {
      const key = String(id);
      return new Promise((resolve, reject) => {
        if (waiting.size === 0) setImmediate(flush);
        const list = waiting.get(key);
        if (list) list.push({ resolve, reject });
        else waiting.set(key, [{ resolve, reject }]);
      });
    },
    async insert(record) {
      try {
        await Identity.create({
          _id: record.id,
          role: record.role,
          branches: record.branches,
          ...(record.gateway === undefined ? {} : { gateway: record.gateway }),
          secretHash: record.secretHash,
          createdAt: record.createdAt,
          disabled: record.disabled,
        });
      } catch (err) {
        if (isDuplicateKey(err)) throw new IdentityExists(record.id);
        throw err;
      }
    },
    async list(filter = {}) {
      const query: Record<string, string> = {};
      if (filter.role) query.role = filter.role;
      if (filter.gateway) query.gateway = filter.gateway;
      const docs = await Identity.find(query).sort({ _id: 1 }).lean<IdentityDoc[]>();
      return docs.map(toRecord);
    },
    async disable(id, at) {
      const res = await Identity.updateOne({ _id: String(id) }, { $set: { disabled: true, disabledAt: at } });
      return res.matchedCount > 0;
    },
    async activeAmong(ids) {
      if (ids.length === 0) return new Set();
      // sanitizeFilter (db/mongo.ts) would neutralise the operator: this one is ours, not input, so mark it trusted.
      const inIds = mongoose.trusted({ $in: ids.map(String) }) as unknown as string;
      const docs = await Identity.find({ _id: inIds, disabled: false }, { _id: 1 }).lean<{ _id: string }[]>();
      return new Set(docs.map((d) => d._id));
    },
  };
}
