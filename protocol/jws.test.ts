import { expect } from 'chai';
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import * as v from 'valibot';
import { EXAMPLE_CONFIG_JWS, EXAMPLE_CONFIG_KEY, EXAMPLE_QR_KEY, EXAMPLE_QR_TOKEN, examples } from './examples.ts';
import { JWS_TYPES, QrTokenClaims, publicKeyFromJwk, signJws, verifyJws } from './jws.ts';

describe('protocol/jws', () => {
  const qrKey = publicKeyFromJwk(EXAMPLE_QR_KEY);
  const configKey = publicKeyFromJwk(EXAMPLE_CONFIG_KEY);
  const keys = new Map<string, KeyObject>([
    [EXAMPLE_QR_KEY.kid, qrKey],
    [EXAMPLE_CONFIG_KEY.kid, configKey],
  ]);
  const keyFor = (kid: string) => keys.get(kid);

  it('verifies the example QR token and config document and returns their payloads', () => {
    const qr = verifyJws(EXAMPLE_QR_TOKEN, JWS_TYPES.qr, keyFor);
    expect(qr.ok).to.equal(true);
    if (qr.ok) expect(v.parse(QrTokenClaims, qr.payload).sub).to.equal('665f1c2ab3d4e5f601234567');
    const config = verifyJws(EXAMPLE_CONFIG_JWS, JWS_TYPES.gatewayConfig, keyFor);
    expect(config).to.deep.equal({ ok: true, kid: EXAMPLE_CONFIG_KEY.kid, payload: examples.GatewayConfigDocument[0] });
  });

  it('refuses a document of another kind, an unknown key, a tampered payload and junk', () => {
    expect(verifyJws(EXAMPLE_QR_TOKEN, JWS_TYPES.gatewayConfig, keyFor)).to.deep.equal({
      ok: false,
      reason: 'wrong-type',
    });
    expect(verifyJws(EXAMPLE_QR_TOKEN, JWS_TYPES.qr, () => undefined)).to.deep.equal({
      ok: false,
      reason: 'unknown-key',
    });
    const [h, p, s] = EXAMPLE_QR_TOKEN.split('.') as [string, string, string];
    const forged = Buffer.from(
      JSON.stringify({ ...JSON.parse(Buffer.from(p, 'base64url').toString()), sub: 'someone-else' }),
    );
    expect(verifyJws(`${h}.${forged.toString('base64url')}.${s}`, JWS_TYPES.qr, keyFor)).to.deep.equal({
      ok: false,
      reason: 'bad-signature',
    });
    expect(verifyJws(`${h}.${p}.${s}`, JWS_TYPES.qr, () => configKey)).to.deep.include({ ok: false });
    for (const junk of ['', 'a.b', 'a.b.c.d', '%%.%%.%%', 'x'.repeat(300_000), `${h}.${p}.AAAA`]) {
      expect(verifyJws(junk, JWS_TYPES.qr, keyFor).ok, junk.slice(0, 20)).to.equal(false);
    }
    const none = `${Buffer.from(JSON.stringify({ alg: 'none', typ: JWS_TYPES.qr, kid: EXAMPLE_QR_KEY.kid })).toString('base64url')}.${p}.${s}`;
    expect(verifyJws(none, JWS_TYPES.qr, keyFor)).to.deep.equal({ ok: false, reason: 'wrong-header' });
  });

  it('round-trips what signJws signs, with a fresh key', () => {
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const jws = signJws(JWS_TYPES.allowList, examples.AllowListDocument[0], { kid: 'k1', privateKey });
    expect(verifyJws(jws, JWS_TYPES.allowList, (kid) => (kid === 'k1' ? publicKey : undefined))).to.deep.equal({
      ok: true,
      kid: 'k1',
      payload: examples.AllowListDocument[0],
    });
  });

  it('refuses QR claims valid for more than 60 s or expiring before issue', () => {
    const base = { sub: 'm1', nonce: 'abcdefghijkl', iat: 1_800_000_000 };
    expect(v.safeParse(QrTokenClaims, { ...base, exp: base.iat + 60 }).success).to.equal(true);
    expect(v.safeParse(QrTokenClaims, { ...base, exp: base.iat + 61 }).success).to.equal(false);
    expect(v.safeParse(QrTokenClaims, { ...base, exp: base.iat }).success).to.equal(false);
  });
});
