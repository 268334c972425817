import { expect } from 'chai';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { jwkThumbprint, KeyConfigError, loadKeyring } from './keyring.ts';

const log = pino({ level: 'silent' });

describe('access-token keyring', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'nxg-keyring-'));
  });
  afterEach(() => rm(dir, { recursive: true, force: true }));

  const refusal = async (run: () => Promise<unknown>) => {
    try {
      await run();
    } catch (err) {
      return err as Error;
    }
    return undefined;
  };

  it('creates a private development key on loopback and reuses it on the next start (same kid)', async () => {
    const devKeyDir = path.join(dir, 'keys');
    const first = await loadKeyring({
      signingKeyFile: undefined,
      verifyKeyFiles: [],
      devKeyDir,
      allowDevKey: true,
      log,
    });
    const file = path.join(devKeyDir, 'dev-signing-key.pem');
    expect((await stat(file)).mode & 0o077).to.equal(0);
    expect(await readFile(file, 'utf8')).to.include('PRIVATE KEY');
    const second = await loadKeyring({
      signingKeyFile: undefined,
      verifyKeyFiles: [],
      devKeyDir,
      allowDevKey: true,
      log,
    });
    expect(second.signing.kid).to.equal(first.signing.kid);
    const [jwk] = first.jwks().keys;
    expect(jwk).to.include({ kty: 'EC', crv: 'P-256', alg: 'ES256', use: 'sig', kid: first.signing.kid });
    expect(jwk).to.not.have.property('d');
    expect(first.verifyKey('../../dev/null')).to.equal(undefined);
  });

  it('refuses to make a development key off loopback', async () => {
    const err = await refusal(() =>
      loadKeyring({ signingKeyFile: undefined, verifyKeyFiles: [], devKeyDir: dir, allowDevKey: false, log }),
    );
    expect(err).to.be.instanceOf(KeyConfigError);
    expect(err!.message).to.include('AUTH_SIGNING_KEY_FILE');
  });

  it('refuses a missing file, a non-key and a key of the wrong type or curve', async () => {
    const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'pem', type: 'pkcs8' });
    const p384 = generateKeyPairSync('ec', { namedCurve: 'P-384' }).privateKey.export({ format: 'pem', type: 'pkcs8' });
    await writeFile(path.join(dir, 'rsa.pem'), rsa);
    await writeFile(path.join(dir, 'p384.pem'), p384);
    await writeFile(path.join(dir, 'junk.pem'), 'not a key');
    for (const file of ['missing.pem', 'junk.pem', 'rsa.pem', 'p384.pem']) {
      const err = await refusal(() =>
        loadKeyring({
          signingKeyFile: path.join(dir, file),
          verifyKeyFiles: [],
          devKeyDir: dir,
          allowDevKey: false,
          log,
        }),
      );
      expect(err, file).to.be.instanceOf(KeyConfigError);
    }
  });

  it('derives the kid as the RFC 7638 thumbprint (stable across nodes)', () => {
    const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    expect(jwkThumbprint(publicKey)).to.match(/^[A-Za-z0-9_-]{43}$/);
    expect(jwkThumbprint(publicKey)).to.equal(jwkThumbprint(publicKey));
  });
});
