/**
 * Gateways of a branch: staff create one and get a one-time enrolment token (256 random bits, stored as SHA-256,
 * expiring, single use); the gateway exchanges it (POST /api/v1/gateways/enrol) for its MQTT identity, issued once
 * through the broker's provisioning, and the keys that verify its signed configuration. The token is consumed by one
 * conditional update, so two racing enrolments with the same token yield one identity.
 *
 * The fleet view is kept from the gateways' births (`gw/{gateway}/state`): online, version, queue by lane, the
 * configuration and allow-list revisions in use, last seen.
 */
import { createHash, randomBytes } from 'node:crypto';
import { Schema, trusted, type Connection, type Model } from 'mongoose';
import type { Clock } from '../../../tools/runtime/clock.ts';
import type { GatewayState } from '../../../protocol/messages/gateway.ts';
import { gatewayStateSupersedes } from '../../../protocol/messages/gateway.ts';
import type { IdentityStore } from '../broker/identities.ts';
import { ProvisioningError, addGateway, revokeIdentity } from '../broker/provisioning.ts';
import { isDuplicateKey } from '../db/mongo.ts';
import { Conflict, NotFound, Unauthorized } from '../http/errors.ts';

/** What is kept of the newest birth or will. */
export interface HeldState {
  online: boolean;
  bootId: string;
  conn: number;
  ts: number;
  since?: number;
  version?: string;
  queue?: Extract<GatewayState, { online: true }>['queue'];
  machinesConnected?: number;
  configRevision?: number;
  allowListRevision?: number;
}

export interface GatewayDoc {
  _id: string;
  branch: string;
  name: string | null;
  createdAt: Date;
  createdBy: string;
  enrolment: { tokenHash: string | null; expiresAt: Date | null; usedAt: Date | null };
  enrolledAt: Date | null;
  hostname: string | null;
  softwareVersion: string | null;
  /** The signed configuration's current revision, the hash of its content and when it was issued. */
  config: { revision: number; hash: string | null; issuedAt: Date | null };
  state: HeldState | null;
  lastSeenAt: Date | null;
}

const GatewaySchema = new Schema<GatewayDoc>(
  {
    _id: { type: String, required: true },
    branch: { type: String, required: true, index: true },
    name: { type: String, default: null },
    createdAt: { type: Date, required: true },
    createdBy: { type: String, required: true },
    enrolment: {
      tokenHash: { type: String, default: null, index: true },
      expiresAt: { type: Date, default: null },
      usedAt: { type: Date, default: null },
    },
    enrolledAt: { type: Date, default: null },
    hostname: { type: String, default: null },
    softwareVersion: { type: String, default: null },
    config: {
      revision: { type: Number, required: true, default: 0 },
      hash: { type: String, default: null },
      issuedAt: { type: Date, default: null },
    },
    state: { type: Schema.Types.Mixed, default: null },
    lastSeenAt: { type: Date, default: null },
  },
  { collection: 'gateways', versionKey: false, strict: 'throw', minimize: false },
);

/** A gateway document as created: nothing seen of it yet, configuration not issued. */
function newGatewayDoc(
  init: Pick<GatewayDoc, 'branch' | 'createdAt' | 'createdBy'> & { id: string } & Partial<
      Pick<GatewayDoc, 'name' | 'enrolment' | 'enrolledAt'>
    >,
): GatewayDoc {
  return {
    _id: init.id,
    branch: init.branch,
    name: init.name ?? null,
    createdAt: init.createdAt,
    createdBy: init.createdBy,
    enrolment: init.enrolment ?? { tokenHash: null, expiresAt: null, usedAt: null },
    enrolledAt: init.enrolledAt ?? null,
    hostname: null,
    softwareVersion: null,
    config: { revision: 0, hash: null, issuedAt: null },
    state: null,
    lastSeenAt: null,
  };
}

export const hashToken = (token: string) => createHash('sha256').update(token, 'utf8').digest('hex');

