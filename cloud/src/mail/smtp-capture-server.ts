/**
 * A local SMTP server that accepts every message and prints it as one JSON line on stdout, instead of delivering
 * it: for tests (through smtp-capture.ts) and for trying mail locally (`node cloud/src/mail/smtp-capture-server.ts`,
 * then SMTP_URL=smtp://127.0.0.1:<port>). Loopback only, no TLS, no authentication.
 *
 * Output: `ready <port>` once listening, then `mail {"from","to":[…],"subject","text"}` per message. Exits on
 * SIGTERM, SIGINT, or when stdin closes (its parent is gone).
 */
import { SMTPServer } from 'smtp-server';
import { parseMessage } from './mime.ts';

const MAX_MESSAGE_BYTES = 1024 * 1024;

const server = new SMTPServer({
  secure: false,
  authOptional: true,
  disabledCommands: ['AUTH', 'STARTTLS'],
  size: MAX_MESSAGE_BYTES,
  logger: false,
  onData(stream, session, callback) {
    const chunks: Buffer[] = [];
    stream.on('data', (chunk: Buffer) => chunks.push(chunk));
    stream.on('end', () => {
      const { subject, text } = parseMessage(Buffer.concat(chunks).toString('utf8'));
      const envelope = session.envelope;
      const line = {
        from: envelope.mailFrom ? envelope.mailFrom.address : '',
        to: envelope.rcptTo.map((r) => r.address),
        subject,
        text,
      };
      process.stdout.write(`mail ${JSON.stringify(line)}\n`);
      callback();
    });
  },
});

const port = Number(process.argv[2] ?? 0);
server.listen(port, '127.0.0.1', () => {
  const address = server.server.address();
  process.stdout.write(`ready ${typeof address === 'object' && address ? address.port : port}\n`);
});
server.on('error', (err) => process.stderr.write(`smtp-capture: ${err.message}\n`));

const stop = () => server.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
process.stdin.on('end', stop);
process.stdin.resume();
