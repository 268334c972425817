/**
 * `npm run gateway -- enrol --cloud <url> (--token <token> | --token-file <file>) [--ca <file>] [--force]`: enrols
 * this gateway and stores its credentials under GATEWAY_DATA_DIR (default data/gateway). Prints where they went,
 * never the secret nor the token. `--token-file` (or `-` for standard input) keeps the token out of the process
 * list and the shell history, where `--token` leaves it (it is single-use and short-lived, but still).
 */
import { readFile } from 'node:fs/promises';
import { Command, CommanderError } from '@commander-js/extra-typings';
import { DEFAULT_DATA_DIR } from '../config.ts';
import { version } from '../version.ts';
import { enrolGateway, EnrolmentError } from './enrol.ts';

export async function runEnrolCli(
  argv: readonly string[],
  env: Readonly<Record<string, string | undefined>>,
  out: { log(line: string): void; error(line: string): void } = console,
): Promise<number> {
  const program = new Command('enrol')
    .description('Enrol this gateway with the cloud using a one-time token')
    .requiredOption('--cloud <url>', 'the cloud’s HTTPS base URL, e.g. https://hub.example.com')
    .option('--token <token>', 'the one-time enrolment token staff created for this gateway')
    .option('--token-file <file>', 'read the token from this file (`-`: standard input) instead of --token')
    .option('--ca <file>', 'PEM file of the CA that signed the cloud’s certificate (if not a public CA)')
    .option('--data-dir <dir>', 'where to store the credentials (default: GATEWAY_DATA_DIR or data/gateway)')
    .option('--force', 'replace an existing enrolment')
    .exitOverride()
    .configureOutput({ writeOut: (s) => out.log(s.trimEnd()), writeErr: (s) => out.error(s.trimEnd()) });
  let opts;
  try {
    opts = program.parse([...argv], { from: 'user' }).opts();
  } catch (err) {
    if (err instanceof CommanderError) return err.exitCode === 0 ? 0 : 64; // EX_USAGE
    throw err;
  }
  if ((opts.token === undefined) === (opts.tokenFile === undefined)) {
    out.error('nxg gateway enrol: give exactly one of --token and --token-file');
    return 64;
  }
  let token = opts.token;
  if (opts.tokenFile !== undefined) {
    try {
      const source = opts.tokenFile === '-' ? '/dev/stdin' : opts.tokenFile;
      token = (await readFile(source, 'utf8')).trim();
    } catch (err) {
      out.error(`nxg gateway enrol: --token-file: cannot read it (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
      return 66; // EX_NOINPUT
    }
  }
  const dataDir =
    opts.dataDir ??
    (env.GATEWAY_DATA_DIR !== undefined && env.GATEWAY_DATA_DIR !== '' ? env.GATEWAY_DATA_DIR : DEFAULT_DATA_DIR);
  try {
    const { file, enrolment, warnings } = await enrolGateway({
      cloud: opts.cloud,
      token: token ?? '',
      caFile: opts.ca,
      dataDir,
      version,
      force: opts.force === true,
    });
    out.log(`enrolled gateway ${enrolment.gateway} of branch ${enrolment.branch}; credentials in ${file} (mode 0600)`);
    if (enrolment.brokerUrl !== undefined) out.log(`cloud broker: ${enrolment.brokerUrl}`);
    for (const warning of warnings) out.error(`nxg gateway enrol: warning: ${warning}`);
    return 0;
  } catch (err) {
    if (err instanceof EnrolmentError) {
      out.error(`nxg gateway enrol: ${err.message}`);
      return 1;
    }
    throw err;
  }
}
