/**
 * Allow-list revisions against the MongoDB stand-in, with two AllowLists instances on separate connections standing
 * for two API nodes: a build that started before a card was blocked must not become a newer revision than the list
 * without the card, one revision is never signed with two contents, and revisions keep increasing even when the
 * state document is lost.
 */
import { generateKeyPairSync } from 'node:crypto';
import { expect } from 'chai';
import type { Connection } from 'mongoose';
import * as v from 'valibot';
import { JWS_TYPES, verifyJws } from '../../../protocol/jws.ts';
import { AllowListDocument } from '../../../protocol/messages/command.ts';
import { createManualClock } from '../../../tools/runtime/clock.ts';
import { connectMongoose, uniqueDbName } from '../../../test/helpers/services.ts';
import { createAllowLists, type AllowLists, type SignedAllowList } from './allow-list.ts';
import { cardUidHash, createCardStore, type CardStore } from './cards.ts';

describe('allow-list revisions (two API nodes, one database)', () => {
  const branch = 'branch-al';
  const member = 'aaaaaaaaaaaaaaaaaaaaaaaa';
  const uid = '04a1b2c3d4e5f6';
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const key = { kid: 'test-kid', privateKey };
  const clock = createManualClock(Date.UTC(2026, 10, 26, 6));
  const memberships = { activeMembersOf: () => Promise.resolve([{ userId: member }]) };
  let dbName: string;
  let connA: Connection;
  let connB: Connection;
  let cardsA: CardStore;
  let cardsB: CardStore;

  before(async () => {
    dbName = uniqueDbName('allow_list');
    [connA, connB] = await Promise.all([connectMongoose(dbName), connectMongoose(dbName)]);
    [cardsA, cardsB] = await Promise.all([
      createCardStore({ mongo: connA, clock }),
      createCardStore({ mongo: connB, clock }),
    ]);
  });
  after(async () => {
    await connA?.dropDatabase();
    await Promise.all([connA?.close(), connB?.close()]);
  });

  const node = (mongo: Connection, cards: Pick<CardStore, 'activeHashesOf'>) =>
    createAllowLists({ mongo, clock, cards, memberships, signingKey: () => key, maxAgeS: 86_400 });
  const membersOf = (signed: SignedAllowList) =>
    signed.parts.flatMap((jws) => {
      const verified = verifyJws(jws, JWS_TYPES.allowList, (kid) => (kid === key.kid ? publicKey : undefined));
      if (!verified.ok) throw new Error(`part does not verify: ${verified.reason}`);
      const doc = v.parse(AllowListDocument, verified.payload);
      expect(doc.revision).to.equal(signed.revision);
      return doc.members;
    });

  it('a build that read the cards before a block never becomes a revision after the one without the card', async () => {
    const card = await cardsA.enrol({ userId: member, uid, by: 'staff' });
    const nodeB = await node(connB, cardsB);
    const first = await nodeB.signed(branch);
    expect(membersOf(first)).to.deep.equal([{ userId: member, nfc: [cardUidHash(uid)] }]);

    // Node A reads the cards (the card still active), then stalls before it writes its revision.
    let reached!: () => void;
    const readDone = new Promise<void>((resolve) => (reached = resolve));
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    let stallOnce = true;
    const nodeA: AllowLists = await node(connA, {
      async activeHashesOf(ids) {
        const hashes = await cardsA.activeHashesOf(ids);
        if (stallOnce) {
          stallOnce = false;
          reached();
          await gate;
        }
        return hashes;
      },
    });
    clock.advance(1_000);
    const slow = nodeA.signed(branch);
    await readDone;

    // Meanwhile the member blocks the card and node B publishes the list without it.
    expect((await cardsB.block(member, card.id)).changed).to.equal(true);
    clock.advance(1_000);
    const withoutCard = await nodeB.signed(branch);
    expect(withoutCard.revision).to.be.above(first.revision);
    expect(membersOf(withoutCard)).to.deep.equal([{ userId: member, nfc: [] }]);

    release();
    const fromA = await slow;
    // Node A built again against the newer revision: same revision, same content, no card.
    expect(fromA.revision).to.equal(withoutCard.revision);
    expect(membersOf(fromA)).to.deep.equal([{ userId: member, nfc: [] }]);
    expect((await nodeB.refresh(branch)).changed).to.equal(false);
  });

  it('keeps revisions increasing when the state document is lost (restored backup, dropped collection)', async () => {
    const nodeA = await node(connA, cardsA);
    const before = (await nodeA.refresh(branch)).current.revision;
    await connA.collection('access_allow_lists').deleteMany({});
    clock.advance(60_000);
    const after = await nodeA.refresh(branch);
    expect(after.changed).to.equal(true);
    expect(after.current.revision).to.be.above(before);
  });
});