export interface GatewayStore {
  Gateway: Model<GatewayDoc>;
  create(input: { branch: string; id: string; name?: string; by: string; ttlS: number }): Promise<{
    gateway: GatewayDoc;
    token: string;
  }>;
  /** A new token for a gateway not yet enrolled (the old one stops working). */
  reissueToken(branch: string, id: string, ttlS: number): Promise<{ gateway: GatewayDoc; token: string }>;
  /** Consumes the token and issues the MQTT identity; 401 for a token unknown, used or expired. */
  enrol(input: {
    token: string;
    version: string;
    hostname?: string | undefined;
  }): Promise<{ gateway: GatewayDoc; secret: string }>;
  get(id: string): Promise<GatewayDoc | undefined>;
  ofBranch(branch: string): Promise<GatewayDoc[]>;
  /** Branches that have at least one enrolled gateway. */
  branchesWithGateways(): Promise<string[]>;
  /** Revokes the gateway's identity and removes it. */
  remove(branch: string, id: string): Promise<void>;
  /** A command's revision was confirmed by the gateway: it is in use (never moves backwards). */
  noteRevisionInUse(id: string, kind: 'config' | 'allow-list', revision: number): Promise<void>;
  /** Applies a birth or will if it supersedes what is held; returns the stored document when applied. */
  applyState(id: string, branch: string, state: GatewayState, atMs: number): Promise<GatewayDoc | undefined>;
}

