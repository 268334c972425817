import { once } from 'node:events';
import net from 'node:net';
import { PassThrough, duplexPair } from 'node:stream';
import { Aedes } from 'aedes';
import { expect } from 'chai';
import fc from 'fast-check';
import { connectAsync } from 'mqtt';
import { FixedHeaderScanner, createFrameGuardCounters, guardMqttStream, type FrameRefusal } from './frame-guard.ts';

/** A fixed header: type/flags byte and the remaining-length varint. */
function header(typeAndFlags: number, remaining: number): Buffer {
  const bytes = [typeAndFlags];
  let x = remaining;
  do {
    let b = x % 128;
    x = Math.floor(x / 128);
    if (x > 0) b |= 0x80;
    bytes.push(b);
  } while (x > 0);
  return Buffer.from(bytes);
}

const packet = (typeAndFlags: number, bodyBytes: number) =>
  Buffer.concat([header(typeAndFlags, bodyBytes), Buffer.alloc(bodyBytes, 0x61)]);

/** Splits a buffer at the given cut points. */
function split(buf: Buffer, cuts: number[]): Buffer[] {
  const points = [...new Set(cuts.map((c) => c % (buf.length + 1)))].sort((a, b) => a - b);
  const parts: Buffer[] = [];
  let last = 0;
  for (const p of points) {
    parts.push(buf.subarray(last, p));
    last = p;
  }
  parts.push(buf.subarray(last));
  return parts.filter((p) => p.length > 0);
}

