/**
 * What every long-running process of ours (cloud, gateway) does around its own start and stop: configuration
 * parsed once (a bad value exits 78, EX_CONFIG, naming the variable), a logger, unhandled rejections logged rather
 * than fatal, and a graceful stop on SIGTERM/SIGINT — a second signal exits at once, for an operator who does not
 * want to wait for the drain.
 */
import { systemClock, type Clock } from './clock.ts';
import { ConfigError } from './env-config.ts';
import type { LevelWithSilent } from 'pino';
import { createLogger, type Logger } from './logger.ts';

export interface MainSpec<
  C extends { log: { level: LevelWithSilent; pretty: boolean } },
  R extends { stop(): Promise<void> },
> {
  /** The process's name in logs and messages: `nxg <name>: …`. */
  name: string;
  loadConfig(env: Readonly<Record<string, string | undefined>>): C;
  start(deps: { config: C; log: Logger; clock: Clock }): Promise<R>;
  /** Logged once started (where it listens). */
  ready?(running: R, config: C, log: Logger): void;
}

export async function runMain<
  C extends { log: { level: LevelWithSilent; pretty: boolean } },
  R extends { stop(): Promise<void> },
>(spec: MainSpec<C, R>): Promise<void> {
  let config: C;
  try {
    config = spec.loadConfig(process.env);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    process.stderr.write(`nxg ${spec.name}: ${err.message}\n`);
    process.exit(78); // EX_CONFIG
  }

  const log = createLogger({ name: spec.name, level: config.log.level, pretty: config.log.pretty });
  process.on('unhandledRejection', (reason) => {
    log.error({ err: reason }, 'unhandled promise rejection');
  });

  try {
    const running = await spec.start({ config, log, clock: systemClock });
    spec.ready?.(running, config, log);
    let signals = 0;
    const shutdown = (signal: NodeJS.Signals) => {
      signals += 1;
      if (signals > 1) {
        log.warn({ signal }, 'second signal: exiting now');
        process.exit(1);
      }
      log.info({ signal }, 'shutting down');
      running.stop().then(
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
    log.fatal({ err }, `${spec.name} failed to start`);
    process.exit(1);
  }
}
