/**
 * The member token on a card: an NDEF message on an NFC Forum Type 2 tag (NTAG21x, MIFARE Ultralight), read
 * without keys. Layout (NFC Forum Type 2 Tag spec): 4-byte pages; page 3 is the capability container (CC: E1 =
 * NDEF present, version, data area size / 8, access); the data area from page 4 holds TLVs — 00 NULL, 01 Lock
 * Control, 02 Memory Control, 03 NDEF Message, FE Terminator — with a 1-byte length, or FF and 2 bytes.
 * The token is the first record of the NDEF message when it is a well-known Text record (TNF 1, type "T"); its
 * text (UTF-8 or UTF-16 as the status byte says), trimmed, is the token. Anything else on the card — no CC, no NDEF
 * message, another record type — means "no token": the UID alone identifies the member.
 * MIFARE Classic cards (NDEF there needs sector keys) are read for their UID only.
 */

/** Longest token read from a card (the same bound as a member QR token). */
export const MAX_CARD_TOKEN_LENGTH = 1024;

const CC_MAGIC = 0xe1;
const TLV_NULL = 0x00;
const TLV_NDEF = 0x03;
const TLV_TERMINATOR = 0xfe;
/** Data bytes read at most: the longest token plus NDEF/TLV headers and some room for lock/memory TLVs. */
export const MAX_DATA_BYTES = MAX_CARD_TOKEN_LENGTH + 64;

export type TokenResult = { token: string } | { token?: undefined; reason: string };

/**
 * Reads the token of a Type 2 tag through `read16(page)`, which returns the 16 bytes from `page` (the reader's
 * READ BINARY). Reads page 3 (CC + the first 12 data bytes), then further 16-byte groups only as the TLVs need.
 */
export async function readType2Token(read16: (page: number) => Promise<Buffer>): Promise<TokenResult> {
  const first = await read16(3);
  if (first.length < 16) return { reason: `short read (${first.length} bytes)` };
  if (first[0] !== CC_MAGIC) return { reason: 'no NDEF capability container' };
  const dataSize = Math.min((first[2] ?? 0) * 8, MAX_DATA_BYTES);
  let data = first.subarray(4);
  let nextPage = 7;
  for (;;) {
    const found = findNdefMessage(data);
    if (found.kind === 'message') return textToken(found.message);
    if (found.kind === 'none') return { reason: found.reason };
    if (found.need > dataSize) return { reason: 'NDEF message larger than the tag or the token limit' };
    while (data.length < found.need) {
      const more = await read16(nextPage);
      if (more.length < 16) return { reason: `short read (${more.length} bytes)` };
      data = Buffer.concat([data, more]);
      nextPage += 4;
    }
  }
}

type TlvScan = { kind: 'message'; message: Buffer } | { kind: 'need'; need: number } | { kind: 'none'; reason: string };

/** Walks the TLVs of the data area for the NDEF Message TLV; says how many bytes it needs when `data` is short. */
export function findNdefMessage(data: Buffer): TlvScan {
  let i = 0;
  for (;;) {
    if (i >= data.length) return { kind: 'need', need: i + 1 };
    const type = data[i] ?? 0;
    if (type === TLV_NULL) {
      i += 1;
      continue;
    }
    if (type === TLV_TERMINATOR) return { kind: 'none', reason: 'no NDEF message' };
    if (i + 2 > data.length) return { kind: 'need', need: i + 2 };
    let length = data[i + 1] ?? 0;
    let header = 2;
    if (length === 0xff) {
      if (i + 4 > data.length) return { kind: 'need', need: i + 4 };
      length = data.readUInt16BE(i + 2);
      header = 4;
    }
    const end = i + header + length;
    if (type === TLV_NDEF) {
      if (length === 0) return { kind: 'none', reason: 'empty NDEF message' };
      if (end > data.length) return { kind: 'need', need: end };
      return { kind: 'message', message: data.subarray(i + header, end) };
    }
    // Lock Control, Memory Control, proprietary: skip.
    i = end;
    if (i >= MAX_DATA_BYTES) return { kind: 'none', reason: 'no NDEF message within the token limit' };
  }
}

/** The first record of an NDEF message as a token when it is a Text record. */
export function textToken(message: Buffer): TokenResult {
  const flags = message[0];
  if (flags === undefined || message.length < 3) return { reason: 'truncated NDEF record' };
  const tnf = flags & 0x07;
  const shortRecord = (flags & 0x10) !== 0;
  const hasId = (flags & 0x08) !== 0;
  const chunked = (flags & 0x20) !== 0;
  if (chunked) return { reason: 'chunked NDEF record' };
  const typeLength = message[1] ?? 0;
  let i = 2;
  let payloadLength: number;
  if (shortRecord) {
    payloadLength = message[i] ?? 0;
    i += 1;
  } else {
    if (i + 4 > message.length) return { reason: 'truncated NDEF record' };
    payloadLength = message.readUInt32BE(i);
    i += 4;
  }
  const idLength = hasId ? (message[i++] ?? 0) : 0;
  const type = message.subarray(i, i + typeLength);
  i += typeLength + idLength;
  const payload = message.subarray(i, i + payloadLength);
  if (payload.length !== payloadLength) return { reason: 'truncated NDEF record' };
  if (tnf !== 0x01 || type.toString('latin1') !== 'T') return { reason: 'first NDEF record is not a Text record' };
  const status = payload[0] ?? 0;
  const langLength = status & 0x3f;
  const body = payload.subarray(1 + langLength);
  const text = (status & 0x80 ? decodeUtf16(body) : body.toString('utf8')).trim();
  if (text.length === 0) return { reason: 'empty Text record' };
  if (text.length > MAX_CARD_TOKEN_LENGTH) return { reason: `token longer than ${MAX_CARD_TOKEN_LENGTH} characters` };
  // A token is printable: refuse control characters (and U+FFFD from invalid UTF-8) rather than pass them on.
  if (/[\p{Cc}\uFFFD]/u.test(text)) return { reason: 'token has unprintable characters' };
  return { token: text };
}

function decodeUtf16(body: Buffer): string {
  // A BOM says the byte order; without one, NDEF Text records are big-endian.
  if (body[0] === 0xff && body[1] === 0xfe) return new TextDecoder('utf-16le').decode(body.subarray(2));
  const start = body[0] === 0xfe && body[1] === 0xff ? 2 : 0;
  const swapped = Buffer.from(body.subarray(start));
  if (swapped.length % 2 === 1) return '\uFFFD';
  swapped.swap16();
  return new TextDecoder('utf-16le').decode(swapped);
}
