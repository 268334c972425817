/**
 * A guard between a raw connection and `aedes.handle`: it reads every MQTT fixed header as the bytes go by and
 * destroys the connection as soon as a header declares more than the configured limit, before the packet's bytes
 * are buffered anywhere. Aedes 1.2 and mqtt-packet 9 enforce no maximum packet size (RELIABILITY finding 3: one
 * unauthenticated CONNECT declaring 268 MB grew a bare broker by 203 MiB; aedes #831 is open), so the limit lives
 * here, in front of both brokers (cloud and edge gateway).
 *
 * Fixed header [MQTT-2.2]: one type-and-flags byte, then the remaining length as a varint of 1–4 bytes (7 bits per
 * byte, high bit = more follows), at most 268,435,455. The guard keeps only that header state between chunks, so a
 * header split across TCP segments or WebSocket frames is parsed exactly like a whole one, and the packet bodies
 * are passed through untouched without being copied.
 *
 * It also bounds the first packet: it must be a CONNECT [MQTT-3.1.0-1] of at most `maxConnectBytes`, and a second
 * CONNECT is a protocol violation [MQTT-3.1.0-2]; reserved packet types 0 and 15 are refused. An attacker can make
 * the broker read at most `limit + 5` bytes of one packet before the connection is cut.
 */
import { Duplex } from 'node:stream';

/** Largest remaining length MQTT can express (four varint bytes). */
export const MQTT_MAX_REMAINING_LENGTH = 268_435_455;

/** Why the guard cut a connection; one label each in metrics. */
export type FrameRefusal =
  | 'oversized' // a packet declared more than maxPacketBytes
  | 'malformed-length' // remaining length varint longer than 4 bytes
  | 'first-not-connect' // the first packet was not a CONNECT
  | 'connect-oversized' // the CONNECT declared more than maxConnectBytes
  | 'second-connect' // a CONNECT after the first [MQTT-3.1.0-2]
  | 'reserved-type'; // packet type 0 or 15 (AUTH exists in MQTT 5 only; Aedes speaks 3.1.1)

export const FRAME_REFUSALS: readonly FrameRefusal[] = [
  'oversized',
  'malformed-length',
  'first-not-connect',
  'connect-oversized',
  'second-connect',
  'reserved-type',
];

export interface FrameRefusalDetail {
  /** MQTT control packet type (1 CONNECT … 14 DISCONNECT) of the offending packet. */
  readonly packetType: number;
  /** The declared remaining length, when the header was complete. */
  readonly declaredBytes?: number;
  /** Bytes this connection had delivered when it was refused (the offending chunk included). */
  readonly bytesRead: number;
}

export interface FrameGuardOptions {
  /** Largest whole packet (fixed header + remaining length) accepted; a larger declaration cuts the connection. */
  readonly maxPacketBytes: number;
  /**
   * Largest CONNECT accepted (client id, credentials and will included); default min(maxPacketBytes, 64 KiB).
   * A small bound: an unauthenticated peer must not make the broker buffer a large first packet.
   */
  readonly maxConnectBytes?: number;
  /** Called once, synchronously, when the connection is refused (before it is destroyed). */
  readonly onRefused?: (reason: FrameRefusal, detail: FrameRefusalDetail) => void;
  /** Counters shared by many connections (one per listener, say); see createFrameGuardCounters. */
  readonly counters?: FrameGuardCounters;
}

/** Totals over every connection guarded with the same counters object. */
export interface FrameGuardCounters {
  connections: number;
  packets: number;
  bytes: number;
  refused: Record<FrameRefusal, number>;
}

export function createFrameGuardCounters(): FrameGuardCounters {
  return {
    connections: 0,
    packets: 0,
    bytes: 0,
    refused: Object.fromEntries(FRAME_REFUSALS.map((r) => [r, 0])) as Record<FrameRefusal, number>,
  };
}

const CONNECT = 1;
const DEFAULT_MAX_CONNECT_BYTES = 64 * 1024;

/** The incremental fixed-header parser: feed it bytes, it says where packets start and whether one is refused. */
export class FixedHeaderScanner {
  readonly maxPacketBytes: number;
  readonly maxConnectBytes: number;
  /** Complete fixed headers seen so far (packets started). */
  packets = 0;
  private state: 'type' | 'length' | 'body' = 'type';
  private packetType = 0;
  private lengthBytes = 0;
  private multiplier = 1;
  private remaining = 0;

  constructor(maxPacketBytes: number, maxConnectBytes: number = Math.min(maxPacketBytes, DEFAULT_MAX_CONNECT_BYTES)) {
    if (!Number.isInteger(maxPacketBytes) || maxPacketBytes < 2) {
      throw new RangeError(`maxPacketBytes must be an integer ≥ 2 (got ${maxPacketBytes})`);
    }
    if (!Number.isInteger(maxConnectBytes) || maxConnectBytes < 2) {
      throw new RangeError(`maxConnectBytes must be an integer ≥ 2 (got ${maxConnectBytes})`);
    }
    this.maxPacketBytes = maxPacketBytes;
    this.maxConnectBytes = Math.min(maxConnectBytes, maxPacketBytes);
  }

