/**
 * The NFC child process: runs nfc-pcsc (PC/SC through pcscd) and reports readers, cards and errors to the gateway
 * over IPC (child-messages.ts). Started by nfc-readers.ts only after pcscd's socket accepted a connection; still,
 * if pcscd goes away between that check and `new NFC()`, the native code busy-loops here — the gateway notices the
 * missing heartbeats and kills this process, its own thread never blocked.
 *
 * Argument: JSON `{ heartbeatMs, readTokens }`. PCSCLITE_CSOCK_NAME in the environment picks pcscd's socket.
 * Exits when the gateway says `close`, when the IPC channel closes (the gateway died), or after a PC/SC context
 * error (the gateway starts a fresh child: a failed context is not reused).
 */
import { NFC, type NfcCard, type Reader } from 'nfc-pcsc';
import type { ChildMessage } from './child-messages.ts';
import { readType2Token } from './ndef.ts';

interface ChildOptions {
  readonly heartbeatMs: number;
  readonly readTokens: boolean;
}

const options = JSON.parse(process.argv[2] ?? '{}') as Partial<ChildOptions>;
const heartbeatMs = options.heartbeatMs ?? 1000;
const readTokens = options.readTokens ?? true;

function send(message: ChildMessage): void {
  if (!process.connected || !process.send) return;
  process.send(message, undefined, {}, () => {
    // A send after the gateway went away fails: the 'disconnect' handler ends this process.
  });
}

function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

let nfc: NFC | undefined;
let ending = false;

function end(code: number): void {
  if (ending) return;
  ending = true;
  clearInterval(heartbeat);
  try {
    nfc?.close();
  } catch {
    // already failed
  }
  // Let the last messages leave the IPC channel first.
  setTimeout(() => process.exit(code), 50).unref();
  if (process.connected) process.disconnect();
}

process.on('disconnect', () => end(0));
process.on('message', (msg: unknown) => {
  if (typeof msg === 'object' && msg !== null && (msg as { type?: unknown }).type === 'close') end(0);
});
process.on('SIGTERM', () => end(0));
// nfc-pcsc emits some failures under odd event names or rejects promises it does not await: report, never die.
process.on('uncaughtException', (err) => {
  send({ type: 'pcsc-error', message: `uncaught: ${message(err)}` });
  end(1);
});
process.on('unhandledRejection', (err) => send({ type: 'reader-error', readerName: '', message: message(err) }));

const heartbeat = setInterval(() => send({ type: 'alive' }), heartbeatMs);

async function tokenOf(reader: Reader): Promise<{ token?: string; noToken?: string }> {
  if (!readTokens) return { noToken: 'token reading disabled' };
  try {
    const result = await readType2Token((page) => reader.read(page, 16));
    return result.token !== undefined ? { token: result.token } : { noToken: result.reason };
  } catch (err) {
    // A MIFARE Classic refuses READ BINARY without keys (69 82): UID only.
    return { noToken: `no readable data blocks (${message(err)})` };
  }
}

function watch(reader: Reader): void {
  const readerName = reader.name;
  send({ type: 'reader', name: readerName });
  reader.on('error', (err) => send({ type: 'reader-error', readerName, message: message(err) }));
  reader.on('end', () => send({ type: 'reader-end', name: readerName }));
  // A card taken away while its token is being read: its scan (the UID was read) still goes first, then card-off.
  let reading: Promise<void> = Promise.resolve();
  reader.on('card.off', (card: NfcCard) => {
    // nfc-pcsc says card.off for every card that left, also for one it never reported (no `card` event: its UID
    // could not be read — taken away during GET DATA, a phone or other ISO 14443-4 card, or a card pcscd still
    // listed when this child started that was already gone). No scan was sent for such a card, so no card-off either.
    const uid = card.uid;
    if (!uid) return;
    void reading.then(() => send({ type: 'card-off', readerName, uid }));
  });
  reader.on('card', (card: NfcCard) => {
    const uid = card.uid;
    if (!uid) {
      send({ type: 'reader-error', readerName, message: 'card without a UID (not an ISO 14443-3 storage card)' });
      return;
    }
    reading = tokenOf(reader).then((found) => send({ type: 'card', readerName, uid, ...found }));
  });
}

try {
  nfc = new NFC();
} catch (err) {
  send({ type: 'pcsc-error', message: message(err) });
  end(1);
}
if (nfc) {
  nfc.on('reader', watch);
  nfc.on('error', (err) => {
    send({ type: 'pcsc-error', message: message(err) });
    end(1);
  });
  send({ type: 'ready' });
}
