import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import type { Connection } from 'mongoose';
import { pino } from 'pino';
import { ConfigError } from '../../../tools/runtime/env-config.ts';
import { connectMongoose, testServices, uniqueDbName } from '../../../test/helpers/services.ts';
import { cryptoConfig, parseKeyList, type CryptoConfig } from './config.ts';
import { createFieldCipher, UnreadableField, type SealedValue } from './field-cipher.ts';
import { keyringOf, loadKeyring } from './keyring.ts';
import { rotateFromEnv } from './rotate-cli.ts';
import { rotateSealedFields } from './rotation.ts';

const silent = pino({ level: 'silent' });
const key = () => randomBytes(32);
const pseudonymKey = randomBytes(32);
const ctx = { collection: 'body_profiles', userId: '6500000000000000000000aa', field: 'measurements' };

describe('field cipher (AES-256-GCM)', () => {
  const cipher = createFieldCipher(keyringOf([{ kid: 'k1', key: key() }], 'k1', pseudonymKey));

  it('round-trips JSON values and stores the key id beside a 96-bit IV and a 128-bit tag', () => {
    const value = { weightKg: 81.25, conditions: ['asthma'] };
    const sealed = cipher.seal(value, ctx);
    expect(sealed.kid).to.equal('k1');
    expect(Buffer.from(sealed.iv, 'base64')).to.have.length(12);
    expect(Buffer.from(sealed.tag, 'base64')).to.have.length(16);
    expect(JSON.stringify(sealed)).to.not.include('81.25');
    expect(cipher.open(sealed, ctx)).to.deep.equal(value);
  });

  it('gives different ciphertexts (and IVs) for identical plaintexts', () => {
    const a = cipher.seal('same', ctx);
    const b = cipher.seal('same', ctx);
    expect(a.iv).to.not.equal(b.iv);
    expect(a.ct).to.not.equal(b.ct);
  });

  it('binds each value to its member, field and collection (AAD): moved values do not decrypt', () => {
    const sealed = cipher.seal(42, ctx);
    for (const moved of [
      { ...ctx, userId: '6500000000000000000000bb' },
      { ...ctx, field: 'allergies' },
      { ...ctx, collection: 'body_metric_entries' },
    ]) {
      expect(() => cipher.open(sealed, moved)).to.throw(UnreadableField);
    }
  });

  it('refuses a flipped tag bit, a flipped ciphertext bit, a short tag and an unknown key — as a 409 problem', () => {
    const sealed = cipher.seal({ marker: 'x' }, ctx);
    const flip = (b64: string) => {
      const bytes = Buffer.from(b64, 'base64');
      bytes[0]! ^= 0x01;
      return bytes.toString('base64');
    };
    const cases: SealedValue[] = [
      { ...sealed, tag: flip(sealed.tag) },
      { ...sealed, ct: flip(sealed.ct) },
      { ...sealed, tag: Buffer.from(sealed.tag, 'base64').subarray(0, 4).toString('base64') },
      { ...sealed, kid: 'gone' },
    ];
    for (const tampered of cases) {
      let error: unknown;
      try {
        cipher.open(tampered, ctx);
      } catch (err) {
        error = err;
      }
      expect(error).to.be.instanceOf(UnreadableField);
      expect((error as UnreadableField).status).to.equal(409);
    }
    expect(() => cipher.open({ v: 1 } as unknown as SealedValue, ctx)).to.throw(UnreadableField);
  });

  it('pseudonymises ids with a keyed hash: stable per key, different across keys', () => {
    const other = createFieldCipher(keyringOf([{ kid: 'k1', key: key() }], 'k1', randomBytes(32)));
    expect(cipher.pseudonym('u1'))
      .to.equal(cipher.pseudonym('u1'))
      .and.match(/^[a-f0-9]{64}$/);
    expect(cipher.pseudonym('u1')).to.not.equal(cipher.pseudonym('u2'));
    expect(other.pseudonym('u1')).to.not.equal(cipher.pseudonym('u1'));
  });
});

