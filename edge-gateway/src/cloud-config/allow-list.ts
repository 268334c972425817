/**
 * The branch's allow-list for offline decisions (`gw/{gateway}/cmd/allow-list`, protocol AllowListCommand): a
 * revision arrives as `parts` signed parts (≤ 400 members each), each an ES256 JWS of typ `nxg-allow-list+jwt`
 * verified with the cloud's configuration keys. Parts of a revision are held until every one is there; only then
 * does the gateway switch to it, so it never decides on half a list. A part of an older revision than the one in
 * use is answered `stale-revision`; the same revision again (the cloud re-signing an unchanged list with a fresh
 * `issuedAt`) replaces it once complete, which keeps it from going stale.
 *
 * The revision in use is kept on disk (`allow-list.json`: the revision and its JWS parts, 0600, atomic) and
 * verified again at start. Parts of an incomplete revision live in memory only: after a restart the birth still
 * names the old revision and the cloud sends the new one again.
 *
 * Age: the oldest `issuedAt` among the parts in use. Past `allowListMaxAgeS` (signed configuration) the list is
 * stale and offline decisions deny with `allow-list-stale`.
 */
import * as v from 'valibot';
import { AllowListDocument, JWS_TYPES, verifyJws } from '../../../protocol/index.ts';
import type { AllowListCommand, BranchId, UserId } from '../../../protocol/index.ts';
import type { Logger } from '../../../tools/runtime/logger.ts';
import { readOptional, writeFileAtomic } from './files.ts';
import type { Keyring } from './keys.ts';
import { OK, jwsRefusal, refused, type CommandOutcome } from './outcome.ts';

/** Used when the signed configuration sets no `allowListMaxAgeS`: one day. */
export const DEFAULT_ALLOW_LIST_MAX_AGE_S = 86_400;

export interface AllowListMember {
  readonly userId: UserId;
  /** Membership end, ms; undefined: open-ended. */
  readonly validUntil: number | undefined;
}

export interface AllowListOptions {
  /** Where the revision in use is kept, e.g. `${GATEWAY_DATA_DIR}/allow-list.json`. */
  readonly file: string;
  readonly branch: BranchId;
  readonly keys: Keyring;
  readonly nowMs: () => number;
  readonly log: Logger;
}

export interface AllowList {
  readonly revision: number | undefined;
  /** Members in the revision in use. */
  readonly size: number;
  /** The oldest issuedAt of the parts in use, ms; undefined without a list. */
  readonly issuedAt: number | undefined;
  /** Reads and verifies the stored revision; one that does not verify is reported and not used. */
  load(): Promise<void>;
  apply(command: Pick<AllowListCommand, 'revision' | 'part' | 'parts' | 'jws' | 'expiresAt'>): Promise<CommandOutcome>;
  /** The member holding the card whose UID hashes to `uidSha256` (lowercase hex). */
  byCard(uidSha256: string): AllowListMember | undefined;
  byUser(userId: string): AllowListMember | undefined;
  /** Called each time a revision is put in use. */
  onChange(listener: (revision: number) => void): void;
}

interface VerifiedPart {
  readonly jws: string;
  readonly document: AllowListDocument;
}

type PartResult = { ok: true; part: VerifiedPart } | { ok: false; outcome: CommandOutcome };

function verifyPart(
  jws: string,
  keys: Keyring,
  expected: { branch: BranchId; revision: number; part: number; parts: number },
): PartResult {
  const checked = verifyJws(jws, JWS_TYPES.allowList, keys.keyFor);
  if (!checked.ok) return { ok: false, outcome: jwsRefusal(checked.reason) };
  const parsed = v.safeParse(AllowListDocument, checked.payload);
  if (!parsed.success) {
    const where = v.getDotPath(parsed.issues[0]) ?? '(document)';
    return { ok: false, outcome: refused('invalid', `allow-list document: ${where}: ${parsed.issues[0].message}`) };
  }
  const document = parsed.output;
  if (document.branch !== expected.branch) {
    return { ok: false, outcome: refused('invalid', 'the allow-list is for another branch') };
  }
  if (document.revision !== expected.revision || document.part !== expected.part || document.parts !== expected.parts) {
    return { ok: false, outcome: refused('invalid', 'revision, part or parts differ from the signed document’s') };
  }
  return { ok: true, part: { jws, document } };
}

const StoredList = v.object({
  revision: v.pipe(v.number(), v.safeInteger(), v.minValue(0)),
  parts: v.pipe(v.array(v.string()), v.minLength(1)),
});

