/**
 * Who this gateway is and how it reaches the cloud, resolved once at start:
 * - enrolled (`${GATEWAY_DATA_DIR}/enrolment.json` exists and GATEWAY_SECRET/_FILE are unset): gateway id, branch,
 *   secret, configuration keys and (unless GATEWAY_UPLINK_URL is set) the broker URL from the enrolment; machines
 *   from GATEWAY_MACHINES_FILE if given, else none until the signed configuration brings them;
 * - otherwise as before the enrolment existed: GATEWAY_SECRET or GATEWAY_SECRET_FILE, the machines file's gateway
 *   id and branch, and the configuration keys from GATEWAY_CONFIG_KEYS_FILE (without them no signed configuration
 *   can be accepted: commands are answered `bad-signature`).
 */
import { readFile } from 'node:fs/promises';
import * as v from 'valibot';
import { QrVerificationKey } from '../../../protocol/index.ts';
import type { BranchId, GatewayId, PublicKeyJwk } from '../../../protocol/index.ts';
import { emptyMachines } from '../cloud-config/machine-set.ts';
import type { GatewayConfig } from '../config.ts';
import { DEFAULT_ACCESS_CONFIG } from '../access/config.ts';
import { loadMachinesFile, type MachineRegistry } from '../machines-file.ts';
import { brokerUrlRefusal, loadEnrolment, type EnrolmentFile } from './credentials.ts';

export interface GatewayIdentity {
  readonly gatewayId: GatewayId;
  readonly branch: BranchId;
  readonly secret: string;
  readonly uplinkUrl: string;
  /** PEM of the CA that verifies the cloud broker; undefined: the system's CAs. */
  readonly ca: Buffer | undefined;
  readonly configKeys: readonly PublicKeyJwk[];
  readonly machines: MachineRegistry;
  readonly enrolment: EnrolmentFile | undefined;
}

const Jwks = v.union([v.object({ keys: v.array(QrVerificationKey) }), v.array(QrVerificationKey)]);

export async function loadConfigKeysFile(file: string): Promise<PublicKeyJwk[]> {
  let json: unknown;
  try {
    json = JSON.parse(await readFile(file, 'utf8'));
  } catch (err) {
    throw new Error(`GATEWAY_CONFIG_KEYS_FILE ${file}: cannot read it as JSON`, { cause: err });
  }
  const parsed = v.safeParse(Jwks, json);
  if (!parsed.success) throw new Error(`GATEWAY_CONFIG_KEYS_FILE ${file}: expected a JWKS of P-256 public keys`);
  return Array.isArray(parsed.output) ? parsed.output : parsed.output.keys;
}

export async function resolveIdentity(config: GatewayConfig): Promise<GatewayIdentity> {
  const keysFile = (config.access ?? DEFAULT_ACCESS_CONFIG).configKeysFile;
  const configKeysFromFile = keysFile === undefined ? [] : await loadConfigKeysFile(keysFile);
  const useEnrolment = config.secret === undefined;
  const enrolment = useEnrolment ? await loadEnrolment(config.dataDir) : undefined;
  if (useEnrolment && enrolment === undefined) {
    throw new Error(
      'GATEWAY_SECRET: set exactly one of GATEWAY_SECRET and GATEWAY_SECRET_FILE, or enrol this gateway (npm run gateway -- enrol)',
    );
  }
  const caFile = config.uplink.caFile ?? enrolment?.caFile;
  const ca = caFile === undefined ? undefined : await readFile(caFile);
  if (enrolment !== undefined) {
    const machines =
      config.machinesFile === undefined
        ? emptyMachines(enrolment.gateway, enrolment.branch)
        : await loadMachinesFile(config.machinesFile);
    if (machines.gatewayId !== enrolment.gateway || machines.branch !== enrolment.branch) {
      throw new Error(
        `GATEWAY_MACHINES_FILE names gateway ${machines.gatewayId} of branch ${machines.branch}, but this gateway is enrolled as ${enrolment.gateway} of ${enrolment.branch}`,
      );
    }
    if (!config.uplink.urlFromEnv && enrolment.brokerUrl !== undefined) {
      const refusal = brokerUrlRefusal(enrolment.brokerUrl);
      if (refusal !== undefined) {
        throw new Error(
          `the enrolment's broker URL is refused (${refusal}): set GATEWAY_UPLINK_URL to the cloud broker's mqtts:// URL`,
        );
      }
    }
    return {
      gatewayId: enrolment.gateway,
      branch: enrolment.branch,
      secret: enrolment.secret,
      uplinkUrl: config.uplink.urlFromEnv ? config.uplink.url : (enrolment.brokerUrl ?? config.uplink.url),
      ca,
      configKeys: [...enrolment.configKeys, ...configKeysFromFile],
      machines,
      enrolment,
    };
  }
  if (config.machinesFile === undefined) {
    throw new Error('GATEWAY_MACHINES_FILE: required unless the gateway is enrolled (npm run gateway -- enrol)');
  }
  if (config.secret === undefined)
    throw new Error('GATEWAY_SECRET: set exactly one of GATEWAY_SECRET and GATEWAY_SECRET_FILE');
  const machines = await loadMachinesFile(config.machinesFile);
  const secret = await readSecret(config.secret);
  return {
    gatewayId: machines.gatewayId,
    branch: machines.branch,
    secret,
    uplinkUrl: config.uplink.url,
    ca,
    configKeys: configKeysFromFile,
    machines,
    enrolment: undefined,
  };
}

async function readSecret(source: NonNullable<GatewayConfig['secret']>): Promise<string> {
  if ('value' in source) return source.value;
  const text = await readFile(source.file, 'utf8');
  const secret = text.trim();
  if (secret.length === 0) throw new Error(`GATEWAY_SECRET_FILE ${source.file} is empty`);
  return secret;
}
