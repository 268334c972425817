/**
 * NFC end to end without hardware: a real pcscd (own mount namespace, own socket) with vpcd's virtual readers, our
 * virtual card on vpcd's socket, and nfc-pcsc (in the gateway's NFC child process) reading UID and NDEF token.
 * Nothing of nfc-pcsc or pcsc-lite is stubbed. Skipped only where the PC/SC Debian packages are missing (or not
 * root: pcscd's private /run/pcscd needs a mount namespace).
 */
import { expect } from 'chai';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { eventually } from '../../../../test/helpers/eventually.ts';
import { createLogger } from '../../../../tools/runtime/logger.ts';
import { waitForProcessesGone } from '../../../../tools/services/process.ts';
import { type2TagMemory } from '../../testing/virtual-card.ts';
import {
  startVirtualReaders,
  VIRTUAL_READER_NAMES,
  virtualReadersUnavailable,
  type ReaderCard,
  type VirtualReaders,
} from '../../testing/virtual-card-reader.ts';
import { startNfcReaders, type NfcCardOff, type NfcReaders, type NfcScan, type NfcStatus } from './nfc-readers.ts';

const log = createLogger({ name: 'test', level: 'silent' });
const [READER_0, READER_1] = VIRTUAL_READER_NAMES;

/** The largest gap between 10 ms ticks while `run` goes on: how long the event loop was blocked. */
async function maxTimerLag<T>(run: () => Promise<T>): Promise<{ result: T; lagMs: number }> {
  let last = performance.now();
  let lagMs = 0;
  const timer = setInterval(() => {
    const now = performance.now();
    lagMs = Math.max(lagMs, now - last - 10);
    last = now;
  }, 10);
  try {
    const result = await run();
    return { result, lagMs };
  } finally {
    clearInterval(timer);
  }
}

function record(nfc: NfcReaders) {
  const scans: NfcScan[] = [];
  const offs: NfcCardOff[] = [];
  const statuses: NfcStatus[] = [];
  nfc.on('scan', (scan) => scans.push(scan));
  nfc.on('card-off', (off) => offs.push(off));
  nfc.on('status', (status) => statuses.push(status));
  return { scans, offs, statuses };
}

