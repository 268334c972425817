/**
 * A contactless card of ours for tests without hardware: it speaks the socket protocol of vsmartcard's vpcd (the
 * virtual reader driver loaded by pcscd), so the whole real stack — pcscd, libpcsclite, @pokusew/pcsclite,
 * nfc-pcsc — reads it as it would read a card on an ACR122U.
 *
 * vpcd *listens* on a TCP port (one per virtual reader, from its reader.conf CHANNELID); the card connects to it and
 * is "present" while the socket is open. Every message either way is a 2-byte big-endian length and a payload. From
 * vpcd, a 1-byte payload is a control code (0 power off, 1 power on, 2 reset, 4 get ATR — only 4 is answered, with
 * the ATR); a longer one is a command APDU, answered with a response APDU. vpcd writes the length and the payload
 * in separate segments, so frames are reassembled from the stream.
 *
 * Taking a card away (remove()) is seen by vpcd only at its next presence check: pcscd asks the driver about every
 * 400 ms, and vpcd then sends "get ATR" to the connected card, or accepts a waiting connection and asks it. So a card
 * that closed its socket and a new card that connected before that check look to pcscd like ONE card that stayed on
 * the reader: no removal, no insertion, and a PC/SC client never sees the second card. remove() therefore
 * half-closes the socket, answers nothing more, and resolves only when vpcd has dropped the connection (at that check,
 * or when a command it was waiting on failed); VirtualReaders.insertCard (virtual-card-reader.ts) also waits for
 * pcscd to report the removal, which is what a test putting the next card on the same reader needs.
 *
 * The card presents the PC/SC Part 3 ATR of a storage card (byte 5 = 0x4F), which is what makes nfc-pcsc ask for
 * the UID without an AID, and answers the PC/SC pseudo-APDUs of contactless readers:
 *   - GET DATA      `FF CA 00 00 Le` → the UID and 90 00;
 *   - READ BINARY   `FF B0 00 <block> Le` → Le bytes of the memory from that block and 90 00.
 * Three kinds: `type2` (NFC Forum Type 2 tag — NTAG21x / MIFARE Ultralight: 4-byte pages, readable without keys,
 * optionally with an NDEF message, see type2TagMemory), `classic` (MIFARE Classic 1K: the UID only; a read is
 * refused with 69 82 as on a real card without authentication) and `iso14443-4` (a phone, or a DESFire card: the
 * ATR of an ISO 14443-4 card without historical bytes, which nfc-pcsc will not read without an application id).
 */
import net from 'node:net';

export const VPCD_CONTROL = { powerOff: 0, powerOn: 1, reset: 2, getAtr: 4 } as const;

/** PC/SC Part 3 ATRs (card name in bytes 13–14: 00 03 MIFARE Ultralight / NTAG, 00 01 MIFARE Classic 1K). */
export const ATR_TYPE2 = Buffer.from('3b8f8001804f0ca0000003060300030000000068', 'hex');
export const ATR_MIFARE_CLASSIC_1K = Buffer.from('3b8f8001804f0ca000000306030001000000006a', 'hex');
/** PC/SC Part 3 ATR of an ISO 14443-4 card without historical bytes (e.g. a phone's card emulation). */
export const ATR_ISO14443_4 = Buffer.from('3b80800101', 'hex');

/** How long remove() waits for vpcd to drop the card (its presence check comes about every 400 ms). */
const REMOVE_TIMEOUT_MS = 5_000;

const SW_OK = Buffer.from([0x90, 0x00]);
const SW_WRONG_P1P2 = Buffer.from([0x6b, 0x00]);
const SW_SECURITY = Buffer.from([0x69, 0x82]);
const SW_INS_NOT_SUPPORTED = Buffer.from([0x6d, 0x00]);
const SW_CLA_NOT_SUPPORTED = Buffer.from([0x6e, 0x00]);

export type VirtualCardKind = 'type2' | 'classic' | 'iso14443-4';

export interface VirtualCardOptions {
  /** vpcd's port for the reader to put the card on (its CHANNELID; the second reader is port + 1). */
  readonly port: number;
  readonly host?: string;
  /** 4, 7 or 10 bytes as hex (either case). */
  readonly uid: string;
  /** Default `type2`. */
  readonly kind?: VirtualCardKind;
  /** The tag's memory from page 0 (type2 only); default: type2TagMemory(uid) (no NDEF message). */
  readonly memory?: Buffer;
  /** Answer each READ BINARY this much later (a slow card, or one being taken away mid-read), ms. */
  readonly readDelayMs?: number;
}

export interface VirtualCard {
  readonly uid: string;
  /** Every command APDU received, as lowercase hex, oldest first. */
  readonly apdus: readonly string[];
  /** Resolves once vpcd has asked for the ATR (the reader has seen the card). */
  readonly powered: Promise<void>;
  /**
   * Takes the card off the reader: half-closes the socket and answers nothing more (a command in flight fails);
   * resolves once vpcd has dropped the connection, within about one presence check (see above). Idempotent.
   */
  remove(): Promise<void>;
  /** Settles when the socket closes for any reason (removed, or vpcd/pcscd went away). */
  readonly closed: Promise<void>;
}

