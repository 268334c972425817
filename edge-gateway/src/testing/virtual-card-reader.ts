/**
 * A real pcscd with two virtual readers (vsmartcard's vpcd driver) for NFC tests without hardware; cards are put
 * on them with insertVirtualCard (virtual-card.ts).
 *
 * Isolation: pcsc-lite 1.9.9's daemon always uses /run/pcscd (its socket, pcscd.comm, and its pid file; it refuses
 * to start while another pcscd owns them), while the client library honours PCSCLITE_CSOCK_NAME. So pcscd runs in
 * a mount namespace of its own (`unshare -m`, root only) with a private folder bind-mounted over /run/pcscd: its
 * socket appears as `<dir>/pcscd.comm`, which is what the test's clients are given. A system pcscd, a real reader
 * and parallel test runs are left alone. vpcd's readers come from our own reader.conf folder (`pcscd -c`), on a
 * free port P ("Virtual PCD 00 00") and P + 1 ("Virtual PCD 00 01"); vpcd listens on all interfaces.
 *
 * stop() ends pcscd by its PID; start() runs it again on the same socket and ports (a PC/SC service restart).
 *
 * Cards: insertCard(index, …) puts a virtual card on a reader. Its `reported` resolves once pcscd has reported it
 * ("Card inserted into <reader>" in pcscd's log), and its remove() of a reported card resolves once pcscd has
 * reported it gone ("Card Removed From <reader>", written after pcscd's reader state changed). Only then may the next
 * card go on that reader: vpcd checks for a card about every 400 ms, and a card that left and a new one that came
 * between two checks are one card to pcscd — no removal, no insertion, the new card never read (see virtual-card.ts).
 * A card taken away before pcscd reported it may go unreported altogether (vpcd asked for its ATR, pcscd's power-up
 * found it gone): wait for `reported` (or its scan) before taking a card away.
 */
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { insertVirtualCard, type VirtualCard, type VirtualCardOptions } from './virtual-card.ts';
import {
  findExecutable,
  ServiceStartError,
  spawnService,
  type ServiceProcess,
} from '../../../tools/services/process.ts';

export const VPCD_DRIVER = '/usr/lib/pcsc/drivers/serial/libifdvpcd.so';
export const VIRTUAL_READER_NAMES = ['Virtual PCD 00 00', 'Virtual PCD 00 01'] as const;

/** Why virtual readers cannot run on this machine (missing Debian packages, not root), or undefined when they can. */
export function virtualReadersUnavailable(): string | undefined {
  const missing = [
    findExecutable('pcscd') ? undefined : 'pcscd',
    findExecutable('vpcd-config') ? undefined : 'vsmartcard-vpcd',
    findExecutable('unshare') ? undefined : 'util-linux',
  ].filter((p) => p !== undefined);
  if (missing.length > 0)
    return `Debian packages missing: ${missing.join(' ')} (apt-get install -y ${missing.join(' ')})`;
  if (process.getuid?.() !== 0) return 'pcscd in a private mount namespace needs root';
  return undefined;
}

export interface VirtualReaders {
  /** pcscd's socket for clients (PCSCLITE_CSOCK_NAME). */
  readonly socketPath: string;
  /** vpcd's ports: index 0 is "Virtual PCD 00 00", index 1 "Virtual PCD 00 01". */
  readonly ports: readonly [number, number];
  /** The running pcscd's PID, undefined while stopped. */
  readonly pid: number | undefined;
  /** Starts pcscd (again) on the same socket and ports; resolves once it accepts clients. */
  start(): Promise<void>;
  /** Ends pcscd (SIGTERM, or SIGKILL with `kill: true`); resolves once it has exited. */
  stop(options?: { kill?: boolean }): Promise<void>;
  /**
   * Puts a card on reader `index` (0: "Virtual PCD 00 00", 1: "Virtual PCD 00 01"); its remove() resolves once pcscd
   * has reported it gone (or pcscd is not running), so that the next card on that reader is seen as a new card.
   */
  insertCard(index: 0 | 1, card: Omit<VirtualCardOptions, 'port' | 'host'>): Promise<ReaderCard>;
  /** Stops pcscd and removes the folder. */
  dispose(): Promise<void>;
}

/** A card on one of the virtual readers (VirtualReaders.insertCard). */
export interface ReaderCard extends VirtualCard {
  /** Resolves once pcscd has reported the card inserted (it polls about every 400 ms). */
  readonly reported: Promise<void>;
}

/** How long a removed card may take to be reported by pcscd (it checks every 400 ms). */
const REMOVAL_REPORT_TIMEOUT_MS = 10_000;