describe('tools/mqtt frame guard', () => {
  describe('FixedHeaderScanner', () => {
    it('counts packets of any size up to the limit, with 1- to 4-byte lengths', () => {
      const s = new FixedHeaderScanner(3_000_000, 3_000_000);
      const stream = Buffer.concat([
        packet(0x10, 12),
        packet(0x30, 0),
        packet(0x32, 127),
        packet(0x32, 128),
        packet(0x32, 16_383),
        packet(0x32, 16_384),
        packet(0x32, 2_097_152),
        packet(0xc0, 0),
      ]);
      expect(s.scan(stream)).to.equal(undefined);
      expect(s.packets).to.equal(8);
    });

    it('measures the whole packet (header included) against the limit', () => {
      // 1 type byte + 2 length bytes + 1021 body = 1024: accepted; one more byte of body: refused.
      const ok = new FixedHeaderScanner(1024, 1024);
      expect(ok.scan(Buffer.concat([packet(0x10, 10), header(0x30, 1021)]))).to.equal(undefined);
      const no = new FixedHeaderScanner(1024, 1024);
      expect(no.scan(Buffer.concat([packet(0x10, 10), header(0x30, 1022)]))).to.deep.equal({
        reason: 'oversized',
        packetType: 3,
        declaredBytes: 1022,
      });
    });

    it('refuses a fifth length byte as malformed', () => {
      const s = new FixedHeaderScanner(1024);
      expect(s.scan(Buffer.from([0x10, 0xff, 0xff, 0xff, 0xff, 0x01]))).to.deep.equal({
        reason: 'malformed-length',
        packetType: 1,
      });
    });

    it('refuses a first packet that is not CONNECT, a second CONNECT and the reserved types', () => {
      expect(new FixedHeaderScanner(1024).scan(packet(0x30, 4))?.reason).to.equal('first-not-connect');
      expect(new FixedHeaderScanner(1024).scan(packet(0x00, 0))?.reason).to.equal('reserved-type');
      expect(new FixedHeaderScanner(1024).scan(Buffer.concat([packet(0x10, 4), packet(0xf0, 0)]))?.reason).to.equal(
        'reserved-type',
      );
      expect(new FixedHeaderScanner(1024).scan(Buffer.concat([packet(0x10, 4), packet(0x10, 4)]))?.reason).to.equal(
        'second-connect',
      );
    });

    it('bounds the CONNECT separately from later packets', () => {
      const s = new FixedHeaderScanner(100_000, 512);
      expect(s.scan(header(0x10, 600))?.reason).to.equal('connect-oversized');
      const t = new FixedHeaderScanner(100_000, 512);
      expect(t.scan(Buffer.concat([packet(0x10, 500), header(0x30, 90_000)]))).to.equal(undefined);
    });

    it('rejects nonsensical limits', () => {
      expect(() => new FixedHeaderScanner(1)).to.throw(RangeError);
      expect(() => new FixedHeaderScanner(100, 0)).to.throw(RangeError);
    });

    it('gives the same verdict however the bytes are cut into chunks (property)', () => {
      const packetArb = fc.record({
        type: fc.integer({ min: 2, max: 14 }),
        flags: fc.integer({ min: 0, max: 15 }),
        body: fc.oneof(fc.integer({ min: 0, max: 300 }), fc.integer({ min: 16_000, max: 17_000 })),
      });
      fc.assert(
        fc.property(
          fc.integer({ min: 0, max: 200 }),
          fc.array(packetArb, { maxLength: 12 }),
          fc.array(fc.nat(), { maxLength: 30 }),
          fc.boolean(),
          (connectBody, rest, cuts, appendHuge) => {
            const limit = 10_000;
            const parts: Buffer[] = [
              packet(0x10, connectBody),
              ...rest.map((p) => packet((p.type << 4) | p.flags, p.body)),
            ];
            if (appendHuge) parts.push(header(0x30, 268_435_455));
            const whole = Buffer.concat(parts);
            const once = new FixedHeaderScanner(limit);
            const expected = once.scan(whole);
            const chunked = new FixedHeaderScanner(limit);
            let verdict: ReturnType<FixedHeaderScanner['scan']>;
            for (const chunk of split(whole, cuts)) {
              verdict = chunked.scan(chunk);
              if (verdict) break;
            }
            expect(verdict).to.deep.equal(expected);
            // An independent oracle: the first packet above the limit is where it must stop.
            const firstBig = [connectBody, ...rest.map((p) => p.body)].findIndex(
              (body) => 1 + header(0, body).length - 1 + body > limit,
            );
            if (firstBig >= 0) expect(expected?.reason).to.equal('oversized');
            else if (appendHuge) expect(expected?.reason).to.equal('oversized');
            else expect(expected).to.equal(undefined);
          },
        ),
        { numRuns: 300 },
      );
    });
  });

  describe('guardMqttStream', () => {
    it('passes bytes through unchanged in both directions, and counts them', async () => {
      const inner = new PassThrough();
      const counters = createFrameGuardCounters();
      const guarded = guardMqttStream(inner, { maxPacketBytes: 1024, counters });
      const got: Buffer[] = [];
      guarded.on('data', (c: Buffer) => got.push(c));
      const input = Buffer.concat([packet(0x10, 20), packet(0x30, 100), packet(0xc0, 0)]);
      for (const chunk of split(input, [1, 2, 3, 50, 51])) inner.write(chunk);
      await new Promise((r) => setImmediate(r));
      expect(Buffer.concat(got).equals(input)).to.equal(true);
      expect(guarded.packets).to.equal(3);
      expect(guarded.bytesRead).to.equal(input.length);
      expect(counters).to.deep.include({ connections: 1, packets: 3, bytes: input.length });
      guarded.destroy();
    });

    it('destroys the inner stream on a refusal, reports it once, and never passes the offending chunk', async () => {
      const inner = new PassThrough();
      const counters = createFrameGuardCounters();
      const refusals: FrameRefusal[] = [];
      const guarded = guardMqttStream(inner, {
        maxPacketBytes: 1024,
        counters,
        onRefused: (reason, detail) => {
          refusals.push(reason);
          expect(detail.declaredBytes).to.equal(268_435_455);
        },
      });
      const got: Buffer[] = [];
      guarded.on('data', (c: Buffer) => got.push(c));
      guarded.on('error', () => undefined);
      inner.write(Buffer.from([0x10, 0xff, 0xff, 0xff, 0x7f]));
      await new Promise((r) => setImmediate(r));
      expect(refusals).to.deep.equal(['connect-oversized']);
      expect(got).to.have.length(0);
      expect(inner.destroyed).to.equal(true);
      expect(guarded.destroyed).to.equal(true);
      expect(guarded.refusal).to.equal('connect-oversized');
      expect(counters.refused['connect-oversized']).to.equal(1);
    });

    it('ends when the inner stream ends, and ends the inner stream when written to end', async () => {
      const inner = new PassThrough();
      const guarded = guardMqttStream(inner, { maxPacketBytes: 1024 });
      guarded.resume();
      const ended = once(guarded, 'end');
      inner.end(packet(0x10, 2));
      await ended;
      // A socket-like pair: what the guard writes comes out of the peer, not back into the guard.
      const [inner2, peer] = duplexPair();
      const g2 = guardMqttStream(inner2, { maxPacketBytes: 1024 });
      const out: Buffer[] = [];
      peer.on('data', (c: Buffer) => out.push(c));
      g2.cork();
      g2.write(Buffer.from([0x20, 0x02]));
      g2.write(Buffer.from([0x00, 0x00]));
      process.nextTick(() => g2.uncork());
      g2.end();
      await once(peer, 'end');
      expect(Buffer.concat(out).equals(Buffer.from([0x20, 0x02, 0x00, 0x00]))).to.equal(true);
    });
  });

  describe('in front of a real Aedes over TCP (RELIABILITY A1)', function () {
    this.timeout(60_000);
    const LIMIT = 256 * 1024;
    let broker: Aedes;
    let server: net.Server;
    let port: number;
    const counters = createFrameGuardCounters();
    const refusedAfter: number[] = [];

    before(async () => {
      broker = await Aedes.createBroker();
      server = net.createServer((socket) => {
        socket.setNoDelay(true);
        broker.handle(
          guardMqttStream(socket, {
            maxPacketBytes: LIMIT,
            counters,
            onRefused: (_reason, detail) => refusedAfter.push(detail.bytesRead),
          }),
        );
      });
      server.listen(0, '127.0.0.1');
      await once(server, 'listening');
      port = (server.address() as net.AddressInfo).port;
    });
    after(async () => {
      await new Promise<void>((resolve) => broker.close(() => resolve()));
      await new Promise<void>((resolve) => server.close(() => resolve()));
    });

    it('closes a 200 MiB CONNECT stream after at most limit + 5 bytes; RSS stays flat; a legitimate client is unaffected', async () => {
      const legit = await connectAsync(`mqtt://127.0.0.1:${port}`, { clientId: 'legit', reconnectPeriod: 0 });
      const received: string[] = [];
      await legit.subscribeAsync('t/#', { qos: 1 });
      legit.on('message', (topic) => received.push(topic));

      globalThis.gc?.();
      const rssBefore = process.memoryUsage().rss;
      const attacker = net.connect(port, '127.0.0.1');
      await once(attacker, 'connect');
      const chunk = Buffer.alloc(1024 * 1024, 0x61);
      let written = 0;
      let closed = false;
      attacker.on('error', () => undefined);
      attacker.on('close', () => {
        closed = true;
      });
      attacker.write(Buffer.from([0x10, 0xff, 0xff, 0xff, 0x7f]));
      written += 5;
      while (!closed && written < 200 * 1024 * 1024) {
        if (!attacker.write(chunk)) {
          await new Promise<void>((resolve) => {
            const done = () => {
              attacker.off('drain', done);
              attacker.off('close', done);
              resolve();
            };
            attacker.on('drain', done);
            attacker.on('close', done);
          });
        }
        written += chunk.length;
      }
      if (!attacker.destroyed) await once(attacker, 'close');
      const rssGrowth = process.memoryUsage().rss - rssBefore;
      // The broker read the first chunk only (the header is in it) and cut the connection there.
      expect(counters.refused['connect-oversized']).to.equal(1);
      expect(refusedAfter).to.have.length(1);
      const refusedBytes = refusedAfter[0]!;
      expect(refusedBytes).to.be.at.most(LIMIT + 5);
      expect(rssGrowth).to.be.below(10 * 1024 * 1024);

      await legit.publishAsync('t/1', 'still here', { qos: 1 });
      await new Promise((r) => setTimeout(r, 50));
      expect(received).to.deep.equal(['t/1']);
      await legit.endAsync();
      console.log(
        `      A1: attacker wrote ${(written / 1048576).toFixed(1)} MiB before the close; ` +
          `broker read ${refusedBytes} B in all; RSS growth ${(rssGrowth / 1048576).toFixed(1)} MiB`,
      );
    });
  });
});