/** Puts a card on the virtual reader at `port`: resolves once the TCP connection to vpcd is open. */
export async function insertVirtualCard(options: VirtualCardOptions): Promise<VirtualCard> {
  const uid = Buffer.from(options.uid, 'hex');
  if (![4, 7, 10].includes(uid.length) || uid.toString('hex') !== options.uid.toLowerCase()) {
    throw new Error(`virtual card: UID must be 4, 7 or 10 bytes of hex, got ${JSON.stringify(options.uid)}`);
  }
  const kind = options.kind ?? 'type2';
  const atr = { type2: ATR_TYPE2, classic: ATR_MIFARE_CLASSIC_1K, 'iso14443-4': ATR_ISO14443_4 }[kind];
  const memory = options.memory ?? type2TagMemory(uid.toString('hex'));
  const apdus: string[] = [];

  const socket = net.connect({ port: options.port, host: options.host ?? '127.0.0.1' });
  socket.setNoDelay(true);
  let removing: Promise<void> | undefined;
  let markPowered: () => void = () => {};
  const powered = new Promise<void>((resolve) => (markPowered = resolve));
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  // After the connection, an error (vpcd gone: ECONNRESET) only ends the card; 'close' follows.
  socket.on('error', () => {});

  const send = (payload: Buffer) => {
    const header = Buffer.alloc(2);
    header.writeUInt16BE(payload.length);
    socket.write(Buffer.concat([header, payload]));
  };

  const answer = (apdu: Buffer): Buffer => {
    if (apdu[0] !== 0xff) return SW_CLA_NOT_SUPPORTED;
    const ins = apdu[1];
    const p1 = apdu[2] ?? 0;
    const p2 = apdu[3] ?? 0;
    // Le 00 means "as much as there is" (256 for READ BINARY; the whole UID for GET DATA).
    const le = apdu.length >= 5 ? (apdu[4] ?? 0) : 0;
    if (ins === 0xca) {
      if (p1 !== 0x00) return SW_WRONG_P1P2;
      const out = le === 0 || le >= uid.length ? uid : uid.subarray(0, le);
      return Buffer.concat([out, SW_OK]);
    }
    if (ins === 0xb0) {
      if (kind === 'classic') return SW_SECURITY;
      if (kind === 'iso14443-4') return SW_INS_NOT_SUPPORTED;
      const block = (p1 << 8) | p2;
      const offset = block * 4;
      const length = le === 0 ? 256 : le;
      if (offset + length > memory.length) return SW_WRONG_P1P2;
      return Buffer.concat([memory.subarray(offset, offset + length), SW_OK]);
    }
    return SW_INS_NOT_SUPPORTED;
  };

  let pending = Buffer.alloc(0);
  socket.on('data', (chunk: Buffer) => {
    // Taken away: vpcd's next request gets no answer, only the end of the stream.
    if (removing) return;
    pending = Buffer.concat([pending, chunk]);
    while (pending.length >= 2) {
      const length = pending.readUInt16BE(0);
      if (pending.length < 2 + length) break;
      const payload = pending.subarray(2, 2 + length);
      pending = pending.subarray(2 + length);
      if (payload.length === 1) {
        if (payload[0] === VPCD_CONTROL.getAtr) {
          send(atr);
          markPowered();
        }
        continue;
      }
      apdus.push(payload.toString('hex'));
      const response = answer(payload);
      if (options.readDelayMs && payload[1] === 0xb0) {
        setTimeout(() => {
          if (!removing && !socket.destroyed) send(response);
        }, options.readDelayMs);
      } else {
        send(response);
      }
    }
  });

  return {
    uid: uid.toString('hex'),
    apdus,
    powered,
    closed,
    remove() {
      removing ??= (async () => {
        // FIN only: vpcd's next read on this connection ends (its presence check, or the answer to a command it is
        // waiting for), and vpcd closes its side. A vpcd that never comes back (pcscd hung) must not hang the test.
        socket.end();
        const timer = setTimeout(() => socket.destroy(), REMOVE_TIMEOUT_MS);
        await closed;
        clearTimeout(timer);
      })();
      return removing;
    },
  };
}

/**
 * The memory of an NFC Forum Type 2 tag (NTAG215 layout, 135 pages of 4 bytes): the UID in pages 0–2, the
 * capability container in page 3 (E1 10 3E 00: NDEF, version 1.0, 496 data bytes, read/write), and from page 4 either
 * an empty NDEF message or, with `ndefText`, an NDEF message of one well-known Text record (UTF-8, language "en").
 * `rawData` replaces the data area from page 4 (for malformed-content tests).
 */
export function type2TagMemory(uid: string, content: { ndefText?: string; rawData?: Buffer } = {}): Buffer {
  const memory = Buffer.alloc(135 * 4);
  const id = Buffer.from(uid, 'hex');
  id.copy(memory, 0, 0, Math.min(id.length, 9));
  Buffer.from([0xe1, 0x10, 0x3e, 0x00]).copy(memory, 12);
  const data = content.rawData ?? ndefMessageTlv(content.ndefText);
  if (data.length > memory.length - 16) throw new Error('type2TagMemory: content larger than the tag');
  data.copy(memory, 16);
  return memory;
}

/** An NDEF Message TLV (03 len … FE) holding one short Text record, or an empty message without text. */
export function ndefMessageTlv(text?: string): Buffer {
  if (text === undefined) return Buffer.from([0x03, 0x00, 0xfe]);
  const lang = Buffer.from('en', 'ascii');
  const payload = Buffer.concat([Buffer.from([lang.length]), lang, Buffer.from(text, 'utf8')]);
  const record =
    payload.length < 256
      ? Buffer.concat([Buffer.from([0xd1, 0x01, payload.length, 0x54]), payload]) // MB ME SR, TNF 1, type "T"
      : Buffer.concat([Buffer.from([0xc1, 0x01]), u32(payload.length), Buffer.from([0x54]), payload]);
  const length =
    record.length < 0xff ? Buffer.from([record.length]) : Buffer.from([0xff, record.length >> 8, record.length & 0xff]);
  return Buffer.concat([Buffer.from([0x03]), length, record, Buffer.from([0xfe])]);
}

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
}