describe('crypto configuration and keyring', () => {
  const k = (kid: string) => `${kid}:${key().toString('base64')}`;

  it('parses a keyring and picks the last key as active unless told', () => {
    const { crypto } = cryptoConfig(
      { FIELD_ENCRYPTION_KEYS: `${k('a')},${k('b')}`, DEV_KEYS_FILE: 'x' },
      { loopback: true },
    );
    expect(crypto.fieldKeys!.map((f) => f.kid)).to.deep.equal(['a', 'b']);
    expect(crypto.activeKeyId).to.equal('b');
    const chosen = cryptoConfig(
      { FIELD_ENCRYPTION_KEYS: `${k('a')},${k('b')}`, FIELD_ENCRYPTION_ACTIVE_KEY: 'a', DEV_KEYS_FILE: 'x' },
      { loopback: true },
    );
    expect(chosen.crypto.activeKeyId).to.equal('a');
  });

  it('refuses malformed keys and an active key that is not listed, naming the variable', () => {
    expect(parseKeyList('a:short,b')).to.deep.equal([undefined, undefined]);
    expect(() =>
      cryptoConfig(
        { FIELD_ENCRYPTION_KEYS: k('a'), FIELD_ENCRYPTION_ACTIVE_KEY: 'z', DEV_KEYS_FILE: 'x' },
        { loopback: true },
      ),
    ).to.throw(ConfigError, /FIELD_ENCRYPTION_ACTIVE_KEY/);
  });

  it('generates a development keyring once (mode 0600) and reads the same keys back', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'nxg-crypto-'));
    try {
      const config: CryptoConfig = {
        fieldKeys: undefined,
        activeKeyId: undefined,
        pseudonymKey: undefined,
        devKeysFile: path.join(dir, 'nested', 'dev-keys.json'),
        allowDevKeys: true,
      };
      const first = await loadKeyring(config, { log: silent });
      const second = await loadKeyring(config, { log: silent });
      expect(first.activeKeyId).to.equal(second.activeKeyId);
      expect(first.keys.get(first.activeKeyId)!.equals(second.keys.get(second.activeKeyId)!)).to.equal(true);
      expect(first.pseudonymKey.equals(second.pseudonymKey)).to.equal(true);
      expect((await stat(config.devKeysFile)).mode & 0o777).to.equal(0o600);
      // The CLI's mode never invents keys.
      let missing: unknown;
      await loadKeyring(
        { ...config, devKeysFile: path.join(dir, 'absent.json') },
        { log: silent, create: false },
      ).catch((err: unknown) => (missing = err));
      expect((missing as NodeJS.ErrnoException).code).to.equal('ENOENT');
      // A torn or hand-edited keyring is refused by name, without quoting its content (key material) or crashing.
      for (const [name, text] of [
        ['torn.json', 'SECRETKEYMATERIAL{"fieldKeys":'],
        ['nulls.json', '{"fieldKeys":[null],"activeKeyId":"k","pseudonymKey":"SECRETKEYMATERIAL"}'],
        ['numbers.json', '{"fieldKeys":[{"kid":"k","key":12}],"activeKeyId":"k","pseudonymKey":"x"}'],
      ] as const) {
        const file = path.join(dir, name);
        await writeFile(file, text);
        let refused: unknown;
        await loadKeyring({ ...config, devKeysFile: file }, { log: silent }).catch((err: unknown) => (refused = err));
        expect((refused as Error).message, name).to.equal(
          `${file}: not a development keyring (delete it to generate a new one)`,
        );
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('refuses to run on development keys off loopback', async () => {
    let error: unknown;
    try {
      await loadKeyring(
        {
          fieldKeys: undefined,
          activeKeyId: undefined,
          pseudonymKey: undefined,
          devKeysFile: 'x',
          allowDevKeys: false,
        },
        { log: silent },
      );
    } catch (err) {
      error = err;
    }
    expect(error).to.be.instanceOf(ConfigError);
    expect((error as Error).message).to.match(/FIELD_ENCRYPTION_KEYS and PSEUDONYM_KEY: required/);
  });
});

describe('key rotation (real MongoDB-compatible server)', function () {
  this.timeout(30_000);
  let connection: Connection;
  let dbName: string;
  const k1 = key();
  const k2 = key();
  const oldCipher = createFieldCipher(keyringOf([{ kid: 'k1', key: k1 }], 'k1', pseudonymKey));
  const both = keyringOf(
    [
      { kid: 'k1', key: k1 },
      { kid: 'k2', key: k2 },
    ],
    'k2',
    pseudonymKey,
  );
  const newCipher = createFieldCipher(both);
  const onlyNew = createFieldCipher(keyringOf([{ kid: 'k2', key: k2 }], 'k2', pseudonymKey));

  before(async () => {
    dbName = uniqueDbName('crypto-rotation');
    connection = await connectMongoose(dbName);
  });
  after(async () => {
    await connection.dropDatabase();
    await connection.close();
  });

  it('re-encrypts 100 % of sealed values, and everything reads after the old key is retired', async () => {
    const docs = Array.from({ length: 120 }, (_, i) => {
      const userId = `65000000000000000000${String(i).padStart(4, '0')}`;
      const c = { collection: 'rot_entries', userId, field: 'measurements' };
      return { userId, sealed: { measurements: oldCipher.seal({ weightKg: 50 + i }, c) } };
    });
    await connection.collection('rot_entries').insertMany(docs);
    // One document already on the new key, one with a tampered tag: counted, never fatal.
    await connection.collection('rot_entries').insertOne({
      userId: 'already',
      sealed: {
        measurements: newCipher.seal(1, { collection: 'rot_entries', userId: 'already', field: 'measurements' }),
      },
    });
    const bad = oldCipher.seal(2, { collection: 'rot_entries', userId: 'bad', field: 'measurements' });
    await connection.collection('rot_entries').insertOne({
      userId: 'bad',
      sealed: { measurements: { ...bad, tag: Buffer.alloc(16).toString('base64') } },
    });

    const targets = [{ collection: 'rot_entries', userIdField: 'userId' }];
    const dry = await rotateSealedFields({ connection, cipher: newCipher, targets, log: silent, dryRun: true });
    expect(dry.complete).to.equal(false);
    expect(await connection.collection('rot_entries').countDocuments({ 'sealed.measurements.kid': 'k1' })).to.equal(
      121,
    );

    const report = await rotateSealedFields({ connection, cipher: newCipher, targets, log: silent, batchSize: 7 });
    expect(report.collections.rot_entries).to.include({ scanned: 122, rotated: 120, current: 1, unreadable: 1 });
    expect(report.complete).to.equal(true);
    // Only the tampered one is left on k1.
    expect(await connection.collection('rot_entries').countDocuments({ 'sealed.measurements.kid': 'k1' })).to.equal(1);

    const stored = await connection
      .collection<{ _id: string; userId: string; sealed: Record<string, SealedValue> }>('rot_entries')
      .find({ userId: /^6500/ })
      .toArray();
    expect(stored).to.have.length(120);
    for (const doc of stored) {
      const value = onlyNew.open<{ weightKg: number }>(doc.sealed.measurements as SealedValue, {
        collection: 'rot_entries',
        userId: doc.userId,
        field: 'measurements',
      });
      expect(value.weightKg).to.equal(50 + Number(doc.userId.slice(-4)));
    }
  });

  it('runs from the environment like `npm run crypto:rotate` (body profiles and history entries)', async () => {
    const userId = '650000000000000000000fff';
    await connection.collection('body_profiles').insertOne({
      _id: userId as never,
      sealed: {
        allergies: oldCipher.seal(['nuts'], { collection: 'body_profiles', userId, field: 'allergies' }),
      },
    });
    await connection.collection('body_metric_entries').insertOne({
      userId,
      sealed: {
        measurements: oldCipher.seal(
          { weightKg: 70 },
          { collection: 'body_metric_entries', userId, field: 'measurements' },
        ),
      },
    });
    const env = {
      MONGO_URL: `${testServices().mongoUrl}/${dbName}`,
      FIELD_ENCRYPTION_KEYS: `k1:${k1.toString('base64')},k2:${k2.toString('base64')}`,
      PSEUDONYM_KEY: pseudonymKey.toString('base64'),
    };
    const report = await rotateFromEnv(env, { dryRun: false, batchSize: 100 }, silent);
    expect(report.complete).to.equal(true);
    expect(report.activeKeyId).to.equal('k2');
    expect(report.collections.body_profiles!.rotated).to.equal(1);
    expect(report.collections.body_metric_entries!.rotated).to.equal(1);
    const profile = await connection
      .collection<{ _id: string; userId: string; sealed: Record<string, SealedValue> }>('body_profiles')
      .findOne({ _id: userId });
    expect(
      onlyNew.open(profile!.sealed.allergies as SealedValue, {
        collection: 'body_profiles',
        userId,
        field: 'allergies',
      }),
    ).to.deep.equal(['nuts']);
    expect(await readFile(new URL('../../../package.json', import.meta.url), 'utf8')).to.include('crypto:rotate');
  });
});
