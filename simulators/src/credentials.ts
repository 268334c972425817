/**
 * Machine credentials for the simulator: a JSON file `[{id, secret, type?}]` written by whoever provisions the
 * machines (the hub CLI, `npm start`). Secrets are never logged.
 */
import { readFile } from 'node:fs/promises';
import * as v from 'valibot';
import { MachineId } from '../../protocol/ids.ts';
import { MachineType } from '../../protocol/messages/machine-type.ts';
import type { FleetMachine } from './fleet.ts';
import { isSimulatedType, typeAt } from './machines/index.ts';

const CredentialsFile = v.array(
  v.object({
    id: MachineId,
    secret: v.pipe(v.string(), v.minLength(1), v.maxLength(256)),
    type: v.optional(MachineType),
  }),
);

export class CredentialsError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'CredentialsError';
  }
}

/**
 * Reads a credentials file. A machine without a `type` gets the fleet mix's type for its position, so the same
 * file always gives the same fleet.
 */
export async function readCredentials(file: string): Promise<FleetMachine[]> {
  let raw: unknown;
  try {
    raw = JSON.parse(await readFile(file, 'utf8'));
  } catch (err) {
    throw new CredentialsError(`cannot read credentials ${file}: ${(err as Error).message}`, { cause: err });
  }
  const parsed = v.safeParse(CredentialsFile, raw);
  if (!parsed.success) {
    const issue = parsed.issues[0];
    const where = v.getDotPath(issue) ?? '(root)';
    throw new CredentialsError(`credentials ${file}: ${where}: ${issue.message}`);
  }
  const seen = new Set<string>();
  return parsed.output.map((entry, index) => {
    if (seen.has(entry.id)) throw new CredentialsError(`credentials ${file}: machine ${entry.id} is listed twice`);
    seen.add(entry.id);
    const type = entry.type ?? typeAt(index);
    if (!isSimulatedType(type))
      throw new CredentialsError(`credentials ${file}: ${entry.id}: type ${type} is not simulated yet`);
    return { id: entry.id, secret: entry.secret, type };
  });
}
