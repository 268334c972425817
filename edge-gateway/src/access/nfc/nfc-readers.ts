/**
 * NFC readers on the gateway through PC/SC (pcscd + nfc-pcsc), isolated so that a missing or failing PC/SC
 * service can never stop the gateway:
 *   - first, pcscd's socket must accept a connection (while pcscd is down, `new NFC()` busy-loops its thread in
 *     native code; no timer fires there);
 *   - then nfc-pcsc runs in a child process (nfc-child.ts) that reports over IPC and sends a heartbeat; a child
 *     that stops beating (blocked in native code) is killed, one that fails exits;
 *   - after any failure: status `no-pcsc` (socket refused) or `error`, and another attempt after a backoff with
 *     jitter (1 s doubling to 30 s by default).
 * Events: `scan` for each card put on a reader ({readerName, uid, token?}), `card-off` when that card is taken away,
 * `status` whenever status() changes. What a scan means (which ReaderId a reader name is, allow or deny) is decided
 * by the caller. The token, when the card carries one, is read from an NDEF Text record (see ndef.ts).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { EventEmitter } from 'node:events';
import net from 'node:net';
import { fileURLToPath } from 'node:url';
import type { Logger } from '../../../../tools/runtime/logger.ts';
import { findExecutable } from '../../../../tools/services/process.ts';
import { NFC_UID_PATTERN } from '../../../../protocol/messages/access.ts';
import { createBackoff } from '../../uplink/backoff.ts';
import { isChildMessage, type ChildMessage } from './child-messages.ts';

/** pcsc-lite's default client socket; PCSCLITE_CSOCK_NAME overrides it (in pcsc-lite's client library too). */
export const DEFAULT_PCSCD_SOCKET = '/run/pcscd/pcscd.comm';

export type NfcState = 'ok' | 'no-pcsc' | 'error';

export interface NfcReaderStatus {
  /** The PC/SC reader name, e.g. "ACS ACR122U PICC Interface 00 00". */
  readonly name: string;
  readonly cardPresent: boolean;
}

export interface NfcStatus {
  readonly state: NfcState;
  /** Why the state is not ok, e.g. "NFC: no PC/SC service (…/pcscd.comm: ENOENT)". */
  readonly detail?: string;
  readonly readers: readonly NfcReaderStatus[];
}

export interface NfcScan {
  readonly readerName: string;
  /** Lowercase hex, 4, 7 or 10 bytes (protocol's NfcUid). */
  readonly uid: string;
  /** The member token in the card's NDEF Text record, when it has one. */
  readonly token?: string;
}

export interface NfcCardOff {
  readonly readerName: string;
  /** The UID of the scan this card gave (card-off only follows a scan). */
  readonly uid: string;
}

export interface NfcEvents {
  scan: [NfcScan];
  'card-off': [NfcCardOff];
  status: [NfcStatus];
}

export interface NfcReadersOptions {
  readonly log: Logger;
  /** pcscd's socket; default PCSCLITE_CSOCK_NAME's usual value, /run/pcscd/pcscd.comm. Passed on to the child. */
  readonly socketPath?: string;
  /** First retry delay after a failure, ms (default 1000); doubles up to retryMaxMs (default 30000). */
  readonly retryMinMs?: number;
  readonly retryMaxMs?: number;
  /** The child's heartbeat, ms (default 1000); it counts as hung after hangTimeoutMs (default 5000) of silence. */
  readonly heartbeatMs?: number;
  readonly hangTimeoutMs?: number;
  /** Read a member token from NDEF (default true); false: UIDs only. */
  readonly readTokens?: boolean;
}

export interface NfcReaders {
  on<K extends keyof NfcEvents>(event: K, listener: (...args: NfcEvents[K]) => void): this;
  off<K extends keyof NfcEvents>(event: K, listener: (...args: NfcEvents[K]) => void): this;
  status(): NfcStatus;
  /** Resolves with the status once the first attempt has an outcome (ok, no-pcsc or error). */
  ready(): Promise<NfcStatus>;
  /** Stops the child and any retry; resolves once the child has exited. */
  close(): Promise<void>;
}

const CHILD_SCRIPT = fileURLToPath(new URL('./nfc-child.ts', import.meta.url));
const PROBE_TIMEOUT_MS = 2000;
/** A child that ran this long counts as healthy: the backoff starts from its first step again after it fails. */
const HEALTHY_AFTER_MS = 10_000;
const CLOSE_GRACE_MS = 2000;

