/**
 * `npm start`: the whole hub on one machine with embedded defaults. Starts MongoDB (the stand-in, on disk under
 * ./data so a restart keeps the gym's data) and Redis unless MONGO_URL / REDIS_URL point at existing ones, then
 * the cloud (API + MQTT broker + ingest), provisions the demo branch on a fresh data directory, starts its edge
 * gateway and a fleet of simulated machines; prints where everything listens and the observer's credentials;
 * Ctrl-C stops everything in reverse order. Every child runs under a parent-death signal, so even a kill -9 of this
 * process leaves nothing behind.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import * as v from 'valibot';
import { envInt, envPort, envUrl, parseEnv, ConfigError } from '../tools/runtime/env-config.ts';
import {
  spawnService,
  startMongo,
  startRedis,
  type RunningService,
  type ServiceProcess,
} from '../tools/services/index.ts';
import { provisionDemoBranch } from './demo-branch.ts';

const root = path.resolve(import.meta.dirname, '..');

const StartEnv = v.object({
  /** Where npm start keeps MongoDB's and Redis's files. */
  NXG_DATA_DIR: v.optional(v.string(), path.join(root, 'data')),
  MONGO_URL: v.optional(envUrl(['mongodb', 'mongodb+srv'])),
  REDIS_URL: v.optional(envUrl(['redis', 'rediss'])),
  /** The cloud's address: npm start waits for its /health there. Port 0 is refused: it must be known. */
  HTTP_HOST: v.optional(v.pipe(v.string(), v.ip('expected an IP address')), '127.0.0.1'),
  HTTP_PORT: envInt(8080, 1, 65535),
  /** The cloud broker's loopback and TLS ports (the cloud reads the same variables). */
  MQTT_TCP_PORT: envInt(1883, 1, 65535),
  MQTT_TLS_PORT: envInt(8883, 1, 65535),
  /** The demo gateway's broker for machines and its health endpoint (the gateway reads the same variables). */
  GATEWAY_MQTT_PORT: envPort(1884),
  GATEWAY_HEALTH_PORT: envInt(8081, 1, 65535),
  /** How many simulated machines the demo branch has (provisioned once per data directory). */
  NXG_DEMO_MACHINES: envInt(40, 0, 10_000),
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
 * Starts one of our Node processes (cloud, gateway, simulator) as a service (tools/services): writing to our
 * terminal, its own process group so the terminal's Ctrl-C reaches only this script (which stops the children in
 * reverse order: machines first, the cloud drains before the databases go away), and SIGTERM rather than SIGKILL
 * if this script dies, so it still shuts down cleanly. Resolves once `ready()` holds.
 */
async function startChild(
  name: string,
  args: string[],
  childEnv: NodeJS.ProcessEnv,
  ready?: () => Promise<boolean>,
): Promise<ServiceProcess> {
  const child = await spawnService({
    name,
    command: process.execPath,
    args,
    cwd: root,
    env: childEnv,
    detached: true,
    parentDeathSignal: 'SIGTERM',
    inheritOutput: true,
  });
  stoppers.push(async () => {
    await child.stop(15_000);
  });
  void child.exited.then(({ code, signal }) => {
    if (stopping === undefined) {
      say(`${name} exited (${signal ?? code}); stopping the hub`);
      void stopAll(1);
    }
  });
  if (ready) await child.waitUntil(ready, 60_000, 200);
  return child;
}

/** A database that dies leaves a hub that only fails: say so and stop, as for the Node children. */
function watch(name: string, service: RunningService): void {
  void service.exited.then(({ code, signal }) => {
    if (stopping === undefined) {
      say(`${name} exited (${signal ?? code}); stopping the hub`);
      void stopAll(1);
    }
  });
}

