/**
 * The HTTP server around the Koa app, with timeouts against slow clients and a graceful close: stop accepting,
 * let in-flight requests finish within a grace period, then cut what is left.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type Koa from 'koa';
import type { AppState } from './state.ts';

export interface HttpServer {
  server: Server;
  url: string;
  port: number;
  /** Stops accepting connections and resolves once every connection is closed (at most graceMs later). */
  close(graceMs: number): Promise<void>;
}

export async function listen(
  app: Koa<AppState>,
  { host, port, requestTimeoutMs }: { host: string; port: number; requestTimeoutMs: number },
): Promise<HttpServer> {
  const handle = app.callback();
  const server = createServer((req, res) => {
    void handle(req, res);
  });
  // Slowloris guards: a request must arrive whole within requestTimeoutMs, its headers within 10 s.
  server.requestTimeout = requestTimeoutMs;
  server.headersTimeout = Math.min(10_000, requestTimeoutMs);
  // Longer than typical load-balancer idle timeouts (60 s), so the balancer closes first and never reuses a
  // socket we are closing.
  server.keepAliveTimeout = 65_000;
  server.maxHeadersCount = 100;

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const address = server.address() as AddressInfo;
  const shownHost = address.family === 'IPv6' ? `[${address.address}]` : address.address;

  return {
    server,
    port: address.port,
    url: `http://${shownHost}:${address.port}`,
    close(graceMs) {
      return new Promise<void>((resolve) => {
        const cut = setTimeout(() => server.closeAllConnections(), graceMs);
        // close() stops accepting and closes the keep-alive sockets idle at that moment; a socket busy then
        // would stay open after its response until the client's keep-alive ends, so sweep idle ones until done.
        const sweep = setInterval(() => server.closeIdleConnections(), 50);
        server.close(() => {
          clearTimeout(cut);
          clearInterval(sweep);
          resolve();
        });
        server.closeIdleConnections();
      });
    },
  };
}
