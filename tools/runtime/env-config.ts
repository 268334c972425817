/**
 * Parsing a process's configuration from the environment, once, in its main.ts.
 *
 * Each process declares one valibot object schema whose keys are environment variable names; a wrong value stops
 * the process with a message that names the variable and says what was expected. Nothing else reads process.env.
 */
import * as v from 'valibot';

export class ConfigError extends Error {
  readonly problems: readonly string[];
  constructor(problems: readonly string[]) {
    super(`invalid configuration:\n  ${problems.join('\n  ')}`);
    this.name = 'ConfigError';
    this.problems = problems;
  }
}

type EnvSchema = v.ObjectSchema<v.ObjectEntries, v.ErrorMessage<v.ObjectIssue> | undefined>;

/** Parses the environment with `schema`; throws a ConfigError naming every bad variable. */
export function parseEnv<TSchema extends EnvSchema>(
  schema: TSchema,
  env: Readonly<Record<string, string | undefined>>,
): v.InferOutput<TSchema> {
  // Empty strings mean "unset", as in shells where `VAR= npm start` is the usual way to clear a value.
  const input: Record<string, string> = {};
  for (const key of Object.keys(schema.entries)) {
    const value = env[key];
    if (value !== undefined && value !== '') input[key] = value;
  }
  const result = v.safeParse(schema, input);
  if (result.success) return result.output;
  const problems = result.issues.map((issue) => {
    const name = v.getDotPath(issue) ?? '(environment)';
    const shown = describeValue(name, input[name]);
    return `${name}: ${issue.message}${shown === undefined ? '' : ` (got ${shown})`}`;
  });
  throw new ConfigError(problems);
}

/** Variables whose values are never echoed: a start-up error ends up in logs. */
const SECRET_NAME = /TOKEN|SECRET|PASSWORD|PASSPHRASE|KEY|DSN/i;

/** How a wrong value is quoted in the error: secrets not at all, URLs without their credentials. */
function describeValue(name: string, value: string | undefined): string | undefined {
  if (value === undefined) return undefined;
  if (SECRET_NAME.test(name)) return '(value hidden)';
  return JSON.stringify(value.replace(/^([a-z][a-z0-9+.-]*:\/\/)[^@/?#]*@/i, '$1***@'));
}

// Reusable pieces for env schemas: every value arrives as a string.

/** An integer in [min, max], with a default when unset. */
export const envInt = (fallback: number, min: number, max: number) =>
  v.optional(
    v.pipe(
      v.string(),
      v.regex(/^-?\d+$/, 'expected an integer'),
      v.transform(Number),
      v.minValue(min, `expected ≥ ${min}`),
      v.maxValue(max, `expected ≤ ${max}`),
    ),
    String(fallback),
  );

/** A TCP port; 0 lets the OS choose (tests). */
export const envPort = (fallback: number) => envInt(fallback, 0, 65535);

/** true/false/1/0/yes/no. */
export const envBool = (fallback: boolean) =>
  v.optional(
    v.pipe(
      v.string(),
      v.toLowerCase(),
      v.picklist(['true', 'false', '1', '0', 'yes', 'no'], 'expected true or false'),
      v.transform((s) => s === 'true' || s === '1' || s === 'yes'),
    ),
    String(fallback),
  );

/** A URL with one of the given schemes. */
export const envUrl = (schemes: readonly string[]) =>
  v.pipe(
    v.string(),
    v.url('expected a URL'),
    v.check((s) => schemes.some((scheme) => s.startsWith(`${scheme}://`)), `expected a ${schemes.join(' or ')} URL`),
  );

/** A comma-separated list, trimmed, empty entries dropped. */
export const envList = (fallback: string) =>
  v.optional(
    v.pipe(
      v.string(),
      v.transform((s) =>
        s
          .split(',')
          .map((item) => item.trim())
          .filter((item) => item.length > 0),
      ),
    ),
    fallback,
  );

export const envLogLevel = v.optional(
  v.picklist(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'], 'expected a pino log level'),
  'info',
);
