/**
 * Starts smtp-capture-server.ts as a child process and collects what it captures: a mailbox tests read the real
 * emails from (and follow their links).
 *
 *   const capture = await startSmtpCapture();   // SMTP_URL: capture.url
 *   const mail = await capture.waitFor((m) => m.to.includes(email) && /Confirm/.test(m.subject));
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { spawnService, type ServiceProcess } from '../../../tools/services/index.ts';

export interface CapturedMail {
  from: string;
  to: string[];
  subject: string;
  text: string;
}

export interface SmtpCapture {
  /** smtp://127.0.0.1:<port> — give it to the cloud as SMTP_URL. */
  readonly url: string;
  readonly pid: number;
  /** Everything received so far. */
  messages(): readonly CapturedMail[];
  /** The first message (received or to come) matching `predicate`. */
  waitFor(predicate: (mail: CapturedMail) => boolean, timeoutMs?: number): Promise<CapturedMail>;
  stop(): Promise<void>;
}

const SCRIPT = path.join(path.dirname(fileURLToPath(import.meta.url)), 'smtp-capture-server.ts');

export async function startSmtpCapture(): Promise<SmtpCapture> {
  const received: CapturedMail[] = [];
  const waiters = new Set<{ predicate: (mail: CapturedMail) => boolean; resolve: (mail: CapturedMail) => void }>();
  const proc: ServiceProcess = await spawnService({
    name: 'smtp-capture',
    command: process.execPath,
    args: [SCRIPT, '0'],
    stdinPipe: true,
    onLine(line, stream) {
      if (stream !== 'stdout' || !line.startsWith('mail ')) return;
      const mail = JSON.parse(line.slice(5)) as CapturedMail;
      received.push(mail);
      for (const waiter of waiters) {
        if (waiter.predicate(mail)) {
          waiters.delete(waiter);
          waiter.resolve(mail);
        }
      }
    },
  });
  let port: number;
  try {
    const ready = await proc.waitForLine(/^ready (\d+)$/, 10_000);
    port = Number(ready[1]);
  } catch (err) {
    await proc.stop();
    throw err;
  }
  return {
    url: `smtp://127.0.0.1:${port}`,
    pid: proc.pid,
    messages: () => received,
    waitFor(predicate, timeoutMs = 10_000) {
      const found = received.find(predicate);
      if (found) return Promise.resolve(found);
      return new Promise((resolve, reject) => {
        const waiter = {
          predicate,
          resolve: (mail: CapturedMail) => {
            clearTimeout(timer);
            resolve(mail);
          },
        };
        const timer = setTimeout(() => {
          waiters.delete(waiter);
          reject(new Error(`no matching email within ${timeoutMs} ms (received ${received.length})`));
        }, timeoutMs);
        waiters.add(waiter);
      });
    },
    async stop() {
      await proc.stop();
    },
  };
}

/** The first link in a mail's text that starts with `base`. */
export function linkIn(mail: CapturedMail, base: string): URL {
  const match = mail.text.match(/https?:\/\/\S+/g)?.find((url) => url.startsWith(base));
  if (!match) throw new Error(`no link to ${base} in "${mail.subject}"`);
  return new URL(match);
}
