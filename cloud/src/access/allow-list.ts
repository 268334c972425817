/**
 * A branch's allow-list for offline decisions: the members with an ACTIVE membership of the branch (with its
 * `validUntil`) and their unblocked card hashes, split in parts of at most MAX_ALLOW_LIST_PART_MEMBERS, each part a signed AllowListDocument (ES256 JWS,
 * typ nxg-allow-list+jwt). The gateway switches to a revision only when it holds every part.
 *
 * Versioned by content: `refresh(branch)` builds the list, hashes it and moves the branch's revision on (a
 * compare-and-set on the revision read before the build, see refreshWith) when the content changed or the current
 * revision is older than half the gateways' allowListMaxAgeS (a list that never changes must still not expire on the
 * gateway). Revisions come from nextRevision (gateways/revisions.ts), so they keep increasing even if the state
 * document is lost. Grants and ends through the membership routes refresh at once, as do card changes (debounced
 * by the caller); a periodic sweep refreshes every branch with gateways (memberships reaching validUntil, members
 * who left through account deletion).
 */
import { createHash } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { Schema, type Connection, type Model } from 'mongoose';
import type { Clock } from '../../../tools/runtime/clock.ts';
import type { BranchId, UserId } from '../../../protocol/ids.ts';
import { JWS_TYPES, signJws } from '../../../protocol/jws.ts';
import {
  MAX_ALLOW_LIST_PART_MEMBERS,
  MAX_ALLOW_LIST_PARTS,
  type AllowListDocument,
} from '../../../protocol/messages/command.ts';
import { isDuplicateKey } from '../db/mongo.ts';
import { nextRevision } from '../gateways/revisions.ts';
import type { CardStore } from './cards.ts';

interface AllowListStateDoc {
  _id: string;
  revision: number;
  hash: string;
  issuedAt: Date;
}

const AllowListStateSchema = new Schema<AllowListStateDoc>(
  {
    _id: { type: String, required: true },
    revision: { type: Number, required: true },
    hash: { type: String, required: true },
    issuedAt: { type: Date, required: true },
  },
  { collection: 'access_allow_lists', versionKey: false, strict: 'throw' },
);

export interface AllowListRevision {
  branch: string;
  revision: number;
  issuedAtMs: number;
}

export interface SignedAllowList extends AllowListRevision {
  /** One compact JWS per part, in part order. */
  parts: string[];
  members: number;
}

export interface AllowLists {
  /** Rebuilds the branch's list; a new revision when its content changed or it is getting old. */
  refresh(branch: string): Promise<{ current: AllowListRevision; changed: boolean }>;
  /** The current revision (refreshed first), signed in parts. */
  signed(branch: string): Promise<SignedAllowList>;
  /** The revision held now, without rebuilding (undefined: never built). */
  current(branch: string): Promise<AllowListRevision | undefined>;
}

export interface AllowListDeps {
  mongo: Connection;
  clock: Clock;
  cards: Pick<CardStore, 'activeHashesOf'>;
  /** The branch's ACTIVE members (requests and ended memberships excluded), with the membership's end. */
  memberships: { activeMembersOf(branchId: string): Promise<{ userId: string; validUntilMs?: number }[]> };
  signingKey: () => { kid: string; privateKey: KeyObject };
  /** The gateways' allowListMaxAgeS: a revision older than half of it is re-issued. */
  maxAgeS: number;
}

type Members = AllowListDocument['members'];

/** Builds one refresh may make while other nodes keep moving the revision on before it gives up (and throws). */
const MAX_REFRESH_ATTEMPTS = 5;

