/**
 * Outgoing mail through nodemailer over SMTP (SMTP_URL). Without SMTP_URL (development, `npm start`), nothing is
 * sent: each message is written as a JSON file under MAIL_DIR (default ./data/mail), where a developer can open the
 * verification or reset link. Message bodies are never logged (they carry single-use tokens).
 */
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import nodemailer, { type Transporter } from 'nodemailer';
import type { Logger } from '../../../tools/runtime/logger.ts';
import type { MailConfig } from './config.ts';

export interface MailMessage {
  to: string;
  subject: string;
  /** Plain text only: no HTML to sanitise, nothing remote to load. */
  text: string;
  /** What kind of message, for the log (never the body). */
  kind: string;
}

export interface Mailer {
  /** Sends (or, in development, writes) one message; rejects on failure. */
  send(message: MailMessage): Promise<void>;
  /**
   * Sends in the background: the request does not wait for SMTP (whose latency would also tell an existing account
   * from a new one). Failures are logged. close() waits for these.
   */
  sendLater(message: MailMessage): void;
  readonly mode: 'smtp' | 'files';
  close(): Promise<void>;
}

export function createMailer(config: MailConfig, log: Logger): Mailer {
  const pending = new Set<Promise<void>>();
  let transport: Transporter;
  let mode: Mailer['mode'];
  let dir = '';
  if (config.smtpUrl) {
    mode = 'smtp';
    transport = nodemailer.createTransport(
      { url: config.smtpUrl, connectionTimeout: 10_000, greetingTimeout: 10_000, socketTimeout: 20_000 },
      { from: config.from },
    );
  } else {
    mode = 'files';
    dir = path.resolve(config.dir);
    transport = nodemailer.createTransport({ jsonTransport: true }, { from: config.from });
    log.info({ dir }, 'SMTP_URL is not set: mail is not sent but written to files (development)');
  }

  let counter = 0;
  async function send(message: MailMessage): Promise<void> {
    const info = (await transport.sendMail({ to: message.to, subject: message.subject, text: message.text })) as {
      messageId?: string;
      message?: string;
    };
    if (mode === 'files') {
      await mkdir(dir, { recursive: true, mode: 0o700 });
      const name = `${new Date().toISOString().replace(/[:.]/g, '-')}-${process.pid}-${++counter}-${message.kind}.json`;
      await writeFile(path.join(dir, name), info.message ?? '', { mode: 0o600 });
    }
    log.debug({ kind: message.kind, messageId: info.messageId }, 'mail sent');
  }

  return {
    mode,
    send,
    sendLater(message) {
      const sending = send(message)
        .catch((err: unknown) => {
          log.error(
            { kind: message.kind, err: { name: (err as Error).name, message: (err as Error).message } },
            'mail not sent',
          );
        })
        .finally(() => pending.delete(sending));
      pending.add(sending);
    },
    async close() {
      await Promise.allSettled([...pending]);
      transport.close();
    },
  };
}
