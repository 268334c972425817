/**
 * NFC cards enrolled to members. A card is stored as the SHA-256 of its lowercase hex UID (what the gateway hashes
 * too, so the allow-list carries hashes only) plus the last four hex digits for display; the raw UID is never stored
 * or logged. A UID belongs to at most one member (unique index on the hash). Members see and block their own cards;
 * a blocked card stays (so the member sees it) but no longer opens anything and leaves the allow-list.
 */
import { createHash, randomBytes } from 'node:crypto';
import { Schema, trusted, type Connection, type Model } from 'mongoose';
import type { Clock } from '../../../tools/runtime/clock.ts';
import { MAX_MEMBER_CARDS } from '../../../protocol/messages/command.ts';
import { isDuplicateKey } from '../db/mongo.ts';
import { Conflict, NotFound } from '../http/errors.ts';

/** SHA-256 of the UID as lowercase hex, UTF-8 — the allow-list's `nfc` entries (protocol AllowListDocument). */
export function cardUidHash(uid: string): string {
  return createHash('sha256').update(uid.toLowerCase(), 'utf8').digest('hex');
}

export interface CardView {
  id: string;
  /** The UID's last four hex digits, for the member to recognise the card. */
  last4: string;
  label: string | null;
  blocked: boolean;
  blockedAt: string | null;
  enrolledAt: string;
}

interface CardDoc {
  _id: string;
  userId: string;
  uidHash: string;
  last4: string;
  label: string | null;
  blocked: boolean;
  blockedAt: Date | null;
  enrolledAt: Date;
  enrolledBy: string;
}

const CardSchema = new Schema<CardDoc>(
  {
    _id: { type: String, required: true },
    userId: { type: String, required: true, index: true },
    uidHash: { type: String, required: true, unique: true },
    last4: { type: String, required: true },
    label: { type: String, default: null },
    blocked: { type: Boolean, required: true, default: false },
    blockedAt: { type: Date, default: null },
    enrolledAt: { type: Date, required: true },
    enrolledBy: { type: String, required: true },
  },
  { collection: 'access_cards', versionKey: false, strict: 'throw' },
);

export interface CardStore {
  enrol(input: { userId: string; uid: string; label?: string; by: string }): Promise<CardView>;
  /** The member's cards, newest first. */
  list(userId: string): Promise<CardView[]>;
  /**
   * Blocks the member's card; NotFound when it is not theirs (or does not exist). Idempotent: `changed` is false
   * when it was blocked already (nothing to audit or push again).
   */
  block(userId: string, cardId: string): Promise<{ card: CardView; changed: boolean }>;
  /** The card with this UID hash: its member and whether it is blocked. */
  findByHash(uidHash: string): Promise<{ userId: string; blocked: boolean } | undefined>;
  /** Unblocked card hashes of the given members (at most MAX_MEMBER_CARDS each, newest first). */
  activeHashesOf(userIds: readonly string[]): Promise<Map<string, string[]>>;
  /** Removes every card of a member (GDPR deletion); returns how many. */
  deleteAllOf(userId: string): Promise<number>;
}

const toView = (d: CardDoc): CardView => ({
  id: d._id,
  last4: d.last4,
  label: d.label ?? null,
  blocked: d.blocked,
  blockedAt: d.blockedAt ? d.blockedAt.toISOString() : null,
  enrolledAt: d.enrolledAt.toISOString(),
});

/** Members' ids per query when reading the allow-list's cards (bounded `$in`). */
const IN_CHUNK = 1000;

export async function createCardStore({ mongo, clock }: { mongo: Connection; clock: Clock }): Promise<CardStore> {
  const Card = (mongo.models.AccessCard ?? mongo.model('AccessCard', CardSchema)) as Model<CardDoc>;
  await Card.init();
  return {
    async enrol({ userId, uid, label, by }) {
      const active = await Card.countDocuments({ userId, blocked: false });
      if (active >= MAX_MEMBER_CARDS) {
        throw new Conflict('too-many-cards', `a member may hold at most ${MAX_MEMBER_CARDS} active cards`);
      }
      const lower = uid.toLowerCase();
      const doc: CardDoc = {
        _id: randomBytes(12).toString('base64url'),
        userId,
        uidHash: cardUidHash(lower),
        last4: lower.slice(-4),
        label: label ?? null,
        blocked: false,
        blockedAt: null,
        enrolledAt: clock.now(),
        enrolledBy: by,
      };
      try {
        await Card.create(doc);
      } catch (err) {
        if (isDuplicateKey(err)) throw new Conflict('card-enrolled', 'this card is already enrolled');
        throw err;
      }
      return toView(doc);
    },
    async list(userId) {
      const docs = await Card.find({ userId: String(userId) })
        .sort({ enrolledAt: -1 })
        .lean<CardDoc[]>();
      return docs.map(toView);
    },
    async block(userId, cardId) {
      // Conditional on `blocked: false`, so of two racing blocks one changes the card (and is audited and pushed).
      const updated = await Card.findOneAndUpdate(
        { _id: String(cardId), userId: String(userId), blocked: false },
        { $set: { blocked: true, blockedAt: clock.now() } },
        { returnDocument: 'after' },
      ).lean<CardDoc>();
      if (updated) return { card: toView(updated), changed: true };
      const doc = await Card.findOne({ _id: String(cardId), userId: String(userId) }).lean<CardDoc>();
      if (!doc) throw new NotFound('no such card');
      return { card: toView(doc), changed: false };
    },
    async findByHash(uidHash) {
      const doc = await Card.findOne({ uidHash: String(uidHash) }, { userId: 1, blocked: 1 }).lean<CardDoc>();
      return doc ? { userId: doc.userId, blocked: doc.blocked } : undefined;
    },
    async activeHashesOf(userIds) {
      const out = new Map<string, string[]>();
      for (let i = 0; i < userIds.length; i += IN_CHUNK) {
        const chunk = userIds.slice(i, i + IN_CHUNK).map(String);
        const docs = await Card.find(
          { userId: trusted({ $in: chunk }), blocked: false },
          { userId: 1, uidHash: 1, enrolledAt: 1 },
        )
          .sort({ enrolledAt: -1 })
          .lean<CardDoc[]>();
        for (const d of docs) {
          const list = out.get(d.userId) ?? [];
          if (list.length < MAX_MEMBER_CARDS) list.push(d.uidHash);
          out.set(d.userId, list);
        }
      }
      for (const list of out.values()) list.sort();
      return out;
    },
    async deleteAllOf(userId) {
      return (await Card.deleteMany({ userId: String(userId) })).deletedCount;
    },
  };
}
