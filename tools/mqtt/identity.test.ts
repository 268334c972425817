import { expect } from 'chai';
import { MAX_CLIENT_ID_LENGTH, checkConnectIdentity, clientIdAllowed, isIdentityId } from './identity.ts';

describe('tools/mqtt identity', () => {
  it('accepts topic-level ids and refuses wildcards, separators, $, NUL, upper case, over-long and prototype names', () => {
    for (const ok of ['demo', 'gw-1', 'a', '0abc', 'x'.repeat(63)]) expect(isIdentityId(ok), ok).to.equal(true);
    for (const bad of [
      '',
      '+',
      '#',
      'a/b',
      '$SYS',
      'demo\u0000',
      'Demo',
      '-a',
      'a.b',
      'x'.repeat(64),
      'x'.repeat(300),
      '__proto__',
      'constructor',
      'toString',
      undefined,
      42,
    ]) {
      expect(isIdentityId(bad), String(bad)).to.equal(false);
    }
  });

  it('checks username and client id before any lookup (RELIABILITY A6)', () => {
    expect(checkConnectIdentity(undefined, 'x')).to.deep.equal({ ok: false, reason: 'no-username' });
    expect(checkConnectIdentity('', 'x')).to.deep.equal({ ok: false, reason: 'no-username' });
    for (const bad of ['+', '#', 'a/b', 'demo\u0000', 'x'.repeat(300), 'constructor']) {
      expect(checkConnectIdentity(bad, bad)).to.deep.equal({ ok: false, reason: 'bad-username' });
    }
    expect(checkConnectIdentity('gw-a', 'gw-b')).to.deep.equal({ ok: false, reason: 'bad-client-id' });
    expect(checkConnectIdentity('gw-a', '')).to.deep.equal({ ok: false, reason: 'bad-client-id' });
    expect(checkConnectIdentity('gw-a', 'gw-a')).to.deep.equal({ ok: true, identityId: 'gw-a' });
    expect(checkConnectIdentity('ops', 'ops.dash-1')).to.deep.equal({ ok: true, identityId: 'ops' });
    expect(checkConnectIdentity('ops', 'ops.')).to.deep.include({ ok: false });
    expect(checkConnectIdentity('ops', 'ops.a/b')).to.deep.include({ ok: false });
    expect(checkConnectIdentity('ops', 'ops.a+')).to.deep.include({ ok: false });
    expect(checkConnectIdentity('ops', `ops.${'a'.repeat(33)}`)).to.deep.include({ ok: false });
    expect(checkConnectIdentity('op', 'ops.x')).to.deep.include({ ok: false });
  });

  it('binds the client id to the identity: exact for gateways and machines, id.suffix also for observers', () => {
    expect(clientIdAllowed('gateway', 'gw-a', 'gw-a')).to.equal(true);
    expect(clientIdAllowed('gateway', 'gw-a', 'gw-a.x')).to.equal(false);
    expect(clientIdAllowed('machine', 'm-1', 'm-1.x')).to.equal(false);
    expect(clientIdAllowed('observer', 'ops', 'ops.x')).to.equal(true);
    expect(clientIdAllowed('observer', 'ops', 'ops')).to.equal(true);
    expect(clientIdAllowed('observer', 'ops', 'gw-a')).to.equal(false);
    expect(clientIdAllowed('observer', 'x'.repeat(63), `${'x'.repeat(63)}.${'s'.repeat(32)}`)).to.equal(true);
    expect(63 + 1 + 32).to.equal(MAX_CLIENT_ID_LENGTH);
  });
});
