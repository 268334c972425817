/**
 * TLS material for the gateways' listener. With MQTT_TLS_CERT_FILE/KEY_FILE set, those files are used as they
 * are. Otherwise a development CA and a server certificate signed by it are generated on first start in the data
 * directory (the `openssl` CLI, a Debian package bootstrap installs), and reused afterwards: gateways and
 * `mosquitto_sub --cafile <dir>/ca.crt` verify the broker against that CA.
 */
import { readFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileExists, generateDevelopmentCa } from '../../../tools/mqtt/dev-ca.ts';
import type { Logger } from '../../../tools/runtime/logger.ts';
import type { BrokerConfig } from './config.ts';

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

export async function loadTlsMaterial(config: BrokerConfig, log: Logger): Promise<TlsMaterial> {
  const { certFile, keyFile, caFile } = config.tls;
  if (certFile && keyFile) {
    const [cert, key] = await Promise.all([readFile(certFile), readFile(keyFile)]);
    return { cert, key, caFile, source: 'configured' };
  }
  const dir = path.join(config.dataDir, 'tls');
  let source: TlsMaterial['source'] = 'development';
  if (!(await fileExists(path.join(dir, 'server.crt')))) {
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
