/**
 * A local redis-server (Debian package) when no REDIS_URL is given: throw-away for tests, or keeping its data in
 * `dataDir` (append-only file) for `npm start`.
 */
import { mkdir } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import {
  remaining,
  requireExecutable,
  spawnService,
  withPortRetry,
  type OutputStream,
  type RunningService,
} from './process.ts';

export interface StartRedisOptions {
  /** Keep data here across restarts (AOF). Without it nothing is written to disk. */
  readonly dataDir?: string;
  /** A fixed port; by default a free one is picked (and another one if it is taken before redis binds it). */
  readonly port?: number;
  /** Default 30 s (measured start: ~20 ms). */
  readonly readyTimeoutMs?: number;
  readonly onLine?: (line: string, stream: OutputStream) => void;
  /** Default false: run in a process group of its own, out of reach of a terminal's Ctrl-C (see spawnService). */
  readonly detached?: boolean;
}

export interface RedisService extends RunningService {
  readonly dataDir: string | undefined;
}

export async function startRedis(options: StartRedisOptions = {}): Promise<RedisService> {
  const command = requireExecutable('redis-server', 'redis-server');
  const dataDir = options.dataDir === undefined ? undefined : path.resolve(options.dataDir);
  if (dataDir) await mkdir(dataDir, { recursive: true });
  const start = (port: number) => startOn(command, port, dataDir, options);
  return options.port === undefined ? withPortRetry(start) : start(options.port);
}

async function startOn(
  command: string,
  port: number,
  dataDir: string | undefined,
  options: StartRedisOptions,
): Promise<RedisService> {
  const deadline = Date.now() + (options.readyTimeoutMs ?? 30_000);
  const persistence = dataDir
    ? ['--dir', dataDir, '--appendonly', 'yes']
    : // No RDB snapshots and no AOF: tests leave nothing on disk (and never write into the working directory).
      ['--save', '', '--appendonly', 'no'];
  const proc = await spawnService({
    name: 'redis-server',
    command,
    args: ['--port', String(port), '--bind', '127.0.0.1', '--daemonize', 'no', ...persistence],
    ...(dataDir ? { cwd: dataDir } : {}),
    ...(options.onLine ? { onLine: options.onLine } : {}),
    detached: options.detached ?? false,
  });
  try {
    await proc.waitUntil(() => ping(port, remaining(deadline)), remaining(deadline));
  } catch (err) {
    await proc.stop(0);
    throw err;
  }
  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    pid: proc.pid,
    exited: proc.exited,
    dataDir,
    // SIGTERM: redis flushes the AOF and exits 0.
    stop: async () => void (await proc.stop()),
  };
}

/**
 * PING in RESP over a plain socket: true on +PONG. False while the port refuses, and while redis answers
 * -LOADING (it accepts connections before it has read its AOF back).
 */
function ping(port: number, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    let reply = '';
    const finish = (result: boolean | Error) => {
      socket.destroy();
      if (result instanceof Error) reject(result);
      else resolve(result);
    };
    socket.setTimeout(Math.min(timeoutMs, 2_000), () => finish(new Error('no answer to PING')));
    socket.on('connect', () => socket.write('*1\r\n$4\r\nPING\r\n'));
    socket.on('data', (chunk: Buffer) => {
      reply += chunk.toString('latin1');
      const end = reply.indexOf('\r\n');
      if (end < 0) return;
      const line = reply.slice(0, end);
      finish(line === '+PONG' ? true : new Error(`PING answered ${line}`));
    });
    socket.on('error', (err) => finish(err));
    socket.on('end', () => finish(new Error('connection closed before PONG')));
  });
}
