import { expect } from 'chai';
import { generateKeyPairSync, sign } from 'node:crypto';
import { EXAMPLE_QR_KEY } from '../examples.ts';
import { PAYLOADS, parsePayload, validatePayload } from '../payloads.ts';
import { MAX_TIMESTAMP_MS } from '../scalars.ts';
import {
  ES256_SIGNATURE_LENGTH,
  MAX_ALLOW_LIST_PARTS,
  MAX_ALLOW_LIST_PART_MEMBERS,
  MAX_COMMAND_JWS_LENGTH,
  MAX_GATEWAY_MACHINES,
  MAX_JWS_HEADER_LENGTH,
  MAX_MEMBER_CARDS,
  MAX_SIGNED_DOCUMENT_BYTES,
} from './command.ts';

const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });

/** Signs a document as the cloud does: compact ES256 JWS with the longest header the cloud may use. */
function signDocument(document: unknown): string {
  const header = { alg: 'ES256', typ: 'nxg-allow-list+jwt', kid: 'k'.repeat(64) };
  const signingInput = `${Buffer.from(JSON.stringify(header)).toString('base64url')}.${Buffer.from(JSON.stringify(document)).toString('base64url')}`;
  const signature = sign('sha256', Buffer.from(signingInput), { key: privateKey, dsaEncoding: 'ieee-p1363' });
  return `${signingInput}.${signature.toString('base64url')}`;
}

// Worst cases: every id at its longest, every number at its widest, every array full.
const longestId = (prefix: string, i: number) => `${prefix}${i}-`.padEnd(63, 'z');
const latest = MAX_TIMESTAMP_MS;
const sha = 'f'.repeat(64);

function worstAllowListDocument() {
  return {
    branch: longestId('b', 0),
    revision: Number.MAX_SAFE_INTEGER,
    part: MAX_ALLOW_LIST_PARTS - 1,
    parts: MAX_ALLOW_LIST_PARTS,
    issuedAt: latest,
    members: Array.from({ length: MAX_ALLOW_LIST_PART_MEMBERS }, (_, i) => ({
      userId: longestId('u', i),
      validUntil: latest,
      nfc: Array.from({ length: MAX_MEMBER_CARDS }, () => sha),
    })),
  };
}

function worstGatewayConfigDocument() {
  return {
    branch: longestId('b', 0),
    gateway: longestId('g', 0),
    revision: Number.MAX_SAFE_INTEGER,
    issuedAt: latest,
    machines: Array.from({ length: MAX_GATEWAY_MACHINES }, (_, i) => ({
      machine: longestId('m', i),
      secretSha256: sha,
    })),
    readers: Array.from({ length: 32 }, (_, i) => ({ reader: longestId('r', i), kind: 'nfc', action: 'check-out' })),
    qrKeys: Array.from({ length: 4 }, () => ({
      kid: 'k'.repeat(64),
      crv: 'P-256',
      x: EXAMPLE_QR_KEY.x,
      y: EXAMPLE_QR_KEY.y,
    })),
    telemetryIntervalMs: 60_000,
    allowListMaxAgeS: 30 * 86_400,
  };
}

describe('protocol/messages/command size limits', () => {
  it('keeps a document at the signed-document limit signable within the JWS limit', () => {
    const payloadChars = Math.ceil((MAX_SIGNED_DOCUMENT_BYTES * 4) / 3);
    expect(MAX_JWS_HEADER_LENGTH + 1 + payloadChars + 1 + ES256_SIGNATURE_LENGTH).to.be.at.most(MAX_COMMAND_JWS_LENGTH);
    expect(PAYLOADS.AllowListDocument.maxBytes).to.equal(MAX_SIGNED_DOCUMENT_BYTES);
    expect(PAYLOADS.GatewayConfigDocument.maxBytes).to.equal(MAX_SIGNED_DOCUMENT_BYTES);
  });

  for (const [name, command, build] of [
    ['AllowListDocument', 'AllowListCommand', worstAllowListDocument],
    ['GatewayConfigDocument', 'GatewayConfigCommand', worstGatewayConfigDocument],
  ] as const) {
    it(`fits the largest ${name} the schema accepts into its byte limit, its JWS and its command`, () => {
      const document = build();
      expect(validatePayload(name, document).ok, 'the worst case is valid').to.equal(true);
      const json = JSON.stringify(document);
      expect(Buffer.byteLength(json), 'document bytes').to.be.at.most(PAYLOADS[name].maxBytes);
      expect(parsePayload(name, json).ok).to.equal(true);

      const jws = signDocument(document);
      expect(jws.split('.')[0]!.length).to.be.at.most(MAX_JWS_HEADER_LENGTH);
      expect(jws.length, 'JWS characters').to.be.at.most(MAX_COMMAND_JWS_LENGTH);

      const wrapper = {
        reqId: 'r'.repeat(64),
        expiresAt: latest,
        revision: Number.MAX_SAFE_INTEGER,
        ...(command === 'AllowListCommand' ? { part: MAX_ALLOW_LIST_PARTS - 1, parts: MAX_ALLOW_LIST_PARTS } : {}),
        jws,
      };
      const commandJson = JSON.stringify(wrapper);
      expect(Buffer.byteLength(commandJson), 'command bytes').to.be.at.most(PAYLOADS[command].maxBytes);
      expect(parsePayload(command, commandJson).ok).to.equal(true);
    });
  }

  it('refuses one member more than a part may hold', () => {
    const document = worstAllowListDocument();
    document.members.push({ ...document.members[0]!, userId: 'one-too-many' });
    expect(validatePayload('AllowListDocument', document)).to.deep.include({ ok: false, path: 'members' });
  });
});
