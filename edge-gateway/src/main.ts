/**
 * The gateway process (`npm run gateway`): parse configuration (a bad value stops here, naming the variable),
 * start the gateway, and stop it gracefully on SIGTERM/SIGINT: offline state to the cloud, intake closed, exit.
 */
import { systemClock } from '../../tools/runtime/clock.ts';
import { ConfigError } from '../../tools/runtime/env-config.ts';
import { createLogger } from '../../tools/runtime/logger.ts';
import { loadGatewayConfig, type GatewayConfig } from './config.ts';
import { startGateway } from './gateway.ts';

let config: GatewayConfig;
try {
  config = loadGatewayConfig(process.env);
} catch (err) {
  if (!(err instanceof ConfigError)) throw err;
  process.stderr.write(`nxg gateway: ${err.message}\n`);
  process.exit(78); // EX_CONFIG
}

const log = createLogger({ name: 'gateway', level: config.log.level, pretty: config.log.pretty });

process.on('unhandledRejection', (reason) => {
  log.error({ err: reason }, 'unhandled promise rejection');
});

try {
  const gateway = await startGateway({ config, log, clock: systemClock });
  log.info(
    {
      mqtt: `mqtt://${config.broker.host}:${gateway.brokerPort}`,
      health: `http://${config.health.host}:${gateway.healthPort}/health`,
    },
    'gateway ready',
  );
  let signals = 0;
  const shutdown = (signal: NodeJS.Signals) => {
    signals += 1;
    if (signals > 1) {
      log.warn({ signal }, 'second signal: exiting now');
      process.exit(1);
    }
    log.info({ signal }, 'shutting down');
    gateway.stop().then(
      () => process.exit(0),
      (err: unknown) => {
        log.error({ err }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', shutdown);
  process.on('SIGINT', shutdown);
} catch (err) {
  log.fatal({ err }, 'gateway failed to start');
  process.exit(1);
}