/** Variables the child may see: not the gateway's secrets, only what Node and pcsc-lite need. */
const CHILD_ENV_KEYS = ['PATH', 'HOME', 'TMPDIR', 'LANG', 'LC_ALL', 'TZ', 'NODE_OPTIONS', 'NODE_V8_COVERAGE'];

function childEnv(socketPath: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { PCSCLITE_CSOCK_NAME: socketPath };
  for (const key of CHILD_ENV_KEYS) if (process.env[key] !== undefined) env[key] = process.env[key];
  return env;
}

/** True when something accepts connections on the Unix socket (pcscd's); the reason otherwise. */
export function probePcscSocket(socketPath: string, timeoutMs = PROBE_TIMEOUT_MS): Promise<true | string> {
  return new Promise((resolve) => {
    const socket = net.connect(socketPath);
    const done = (result: true | string) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(result);
    };
    const timer = setTimeout(() => done(`${socketPath}: no answer within ${timeoutMs} ms`), timeoutMs);
    socket.once('connect', () => done(true));
    socket.once('error', (err: NodeJS.ErrnoException) => done(`${socketPath}: ${err.code ?? err.message}`));
  });
}

export function startNfcReaders(options: NfcReadersOptions): NfcReaders {
  const log = options.log;
  const socketPath = options.socketPath ?? DEFAULT_PCSCD_SOCKET;
  const heartbeatMs = options.heartbeatMs ?? 1000;
  const hangTimeoutMs = options.hangTimeoutMs ?? 5000;
  const backoff = createBackoff(options.retryMinMs ?? 1000, options.retryMaxMs ?? 30_000);
  const emitter = new EventEmitter<NfcEvents>();
  const readers = new Map<string, NfcReaderStatus>();

  let state: NfcState = 'no-pcsc';
  let detail: string | undefined = 'NFC: connecting to the PC/SC service';
  let closed = false;
  let child: ChildProcess | undefined;
  let childExited: Promise<void> = Promise.resolve();
  let retryTimer: NodeJS.Timeout | undefined;
  let hangTimer: NodeJS.Timeout | undefined;
  let settleFirst: ((status: NfcStatus) => void) | undefined;
  const first = new Promise<NfcStatus>((resolve) => (settleFirst = resolve));

  const snapshot = (): NfcStatus => ({
    state,
    ...(detail !== undefined ? { detail } : {}),
    readers: [...readers.values()].sort((a, b) => a.name.localeCompare(b.name)),
  });

  // The first publish is the first attempt's outcome (ok, no-pcsc or error): ready() resolves with it.
  const publish = () => {
    const status = snapshot();
    emitter.emit('status', status);
    settleFirst?.(status);
    settleFirst = undefined;
  };

  const setState = (next: NfcState, why?: string) => {
    const changed = next !== state || why !== detail;
    if (changed && next !== 'ok') log.warn({ nfc: next, detail: why }, why ?? `NFC: ${next}`);
    else if (changed) log.info({ nfc: next }, 'NFC: PC/SC service connected');
    state = next;
    detail = why;
    if (changed) publish();
  };

  const scheduleRetry = () => {
    if (closed || retryTimer) return;
    const delay = backoff.next();
    log.debug({ delayMs: delay, attempt: backoff.attempts }, 'NFC: retrying');
    retryTimer = setTimeout(() => {
      retryTimer = undefined;
      void attempt();
    }, delay);
  };

  const armHangTimer = () => {
    clearTimeout(hangTimer);
    hangTimer = setTimeout(() => {
      if (!child) return;
      log.warn({ pid: child.pid, silentMs: hangTimeoutMs }, 'NFC: the PC/SC child stopped answering; killing it');
      failChild(child, 'NFC: PC/SC stack not responding');
    }, hangTimeoutMs);
  };

  /** Ends a child after a failure: kill, forget its readers, say why, retry. */
  const failChild = (failed: ChildProcess, why: string) => {
    if (child !== failed) return;
    child = undefined;
    clearTimeout(hangTimer);
    failed.kill('SIGKILL');
    readers.clear();
    void probePcscSocket(socketPath).then((probe) => {
      if (closed) return;
      if (probe === true) setState('error', why);
      else setState('no-pcsc', `NFC: no PC/SC service (${probe})`);
      scheduleRetry();
    });
  };

  const onMessage = (from: ChildProcess, startedAt: number, msg: ChildMessage) => {
    if (child !== from) return;
    armHangTimer();
    switch (msg.type) {
      case 'alive':
        if (Date.now() - startedAt >= HEALTHY_AFTER_MS) backoff.reset();
        return;
      case 'ready':
        setState('ok');
        return;
      case 'reader':
        readers.set(msg.name, { name: msg.name, cardPresent: false });
        log.info({ reader: msg.name }, 'NFC: reader attached');
        publish();
        return;
      case 'reader-end':
        if (readers.delete(msg.name)) {
          log.info({ reader: msg.name }, 'NFC: reader removed');
          publish();
        }
        return;
      case 'card': {
        if (!NFC_UID_PATTERN.test(msg.uid)) {
          log.warn(
            { reader: msg.readerName, uidLength: msg.uid.length / 2 },
            'NFC: card with an unexpected UID length',
          );
          return;
        }
        readers.set(msg.readerName, { name: msg.readerName, cardPresent: true });
        log.debug({ reader: msg.readerName, withToken: msg.token !== undefined, noToken: msg.noToken }, 'NFC: card');
        emitter.emit('scan', {
          readerName: msg.readerName,
          uid: msg.uid,
          ...(msg.token !== undefined ? { token: msg.token } : {}),
        });
        publish();
        return;
      }
      case 'card-off':
        // A card whose UID was refused above gave no scan: no card-off for it either.
        if (!NFC_UID_PATTERN.test(msg.uid)) return;
        readers.set(msg.readerName, { name: msg.readerName, cardPresent: false });
        emitter.emit('card-off', { readerName: msg.readerName, uid: msg.uid });
        publish();
        return;
      case 'reader-error':
        // A card taken away mid-read and the like: the reader goes on; a PC/SC failure comes as pcsc-error too.
        log.warn({ reader: msg.readerName, err: msg.message }, 'NFC: reader error');
        return;
      case 'pcsc-error':
        failChild(from, `NFC: PC/SC error (${msg.message})`);
        return;
    }
  };

  const startChild = () => {
    const nodeArgs = [CHILD_SCRIPT, JSON.stringify({ heartbeatMs, readTokens: options.readTokens ?? true })];
    // Under setpriv --pdeathsig the kernel kills the child with the gateway, even when the child is stuck in
    // native code and cannot notice that its IPC channel closed.
    const setpriv = findExecutable('setpriv');
    const [command, args] = setpriv
      ? [setpriv, ['--pdeathsig', 'SIGKILL', '--', process.execPath, ...nodeArgs]]
      : [process.execPath, nodeArgs];
    const spawned = spawn(command, args, {
      env: childEnv(socketPath),
      stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
      serialization: 'json',
    });
    const startedAt = Date.now();
    child = spawned;
    let stderr = '';
    spawned.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
      stderr = (stderr + chunk).slice(-2000);
    });
    spawned.on('error', (err) => failChild(spawned, `NFC: cannot start the PC/SC child (${err.message})`));
    spawned.on('message', (msg: unknown) => {
      if (isChildMessage(msg)) onMessage(spawned, startedAt, msg);
    });
    childExited = new Promise((resolve) => {
      spawned.once('close', (code, signal) => {
        if (child === spawned) {
          const lines = stderr.trim().split('\n');
          log.warn({ code, signal, stderr: lines.slice(-5).join(' | ') || undefined }, 'NFC: the PC/SC child exited');
          // The first error line says why (e.g. "Error: Could not locate the bindings file" when the addon was not built).
          const why = lines
            .find((line) => /error/i.test(line))
            ?.trim()
            .slice(0, 200);
          failChild(spawned, `NFC: PC/SC child exited (${signal ?? `code ${code}`}${why ? `: ${why}` : ''})`);
        }
        resolve();
      });
    });
    armHangTimer();
  };

  const attempt = async () => {
    if (closed || child) return;
    const probe = await probePcscSocket(socketPath);
    if (closed || child) return;
    if (probe !== true) {
      setState('no-pcsc', `NFC: no PC/SC service (${probe})`);
      scheduleRetry();
      return;
    }
    startChild();
  };

  void attempt();

  const api: NfcReaders = {
    on(event, listener) {
      (emitter as EventEmitter).on(event, listener as (...args: unknown[]) => void);
      return api;
    },
    off(event, listener) {
      (emitter as EventEmitter).off(event, listener as (...args: unknown[]) => void);
      return api;
    },
    status: snapshot,
    ready: () => first,
    async close() {
      if (closed) return childExited;
      closed = true;
      clearTimeout(retryTimer);
      clearTimeout(hangTimer);
      const running = child;
      child = undefined;
      if (running && running.exitCode === null && running.signalCode === null) {
        if (running.connected) running.send({ type: 'close' }, () => {});
        const kill = setTimeout(() => running.kill('SIGKILL'), CLOSE_GRACE_MS);
        await childExited;
        clearTimeout(kill);
      }
      readers.clear();
      settleFirst?.(snapshot());
    },
  };
  return api;
}
