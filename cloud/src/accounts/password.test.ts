import { expect } from 'chai';
import sinon from 'sinon';
import argon2 from 'argon2';
import { ServiceUnavailable } from '../http/errors.ts';
import {
  ARGON2_CONCURRENCY,
  ARGON2_MAX_WAITING,
  ARGON2_OPTIONS,
  createDummyHash,
  hashPassword,
  isCommonPassword,
  passwordNeedsRehash,
  passwordProblem,
  verifyPassword,
} from './password.ts';
import { normaliseEmail } from './email.ts';

describe('password policy and hashing', () => {
  it('states argon2id parameters at or above OWASP minimum (m=19 MiB, t=2, p=1)', () => {
    expect(ARGON2_OPTIONS.type).to.equal(argon2.argon2id);
    expect(ARGON2_OPTIONS.memoryCost).to.be.at.least(19 * 1024);
    expect(ARGON2_OPTIONS.timeCost).to.be.at.least(2);
    expect(ARGON2_OPTIONS.parallelism).to.equal(1);
  });

  it('hashes with those parameters and verifies; a wrong password or a broken hash fails without throwing', async () => {
    const hash = await hashPassword('a perfectly fine passphrase');
    expect(hash.startsWith('$argon2id$v=19$')).to.equal(true);
    expect(hash).to.include('m=19456').and.include('t=2').and.include('p=1');
    expect(await verifyPassword(hash, 'a perfectly fine passphrase')).to.equal(true);
    expect(await verifyPassword(hash, 'a perfectly fine passphrasE')).to.equal(false);
    expect(await verifyPassword('not-a-hash', 'anything')).to.equal(false);
    expect(passwordNeedsRehash(hash)).to.equal(false);
    const weaker = await argon2.hash('x', { type: argon2.argon2id, memoryCost: 8192, timeCost: 1, parallelism: 1 });
    expect(passwordNeedsRehash(weaker), 'older, weaker parameters are upgraded on login').to.equal(true);
    expect(await createDummyHash()).to.match(/^\$argon2id\$/);
  });

  it('runs at most ARGON2_CONCURRENCY hashes at once and refuses (503) beyond ARGON2_MAX_WAITING waiting', async () => {
    const hash = await hashPassword('a perfectly fine passphrase');
    let running = 0;
    let peak = 0;
    const original = argon2.verify.bind(argon2);
    const verify = sinon.stub(argon2, 'verify').callsFake(async (...args: Parameters<typeof argon2.verify>) => {
      running += 1;
      peak = Math.max(peak, running);
      try {
        return await original(...args);
      } finally {
        running -= 1;
      }
    });
    try {
      const burst = ARGON2_CONCURRENCY + ARGON2_MAX_WAITING + 5;
      const outcomes = await Promise.allSettled(
        Array.from({ length: burst }, () => verifyPassword(hash, 'a perfectly fine passphrase')),
      );
      expect(peak).to.equal(ARGON2_CONCURRENCY);
      const refused = outcomes.filter((o) => o.status === 'rejected');
      expect(refused).to.have.length(5);
      for (const o of refused) expect(o.reason).to.be.instanceOf(ServiceUnavailable);
      expect(outcomes.filter((o) => o.status === 'fulfilled' && o.value === true)).to.have.length(burst - 5);
    } finally {
      verify.restore();
    }
  });

  it('accepts long, uncommon passwords, counting characters rather than UTF-16 units', () => {
    expect(passwordProblem('correct horse battery staple')).to.equal(undefined);
    expect(passwordProblem('😀😁😂🤣😃😄😅😆😉😊😋a')).to.equal(undefined); // 12 characters, 23 UTF-16 units
    expect(passwordProblem('😀😁😂🤣😃😄😅😆😉😊a')).to.match(/at least 12/);
  });

  it('refuses too short, too long, common, padded-common, repetitive passwords and ones containing the email', () => {
    expect(passwordProblem('elevenchars')).to.match(/at least 12/);
    expect(passwordProblem('x'.repeat(129) + 'abcd')).to.match(/at most 128/);
    expect(isCommonPassword('1qaz2wsx3edc')).to.equal(true);
    expect(passwordProblem('1QAZ2WSX3EDC')).to.match(/commonly used/);
    expect(passwordProblem('password!!!!!!')).to.match(/common password with characters added/);
    expect(passwordProblem('123456dragon')).to.match(/common password with characters added/);
    expect(passwordProblem('abababababababab')).to.match(/too few different/);
    expect(passwordProblem('my name is annabel!', 'annabel@nxg.test')).to.match(/email/);
    expect(passwordProblem('annabel@nxg.test', 'annabel@nxg.test')).to.match(/email/);
  });

  it('normalises emails: trimmed, NFKC, lower case', () => {
    expect(normaliseEmail('  Ann.Lee@Example.COM ')).to.equal('ann.lee@example.com');
    expect(normaliseEmail('ｂｏｂ@nxg.test')).to.equal('bob@nxg.test');
  });
});