export async function createGatewayStore({
  mongo,
  clock,
  identities,
}: {
  mongo: Connection;
  clock: Clock;
  identities: IdentityStore;
}): Promise<GatewayStore> {
  const Gateway = (mongo.models.Gateway ?? mongo.model('Gateway', GatewaySchema)) as Model<GatewayDoc>;
  await Gateway.init();
  const provisioning = { store: identities, now: () => clock.now() };
  const newToken = () => randomBytes(32).toString('base64url');

  /**
   * A gateway provisioned with `npm run hub` (the demo branch, scripted installs) has an MQTT identity but was never
   * created here: at its first birth it joins the fleet as enrolled, so it gets its signed configuration too.
   */
  const adopt = async (id: string, branch: string): Promise<GatewayDoc | undefined> => {
    const identity = await identities.find(id);
    if (!identity || identity.role !== 'gateway' || identity.disabled || !identity.branches.includes(branch)) {
      return undefined;
    }
    const doc = newGatewayDoc({
      id,
      branch,
      createdAt: identity.createdAt,
      createdBy: 'provisioning',
      enrolledAt: identity.createdAt,
    });
    try {
      await Gateway.create(doc);
    } catch (err) {
      if (!isDuplicateKey(err)) throw err;
    }
    return (await Gateway.findOne({ _id: id, branch }).lean<GatewayDoc>()) ?? undefined;
  };

  return {
    Gateway,
    async create({ branch, id, name, by, ttlS }) {
      if (await identities.find(id)) throw new Conflict('gateway-exists', `the id ${id} is taken`);
      const token = newToken();
      const now = clock.now();
      const doc = newGatewayDoc({
        id,
        branch,
        name: name ?? null,
        createdAt: now,
        createdBy: by,
        enrolment: { tokenHash: hashToken(token), expiresAt: new Date(now.getTime() + ttlS * 1000), usedAt: null },
      });
      try {
        await Gateway.create(doc);
      } catch (err) {
        if (isDuplicateKey(err)) throw new Conflict('gateway-exists', `a gateway ${id} exists`);
        throw err;
      }
      return { gateway: doc, token };
    },
    async reissueToken(branch, id, ttlS) {
      const token = newToken();
      const now = clock.now();
      const doc = await Gateway.findOneAndUpdate(
        { _id: String(id), branch: String(branch), enrolledAt: null },
        {
          $set: {
            enrolment: { tokenHash: hashToken(token), expiresAt: new Date(now.getTime() + ttlS * 1000), usedAt: null },
          },
        },
        { returnDocument: 'after' },
      ).lean<GatewayDoc>();
      if (!doc) {
        if (await Gateway.exists({ _id: String(id), branch: String(branch) })) {
          throw new Conflict('gateway-enrolled', 'this gateway is enrolled; retire it and create a new one');
        }
        throw new NotFound('no such gateway');
      }
      return { gateway: doc, token };
    },
    async enrol({ token, version, hostname }) {
      const now = clock.now();
      // One conditional update consumes the token, expiry included: of two racing enrolments one claims it, and an
      // unknown, used or expired token fails here alike (one 401 that does not say which).
      const claimed = await Gateway.findOneAndUpdate(
        {
          'enrolment.tokenHash': hashToken(token),
          'enrolment.usedAt': null,
          'enrolment.expiresAt': trusted({ $gt: now }),
          enrolledAt: null,
        },
        { $set: { 'enrolment.usedAt': now, softwareVersion: version, hostname: hostname ?? null } },
        { returnDocument: 'after' },
      ).lean<GatewayDoc>();
      if (!claimed) throw new Unauthorized('the enrolment token is invalid, used or expired');
      let issued;
      try {
        issued = await addGateway(provisioning, { id: claimed._id, branch: claimed.branch });
      } catch (err) {
        // No identity: the token stays used (it may have leaked), the gateway stays not enrolled, and staff may
        // issue a new token.
        if (err instanceof ProvisioningError || (err as Error).name === 'IdentityExists') {
          throw new Conflict('gateway-identity-exists', 'the gateway id is taken by another MQTT identity');
        }
        throw err;
      }
      // Enrolled only once the identity exists, so a failure before this point leaves a gateway that can be given
      // a new token rather than one that looks enrolled without credentials.
      const gateway = await Gateway.findOneAndUpdate(
        { _id: claimed._id },
        { $set: { enrolledAt: now } },
        { returnDocument: 'after' },
      ).lean<GatewayDoc>();
      return { gateway: gateway ?? { ...claimed, enrolledAt: now }, secret: issued.secret };
    },
    async get(id) {
      return (await Gateway.findById(String(id)).lean<GatewayDoc>()) ?? undefined;
    },
    async ofBranch(branch) {
      return Gateway.find({ branch: String(branch) })
        .sort({ _id: 1 })
        .lean<GatewayDoc[]>();
    },
    async branchesWithGateways() {
      const docs = await Gateway.find({ enrolledAt: trusted({ $ne: null }) }, { branch: 1 }).lean<GatewayDoc[]>();
      return [...new Set(docs.map((d) => d.branch))].sort();
    },
    async remove(branch, id) {
      const doc = await Gateway.findOne({ _id: String(id), branch: String(branch) }).lean<GatewayDoc>();
      if (!doc) throw new NotFound('no such gateway');
      if (doc.enrolledAt) {
        await revokeIdentity(provisioning, doc._id).catch((err: unknown) => {
          if (!(err instanceof ProvisioningError)) throw err;
        });
      }
      await Gateway.deleteOne({ _id: doc._id });
    },
    async noteRevisionInUse(id, kind, revision) {
      const field = kind === 'config' ? 'state.configRevision' : 'state.allowListRevision';
      await Gateway.updateOne({ _id: String(id), 'state.online': true }, { $max: { [field]: revision } });
    },
    async applyState(id, branch, state, atMs) {
      // Compare-and-set on the held (bootId, conn, ts): a birth and a late will racing apply in protocol order.
      for (let attempt = 0; attempt < 5; attempt++) {
        const doc =
          (await Gateway.findOne({ _id: String(id), branch: String(branch) }).lean<GatewayDoc>()) ??
          (await adopt(id, branch));
        if (!doc) return undefined;
        const held = doc.state ?? undefined;
        if (!gatewayStateSupersedes(state, held as Parameters<typeof gatewayStateSupersedes>[1])) return undefined;
        const next: HeldState = state.online
          ? {
              online: true,
              bootId: state.bootId,
              conn: state.conn,
              ts: state.ts,
              since: state.since,
              version: state.version,
              queue: state.queue,
              machinesConnected: state.machinesConnected,
              ...(state.configRevision !== undefined ? { configRevision: state.configRevision } : {}),
              ...(state.allowListRevision !== undefined ? { allowListRevision: state.allowListRevision } : {}),
            }
          : {
              online: false,
              bootId: state.bootId,
              conn: state.conn,
              ts: state.ts,
              ...(state.since !== undefined ? { since: state.since } : {}),
              // What the gateway last reported stays visible while it is away.
              ...(held?.version !== undefined ? { version: held.version } : {}),
              ...(held?.queue !== undefined ? { queue: held.queue } : {}),
              ...(held?.configRevision !== undefined ? { configRevision: held.configRevision } : {}),
              ...(held?.allowListRevision !== undefined ? { allowListRevision: held.allowListRevision } : {}),
            };
        const set: Record<string, unknown> = { state: next, lastSeenAt: new Date(atMs) };
        if (state.online) set.softwareVersion = state.version;
        const filter: Record<string, unknown> = { _id: doc._id };
        // The stand-in has no `$eq` on a missing sub-document: match the held state's identity fields instead.
        if (held) {
          filter['state.bootId'] = held.bootId;
          filter['state.conn'] = held.conn;
          filter['state.ts'] = held.ts;
        } else filter.state = null;
        const updated = await Gateway.findOneAndUpdate(
          filter,
          { $set: set },
          { returnDocument: 'after' },
        ).lean<GatewayDoc>();
        if (updated) return updated;
      }
      return undefined;
    },
  };
}