export function createAllowList(options: AllowListOptions): AllowList {
  const { file, keys, log, branch } = options;
  const listeners: ((revision: number) => void)[] = [];
  let revision: number | undefined;
  let issuedAt: number | undefined;
  let cards = new Map<string, AllowListMember>();
  let users = new Map<string, AllowListMember>();
  let pending: { revision: number; parts: number; got: (VerifiedPart | undefined)[]; count: number } | undefined;
  let chain: Promise<unknown> = Promise.resolve();

  function use(nextRevision: number, parts: readonly VerifiedPart[]): void {
    const nextCards = new Map<string, AllowListMember>();
    const nextUsers = new Map<string, AllowListMember>();
    let oldest = Number.POSITIVE_INFINITY;
    for (const { document } of parts) {
      oldest = Math.min(oldest, document.issuedAt);
      for (const m of document.members) {
        const member: AllowListMember = { userId: m.userId, validUntil: m.validUntil };
        nextUsers.set(m.userId, member);
        for (const hash of m.nfc) nextCards.set(hash, member);
      }
    }
    revision = nextRevision;
    issuedAt = oldest;
    cards = nextCards;
    users = nextUsers;
    for (const listener of listeners) {
      try {
        listener(nextRevision);
      } catch (err) {
        log.error({ err, revision: nextRevision }, 'allow-list listener failed');
      }
    }
  }

  async function applyNow(
    command: Pick<AllowListCommand, 'revision' | 'part' | 'parts' | 'jws' | 'expiresAt'>,
  ): Promise<CommandOutcome> {
    if (command.expiresAt !== undefined && command.expiresAt < options.nowMs()) {
      return refused('expired', 'the command expired before it arrived');
    }
    const checked = verifyPart(command.jws, keys, { branch, ...command });
    if (!checked.ok) return checked.outcome;
    if (revision !== undefined && command.revision < revision) {
      return refused('stale-revision', `revision ${command.revision} is older than ${revision} in use`);
    }
    if (pending !== undefined && command.revision < pending.revision) {
      return refused('stale-revision', `revision ${pending.revision} is already arriving`);
    }
    if (pending === undefined || pending.revision !== command.revision || pending.parts !== command.parts) {
      pending = {
        revision: command.revision,
        parts: command.parts,
        got: new Array<VerifiedPart | undefined>(command.parts),
        count: 0,
      };
    }
    if (pending.got[command.part] === undefined) pending.count += 1;
    pending.got[command.part] = checked.part;
    if (pending.count < pending.parts) return OK;
    const complete = pending.got as VerifiedPart[];
    const completeRevision = pending.revision;
    pending = undefined;
    try {
      await writeFileAtomic(file, JSON.stringify({ revision: completeRevision, parts: complete.map((p) => p.jws) }));
    } catch (err) {
      log.error({ err, file }, 'allow-list not stored');
      return refused('failed', 'the allow-list could not be stored');
    }
    use(completeRevision, complete);
    log.info({ revision: completeRevision, parts: complete.length, members: users.size }, 'allow-list in use');
    return OK;
  }

  return {
    get revision() {
      return revision;
    },
    get size() {
      return users.size;
    },
    get issuedAt() {
      return issuedAt;
    },
    async load() {
      const text = await readOptional(file);
      if (text === undefined) return;
      let stored: v.InferOutput<typeof StoredList>;
      try {
        stored = v.parse(StoredList, JSON.parse(text));
      } catch {
        log.error({ file }, 'stored allow-list refused: unreadable');
        return;
      }
      const parts: VerifiedPart[] = [];
      for (const [index, jws] of stored.parts.entries()) {
        const checked = verifyPart(jws, keys, {
          branch,
          revision: stored.revision,
          part: index,
          parts: stored.parts.length,
        });
        if (!checked.ok) {
          log.error(
            { file, part: index, reason: checked.outcome.ok ? undefined : checked.outcome.error.code },
            'stored allow-list refused: a part does not verify',
          );
          return;
        }
        parts.push(checked.part);
      }
      use(stored.revision, parts);
      log.info({ revision: stored.revision, members: users.size }, 'stored allow-list verified and in use');
    },
    apply(command) {
      const result = chain.then(() => applyNow(command));
      chain = result.catch(() => undefined);
      return result;
    },
    byCard: (hash) => cards.get(hash),
    byUser: (userId) => users.get(userId),
    onChange(listener) {
      listeners.push(listener);
    },
  };
}
