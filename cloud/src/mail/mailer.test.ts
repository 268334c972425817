import { expect } from 'chai';
import { mkdtemp, readdir, readFile, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { createMailer } from './mailer.ts';
import { parseMessage } from './mime.ts';
import { linkIn, startSmtpCapture } from './smtp-capture.ts';

const silent = pino({ level: 'silent' });

describe('mailer', function () {
  this.timeout(20_000);

  it('sends over SMTP to a real server process; long lines and non-ASCII survive the transfer encoding', async () => {
    const capture = await startSmtpCapture();
    try {
      const mailer = createMailer(
        { smtpUrl: capture.url, from: 'NXG <no-reply@nxg.test>', appBaseUrl: 'http://app.test', dir: 'unused' },
        silent,
      );
      expect(mailer.mode).to.equal('smtp');
      const link = `http://app.test/verify-email#token=${'T'.repeat(43)}&more=${'x'.repeat(60)}`;
      await mailer.send({ kind: 'test', to: 'zoë@nxg.test', subject: 'Grüße', text: `Hallo Zoë,\n\n${link}\n` });
      mailer.sendLater({ kind: 'test', to: 'later@nxg.test', subject: 'later', text: 'in the background' });
      await mailer.close();
      const mail = await capture.waitFor((m) => m.subject === 'Grüße');
      expect(mail.to).to.deep.equal(['zoë@nxg.test']);
      expect(mail.from).to.equal('no-reply@nxg.test');
      expect(mail.text).to.include('Hallo Zoë');
      expect(linkIn(mail, 'http://app.test/').href).to.equal(link);
      // close() waited for the background send; the capture process reports what it received a moment later.
      expect((await capture.waitFor((m) => m.subject === 'later')).text).to.include('in the background');
    } finally {
      await capture.stop();
    }
  });

  it('logs a failed background send instead of throwing', async () => {
    const mailer = createMailer(
      { smtpUrl: 'smtp://127.0.0.1:1', from: 'x@nxg.test', appBaseUrl: 'http://app.test', dir: 'unused' },
      silent,
    );
    mailer.sendLater({ kind: 'test', to: 'a@nxg.test', subject: 's', text: 't' });
    await mailer.close();
  });

  it('without SMTP_URL, writes each message as a private JSON file under MAIL_DIR', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'nxg-mail-'));
    try {
      const mailer = createMailer(
        { smtpUrl: undefined, from: 'x@nxg.test', appBaseUrl: 'http://app.test', dir },
        silent,
      );
      expect(mailer.mode).to.equal('files');
      await mailer.send({ kind: 'verify-email', to: 'dev@nxg.test', subject: 'Confirm', text: 'link here' });
      const [file] = await readdir(dir);
      expect(file).to.match(/verify-email\.json$/);
      const message = JSON.parse(await readFile(path.join(dir, file!), 'utf8')) as { subject: string; text: string };
      expect(message).to.include({ subject: 'Confirm', text: 'link here' });
      expect((await stat(path.join(dir, file!))).mode & 0o077).to.equal(0);
      await mailer.close();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('parses quoted-printable and base64 bodies and encoded headers', () => {
    const qp = parseMessage(
      'Subject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?=\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nab=\r\ncd =C3=A9\r\n',
    );
    expect(qp).to.include({ subject: 'Grüße', text: 'abcd é\n' });
    const b64 = parseMessage(
      `Subject: =?UTF-8?B?${Buffer.from('Héllo').toString('base64')}?=\nContent-Transfer-Encoding: base64\n\n${Buffer.from('body é').toString('base64')}\n`,
    );
    expect(b64).to.include({ subject: 'Héllo', text: 'body é' });
  });
});
