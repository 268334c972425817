/**
 * A reader that delivers lines: a QR scanner as a keyboard wedge or on a serial port (e.g. /dev/ttyACM0, set to
 * raw mode by the installer), a FIFO, or a file a test appends to. Each line is one credential: a QR token (a
 * compact JWS) or, from a keyboard-wedge NFC reader, a card UID in hex (colons and spaces allowed, any case). The
 * device is reopened with backoff when it goes away (unplugged, the FIFO's writer closed); a regular file is read
 * like `tail -f`: from its end at start, then on from where it was left; truncated or replaced (rotated: another
 * inode) it is read from its start. Line contents are never logged.
 *
 * Hostile input never crashes the gateway nor grows memory: a line longer than MAX_LINE_BYTES is dropped whole —
 * including its tail up to the next newline, which must not pass for a credential of its own — and every line that
 * is no credential is counted (`unreadable`) and logged without its content, at most once per 10 s.
 */
import { createReadStream, type ReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import * as v from 'valibot';
import { Credential, MAX_QR_TOKEN_LENGTH } from '../../../protocol/index.ts';
import type { ReaderId } from '../../../protocol/index.ts';
import type { Logger } from '../../../tools/runtime/logger.ts';
import type { ReaderScan, ReaderStatus } from './readers.ts';
import { createThrottledWarn } from './scan-limiter.ts';

/** How often a regular file is read on from where it ended. */
const FILE_POLL_MS = 100;
/** Longest line kept while waiting for its end. */
const MAX_LINE_BYTES = 4 * 1024;

export interface LineReaderOptions {
  readonly reader: ReaderId;
  readonly path: string;
  readonly onScan: (scan: ReaderScan) => void;
  readonly log: Logger;
  readonly nowMs: () => number;
  readonly retryMinMs?: number;
  readonly retryMaxMs?: number;
}

export interface LineReader {
  start(): void;
  status(): ReaderStatus;
  close(): void;
  /** Lines that were no credential. */
  readonly unreadable: number;
}

/** A line as a credential: a QR token, or an NFC UID in hex; undefined when it is neither. */
export function credentialOfLine(line: string): Credential | undefined {
  const text = line.trim();
  if (text.length === 0 || text.length > MAX_QR_TOKEN_LENGTH) return undefined;
  const candidate = text.includes('.')
    ? { kind: 'qr', token: text }
    : { kind: 'nfc', uid: text.replace(/[:\s-]/g, '').toLowerCase() };
  const parsed = v.safeParse(Credential, candidate);
  return parsed.success ? parsed.output : undefined;
}

export function createLineReader(options: LineReaderOptions): LineReader {
  const { reader, path, log } = options;
  const retryMin = options.retryMinMs ?? 500;
  const retryMax = options.retryMaxMs ?? 10_000;
  let stream: ReadStream | undefined;
  let connected = false;
  let closed = false;
  let detail: string | undefined;
  let retryMs = retryMin;
  let retryTimer: NodeJS.Timeout | undefined;
  /** Where a regular file is read from next; undefined until first opened (then: its end, so no old line replays). */
  let position: number | undefined;
  /** The regular file's inode: another one at the same path (log rotation) is read from its start. */
  let inode: number | undefined;
  /** Inside an overlong line: everything up to the next newline is dropped (kept across reopening a file). */
  let discarding = false;
  let unreadable = 0;
  const warn = createThrottledWarn(log, options.nowMs);

  /** A regular file at its end is polled like `tail -f` (still connected); a device that went away, with backoff. */
  function scheduleReopen(atEndOfFile = false): void {
    if (!atEndOfFile) connected = false;
    if (closed || retryTimer !== undefined) return;
    retryTimer = setTimeout(
      () => {
        retryTimer = undefined;
        void open();
      },
      atEndOfFile ? FILE_POLL_MS : retryMs,
    );
    if (!atEndOfFile) retryMs = Math.min(retryMax, retryMs * 2);
  }

  async function open(): Promise<void> {
    if (closed) return;
    let regular = false;
    try {
      const info = await stat(path);
      regular = info.isFile();
      if (regular) {
        // Lines already in the file were scanned before this reader started (or by an earlier run): not again.
        position ??= info.size;
        const replaced = inode !== undefined && info.ino !== inode;
        if (replaced || info.size < position) {
          // Truncated or replaced: read it from its start; a line cut off in the old file does not continue here.
          position = 0;
          discarding = false;
        }
        inode = info.ino;
      } else {
        discarding = false; // a device or FIFO opened again starts afresh
      }
    } catch (err) {
      detail = `cannot open ${path}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`;
      log.debug({ reader, detail }, 'line reader unavailable');
      scheduleReopen();
      return;
    }
    if (closed) return;
    let failed = false;
    const s = createReadStream(path, regular ? { start: position ?? 0 } : {});
    stream = s;
    let pending = Buffer.alloc(0);
    s.on('open', () => {
      if (!connected) log.info({ reader, path }, 'reader connected');
      connected = true;
      detail = undefined;
      retryMs = retryMin;
    });
    s.on('data', (chunk: Buffer | string) => {
      if (stream !== s) return;
      pending = Buffer.concat([pending, typeof chunk === 'string' ? Buffer.from(chunk) : chunk]);
      let newline = pending.indexOf(0x0a);
      while (newline >= 0) {
        const line = pending.subarray(0, newline);
        pending = pending.subarray(newline + 1);
        if (regular) position = (position ?? 0) + newline + 1;
        if (discarding)
          discarding = false; // the end of an overlong line: dropped with it
        else if (line.length > MAX_LINE_BYTES) overlong(line.length);
        else onLine(line.toString('utf8'));
        newline = pending.indexOf(0x0a);
      }
      if (pending.length > MAX_LINE_BYTES || (discarding && pending.length > 0)) {
        // No credential is this long: drop it rather than buffer without end, and the rest of it when it comes.
        if (regular) position = (position ?? 0) + pending.length;
        if (!discarding) overlong(pending.length);
        discarding = true;
        pending = Buffer.alloc(0);
      }
    });
    s.on('error', (err: NodeJS.ErrnoException) => {
      failed = true;
      detail = `${path}: ${err.code ?? err.message}`;
      log.warn({ reader, detail }, 'reader error');
    });
    s.on('close', () => {
      if (stream !== s) return;
      stream = undefined;
      // A regular file is read again from the start of its unfinished last line.
      if (!closed) scheduleReopen(regular && !failed);
    });
  }

  function overlong(length: number): void {
    unreadable += 1;
    warn('overlong', { reader, length, reason: 'line-too-long' }, 'reader line dropped');
  }

  function onLine(line: string): void {
    const credential = credentialOfLine(line);
    if (credential === undefined) {
      if (line.trim().length > 0) {
        unreadable += 1;
        warn('unreadable', { reader, length: line.length, reason: 'no-credential' }, 'reader line dropped');
      }
      return;
    }
    options.onScan({ reader, credential, atMs: options.nowMs() });
  }

  return {
    start() {
      void open();
    },
    status() {
      return { reader, kind: 'qr', connected, ...(detail === undefined ? {} : { detail }) };
    },
    close() {
      closed = true;
      clearTimeout(retryTimer);
      stream?.destroy();
      connected = false;
    },
    get unreadable() {
      return unreadable;
    },
  };
}
