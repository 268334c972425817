/**
 * MQTT over WebSocket on the API's HTTP server, at `/mqtt` and `/api/ws/machines` (ARCHITECTURE.md "Defaults").
 * `ws` runs without a server of its own (noServer, the HTTP server's 'upgrade' event) and with a small
 * `maxPayload`: its default is 100 MiB, and a bigger message closes the socket with 1009 before it is buffered
 * (RELIABILITY A1). Each upgraded socket becomes a stream for the frame guard and Aedes, like a TCP socket.
 */
import type { IncomingMessage, Server } from 'node:http';
import type { Duplex } from 'node:stream';
import { WebSocketServer, createWebSocketStream } from 'ws';

export const WEBSOCKET_PATHS: readonly string[] = ['/mqtt', '/api/ws/machines'];

export interface WebSocketListener {
  readonly paths: readonly string[];
  /** Detaches from the HTTP server and closes every WebSocket. */
  close(): void;
}

export function attachWebSocketListener({
  server,
  maxPayloadBytes,
  accept,
  onRefused,
}: {
  server: Server;
  maxPayloadBytes: number;
  accept: (stream: Duplex, ip: string, req: IncomingMessage) => void;
  onRefused: (reason: 'ws-bad-path' | 'ws-oversized') => void;
}): WebSocketListener {
  const wss = new WebSocketServer({
    noServer: true,
    maxPayload: maxPayloadBytes,
    // Compression would let a small frame inflate into a large message (and costs CPU per client).
    perMessageDeflate: false,
    // MQTT clients offer the `mqtt` subprotocol (and old ones `mqttv3.1`); answer with what they offered.
    handleProtocols: (protocols) => (protocols.has('mqtt') ? 'mqtt' : (protocols.values().next().value ?? false)),
  });

  const onUpgrade = (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    const path = (req.url ?? '').split('?', 1)[0]!;
    if (!WEBSOCKET_PATHS.includes(path)) {
      // Another part may serve other upgrade paths; if nobody else listens, nobody will answer this one.
      if (server.listenerCount('upgrade') === 1) {
        onRefused('ws-bad-path');
        socket.end('HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
      }
      return;
    }
    const tcp = req.socket;
    tcp.setNoDelay(true);
    wss.handleUpgrade(req, socket, head, (ws) => {
      ws.on('error', (err: Error & { code?: string }) => {
        if (err.code === 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH') onRefused('ws-oversized');
      });
      const stream = createWebSocketStream(ws);
      stream.on('error', () => undefined);
      accept(stream, tcp.remoteAddress ?? 'unknown', req);
    });
  };
  server.on('upgrade', onUpgrade);

  return {
    paths: WEBSOCKET_PATHS,
    close() {
      server.off('upgrade', onUpgrade);
      for (const ws of wss.clients) ws.terminate();
      wss.close();
    },
  };
}
