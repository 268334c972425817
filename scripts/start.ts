/**
 * `npm start`: the whole hub on one machine with embedded defaults. Starts MongoDB (the stand-in, on disk under
 * ./data so a restart keeps the gym's data) and Redis unless MONGO_URL / REDIS_URL point at existing ones, then
 * the cloud; prints where everything listens; Ctrl-C stops everything in reverse order. Every child runs under a
 * parent-death signal, so even a kill -9 of this process leaves nothing behind.
 */
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import * as v from 'valibot';
import { envInt, envUrl, parseEnv, ConfigError } from '../tools/runtime/env-config.ts';
import {
  spawnService,
  startMongo,
  startRedis,
  type RunningService,
  type ServiceProcess,
} from '../tools/services/index.ts';

const root = path.resolve(import.meta.dirname, '..');

const StartEnv = v.object({
  /** Where npm start keeps MongoDB's and Redis's files. */
  NXG_DATA_DIR: v.optional(v.string(), path.join(root, 'data')),
  MONGO_URL: v.optional(envUrl(['mongodb', 'mongodb+srv'])),
  REDIS_URL: v.optional(envUrl(['redis', 'rediss'])),
  /** The cloud's address: npm start waits for its /health there. Port 0 is refused: it must be known. */
  HTTP_HOST: v.optional(v.pipe(v.string(), v.ip('expected an IP address')), '127.0.0.1'),
  HTTP_PORT: envInt(8080, 1, 65535),
});

let env: v.InferOutput<typeof StartEnv>;
try {
  env = parseEnv(StartEnv, process.env);
} catch (err) {
  if (!(err instanceof ConfigError)) throw err;
  process.stderr.write(`npm start: ${err.message}\n`);
  process.exit(78);
}

const say = (line: string) => process.stdout.write(`[nxg] ${line}\n`);
const stoppers: (() => Promise<void>)[] = [];
let stopping: Promise<never> | undefined;

/**
 * Stops everything in reverse order of start, once: a second Ctrl-C (or npm forwarding the terminal's SIGINT
 * after the terminal already sent it) joins the stop under way instead of cutting it short.
 */
function stopAll(code: number): Promise<never> {
  stopping ??= (async () => {
    say('stopping…');
    for (const stop of stoppers.reverse()) {
      await stop().catch((err: unknown) => say(`stop failed: ${String(err)}`));
    }
    say('stopped');
    process.exit(code);
  })();
  return stopping;
}

/**
 * Starts the cloud as a service of ours (tools/services): writing to our terminal, its own process group so the
 * terminal's Ctrl-C reaches only this script (which stops the children in order: the cloud drains before the
 * databases go away), and SIGTERM rather than SIGKILL if this script dies, so it still drains.
 */
async function startCloudProcess(childEnv: NodeJS.ProcessEnv, apiUrl: string): Promise<ServiceProcess> {
  const cloud = await spawnService({
    name: 'cloud',
    command: process.execPath,
    args: [path.join(root, 'cloud/src/main.ts')],
    cwd: root,
    env: childEnv,
    detached: true,
    parentDeathSignal: 'SIGTERM',
    inheritOutput: true,
  });
  stoppers.push(async () => {
    await cloud.stop(15_000);
  });
  void cloud.exited.then(({ code, signal }) => {
    if (stopping === undefined) {
      say(`cloud exited (${signal ?? code}); stopping the hub`);
      void stopAll(1);
    }
  });
  const healthy = async () => (await fetch(`${apiUrl}/health`).catch(() => undefined))?.ok === true;
  await cloud.waitUntil(healthy, 60_000, 200);
  return cloud;
}

process.on('SIGINT', () => void stopAll(0));
process.on('SIGTERM', () => void stopAll(0));
process.on('SIGHUP', () => void stopAll(0)); // the terminal closed

try {
  const started = Date.now();
  let mongoUrl = env.MONGO_URL;
  if (!mongoUrl) {
    const dir = path.join(env.NXG_DATA_DIR, 'mongo');
    await mkdir(dir, { recursive: true });
    const mongo: RunningService = await startMongo({
      storage: { kind: 'h2', file: path.join(dir, 'nxg.mv.db') },
      detached: true,
    });
    stoppers.push(() => mongo.stop());
    mongoUrl = `${mongo.url}/nxg`;
    say(`MongoDB-compatible server  ${mongo.url}  (data: ${dir}, pid ${mongo.pid})`);
  } else {
    say(`MongoDB                    ${redact(mongoUrl)}  (MONGO_URL)`);
  }
  let redisUrl = env.REDIS_URL;
  if (!redisUrl) {
    const dir = path.join(env.NXG_DATA_DIR, 'redis');
    await mkdir(dir, { recursive: true });
    const redis: RunningService = await startRedis({ dataDir: dir, detached: true });
    stoppers.push(() => redis.stop());
    redisUrl = redis.url;
    say(`Redis                      ${redis.url}  (data: ${dir}, pid ${redis.pid})`);
  } else {
    say(`Redis                      ${redact(redisUrl)}  (REDIS_URL)`);
  }

  // A wildcard address is reached through loopback; a specific one, directly.
  const probeHost = env.HTTP_HOST === '0.0.0.0' || env.HTTP_HOST === '::' ? '127.0.0.1' : env.HTTP_HOST;
  const apiUrl = `http://${probeHost.includes(':') ? `[${probeHost}]` : probeHost}:${env.HTTP_PORT}`;
  const cloud = await startCloudProcess(
    { ...process.env, LOG_FORMAT: process.env.LOG_FORMAT ?? 'pretty', MONGO_URL: mongoUrl, REDIS_URL: redisUrl },
    apiUrl,
  );

  say(
    `cloud API                  ${apiUrl}/api  (health: ${apiUrl}/health, metrics: ${apiUrl}/metrics, pid ${cloud.pid})`,
  );
  say(`API reference              ${apiUrl}/api/docs`);
  say(
    `ready in ${((Date.now() - started) / 1000).toFixed(1)} s — Ctrl-C stops everything (start script pid ${process.pid})`,
  );
} catch (err) {
  say(`start failed: ${(err as Error).message}`);
  await stopAll(1);
}

/** Hides credentials in a URL before printing it. */
function redact(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password) parsed.password = '***';
    return parsed.toString();
  } catch {
    return '(unparseable URL)';
  }
}