// Runs everywhere: no pcscd and no child process — the socket check alone says "no PC/SC service".
describe('NFC readers without a PC/SC service', () => {
  it('reports no-pcsc within seconds while pcscd is absent, with the event loop responsive', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'nxg-nopcsc-'));
    try {
      const { result, lagMs } = await maxTimerLag(async () => {
        const nfc = startNfcReaders({
          log,
          socketPath: path.join(dir, 'pcscd.comm'),
          retryMinMs: 100,
          retryMaxMs: 400,
        });
        const status = await nfc.ready();
        // Retries go on (with backoff) without blocking anything.
        await new Promise((resolve) => setTimeout(resolve, 1500));
        await nfc.close();
        return status;
      });
      expect(result.state).to.equal('no-pcsc');
      expect(result.detail).to.match(/^NFC: no PC\/SC service \(.*pcscd\.comm: ENOENT\)$/);
      expect(result.readers).to.deep.equal([]);
      expect(lagMs, 'event loop blocked').to.be.below(250);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

const unavailable = virtualReadersUnavailable();
// Skipped, with the reason in the title, only where pcscd/vpcd cannot run here (see virtualReadersUnavailable).
const describeWithPcsc = unavailable ? describe.skip : describe;

describeWithPcsc(
  `NFC readers (pcscd + vpcd + virtual card, nfc-pcsc in a child process)${unavailable ? ` — SKIPPED: ${unavailable}` : ''}`,
  function () {
    this.timeout(60_000);
    let readers: VirtualReaders;
    let nfc: NfcReaders | undefined;
    const cards: ReaderCard[] = [];

    before(async () => {
      readers = await startVirtualReaders();
    });

    afterEach(async () => {
      await Promise.all(cards.splice(0).map((card) => card.remove()));
      await nfc?.close();
      nfc = undefined;
    });

    after(async () => {
      await readers?.dispose();
    });

    it('reads the UID and NDEF token of a card, sees it taken away, then reads a second card', async () => {
      nfc = startNfcReaders({ log, socketPath: readers.socketPath });
      const seen = record(nfc);
      // Fails here, with the reason in `detail`, when @pokusew/pcsclite was not built (an install script skipped).
      expect(await nfc.ready()).to.include({ state: 'ok' });
      await eventually('both virtual readers listed', () => nfc?.status().readers.length === 2, 10_000, 50);
      expect(nfc.status().readers).to.deep.equal([
        { name: READER_0, cardPresent: false },
        { name: READER_1, cardPresent: false },
      ]);

      const uid = '04a1b2c3d4e5f6';
      // Long enough for READ BINARY to go through pcscd 20 times (16 bytes each).
      const token = `nxg1.${'7Hq2v9Kd'.repeat(38)}`;
      const card = await readers.insertCard(0, { uid, memory: type2TagMemory(uid, { ndefText: token }) });
      cards.push(card);
      await eventually('a scan', () => seen.scans.length === 1, 10_000, 50);
      expect(seen.scans[0]).to.deep.equal({ readerName: READER_0, uid, token });
      expect(nfc.status().readers.find((r) => r.name === READER_0)?.cardPresent).to.equal(true);
      // nfc-pcsc itself asked the card: GET DATA for the UID, READ BINARY from page 3 (CC + NDEF) for the token.
      expect(card.apdus[0]).to.equal('ffca000000');
      expect(card.apdus).to.include('ffb0000310');

      await card.remove();
      cards.splice(cards.indexOf(card), 1);
      await eventually('card off', () => seen.offs.length === 1, 10_000, 50);
      expect(seen.offs[0]).to.deep.equal({ readerName: READER_0, uid });
      expect(nfc.status().readers.every((r) => !r.cardPresent)).to.equal(true);

      // A second card, a MIFARE Classic with a 4-byte UID on the other reader: UID only (its blocks need keys).
      const second = await readers.insertCard(1, { uid: 'DEADBEEF', kind: 'classic' });
      cards.push(second);
      await eventually('second scan', () => seen.scans.length === 2, 10_000, 50);
      expect(seen.scans[1]).to.deep.equal({ readerName: READER_1, uid: 'deadbeef' });

      // And a Type 2 tag without an NDEF message: UID only.
      const third = await readers.insertCard(0, { uid: '04112233445566' });
      cards.push(third);
      await eventually('third scan', () => seen.scans.length === 3, 10_000, 50);
      expect(seen.scans[2]).to.deep.equal({ readerName: READER_0, uid: '04112233445566' });
      expect(seen.statuses.every((s) => s.state === 'ok')).to.equal(true);
    });

    // Runs right after the test above took its cards away: a card is only "taken away" once pcscd reported it
    // (readers.insertCard's remove()), or vpcd would hand this card to pcscd as the previous one still lying there.
    it('a card taken away while its token is read still gives its scan (UID only), then card-off', async () => {
      nfc = startNfcReaders({ log, socketPath: readers.socketPath });
      const events: string[] = [];
      nfc.on('scan', (scan) => events.push(`scan ${scan.uid} ${scan.token ?? '-'}`));
      nfc.on('card-off', (off) => events.push(`off ${off.uid}`));
      expect(await nfc.ready()).to.include({ state: 'ok' });
      await eventually('readers listed', () => nfc?.status().readers.length === 2, 10_000, 50);
      const uid = '04c0ffee123456';
      const card = await readers.insertCard(0, {
        uid,
        memory: type2TagMemory(uid, { ndefText: 't'.repeat(200) }),
        readDelayMs: 300,
      });
      cards.push(card);
      await eventually('token read started', () => card.apdus.some((apdu) => apdu.startsWith('ffb0')), 10_000, 20);
      // Gone before its first READ BINARY is answered: the scan has the UID only, and card-off comes after it.
      await card.remove();
      await eventually('scan and card-off', () => events.length === 2, 10_000, 50);
      expect(events).to.deep.equal([`scan ${uid} -`, `off ${uid}`]);
      expect(nfc.status().readers.every((r) => !r.cardPresent)).to.equal(true);
    });

    it('a card it cannot read (a phone) gives neither a scan nor a card-off; the next card on that reader does', async () => {
      nfc = startNfcReaders({ log, socketPath: readers.socketPath });
      const events: string[] = [];
      nfc.on('scan', (scan) => events.push(`scan ${scan.uid} ${scan.token ?? '-'}`));
      nfc.on('card-off', (off) => events.push(`off ${off.uid}`));
      expect(await nfc.ready()).to.include({ state: 'ok' });
      await eventually('readers listed', () => nfc?.status().readers.length === 2, 10_000, 50);
      // nfc-pcsc reads no UID from an ISO 14443-4 card without an AID, but still says card.off when it leaves.
      const phone = await readers.insertCard(0, { uid: '08a1b2c3', kind: 'iso14443-4' });
      cards.push(phone);
      await phone.reported;
      await phone.remove();
      const uid = '04d00d00d00d00';
      const card = await readers.insertCard(0, { uid });
      cards.push(card);
      await eventually('the next card scanned', () => events.includes(`scan ${uid} -`), 10_000, 50);
      await card.remove();
      await eventually('its card-off', () => events.includes(`off ${uid}`), 10_000, 50);
      expect(phone.apdus, 'nothing asked of the phone').to.deep.equal([]);
      expect(events).to.deep.equal([`scan ${uid} -`, `off ${uid}`]);
    });

    it('kills a PC/SC child that stops answering (a socket that accepts but is not pcscd), loop unblocked', async () => {
      const dir = await mkdtemp(path.join(os.tmpdir(), 'nxg-mute-'));
      const socketPath = path.join(dir, 'pcscd.comm');
      const held = new Set<net.Socket>();
      const mute = net.createServer((socket) => held.add(socket));
      await new Promise<void>((resolve) => mute.listen(socketPath, resolve));
      try {
        const { result, lagMs } = await maxTimerLag(async () => {
          nfc = startNfcReaders({ log, socketPath, heartbeatMs: 200, hangTimeoutMs: 1500, retryMinMs: 5000 });
          return nfc.ready();
        });
        expect(result.state).to.equal('error');
        expect(result.detail).to.equal('NFC: PC/SC stack not responding');
        expect(lagMs, 'event loop blocked').to.be.below(250);
      } finally {
        for (const socket of held) socket.destroy();
        await new Promise((resolve) => mute.close(resolve));
        await rm(dir, { recursive: true, force: true });
      }
    });

    it('survives pcscd being killed: status changes, no uncaught error, recovers when pcscd is back', async () => {
      nfc = startNfcReaders({ log, socketPath: readers.socketPath, retryMinMs: 200, retryMaxMs: 1000 });
      const seen = record(nfc);
      expect((await nfc.ready()).state).to.equal('ok');
      await eventually('readers listed', () => nfc?.status().readers.length === 2, 10_000, 50);

      await readers.stop({ kill: true });
      const down = await eventually(
        'status after pcscd died',
        () => seen.statuses.find((s) => s.state === 'no-pcsc'),
        10_000,
        50,
      );
      expect(down.detail).to.match(/^NFC: no PC\/SC service \(.*: (ECONNREFUSED|ENOENT)\)$/);
      expect(down.readers).to.deep.equal([]);

      await readers.start();
      await eventually(
        'back to ok with readers',
        () => {
          const status = nfc?.status();
          return status?.state === 'ok' && status.readers.length === 2;
        },
        15_000,
        50,
      );

      const card = await readers.insertCard(1, { uid: '04112233445566778899' });
      cards.push(card);
      await eventually('scan after recovery', () => seen.scans.length === 1, 10_000, 50);
      expect(seen.scans[0]).to.deep.equal({ readerName: READER_1, uid: '04112233445566778899' });
    });

    it('the NFC child does not outlive a gateway killed with SIGKILL', async () => {
      const fixture = fileURLToPath(new URL('./nfc-readers-fixture.ts', import.meta.url));
      const gateway = spawn(process.execPath, [fixture, readers.socketPath], { stdio: ['ignore', 'pipe', 'inherit'] });
      const exited = once(gateway, 'exit');
      const line = await new Promise<string>((resolve, reject) => {
        createInterface({ input: gateway.stdout }).once('line', resolve);
        gateway.once('exit', (code) => reject(new Error(`fixture exited with ${code}`)));
      });
      const { state, children } = JSON.parse(line) as { state: string; children: number[] };
      expect(state).to.equal('ok');
      expect(children).to.have.length(1);
      gateway.kill('SIGKILL');
      await exited;
      expect(await waitForProcessesGone(children, 5_000), 'NFC child still running').to.deep.equal([]);
    });

    it('close() ends the child and stops retrying', async () => {
      nfc = startNfcReaders({ log, socketPath: readers.socketPath });
      expect((await nfc.ready()).state).to.equal('ok');
      await nfc.close();
      expect(nfc.status().readers).to.deep.equal([]);
    });
  },
);
