/**
 * Test fixture for services.test.ts: a parent that ignores SIGINT (as `npm start` does once it handles Ctrl-C
 * itself) with two redis-servers, one in its own process group (`detached`) and one in ours. Prints their pids as
 * one JSON line, then waits to be killed. The test sends SIGINT to our process group, as a terminal's Ctrl-C would.
 */
import { startRedis } from './index.ts';

process.on('SIGINT', () => {});

const [detached, attached] = await Promise.all([startRedis({ detached: true }), startRedis()]);
process.stdout.write(`${JSON.stringify({ detached: detached.pid, attached: attached.pid })}\n`);
// Stay alive until killed; a bounded wait so a broken test cannot leave this running for long.
setTimeout(() => process.exit(2), 60_000);
