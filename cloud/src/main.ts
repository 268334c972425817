/**
 * The cloud process: parse configuration (a bad value stops here, naming the variable), build everything, and shut
 * down gracefully on SIGTERM/SIGINT.
 */
import { runMain } from '../../tools/runtime/process-main.ts';
import { startCloud } from './cloud.ts';
import { loadCloudConfig } from './config.ts';

await runMain({ name: 'cloud', loadConfig: loadCloudConfig, start: startCloud });