  /**
   * Scans one chunk. Returns undefined when every byte is acceptable so far, or the refusal (with the offending
   * packet type and declared length) as soon as a header breaks a rule — later bytes of the chunk are not looked at.
   */
  scan(chunk: Uint8Array): { reason: FrameRefusal; packetType: number; declaredBytes?: number } | undefined {
    let i = 0;
    const n = chunk.length;
    while (i < n) {
      if (this.state === 'body') {
        // Skip the body in one step: the guard never looks inside packets.
        const step = Math.min(this.remaining, n - i);
        this.remaining -= step;
        i += step;
        if (this.remaining === 0) this.state = 'type';
        continue;
      }
      const byte = chunk[i++]!;
      if (this.state === 'type') {
        const type = byte >> 4;
        if (type === 0 || type === 15) return { reason: 'reserved-type', packetType: type };
        if (this.packets === 0 && type !== CONNECT) return { reason: 'first-not-connect', packetType: type };
        if (this.packets > 0 && type === CONNECT) return { reason: 'second-connect', packetType: type };
        this.packetType = type;
        this.state = 'length';
        this.lengthBytes = 0;
        this.multiplier = 1;
        this.remaining = 0;
        continue;
      }
      // state === 'length'
      this.lengthBytes += 1;
      this.remaining += (byte & 0x7f) * this.multiplier;
      this.multiplier *= 128;
      if (byte & 0x80) {
        // [MQTT-2.2.3]: at most four bytes; a fifth continuation is malformed.
        if (this.lengthBytes >= 4) return { reason: 'malformed-length', packetType: this.packetType };
        continue;
      }
      this.packets += 1;
      const total = 1 + this.lengthBytes + this.remaining;
      const limit = this.packetType === CONNECT ? this.maxConnectBytes : this.maxPacketBytes;
      if (total > limit) {
        return {
          reason: this.packetType === CONNECT ? 'connect-oversized' : 'oversized',
          packetType: this.packetType,
          declaredBytes: this.remaining,
        };
      }
      this.state = this.remaining === 0 ? 'type' : 'body';
    }
    return undefined;
  }
}

/** What the guard adds to the Duplex it returns. */
export interface GuardedMqttStream extends Duplex {
  /** The connection it wraps (a net.Socket, a TLS socket, a WebSocket stream). */
  readonly inner: Duplex;
  /** Bytes delivered by the inner stream so far. */
  readonly bytesRead: number;
  /** Complete fixed headers seen so far. */
  readonly packets: number;
  /** Set when the guard cut the connection. */
  readonly refusal: FrameRefusal | undefined;
}

class GuardStream extends Duplex implements GuardedMqttStream {
  readonly inner: Duplex;
  bytesRead = 0;
  refusal: FrameRefusal | undefined;
  private readonly scanner: FixedHeaderScanner;
  private readonly options: FrameGuardOptions;

  constructor(inner: Duplex, options: FrameGuardOptions) {
    // allowHalfOpen false: the peer's FIN ends our writable side too, as for a plain socket handed to Aedes.
    super({ allowHalfOpen: false });
    this.inner = inner;
    this.options = options;
    this.scanner = new FixedHeaderScanner(options.maxPacketBytes, options.maxConnectBytes);
    if (options.counters) options.counters.connections += 1;

    inner.on('data', this.onData);
    inner.once('end', () => this.push(null));
    inner.on('error', (err: Error) => this.destroy(err));
    inner.once('close', () => {
      if (!this.destroyed) this.destroy();
    });
    inner.on('drain', () => this.emit('drain'));
  }

  get packets(): number {
    return this.scanner.packets;
  }

  private readonly onData = (chunk: Buffer | string) => {
    if (this.refusal !== undefined || this.destroyed) return;
    const buf = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
    this.bytesRead += buf.length;
    const before = this.scanner.packets;
    const refused = this.scanner.scan(buf);
    const counters = this.options.counters;
    if (counters) {
      counters.bytes += buf.length;
      counters.packets += this.scanner.packets - before;
    }
    if (refused) {
      this.refuse(refused.reason, refused.packetType, refused.declaredBytes);
      return;
    }
    // Backpressure: stop reading the socket while Aedes has not taken what it was given.
    if (!this.push(buf)) this.inner.pause();
  };

  private refuse(reason: FrameRefusal, packetType: number, declaredBytes: number | undefined): void {
    this.refusal = reason;
    this.inner.off('data', this.onData);
    if (this.options.counters) this.options.counters.refused[reason] += 1;
    try {
      this.options.onRefused?.(reason, {
        packetType,
        ...(declaredBytes === undefined ? {} : { declaredBytes }),
        bytesRead: this.bytesRead,
      });
    } finally {
      // Cut at once, not end(): a peer streaming junk gets no chance to fill our buffers, and the reader (Aedes)
      // sees the stream close like a dropped socket.
      this.inner.destroy();
      this.destroy();
    }
  }

  override _read(): void {
    if (this.refusal === undefined && this.inner.isPaused()) this.inner.resume();
  }

  override _write(chunk: Buffer, encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.inner.write(chunk, encoding, callback);
  }

  override _writev(chunks: { chunk: Buffer; encoding: BufferEncoding }[], callback: (error?: Error | null) => void) {
    // mqtt-packet corks the stream and writes a packet in pieces: hand them to the socket as one write.
    const inner = this.inner;
    inner.cork();
    for (let i = 0; i < chunks.length - 1; i++) inner.write(chunks[i]!.chunk);
    inner.write(chunks[chunks.length - 1]!.chunk, callback);
    inner.uncork();
  }

  override _final(callback: (error?: Error | null) => void): void {
    this.inner.end(callback);
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    if (!this.inner.destroyed) this.inner.destroy();
    callback(error);
  }
}

/**
 * Wraps a connection for `aedes.handle(guardMqttStream(socket, { maxPacketBytes }))`. The returned Duplex reads
 * what the connection reads, minus nothing, until a header breaks a rule; then both are destroyed.
 */
export function guardMqttStream(stream: Duplex, options: FrameGuardOptions): GuardedMqttStream {
  return new GuardStream(stream, options);
}
