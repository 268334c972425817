/**
 * The one way processes build their pino logger. Modules receive `log.child({ module })` from main.ts; none import
 * a global logger.
 */
import { pino, type Logger, type LevelWithSilent } from 'pino';

export type { Logger };

/**
 * Paths that must never reach a log line: credentials and tokens, at the depths our code logs them (a value, a
 * request or response, a body, an HTTP client's config). pino's redaction matches exact paths with one-level
 * wildcards, not any depth, so this list is the contract: log objects shaped like these, never whole contexts,
 * bodies of unknown shape, or health data (CONVENTIONS.md, "Logging").
 */
const SECRET_KEYS = ['password', 'secret', 'token', 'accessToken', 'refreshToken', 'apiKey', 'authorization', 'cookie'];
export const redactedPaths = [
  ...SECRET_KEYS.flatMap((key) => [key, `*.${key}`, `*.*.${key}`]),
  'req.headers.authorization',
  'req.headers.cookie',
  '*.headers.authorization',
  '*.headers.Authorization',
  '*.*.headers.authorization',
  '*.*.headers.Authorization',
  'res.headers["set-cookie"]',
  'err.keyValue',
];

export interface LoggerOptions {
  name: string;
  level: LevelWithSilent;
  /** Human-readable lines (pino-pretty) instead of JSON; for a developer's terminal. */
  pretty?: boolean;
}

export function createLogger({ name, level, pretty = false }: LoggerOptions): Logger {
  return pino({
    name,
    level,
    redact: { paths: redactedPaths, censor: '[redacted]' },
    ...(pretty
      ? { transport: { target: 'pino-pretty', options: { colorize: true, translateTime: 'SYS:HH:MM:ss.l' } } }
      : {}),
  });
}
