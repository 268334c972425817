import { expect } from 'chai';
import { ndefMessageTlv, type2TagMemory } from '../../testing/virtual-card.ts';
import { findNdefMessage, MAX_CARD_TOKEN_LENGTH, readType2Token, textToken } from './ndef.ts';

const UID = '04a1b2c3d4e5f6';

/** READ BINARY over a tag's memory as a reader does it (16 bytes from a 4-byte page), counting the reads. */
function tag(memory: Buffer) {
  const pages: number[] = [];
  const read16 = (page: number) => {
    pages.push(page);
    const out = memory.subarray(page * 4, page * 4 + 16);
    if (out.length < 16) return Promise.reject(new Error('Read operation failed: Status code: 0x6b00'));
    return Promise.resolve(Buffer.from(out));
  };
  return { read16, pages };
}

describe('NDEF member token on a Type 2 tag', () => {
  it('reads a short Text record with one READ BINARY of page 3', async () => {
    const { read16, pages } = tag(type2TagMemory(UID, { ndefText: 'abc' }));
    expect(await readType2Token(read16)).to.deep.equal({ token: 'abc' });
    expect(pages).to.deep.equal([3]);
  });

  it('reads a long token (3-byte TLV length, long record) across as many reads as it needs', async () => {
    const token = `eyJhbGciOiJFUzI1NiJ9.${'x'.repeat(400)}.sig`;
    const { read16, pages } = tag(type2TagMemory(UID, { ndefText: token }));
    expect(await readType2Token(read16)).to.deep.equal({ token });
    // From page 3: CC (4), TLV header 03 FF hi lo (4), long record header (7), status + "en" (3), the text.
    expect(pages.length).to.equal(Math.ceil((4 + 4 + 7 + 3 + token.length) / 16));
    expect(pages).to.deep.equal(pages.map((_, i) => 3 + 4 * i));
  });

  it('skips NULL and Lock Control TLVs before the NDEF message', async () => {
    const raw = Buffer.concat([Buffer.from([0x00, 0x01, 0x03, 0xa0, 0x0c, 0x34, 0x00]), ndefMessageTlv('member-7')]);
    const { read16 } = tag(type2TagMemory(UID, { rawData: raw }));
    expect(await readType2Token(read16)).to.deep.equal({ token: 'member-7' });
  });

  it('finds no token on a blank tag, an empty message, or without the NDEF capability container', async () => {
    expect(await readType2Token(tag(type2TagMemory(UID)).read16)).to.deep.equal({ reason: 'empty NDEF message' });
    expect(await readType2Token(tag(type2TagMemory(UID, { rawData: Buffer.from([0xfe]) })).read16)).to.deep.equal({
      reason: 'no NDEF message',
    });
    const noCc = type2TagMemory(UID, { ndefText: 'abc' });
    noCc[12] = 0x00;
    expect(await readType2Token(tag(noCc).read16)).to.deep.equal({ reason: 'no NDEF capability container' });
  });

  it('refuses a message larger than the tag says it has', async () => {
    const memory = type2TagMemory(UID, { ndefText: 'y'.repeat(200) });
    memory[14] = 0x02; // data area of 16 bytes
    expect(await readType2Token(tag(memory).read16)).to.deep.equal({
      reason: 'NDEF message larger than the tag or the token limit',
    });
  });

  it('passes a read failure (a MIFARE Classic without keys) to the caller', async () => {
    const failing = () => Promise.reject(new Error('Read operation failed: Status code: 0x6982'));
    let error: unknown;
    await readType2Token(failing).catch((err: unknown) => (error = err));
    expect(String(error)).to.contain('0x6982');
  });

  it('takes only a Text record, printable and within the limit', () => {
    const uri = Buffer.from([0xd1, 0x01, 0x04, 0x55, 0x04, 0x61, 0x2e, 0x62]); // URI record "https://a.b"
    expect(textToken(uri)).to.deep.equal({ reason: 'first NDEF record is not a Text record' });
    const text = (body: Buffer, status = 0x02) =>
      Buffer.concat([Buffer.from([0xd1, 0x01, body.length + 3, 0x54, status]), Buffer.from('en'), body]);
    expect(textToken(text(Buffer.from('  tok-1 \n')))).to.deep.equal({ token: 'tok-1' });
    expect(textToken(text(Buffer.from('a\u0007b')))).to.deep.equal({ reason: 'token has unprintable characters' });
    expect(textToken(text(Buffer.from([0x61, 0xff, 0x62])))).to.deep.equal({
      reason: 'token has unprintable characters',
    });
    expect(textToken(text(Buffer.from('   ')))).to.deep.equal({ reason: 'empty Text record' });
    const utf16 = Buffer.from('tok-ü', 'utf16le').swap16();
    expect(textToken(text(utf16, 0x82))).to.deep.equal({ token: 'tok-ü' });
    const long = ndefMessageTlv('z'.repeat(MAX_CARD_TOKEN_LENGTH + 1));
    const found = findNdefMessage(long);
    expect(found.kind).to.equal('message');
    if (found.kind === 'message') {
      expect(textToken(found.message)).to.deep.equal({
        reason: `token longer than ${MAX_CARD_TOKEN_LENGTH} characters`,
      });
    }
  });

  it('asks for more bytes while a TLV is cut off', () => {
    const whole = ndefMessageTlv('hello');
    expect(findNdefMessage(whole.subarray(0, 1))).to.deep.equal({ kind: 'need', need: 2 });
    expect(findNdefMessage(whole.subarray(0, 5))).to.deep.equal({ kind: 'need', need: whole.length - 1 });
    expect(findNdefMessage(Buffer.alloc(0))).to.deep.equal({ kind: 'need', need: 1 });
  });
});
