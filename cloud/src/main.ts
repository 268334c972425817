/**
 * The cloud process: parse configuration (a bad value stops here, naming the variable), build everything, and shut
 * down gracefully on SIGTERM/SIGINT.
 */
import { ConfigError } from '../../tools/runtime/env-config.ts';
import { systemClock } from '../../tools/runtime/clock.ts';
import { createLogger } from '../../tools/runtime/logger.ts';
import { startCloud } from './cloud.ts';
import { loadCloudConfig, type CloudConfig } from './config.ts';

let config: CloudConfig;
try {
  config = loadCloudConfig(process.env);
} catch (err) {
  if (!(err instanceof ConfigError)) throw err;
  process.stderr.write(`nxg cloud: ${err.message}\n`);
  process.exit(78); // EX_CONFIG
}

const log = createLogger({ name: 'cloud', level: config.log.level, pretty: config.log.pretty });

process.on('unhandledRejection', (reason) => {
  log.error({ err: reason }, 'unhandled promise rejection');
});

try {
  const cloud = await startCloud({ config, log, clock: systemClock });
  let signals = 0;
  const shutdown = (signal: NodeJS.Signals) => {
    signals += 1;
    if (signals > 1) {
      log.warn({ signal }, 'second signal: exiting now');
      process.exit(1);
    }
    log.info({ signal }, 'shutting down');
    cloud.stop().then(
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
  log.fatal({ err }, 'cloud failed to start');
  process.exit(1);
}