export async function createAllowLists(deps: AllowListDeps): Promise<AllowLists> {
  const { mongo, clock, cards, memberships, signingKey, maxAgeS } = deps;
  const State = (mongo.models.AllowListState ??
    mongo.model('AllowListState', AllowListStateSchema)) as Model<AllowListStateDoc>;
  await State.init();

  const build = async (branch: string): Promise<{ members: Members; hash: string }> => {
    const validUntil = new Map<string, number | undefined>();
    for (const m of await memberships.activeMembersOf(branch)) validUntil.set(m.userId, m.validUntilMs);
    const userIds = [...validUntil.keys()].sort();
    const hashes = await cards.activeHashesOf(userIds);
    // validUntil: the gateway refuses the member offline from then on, even before the next revision arrives.
    const members: Members = userIds.map((userId) => {
      const until = validUntil.get(userId);
      return {
        userId: userId as UserId,
        ...(until !== undefined ? { validUntil: until } : {}),
        nfc: hashes.get(userId) ?? [],
      };
    });
    const hash = createHash('sha256').update(JSON.stringify(members)).digest('hex');
    return { members, hash };
  };

  const toRevision = (d: AllowListStateDoc): AllowListRevision => ({
    branch: d._id,
    revision: d.revision,
    issuedAtMs: d.issuedAt.getTime(),
  });

  /**
   * Builds the branch's list and makes it the current revision if it differs from the held one (or the held one is
   * getting old). Optimistic concurrency without transactions: the held state is read BEFORE the build, and the
   * new revision is written only if nobody moved it on meanwhile (compare-and-set on the revision read). When the
   * write loses, the list is built again: a build that started before a card was blocked can never become a newer
   * revision than the list that already left the card out, and one revision is never signed with two contents (API
   * nodes racing each other, or one node's debounce racing its sweep).
   */
  const refreshWith = async (
    branch: string,
  ): Promise<{ current: AllowListRevision; changed: boolean; members: Members }> => {
    for (let attempt = 0; attempt < MAX_REFRESH_ATTEMPTS; attempt++) {
      const held = await State.findById(branch).lean<AllowListStateDoc>();
      const { members, hash } = await build(branch);
      const now = clock.now();
      if (held && held.hash === hash && now.getTime() - held.issuedAt.getTime() < (maxAgeS * 1000) / 2) {
        // Unchanged — unless another node moved the revision on during the build: then this build may be the stale
        // one, and answering the older revision would push a list that is already superseded.
        if (await State.exists({ _id: branch, revision: held.revision })) {
          return { current: toRevision(held), changed: false, members };
        }
        continue;
      }
      const revision = nextRevision(held?.revision ?? 0, now.getTime());
      if (!held) {
        try {
          const created = await State.create({ _id: branch, revision, hash, issuedAt: now });
          return { current: toRevision(created.toObject()), changed: true, members };
        } catch (err) {
          if (!isDuplicateKey(err)) throw err;
          continue; // another node created it first: build again against theirs
        }
      }
      const updated = await State.findOneAndUpdate(
        { _id: branch, revision: held.revision },
        { $set: { revision, hash, issuedAt: now } },
        { returnDocument: 'after' },
      ).lean<AllowListStateDoc>();
      if (updated) return { current: toRevision(updated), changed: true, members };
    }
    throw new Error(`allow-list of ${branch}: the revision kept moving under ${MAX_REFRESH_ATTEMPTS} builds`);
  };

  const sign = (branch: string, current: AllowListRevision, members: Members): SignedAllowList => {
    const parts = Math.max(1, Math.ceil(members.length / MAX_ALLOW_LIST_PART_MEMBERS));
    if (parts > MAX_ALLOW_LIST_PARTS) throw new Error(`allow-list of ${branch} needs ${parts} parts`);
    const key = signingKey();
    const jws: string[] = [];
    for (let part = 0; part < parts; part++) {
      const doc: AllowListDocument = {
        branch: branch as BranchId,
        revision: current.revision,
        part,
        parts,
        issuedAt: current.issuedAtMs,
        members: members.slice(part * MAX_ALLOW_LIST_PART_MEMBERS, (part + 1) * MAX_ALLOW_LIST_PART_MEMBERS),
      };
      jws.push(signJws(JWS_TYPES.allowList, doc, key));
    }
    return { ...current, parts: jws, members: members.length };
  };

  return {
    async refresh(branch) {
      const { current, changed } = await refreshWith(branch);
      return { current, changed };
    },
    async signed(branch) {
      const { current, members } = await refreshWith(branch);
      return sign(branch, current, members);
    },
    async current(branch) {
      const held = await State.findById(branch).lean<AllowListStateDoc>();
      return held ? toRevision(held) : undefined;
    },
  };
}
