/**
 * `npm run crypto:rotate [-- --dry-run] [--batch-size N]`: re-encrypts every sealed field with the active key.
 *
 * Rotation, step by step:
 *   1. add the new key to FIELD_ENCRYPTION_KEYS and make it FIELD_ENCRYPTION_ACTIVE_KEY (restart the API nodes:
 *      new writes use it, old values still decrypt);
 *   2. run this with the same environment until it reports `complete` (safe beside live traffic);
 *   3. remove the old key from FIELD_ENCRYPTION_KEYS and restart.
 * Exit codes: 0 complete, 2 incomplete (run again; unreadable values are listed in the log), 78 bad configuration.
 */
import { Command, InvalidArgumentError } from '@commander-js/extra-typings';
import * as v from 'valibot';
import { ConfigError, envInt, envLogLevel, envUrl, parseEnv } from '../../../tools/runtime/env-config.ts';
import { createLogger, type Logger } from '../../../tools/runtime/logger.ts';
import { connectMongo } from '../db/mongo.ts';
import { PRIVACY_SEALED_COLLECTIONS } from '../privacy/privacy.ts';
import { SEALED_COLLECTIONS } from '../users/models.ts';
import { cryptoConfig, cryptoEnvEntries } from './config.ts';
import { createFieldCipher } from './field-cipher.ts';
import { loadKeyring } from './keyring.ts';
import { rotateSealedFields, type RotationReport } from './rotation.ts';

const RotateEnv = v.object({
  LOG_LEVEL: envLogLevel,
  MONGO_URL: envUrl(['mongodb', 'mongodb+srv']),
  MONGO_TIMEOUT_MS: envInt(5000, 100, 60_000),
  ...cryptoEnvEntries,
});

export interface RotateOptions {
  dryRun: boolean;
  batchSize: number;
}

/** Runs the rotation with `env` (the cloud's variables); resolves with the report. */
export async function rotateFromEnv(
  env: Readonly<Record<string, string | undefined>>,
  options: RotateOptions,
  log?: Logger,
): Promise<RotationReport> {
  const e = parseEnv(RotateEnv, env);
  const logger = log ?? createLogger({ name: 'crypto-rotate', level: e.LOG_LEVEL });
  // The CLI never generates keys: with no configured keys it may only use an existing development keyring.
  const { crypto } = cryptoConfig(e, { loopback: true });
  const keyring = await loadKeyring(crypto, { log: logger, create: false });
  const connection = await connectMongo({ url: e.MONGO_URL, timeoutMs: e.MONGO_TIMEOUT_MS, log: logger });
  try {
    return await rotateSealedFields({
      connection,
      cipher: createFieldCipher(keyring),
      targets: [...SEALED_COLLECTIONS, ...PRIVACY_SEALED_COLLECTIONS],
      log: logger,
      batchSize: options.batchSize,
      dryRun: options.dryRun,
    });
  } finally {
    await connection.close();
  }
}

function positiveInt(value: string): number {
  const n = Number(value);
  if (!/^\d{1,6}$/.test(value) || n < 1) throw new InvalidArgumentError('expected a positive integer');
  return n;
}

if (import.meta.main) {
  const program = new Command()
    .name('crypto:rotate')
    .description('Re-encrypt every sealed field with FIELD_ENCRYPTION_ACTIVE_KEY')
    .option('--dry-run', 'count what would be re-encrypted, write nothing', false)
    .option('--batch-size <n>', 'documents per read', positiveInt, 500)
    .parse();
  const opts = program.opts();
  try {
    const report = await rotateFromEnv(process.env, { dryRun: opts.dryRun, batchSize: opts.batchSize });
    process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
    process.exit(report.complete ? 0 : 2);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`crypto:rotate: ${err.message}\n`);
      process.exit(78);
    }
    throw err;
  }
}
