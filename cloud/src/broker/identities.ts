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
/**
 * Lookup queries in flight at once; lookups asked for meanwhile gather into the next batch. Each CONNECT arrives in
 * an event-loop turn of its own, so batching per turn alone made one query per CONNECT in a storm, and the queries'
 * round trips were the largest part of the broker's CPU (docs/benchmarks.md, "Broker"); with one query out at a
 * time a batch holds what arrived during the last round trip.
 */
const MAX_FINDS_IN_FLIGHT = 1;
/** A query slower than this stops holding its slot (it still answers its callers): a stall must not stop lookups. */
const FIND_SLOT_MS = 2000;

type Waiter = { resolve: (r: IdentityRecord | undefined) => void; reject: (e: unknown) => void };

export function createIdentityStore(mongo: Connection): IdentityStore {
  const Identity = (mongo.models.MqttIdentity ?? mongo.model('MqttIdentity', IdentitySchema)) as Model<IdentityDoc>;
  // Lookups share queries: the first one goes out at the next turn of the event loop with whatever else was asked
  // for by then; while MAX_FINDS_IN_FLIGHT queries are out, further lookups gather into the next batch. A storm of
  // CONNECTs (a fleet coming back after a restart, a load test) then costs one round trip per batch, not per client.
  let waiting = new Map<string, Waiter[]>();
  let inFlight = 0;
  let scheduled = false;
  const schedule = () => {
    if (scheduled || waiting.size === 0 || inFlight >= MAX_FINDS_IN_FLIGHT) return;
    scheduled = true;
    setImmediate(flush);
  };
  const query = (batch: Map<string, Waiter[]>) => {
    inFlight += 1;
    let held = true;
    const release = () => {
      if (!held) return;
      held = false;
      clearTimeout(slot);
      inFlight -= 1;
      schedule();
    };
    const slot = setTimeout(release, FIND_SLOT_MS);
    slot.unref();
    // Ids are validated before a lookup and are strings here; the operator is ours, not input (sanitizeFilter).
    const inIds = mongoose.trusted({ $in: [...batch.keys()] }) as unknown as string;
    Identity.find({ _id: inIds })
      .lean<IdentityDoc[]>()
      .then(
        (docs) => {
          release();
          const byId = new Map(docs.map((doc) => [doc._id, doc]));
          for (const [id, waiters] of batch) {
            const doc = byId.get(id);
            for (const waiter of waiters) waiter.resolve(doc ? toRecord(doc) : undefined);
          }
        },
        (err: unknown) => {
          release();
          for (const waiters of batch.values()) for (const waiter of waiters) waiter.reject(err);
        },
      );
  };
  const flush = () => {
    scheduled = false;
    while (waiting.size > 0 && inFlight < MAX_FINDS_IN_FLIGHT) {
      let batch = waiting;
      if (batch.size <= FIND_BATCH) {
        waiting = new Map();
      } else {
        batch = new Map();
        for (const [id, waiters] of waiting) {
          if (batch.size === FIND_BATCH) break;
          batch.set(id, waiters);
        }
        for (const id of batch.keys()) waiting.delete(id);
      }
      query(batch);
    }
  };
  return {
    find(id) {
      const key = String(id);
      return new Promise((resolve, reject) => {
        const list = waiting.get(key);
        if (list) list.push({ resolve, reject });
        else waiting.set(key, [{ resolve, reject }]);
        schedule();
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
