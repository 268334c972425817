/**
 * Mosquitto (Debian package): the independent MQTT peer for interoperability tests and the side-by-side broker
 * benchmark. Anonymous, loopback only, nothing on disk.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { connectAsync } from 'mqtt';
import {
  remaining,
  requireExecutable,
  spawnService,
  withPortRetry,
  type OutputStream,
  type RunningService,
} from './process.ts';

export interface StartMosquittoOptions {
  /** Appended to the generated mosquitto.conf (later lines win for global options). */
  readonly extraConfig?: string;
  /** A fixed port; by default a free one is picked (and another one if it is taken before mosquitto binds it). */
  readonly port?: number;
  /** Default 30 s (measured start: ~30 ms). */
  readonly readyTimeoutMs?: number;
  readonly onLine?: (line: string, stream: OutputStream) => void;
  /** Default false: run in a process group of its own, out of reach of a terminal's Ctrl-C (see spawnService). */
  readonly detached?: boolean;
}

export async function startMosquitto(options: StartMosquittoOptions = {}): Promise<RunningService> {
  const command = requireExecutable('mosquitto', 'mosquitto');
  const start = (port: number) => startOn(command, port, options);
  return options.port === undefined ? withPortRetry(start) : start(options.port);
}

/** Checked against `man mosquitto.conf` of the Debian package (mosquitto 2.0.11). */
function config(port: number, extra: string | undefined): string {
  const lines = [
    `listener ${port} 127.0.0.1`,
    'allow_anonymous true',
    'persistence false',
    'log_dest stderr',
    'log_type error',
    'log_type warning',
    'log_type notice',
    // 2.0.x: 0 means no maximum (the default is 20 in flight per client), like the Aedes broker it is compared with.
    'max_inflight_messages 0',
    'set_tcp_nodelay true',
  ];
  // Started as root, mosquitto switches to the `mosquitto` user, and the kernel clears the parent-death signal on
  // that change of user id (measured: without this line the broker outlived a kill -9 of its parent). `user root`
  // skips the switch (mosquitto logs a warning); run as any other user, the option has no effect.
  if (process.getuid?.() === 0) lines.push('user root');
  if (extra) lines.push(extra);
  return `${lines.join('\n')}\n`;
}

async function startOn(command: string, port: number, options: StartMosquittoOptions): Promise<RunningService> {
  const deadline = Date.now() + (options.readyTimeoutMs ?? 30_000);
  const dir = await mkdtemp(path.join(os.tmpdir(), 'nxg-mosquitto-'));
  const configFile = path.join(dir, 'mosquitto.conf');
  await writeFile(configFile, config(port, options.extraConfig));
  const url = `mqtt://127.0.0.1:${port}`;
  let proc;
  try {
    proc = await spawnService({
      name: 'mosquitto',
      command,
      args: ['-c', configFile],
      cwd: dir,
      ...(options.onLine ? { onLine: options.onLine } : {}),
      detached: options.detached ?? false,
    });
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
  const cleanUp = () => rm(dir, { recursive: true, force: true });
  try {
    await proc.waitUntil(() => canConnect(url, remaining(deadline)), remaining(deadline));
  } catch (err) {
    await proc.stop(0);
    await cleanUp();
    throw err;
  }
  const running = proc;
  return {
    url,
    port,
    pid: proc.pid,
    exited: proc.exited,
    stop: async () => {
      await running.stop();
      await cleanUp();
    },
  };
}

let probeCount = 0;

/**
 * A real MQTT CONNECT/CONNACK round trip. `allowRetries = false` makes a refused connection reject instead of
 * waiting for a reconnect; connectAsync also resolves on 'end', hence the `connected` check.
 */
async function canConnect(url: string, timeoutMs: number): Promise<boolean> {
  const options = {
    clientId: `nxg-ready-probe-${process.pid}-${++probeCount}`,
    connectTimeout: Math.min(timeoutMs, 2_000),
    reconnectPeriod: 0,
  };
  const client = await connectAsync(url, options, false);
  const connected = client.connected;
  await client.endAsync(true);
  return connected;
}
