/**
 * Provisioning of MQTT identities: what `npm run hub -- …` does (cloud/src/cli/hub.ts), exported so that
 * scripts/start.ts can provision the demo branch in-process. A secret is returned once, to be shown once; only its
 * hash is stored.
 */
import { isTopicLevelId } from '../../../protocol/ids.ts';
import { isIdentityId, type IdentityRole } from '../../../tools/mqtt/identity.ts';
import { SECRET_PATTERN, hashSecret, newSecret } from '../../../tools/mqtt/secrets.ts';
import type { IdentityRecord, IdentityStore } from './identities.ts';

export class ProvisioningError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ProvisioningError';
  }
}

export interface Issued {
  identity: IdentityRecord;
  /** The only copy of the secret: show it once, never log it. */
  secret: string;
}

/** What a gateway's configuration needs about its machines (edge-gateway/src/machines-file.ts reads it). */
export interface GatewayMachinesFile {
  gatewayId: string;
  branch: string;
  machines: { id: string; secretHash: string }[];
}

/** Public view of an identity: never the hash. */
export interface IdentitySummary {
  id: string;
  role: IdentityRole;
  branches: string[];
  gateway?: string;
  createdAt: string;
  disabled: boolean;
}

interface Deps {
  store: IdentityStore;
  now?: () => Date;
}

function checkId(id: string, what: string): void {
  if (!isIdentityId(id)) {
    throw new ProvisioningError(`${what} ${JSON.stringify(id)} is not a valid id: expected ^[a-z0-9][a-z0-9-]{0,62}$`);
  }
}

function checkBranch(branch: string): void {
  if (!isTopicLevelId(branch)) {
    throw new ProvisioningError(
      `branch ${JSON.stringify(branch)} is not a valid id: expected ^[a-z0-9][a-z0-9-]{0,62}$`,
    );
  }
}

/**
 * A secret issued beforehand with newSecret(), for a caller that must record it before the identity is stored (the
 * demo branch: provisioning that an interrupted first `npm start` can resume). Default: a new one.
 */
interface PresetSecret {
  secret?: string;
}

async function issue(
  { store, now = () => new Date() }: Deps,
  fields: Pick<IdentityRecord, 'id' | 'role' | 'branches' | 'gateway'>,
  preset: string | undefined,
): Promise<Issued> {
  if (preset !== undefined && !SECRET_PATTERN.test(preset)) {
    throw new ProvisioningError('a preset secret must come from newSecret() (43 characters of base64url)');
  }
  const secret = preset ?? newSecret();
  const identity: IdentityRecord = {
    id: fields.id,
    role: fields.role,
    branches: fields.branches,
    ...(fields.gateway === undefined ? {} : { gateway: fields.gateway }),
    secretHash: hashSecret(secret),
    createdAt: now(),
    disabled: false,
  };
  await store.insert(identity);
  return { identity, secret };
}

/** A gateway of one branch. */
export async function addGateway(
  deps: Deps,
  { id, branch, secret }: { id: string; branch: string } & PresetSecret,
): Promise<Issued> {
  checkId(id, 'gateway');
  checkBranch(branch);
  return issue(deps, { id, role: 'gateway', branches: [branch] }, secret);
}

/** A read-only observer of one or more branches. */
export async function addObserver(
  deps: Deps,
  { id, branches, secret }: { id: string; branches: string[] } & PresetSecret,
): Promise<Issued> {
  checkId(id, 'observer');
  const unique = [...new Set(branches)];
  if (unique.length === 0) throw new ProvisioningError('an observer needs at least one branch');
  unique.forEach(checkBranch);
  return issue(deps, { id, role: 'observer', branches: unique }, secret);
}

/** A machine of a branch, connecting to that branch's gateway `gateway`. */
export async function addMachine(
  deps: Deps,
  { id, branch, gateway, secret }: { id: string; branch: string; gateway: string } & PresetSecret,
): Promise<Issued> {
  checkId(id, 'machine');
  checkBranch(branch);
  checkId(gateway, 'gateway');
  const gw = await deps.store.find(gateway);
  if (!gw || gw.role !== 'gateway') throw new ProvisioningError(`there is no gateway ${gateway}`);
  if (gw.disabled) throw new ProvisioningError(`gateway ${gateway} is revoked`);
  if (!gw.branches.includes(branch)) {
    throw new ProvisioningError(`gateway ${gateway} serves branch ${gw.branches.join(',')}, not ${branch}`);
  }
  return issue(deps, { id, role: 'machine', branches: [branch], gateway }, secret);
}

/** The machines of a gateway (active ones), with their secrets' hashes, as the gateway's machines file. */
export async function gatewayMachines({ store }: Deps, gatewayId: string): Promise<GatewayMachinesFile> {
  checkId(gatewayId, 'gateway');
  const gw = await store.find(gatewayId);
  if (!gw || gw.role !== 'gateway') throw new ProvisioningError(`there is no gateway ${gatewayId}`);
  const machines = await store.list({ role: 'machine', gateway: gatewayId });
  return {
    gatewayId,
    branch: gw.branches[0]!,
    machines: machines.filter((m) => !m.disabled).map((m) => ({ id: m.id, secretHash: m.secretHash })),
  };
}

export function summarize(record: IdentityRecord): IdentitySummary {
  return {
    id: record.id,
    role: record.role,
    branches: record.branches,
    ...(record.gateway === undefined ? {} : { gateway: record.gateway }),
    createdAt: record.createdAt.toISOString(),
    disabled: record.disabled,
  };
}

export async function listIdentities(
  { store }: Deps,
  filter: { role?: IdentityRole } = {},
): Promise<IdentitySummary[]> {
  return (await store.list(filter)).map(summarize);
}

/** Disables an identity: it can no longer connect, and a connected client is dropped at the broker's next check. */
export async function revokeIdentity({ store, now = () => new Date() }: Deps, id: string): Promise<void> {
  checkId(id, 'identity');
  if (!(await store.disable(id, now()))) throw new ProvisioningError(`there is no identity ${id}`);
}
