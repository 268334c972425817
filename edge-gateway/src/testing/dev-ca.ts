/**
 * A throwaway CA and a server certificate for 127.0.0.1/localhost (the cloud broker's development CA, made with the
 * openssl CLI), so tests run the forwarder over real TLS with GATEWAY_UPLINK_CA_FILE exactly as in production.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { generateDevelopmentCa } from '../../../tools/mqtt/dev-ca.ts';

export interface DevCertificates {
  readonly caFile: string;
  readonly ca: Buffer;
  readonly key: Buffer;
  readonly cert: Buffer;
}

/** Generates the certificates into `<dir>/tls` (which must not exist yet). */
export async function makeDevCertificates(dir: string): Promise<DevCertificates> {
  const tls = path.join(dir, 'tls');
  await generateDevelopmentCa(tls, ['IP:127.0.0.1', 'DNS:localhost']);
  const caFile = path.join(tls, 'ca.crt');
  const [ca, key, cert] = await Promise.all([
    readFile(caFile),
    readFile(path.join(tls, 'server.key')),
    readFile(path.join(tls, 'server.crt')),
  ]);
  return { caFile, ca, key, cert };
}
