/**
 * A throwaway CA and a server certificate for 127.0.0.1/localhost, made with the openssl CLI (Debian openssl), so
 * tests run the forwarder over real TLS with GATEWAY_UPLINK_CA_FILE exactly as in production.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';

export interface DevCertificates {
  readonly caFile: string;
  readonly ca: Buffer;
  readonly key: Buffer;
  readonly cert: Buffer;
}

export function makeDevCertificates(dir: string): DevCertificates {
  const p = (name: string) => path.join(dir, name);
  const openssl = (...args: string[]) => execFileSync('openssl', args, { stdio: 'pipe' });
  openssl(
    'req',
    '-x509',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:P-256',
    '-nodes',
    '-days',
    '2',
    '-subj',
    '/CN=nxg test CA',
    '-keyout',
    p('ca.key'),
    '-out',
    p('ca.pem'),
  );
  openssl(
    'req',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:P-256',
    '-nodes',
    '-subj',
    '/CN=127.0.0.1',
    '-keyout',
    p('server.key'),
    '-out',
    p('server.csr'),
  );
  writeFileSync(p('san.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\n');
  openssl(
    'x509',
    '-req',
    '-in',
    p('server.csr'),
    '-CA',
    p('ca.pem'),
    '-CAkey',
    p('ca.key'),
    '-CAcreateserial',
    '-days',
    '2',
    '-extfile',
    p('san.ext'),
    '-out',
    p('server.pem'),
  );
  return {
    caFile: p('ca.pem'),
    ca: readFileSync(p('ca.pem')),
    key: readFileSync(p('server.key')),
    cert: readFileSync(p('server.pem')),
  };
}