export async function startVirtualReaders(): Promise<VirtualReaders> {
  const unavailable = virtualReadersUnavailable();
  if (unavailable) throw new Error(`virtual readers: ${unavailable}`);
  const dir = await mkdtemp(path.join(os.tmpdir(), 'nxg-pcscd-'));
  const runDir = path.join(dir, 'run');
  const confDir = path.join(dir, 'reader.conf.d');
  await mkdir(runDir);
  await mkdir(confDir);
  let service: ServiceProcess | undefined;
  let ports: [number, number] = [0, 0];
  // pcscd's "Card inserted into" / "Card Removed From <reader>" lines so far, per reader, across restarts; and who
  // waits for the next.
  const insertions = VIRTUAL_READER_NAMES.map(() => 0);
  const removals = VIRTUAL_READER_NAMES.map(() => 0);
  const waiters = new Set<() => void>();
  const onPcscdLine = (line: string) => {
    const event = /Card (inserted into|Removed From) (.+?)\s*$/.exec(line);
    const index = event ? VIRTUAL_READER_NAMES.indexOf(event[2] as (typeof VIRTUAL_READER_NAMES)[number]) : -1;
    if (!event || index < 0) return;
    const counts = event[1] === 'inserted into' ? insertions : removals;
    counts[index] = (counts[index] ?? 0) + 1;
    for (const wake of waiters) wake();
  };

  const launch = async (): Promise<ServiceProcess> => {
    const proc = await spawnService({
      name: 'pcscd',
      onLine: onPcscdLine,
      command: 'unshare',
      args: [
        '--mount',
        '--propagation',
        'private',
        'sh',
        '-c',
        // exec: pcscd keeps the PID (and setpriv's parent-death signal) of the process we spawned.
        'mkdir -p /run/pcscd && mount --bind "$1" /run/pcscd && exec pcscd --foreground --info -c "$2"',
        'pcscd',
        runDir,
        confDir,
      ],
    });
    // A pcscd that ends reports no more removals: nobody may wait for one.
    void proc.exited.then(() => {
      for (const wake of waiters) wake();
    });
    try {
      await proc.waitForLine(/daemon ready/, 10_000);
      const output = proc.recentOutput();
      if (/Open Port .* Failed/.test(output)) {
        throw new ServiceStartError('pcscd', 'vpcd could not listen', `${output}\naddress already in use`);
      }
      const socketPath = path.join(runDir, 'pcscd.comm');
      await proc.waitUntil(() => Promise.resolve(existsSync(socketPath)), 5_000);
      return proc;
    } catch (err) {
      await proc.stop(0);
      throw err;
    }
  };

  // A free port P for the first reader; the second takes P + 1 (vpcd's rule), which may be taken: then another P.
  for (let attempt = 1; ; attempt++) {
    const port = await findFreePortPair();
    ports = [port, port + 1];
    const channel = `0x${port.toString(16).toUpperCase()}`;
    await writeFile(
      path.join(confDir, 'vpcd'),
      `FRIENDLYNAME "Virtual PCD"\nDEVICENAME   /dev/null:${channel}\nLIBPATH      ${VPCD_DRIVER}\nCHANNELID    ${channel}\n`,
    );
    try {
      service = await launch();
      break;
    } catch (err) {
      if (!(err instanceof ServiceStartError && err.addressInUse) || attempt >= 10) {
        await rm(dir, { recursive: true, force: true });
        throw err;
      }
    }
  }

  /**
   * Resolves once pcscd has logged more than `before` removals from reader `index`, or once `pcscd` (the process that
   * saw the card) has exited: its successor never knew the card.
   */
  const removalReported = (pcscd: ServiceProcess, index: number, before: number, uid: string): Promise<void> =>
    new Promise((resolve, reject) => {
      const check = () => {
        if ((removals[index] ?? 0) <= before && pcscd.exitStatus() === null) return;
        finish();
        resolve();
      };
      const finish = () => {
        clearTimeout(timer);
        waiters.delete(check);
      };
      const timer = setTimeout(() => {
        finish();
        reject(
          new Error(
            `virtual readers: pcscd did not report card ${uid} removed from ${VIRTUAL_READER_NAMES[index]} within ${REMOVAL_REPORT_TIMEOUT_MS} ms\n${pcscd.recentOutput()}`,
          ),
        );
      }, REMOVAL_REPORT_TIMEOUT_MS);
      waiters.add(check);
      check();
    });

  const readers: VirtualReaders = {
    socketPath: path.join(runDir, 'pcscd.comm'),
    get ports() {
      return ports;
    },
    get pid() {
      return service?.exitStatus() === null ? service.pid : undefined;
    },
    async start() {
      if (service && service.exitStatus() === null) return;
      service = await launch();
    },
    async stop(options = {}) {
      const running = service;
      service = undefined;
      if (!running) return;
      await running.stop(options.kill ? 0 : 5_000);
    },
    async insertCard(index, options) {
      const pcscd = service;
      const insertedBefore = insertions[index] ?? 0;
      const removedBefore = removals[index] ?? 0;
      const isReported = () => (insertions[index] ?? 0) > insertedBefore;
      const card = await insertVirtualCard({ ...options, port: ports[index] });
      const reported = new Promise<void>((resolve) => {
        const check = () => {
          if (!isReported()) return;
          waiters.delete(check);
          resolve();
        };
        waiters.add(check);
        check();
      });
      let removing: Promise<void> | undefined;
      return {
        uid: card.uid,
        apdus: card.apdus,
        powered: card.powered,
        closed: card.closed,
        reported,
        remove() {
          removing ??= (async () => {
            await card.remove();
            // pcscd reports the removal of a card it reported; of one it never reported, nothing.
            if (isReported() && pcscd) await removalReported(pcscd, index, removedBefore, card.uid);
          })();
          return removing;
        },
      };
    },
    async dispose() {
      await readers.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
  return readers;
}

/**
 * A port P with P and P + 1 free on all interfaces (where vpcd listens), below the ephemeral range: ports there
 * come and go with every outgoing connection (and linger in TIME-WAIT), so on a busy machine P + 1 of a port the
 * kernel just handed out is often taken by the time vpcd binds it.
 */
async function findFreePortPair(): Promise<number> {
  const [ephemeralLow] = readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/).map(Number);
  const high = Math.max(20_000, (ephemeralLow ?? 32_768) - 2);
  for (;;) {
    const port = 10_000 + Math.floor(Math.random() * (high - 10_000));
    if ((await canListen(port)) && (await canListen(port + 1))) return port;
  }
}

function canListen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once('error', () => resolve(false));
    server.listen({ port, host: '0.0.0.0', exclusive: true }, () => server.close(() => resolve(true)));
  });
}
