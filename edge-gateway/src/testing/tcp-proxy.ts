/**
 * A small TCP proxy for link faults in tests (RELIABILITY, "Ways to cut the uplink", v): `pass` forwards bytes
 * both ways; `blackhole` keeps every connection open but forwards nothing (a half-open link: no RST, no FIN, so
 * only keepalive can notice); `refuse` closes new connections at once.
 */
import { once } from 'node:events';
import net from 'node:net';

export type ProxyMode = 'pass' | 'blackhole' | 'refuse';

export interface TcpProxy {
  readonly port: number;
  mode: ProxyMode;
  /** Connections accepted since start (the peer's connection attempts that got through to `pass`/`blackhole`). */
  readonly accepted: number;
  /** Drops every open connection at once (both sides see the socket close); the mode decides about new ones. */
  cut(): void;
  close(): Promise<void>;
}

export async function startTcpProxy(targetPort: number, targetHost = '127.0.0.1'): Promise<TcpProxy> {
  const sockets = new Set<net.Socket>();
  const proxy: TcpProxy = {
    port: 0,
    mode: 'pass',
    accepted: 0,
    cut() {
      for (const s of sockets) s.destroy();
    },
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
  const server = net.createServer((client) => {
    if (proxy.mode === 'refuse') {
      client.destroy();
      return;
    }
    (proxy as { accepted: number }).accepted += 1;
    const upstream = net.connect(targetPort, targetHost);
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('error', () => undefined);
      s.on('close', () => {
        sockets.delete(s);
        client.destroy();
        upstream.destroy();
      });
    }
    // Bytes go through only in pass mode; in blackhole mode they are read and dropped.
    client.on('data', (chunk: Buffer) => {
      if (proxy.mode === 'pass') upstream.write(chunk);
    });
    upstream.on('data', (chunk: Buffer) => {
      if (proxy.mode === 'pass') client.write(chunk);
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  (proxy as { port: number }).port = (server.address() as net.AddressInfo).port;
  return proxy;
}
