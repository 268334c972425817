/**
 * Outgoing mail's environment variables (spread into cloud/src/config.ts).
 */
import * as v from 'valibot';
import { envUrl } from '../../../tools/runtime/env-config.ts';

export const mailEnv = {
  /** smtp://user:pass@host:587 or smtps://…:465. Unset: mail is written to files under MAIL_DIR (development). */
  SMTP_URL: v.optional(envUrl(['smtp', 'smtps'])),
  /** The From of every message. */
  MAIL_FROM: v.optional(v.pipe(v.string(), v.minLength(3), v.maxLength(200)), 'NXG Connect <no-reply@nxg.localhost>'),
  /** Where links in emails point (the member app): verification and password-reset pages. */
  APP_BASE_URL: v.optional(envUrl(['http', 'https']), 'http://localhost:8080'),
  /** Without SMTP_URL, each message is written here as a JSON file. */
  MAIL_DIR: v.optional(v.pipe(v.string(), v.minLength(1)), 'data/mail'),
};

type MailEnv = v.InferOutput<v.ObjectSchema<typeof mailEnv, undefined>>;

export interface MailConfig {
  smtpUrl: string | undefined;
  from: string;
  appBaseUrl: string;
  dir: string;
}

export function mailConfig(e: MailEnv): MailConfig {
  return { smtpUrl: e.SMTP_URL, from: e.MAIL_FROM, appBaseUrl: e.APP_BASE_URL.replace(/\/+$/, ''), dir: e.MAIL_DIR };
}
