/**
 * Test fixture for services.test.ts: starts the services the way `npm start` does, prints their pids as one JSON
 * line, then waits to be killed (the test kills it with SIGKILL and checks that nothing outlives it).
 */
import { startMongo, startMosquitto, startRedis } from './index.ts';

const [mongo, redis, mosquitto] = await Promise.all([
  startMongo({ storage: { kind: 'memory' } }),
  startRedis(),
  startMosquitto(),
]);
process.stdout.write(`${JSON.stringify({ mongo: mongo.pid, redis: redis.pid, mosquitto: mosquitto.pid })}\n`);
// Stay alive until killed; a bounded wait so a broken test cannot leave this running for long.
setTimeout(() => process.exit(2), 60_000);
