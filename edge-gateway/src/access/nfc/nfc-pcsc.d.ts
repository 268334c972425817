/**
 * Types for the part of nfc-pcsc 0.8 (which ships none) that nfc-child.ts uses. nfc-pcsc wraps @pokusew/pcsclite:
 * an NFC object finds PC/SC readers; each reader emits `card` (ISO 14443-3 cards: with the UID read by GET DATA)
 * and `card.off`, and reads data blocks with READ BINARY.
 */
declare module 'nfc-pcsc' {
  import { EventEmitter } from 'node:events';

  export interface NfcCard {
    /** ATR as the reader reported it. */
    atr?: Buffer;
    /** 'TAG_ISO_14443_3' when ATR byte 5 is 0x4F (a PC/SC storage card), else 'TAG_ISO_14443_4'. */
    standard?: string;
    type?: string;
    /** Lowercase hex, ISO 14443-3 cards only. */
    uid?: string;
    /** ISO 14443-4 cards: the answer to SELECT of the reader's AID. */
    data?: Buffer;
  }

  export class Reader extends EventEmitter {
    readonly name: string;
    /** Set false to get `card` without nfc-pcsc's own UID read. */
    autoProcessing: boolean;
    aid: string | Buffer | ((card: NfcCard) => Buffer) | null;
    /** READ BINARY (FF B0) from `blockNumber`, `length` bytes, in packets of `packetSize` (default 16). */
    read(blockNumber: number, length: number, blockSize?: number, packetSize?: number): Promise<Buffer>;
    close(): void;
    on(event: 'card' | 'card.off', listener: (card: NfcCard) => void): this;
    on(event: 'error', listener: (err: Error) => void): this;
    on(event: 'end', listener: () => void): this;
  }

  export class NFC extends EventEmitter {
    constructor(logger?: unknown);
    readonly readers: Record<string, unknown>;
    close(): void;
    on(event: 'reader', listener: (reader: Reader) => void): this;
    on(event: 'error', listener: (err: Error) => void): this;
  }
}
