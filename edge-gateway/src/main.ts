/**
 * The gateway process (`npm run gateway`): parse configuration (a bad value stops here, naming the variable),
 * start the gateway, and stop it gracefully on SIGTERM/SIGINT: offline state to the cloud, intake closed, exit.
 *
 * `npm run gateway -- enrol --cloud <url> --token <token> [--ca <file>]` enrols it first (enrolment/cli.ts).
 */
import { existsSync } from 'node:fs';
import { runMain } from '../../tools/runtime/process-main.ts';
import { loadGatewayConfig } from './config.ts';
import { runEnrolCli } from './enrolment/cli.ts';
import { enrolmentFilePath } from './enrolment/credentials.ts';
import { startGateway } from './gateway.ts';

const [command, ...rest] = process.argv.slice(2);

if (command === 'enrol' || command === 'enroll') {
  process.exitCode = await runEnrolCli(rest, process.env);
} else if (command !== undefined) {
  process.stderr.write(`nxg gateway: unknown command ${JSON.stringify(command)} (expected none, or enrol)\n`);
  process.exitCode = 64; // EX_USAGE
} else {
  await runMain({
    name: 'gateway',
    loadConfig: (env) => loadGatewayConfig(env, { enrolled: (dataDir) => existsSync(enrolmentFilePath(dataDir)) }),
    start: startGateway,
    ready(gateway, config, log) {
      log.info(
        {
          mqtt: `mqtt://${config.broker.host}:${gateway.brokerPort}`,
          health: `http://${config.health.host}:${gateway.healthPort}/health`,
        },
        'gateway ready',
      );
    },
  });
}