const answersOk = (url: string) => async () => (await fetch(url).catch(() => undefined))?.ok === true;

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
      // It logs only warnings and errors (an OutOfMemoryError ends it): they belong on the hub's output — but for
      // the indexes it accepts and ignores (ARCHITECTURE "MongoDB-compatible server"), one line per index at start.
      onLine: (line) => {
        if (!line.includes('is not yet implemented. ignoring')) say(`mongo: ${line}`);
      },
    });
    stoppers.push(() => mongo.stop());
    watch('the MongoDB-compatible server', mongo);
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
    watch('Redis', redis);
    redisUrl = redis.url;
    say(`Redis                      ${redis.url}  (data: ${dir}, pid ${redis.pid})`);
  } else {
    say(`Redis                      ${redact(redisUrl)}  (REDIS_URL)`);
  }

  // A wildcard address is reached through loopback; a specific one, directly.
  const probeHost = env.HTTP_HOST === '0.0.0.0' || env.HTTP_HOST === '::' ? '127.0.0.1' : env.HTTP_HOST;
  const apiUrl = `http://${probeHost.includes(':') ? `[${probeHost}]` : probeHost}:${env.HTTP_PORT}`;
  const mqttDataDir = path.join(env.NXG_DATA_DIR, 'mqtt');
  const logFormat = process.env.LOG_FORMAT ?? 'pretty';
  const cloud = await startChild(
    'cloud',
    [path.join(root, 'cloud/src/main.ts')],
    {
      ...process.env,
      LOG_FORMAT: logFormat,
      MONGO_URL: mongoUrl,
      REDIS_URL: redisUrl,
      MQTT_DATA_DIR: process.env.MQTT_DATA_DIR ?? mqttDataDir,
      MQTT_TCP_PORT: String(env.MQTT_TCP_PORT),
      MQTT_TLS_PORT: String(env.MQTT_TLS_PORT),
      // npm start's cloud keeps its development keys with the rest of the demo's data.
      DEV_KEYS_FILE: process.env.DEV_KEYS_FILE ?? path.join(env.NXG_DATA_DIR, 'dev-keys.json'),
      AUTH_DEV_KEY_DIR: process.env.AUTH_DEV_KEY_DIR ?? path.join(env.NXG_DATA_DIR, 'keys'),
      MAIL_DIR: process.env.MAIL_DIR ?? path.join(env.NXG_DATA_DIR, 'mail'),
    },
    answersOk(`${apiUrl}/health`),
  );
  say(
    `cloud API                  ${apiUrl}/api  (health: ${apiUrl}/health, metrics: ${apiUrl}/metrics, pid ${cloud.pid})`,
  );
  say(`API reference              ${apiUrl}/api/docs`);
  const caFile = process.env.MQTT_TLS_CA_FILE ?? path.join(process.env.MQTT_DATA_DIR ?? mqttDataDir, 'tls', 'ca.crt');
  say(
    `cloud MQTT                 mqtts://127.0.0.1:${env.MQTT_TLS_PORT} (CA ${caFile}), mqtt://127.0.0.1:${env.MQTT_TCP_PORT} (loopback), ws://127.0.0.1:${env.HTTP_PORT}/mqtt`,
  );

  const demo = await provisionDemoBranch({
    mongoUrl,
    dataDir: env.NXG_DATA_DIR,
    apiUrl,
    mailDir: process.env.MAIL_DIR ?? path.join(env.NXG_DATA_DIR, 'mail'),
    machines: env.NXG_DEMO_MACHINES,
  });
  if (demo.fresh)
    say(
      `provisioned branch ${demo.branch}: gateway ${demo.gatewayId}, ${demo.machineCount} machines, observer ${demo.observer.id}`,
    );
  const gatewayHealthUrl = `http://127.0.0.1:${env.GATEWAY_HEALTH_PORT}/health`;
  const gateway = await startChild(
    'gateway',
    [path.join(root, 'edge-gateway/src/main.ts')],
    {
      ...process.env,
      LOG_FORMAT: logFormat,
      GATEWAY_DATA_DIR: demo.gatewayDataDir,
      // Enrolled (GATEWAY_DATA_DIR/enrolment.json) with its QR door scanners; a data directory from before
      // enrolment runs on its machines file and secret.
      ...(demo.legacy
        ? { GATEWAY_MACHINES_FILE: demo.legacy.machinesFile, GATEWAY_SECRET_FILE: demo.legacy.gatewaySecretFile }
        : { GATEWAY_QR_READERS: demo.scanners.map((s) => `${s.reader}=${s.file}`).join(',') }),
      GATEWAY_UPLINK_URL: `mqtts://127.0.0.1:${env.MQTT_TLS_PORT}`,
      GATEWAY_UPLINK_CA_FILE: caFile,
      GATEWAY_MQTT_PORT: String(env.GATEWAY_MQTT_PORT),
      GATEWAY_HEALTH_PORT: String(env.GATEWAY_HEALTH_PORT),
    },
    answersOk(gatewayHealthUrl),
  );
  say(
    `gateway ${demo.gatewayId.padEnd(19)}mqtt://127.0.0.1:${env.GATEWAY_MQTT_PORT} for machines  (health: ${gatewayHealthUrl}, pid ${gateway.pid})`,
  );

  if (demo.machineCount > 0) {
    const sim = await startChild(
      'simulator',
      [
        path.join(root, 'simulators/src/cli.ts'),
        '--branch',
        demo.branch,
        '--credentials',
        demo.simulatorCredentialsFile,
        '--url',
        `mqtt://127.0.0.1:${env.GATEWAY_MQTT_PORT}`,
        '--stats-every',
        '60',
      ],
      { ...process.env, LOG_FORMAT: logFormat },
    );
    say(`simulated machines         ${demo.machineCount} on branch ${demo.branch}  (pid ${sim.pid})`);
  }
  // Where the hub listens, for `npm run sim` (simulators/src/stack.ts): mode 0600, MONGO_URL may hold a password.
  await writeFile(
    path.join(env.NXG_DATA_DIR, 'hub.json'),
    `${JSON.stringify({
      mongoUrl,
      apiUrl,
      mqttTlsUrl: `mqtts://127.0.0.1:${env.MQTT_TLS_PORT}`,
      caFile,
      demo: {
        branch: demo.branch,
        gatewayUrl: `mqtt://127.0.0.1:${env.GATEWAY_MQTT_PORT}`,
        credentialsFile: demo.simulatorCredentialsFile,
        machines: demo.machineCount,
      },
    })}\n`,
    { mode: 0o600 },
  );
  say(
    `machine availability       ${apiUrl}/api/machines/availability?branchId=${demo.branch}  (e.g. curl -u ${demo.observer.id}:<password> …, or a member's bearer token)`,
  );
  for (const s of demo.scanners) {
    say(`QR scanner ${s.reader.padEnd(16)}${s.file} (${s.action}): each line appended is one scan`);
  }
  if (demo.member) {
    say(`demo member                ${demo.member.email}  password ${demo.member.password}  (${demo.member.file})`);
    say(
      `  scan their QR token at a door: npm run demo:scan -- in|out  (or: echo <token from GET /api/access/qr-token> >> ${demo.scanners[0]?.file ?? '<scanner file>'})`,
    );
  }
  say(`observer credentials       user ${demo.observer.id}  password ${demo.observer.secret}`);
  say(
    `  e.g. mosquitto_sub -h 127.0.0.1 -p ${env.MQTT_TLS_PORT} --cafile ${caFile} -u ${demo.observer.id} -P '<password>' -i ${demo.observer.id}.cli -t 'nxg/v1/b/${demo.branch}/live/#' -v`,
  );
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
