/**
 * A development CA for MQTT over TLS: the cloud broker generates one when no certificate is configured, and tests
 * use one to run clients over real TLS against a CA file, exactly as in production.
 */
import { execFile } from 'node:child_process';
import { chmod, mkdir, mkdtemp, rename, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

/** Whether `file` exists (any error reading it counts as no). */
export async function fileExists(file: string): Promise<boolean> {
  return stat(file).then(
    () => true,
    () => false,
  );
}

/**
 * Generates a development CA and a server certificate signed by it — ca.crt/ca.key/server.crt/server.key — into
 * `dir` (which must not exist yet), atomically, with the `openssl` CLI. The server certificate is valid for
 * `subjectAltNames` (e.g. `IP:127.0.0.1`, `DNS:localhost`).
 */
export async function generateDevelopmentCa(dir: string, subjectAltNames: readonly string[]): Promise<void> {
  const parent = path.dirname(dir);
  await mkdir(parent, { recursive: true });
  const work = await mkdtemp(path.join(parent, '.tls-'));
  try {
    const f = (name: string) => path.join(work, name);
    const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
    await run('openssl', [
      'req',
      '-x509',
      ...ec,
      '-keyout',
      f('ca.key'),
      '-out',
      f('ca.crt'),
      '-days',
      '3650',
      '-subj',
      '/CN=NXG Connect development CA',
      '-addext',
      'basicConstraints=critical,CA:TRUE,pathlen:0',
      '-addext',
      'keyUsage=critical,keyCertSign,cRLSign',
    ]);
    await run('openssl', ['req', ...ec, '-keyout', f('server.key'), '-out', f('server.csr'), '-subj', '/CN=localhost']);
    await writeFile(
      f('server.ext'),
      [
        `subjectAltName=${subjectAltNames.join(',')}`,
        'basicConstraints=critical,CA:FALSE',
        'keyUsage=critical,digitalSignature',
        'extendedKeyUsage=serverAuth',
        '',
      ].join('\n'),
    );
    await run('openssl', [
      'x509',
      '-req',
      '-in',
      f('server.csr'),
      '-CA',
      f('ca.crt'),
      '-CAkey',
      f('ca.key'),
      '-CAcreateserial',
      '-out',
      f('server.crt'),
      '-days',
      '825',
      '-extfile',
      f('server.ext'),
    ]);
    await Promise.all([chmod(f('ca.key'), 0o600), chmod(f('server.key'), 0o600)]);
    await Promise.all(['server.csr', 'server.ext', 'ca.srl'].map((name) => rm(f(name), { force: true })));
    // Two processes starting on a fresh directory at once: the first rename wins, the second finds it there.
    await rename(work, dir).catch(async (err: NodeJS.ErrnoException) => {
      if (!(await fileExists(path.join(dir, 'server.crt')))) throw err;
    });
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}
