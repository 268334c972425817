/**
 * The gateway process (`npm run gateway`): parse configuration (a bad value stops here, naming the variable),
 * start the gateway, and stop it gracefully on SIGTERM/SIGINT: offline state to the cloud, intake closed, exit.
 */
import { runMain } from '../../tools/runtime/process-main.ts';
import { loadGatewayConfig } from './config.ts';
import { startGateway } from './gateway.ts';

await runMain({
  name: 'gateway',
  loadConfig: loadGatewayConfig,
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
