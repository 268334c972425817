import { expect } from 'chai';
import { createHash, createPublicKey, verify } from 'node:crypto';
import {
  EXAMPLE_ALLOW_LIST_JWS,
  EXAMPLE_CONFIG_JWS,
  EXAMPLE_CONFIG_KEY,
  EXAMPLE_NFC_UID,
  EXAMPLE_NOW,
  EXAMPLE_QR_KEY,
  EXAMPLE_QR_TOKEN,
  EXAMPLE_TOPICS,
  examples,
} from './examples.ts';
import { buildTopic, parseTopic } from './topics.ts';

/** Verifies an ES256 JWS against a public JWK and returns its decoded header and payload. */
function openJws(jws: string, jwk: { kty: string; crv: string; x: string; y: string }) {
  const [header, payload, signature] = jws.split('.') as [string, string, string];
  const key = createPublicKey({ key: { kty: jwk.kty, crv: jwk.crv, x: jwk.x, y: jwk.y }, format: 'jwk' });
  const valid = verify(
    'sha256',
    Buffer.from(`${header}.${payload}`),
    { key, dsaEncoding: 'ieee-p1363' },
    Buffer.from(signature, 'base64url'),
  );
  return {
    valid,
    header: JSON.parse(Buffer.from(header, 'base64url').toString('utf8')) as Record<string, unknown>,
    payload: JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as Record<string, unknown>,
  };
}

describe('protocol/examples', () => {
  it('signs the QR token with the example QR key, for the example member, valid around EXAMPLE_NOW', () => {
    const token = openJws(EXAMPLE_QR_TOKEN, EXAMPLE_QR_KEY);
    expect(token.valid).to.equal(true);
    expect(token.header).to.deep.equal({ alg: 'ES256', typ: 'nxg-qr+jwt', kid: EXAMPLE_QR_KEY.kid });
    expect(token.payload.sub).to.equal('665f1c2ab3d4e5f601234567');
    expect(token.payload.iat).to.be.below(EXAMPLE_NOW / 1000);
    expect(token.payload.exp).to.be.above(EXAMPLE_NOW / 1000);
    expect((token.payload.exp as number) - (token.payload.iat as number)).to.be.at.most(60);
  });

  it('signs the config and allow-list documents given as examples', () => {
    const config = openJws(EXAMPLE_CONFIG_JWS, EXAMPLE_CONFIG_KEY);
    expect(config.valid).to.equal(true);
    expect(config.payload).to.deep.equal(examples.GatewayConfigDocument[0]);
    const allowList = openJws(EXAMPLE_ALLOW_LIST_JWS, EXAMPLE_CONFIG_KEY);
    expect(allowList.valid).to.equal(true);
    expect(allowList.payload).to.deep.equal(examples.AllowListDocument[0]);
    expect(openJws(EXAMPLE_CONFIG_JWS, EXAMPLE_QR_KEY).valid).to.equal(false);
  });

  it('lists the example card, hashed, in the allow-list', () => {
    const hash = createHash('sha256').update(EXAMPLE_NFC_UID).digest('hex');
    expect(examples.AllowListDocument[0].members[0]?.nfc).to.deep.equal([hash]);
  });

  it('gives one example topic per kind that parses back to itself', () => {
    for (const topic of Object.values(EXAMPLE_TOPICS)) expect(parseTopic(buildTopic(topic))).to.deep.equal(topic);
  });

  it('covers every machine type in telemetry, every segment and every event type', () => {
    expect(examples.Telemetry.map((t) => t.type)).to.have.members([
      'rower',
      'treadmill',
      'indoor-bike',
      'cross-trainer',
      'selectorised',
      'plate-loaded',
      'functional',
    ]);
    expect(examples.Workout.map((w) => w.segment)).to.have.members(['set', 'interval', 'block']);
    expect(new Set(examples.MachineEvent.map((e) => e.type)).size).to.equal(7);
  });
});
