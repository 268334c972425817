/**
 * TLS material for the gateways' listener. With MQTT_TLS_CERT_FILE/KEY_FILE set, those files are used as they
 * are. Otherwise a development CA and a server certificate signed by it are generated on first start in the data
 * directory (the `openssl` CLI, a Debian package bootstrap installs), and reused afterwards: gateways and
 * `mosquitto_sub --cafile <dir>/ca.crt` verify the broker against that CA.
 */
import { execFile } from 'node:child_process';
import { chmod, mkdir, mkdtemp, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import type { Logger } from '../../../tools/runtime/logger.ts';
import type { BrokerConfig } from './config.ts';

const run = promisify(execFile);

export interface TlsMaterial {
  cert: Buffer;
  key: Buffer;
  /** Where the CA clients should trust lives, when known (the development CA, or MQTT_TLS_CA_FILE). */
  caFile: string | undefined;
  /** 'generated' on the first start with a development CA, 'development' afterwards, 'configured' otherwise. */
  source: 'configured' | 'generated' | 'development';
}

/** Names the development certificate is valid for: loopback, this host's name, and the listener's address. */
export function developmentSubjectAltNames(listenHost: string): string[] {
  const names = new Set(['DNS:localhost', 'IP:127.0.0.1', 'IP:::1', `DNS:${os.hostname()}`]);
  if (listenHost !== '0.0.0.0' && listenHost !== '::') names.add(`IP:${listenHost}`);
  return [...names];
}

async function exists(file: string): Promise<boolean> {
  return stat(file).then(
    () => true,
    () => false,
  );
}

/** Generates ca.crt/ca.key/server.crt/server.key into `dir` (which must not exist yet), atomically. */
async function generateDevelopmentCa(dir: string, subjectAltNames: readonly string[]): Promise<void> {
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
      if (!(await exists(path.join(dir, 'server.crt')))) throw err;
    });
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

export async function loadTlsMaterial(config: BrokerConfig, log: Logger): Promise<TlsMaterial> {
  const { certFile, keyFile, caFile } = config.tls;
  if (certFile && keyFile) {
    const [cert, key] = await Promise.all([readFile(certFile), readFile(keyFile)]);
    return { cert, key, caFile, source: 'configured' };
  }
  const dir = path.join(config.dataDir, 'tls');
  let source: TlsMaterial['source'] = 'development';
  if (!(await exists(path.join(dir, 'server.crt')))) {
    await generateDevelopmentCa(dir, developmentSubjectAltNames(config.tls.host));
    source = 'generated';
    log.info({ dir }, 'generated a development CA and server certificate for MQTT over TLS');
  }
  const [cert, key] = await Promise.all([
    readFile(path.join(dir, 'server.crt')),
    readFile(path.join(dir, 'server.key')),
  ]);
  return { cert, key, caFile: caFile ?? path.join(dir, 'ca.crt'), source };
}
