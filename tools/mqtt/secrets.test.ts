import { expect } from 'chai';
import fc from 'fast-check';
import {
  MAX_PRESENTED_SECRET_BYTES,
  SECRET_HASH_PATTERN,
  SECRET_PATTERN,
  hashSecret,
  newSecret,
  verifySecret,
} from './secrets.ts';

describe('tools/mqtt secrets', () => {
  it('issues 256-bit base64url secrets, all different', () => {
    const seen = new Set<string>();
    for (let i = 0; i < 200; i++) {
      const s = newSecret();
      expect(s).to.match(SECRET_PATTERN);
      expect(Buffer.from(s, 'base64url')).to.have.length(32);
      seen.add(s);
    }
    expect(seen.size).to.equal(200);
  });

  it('stores SHA-256 hex (a known vector) and verifies the secret against it', () => {
    expect(hashSecret('abc')).to.equal('ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad');
    const s = newSecret();
    const h = hashSecret(s);
    expect(h).to.match(SECRET_HASH_PATTERN);
    expect(verifySecret(s, h)).to.equal(true);
    expect(verifySecret(Buffer.from(s), h)).to.equal(true);
  });

  it('refuses a wrong, empty, missing or over-long secret, and a malformed stored hash', () => {
    const s = newSecret();
    const h = hashSecret(s);
    expect(verifySecret(newSecret(), h)).to.equal(false);
    expect(verifySecret(`${s} `, h)).to.equal(false);
    expect(verifySecret('', hashSecret(''))).to.equal(false);
    expect(verifySecret(undefined, h)).to.equal(false);
    expect(verifySecret(null, h)).to.equal(false);
    const long = 'x'.repeat(MAX_PRESENTED_SECRET_BYTES + 1);
    expect(verifySecret(long, hashSecret(long))).to.equal(false);
    expect(verifySecret(s, h.toUpperCase())).to.equal(false);
    expect(verifySecret(s, h.slice(1))).to.equal(false);
    expect(verifySecret(s, '')).to.equal(false);
    // The all-zero digest used for malformed hashes never verifies either.
    expect(verifySecret(s, '0'.repeat(64))).to.equal(false);
  });

  it('verifies exactly the secret that was hashed (property)', () => {
    fc.assert(
      fc.property(fc.string({ minLength: 1, maxLength: 100 }), fc.string({ minLength: 1, maxLength: 100 }), (a, b) => {
        expect(verifySecret(a, hashSecret(a))).to.equal(true);
        expect(verifySecret(b, hashSecret(a))).to.equal(a === b);
      }),
    );
  });
});
