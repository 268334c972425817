/**
 * The gateway's identity and its machines, read once at start from a JSON file (path in GATEWAY_MACHINES_FILE):
 *
 * ```json
 * { "gatewayId": "gw-demo-1", "branch": "demo", "machines": [{ "id": "tm-01", "secretHash": "<sha-256 hex>" }] }
 * ```
 *
 * Only SHA-256 hashes of the machines' 256-bit secrets are held (tools/mqtt/secrets.ts), never the secrets. Until
 * the cloud pushes a signed configuration (the gateway issue), this file is the configuration; its machine entries
 * mirror `GatewayConfigDocument.machines`.
 */
import { readFile } from 'node:fs/promises';
import * as v from 'valibot';
import { BranchId, GatewayId, MAX_GATEWAY_MACHINES, MachineId } from '../../protocol/index.ts';
import { SECRET_HASH_PATTERN, verifySecret } from '../../tools/mqtt/secrets.ts';

const MachinesFileSchema = v.pipe(
  v.strictObject({
    gatewayId: GatewayId,
    branch: BranchId,
    machines: v.pipe(
      v.array(
        v.strictObject({
          id: MachineId,
          secretHash: v.pipe(v.string(), v.regex(SECRET_HASH_PATTERN, 'expected SHA-256 in lowercase hex')),
        }),
      ),
      v.maxLength(MAX_GATEWAY_MACHINES),
    ),
  }),
  v.check(
    (file) => new Set(file.machines.map((m) => m.id)).size === file.machines.length,
    'a machine id appears twice',
  ),
);

export type MachinesFile = v.InferOutput<typeof MachinesFileSchema>;

/** The machines allowed on this gateway's broker. */
export interface MachineRegistry {
  readonly gatewayId: GatewayId;
  readonly branch: BranchId;
  /** How many machines are configured. */
  readonly size: number;
  /** Whether `id` is a configured machine. */
  has(id: string): boolean;
  /** The machine id if `id` is configured and `secret` is its secret (constant-time over the digests). */
  verify(id: string, secret: string | Uint8Array | undefined): MachineId | undefined;
}

export class MachinesFileError extends Error {
  constructor(path: string, detail: string, options?: ErrorOptions) {
    super(`machines file ${path}: ${detail}`, options);
    this.name = 'MachinesFileError';
  }
}

/** Validates a parsed machines file. */
export function createMachineRegistry(input: unknown, origin = '(inline)'): MachineRegistry {
  const parsed = v.safeParse(MachinesFileSchema, input);
  if (!parsed.success) {
    const issue = parsed.issues[0];
    const where = v.getDotPath(issue) ?? '(file)';
    throw new MachinesFileError(origin, `${where}: ${issue.message}`);
  }
  const file = parsed.output;
  // A Map, not an object: an id such as `constructor` (valid by the id rule) must find nothing it was not given.
  const hashes = new Map<string, { id: MachineId; secretHash: string }>(file.machines.map((m) => [m.id, m]));
  return {
    gatewayId: file.gatewayId,
    branch: file.branch,
    size: hashes.size,
    has: (id) => hashes.has(id),
    verify(id, secret) {
      const entry = hashes.get(id);
      // Hash the presented secret even for an unknown id, so timing does not tell which ids exist.
      const ok = verifySecret(secret, entry?.secretHash ?? '');
      return ok && entry !== undefined ? entry.id : undefined;
    },
  };
}

/** Reads and validates the machines file. */
export async function loadMachinesFile(path: string): Promise<MachineRegistry> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new MachinesFileError(path, `cannot read it (${(err as NodeJS.ErrnoException).code ?? 'error'})`, {
      cause: err,
    });
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new MachinesFileError(path, 'not JSON', { cause: err });
  }
  return createMachineRegistry(json, path);
}
