/**
 * The gateway's signed configuration (`gw/{gateway}/cmd/config`, protocol GatewayConfigCommand): an ES256 JWS of
 * typ `nxg-gateway-config+jwt` whose payload is a GatewayConfigDocument, verified with the cloud's configuration
 * keys from the enrolment. Checked in this order, each with the protocol's error code:
 *   `expired` (the command's expiresAt passed), `invalid`/`bad-signature` (verifyJws), `invalid` (schema, or a
 *   revision that differs from the command's), `invalid` (another branch or gateway), `stale-revision` (older than
 *   the one in use).
 * The JWS itself is kept on disk (`config.jws`, 0600, atomic) and verified again at every start, so a restart
 * while offline runs on the last configuration the cloud signed, and a file changed on disk is refused.
 */
import * as v from 'valibot';
import { GatewayConfigDocument, JWS_TYPES, verifyJws } from '../../../protocol/index.ts';
import type { BranchId, GatewayConfigCommand, GatewayId } from '../../../protocol/index.ts';
import type { Logger } from '../../../tools/runtime/logger.ts';
import { readOptional, writeFileAtomic } from './files.ts';
import type { Keyring } from './keys.ts';
import { OK, jwsRefusal, refused, type CommandOutcome } from './outcome.ts';

export interface SignedConfigOptions {
  /** Where the JWS is kept, e.g. `${GATEWAY_DATA_DIR}/config.jws`. */
  readonly file: string;
  readonly gatewayId: GatewayId;
  readonly branch: BranchId;
  readonly keys: Keyring;
  readonly nowMs: () => number;
  readonly log: Logger;
}

export interface SignedConfig {
  /** The configuration in use; undefined until the cloud has sent one (or none verified on disk). */
  readonly document: GatewayConfigDocument | undefined;
  readonly revision: number | undefined;
  /** Reads and verifies the stored JWS; a file that does not verify is reported and not used. */
  load(): Promise<void>;
  /** Verifies a pushed configuration, stores and applies it; resolves with the command's answer. */
  apply(command: Pick<GatewayConfigCommand, 'revision' | 'jws' | 'expiresAt'>): Promise<CommandOutcome>;
  /** Called with each configuration put in use (loaded at start or applied). */
  onChange(listener: (document: GatewayConfigDocument) => void): void;
}

export type VerifiedConfig = { ok: true; document: GatewayConfigDocument } | { ok: false; outcome: CommandOutcome };

/** Verifies a configuration JWS for this gateway. Never throws. */
export function verifyConfigJws(
  jws: string,
  keys: Keyring,
  expected: { gatewayId: GatewayId; branch: BranchId },
): VerifiedConfig {
  const checked = verifyJws(jws, JWS_TYPES.gatewayConfig, keys.keyFor);
  if (!checked.ok) return { ok: false, outcome: jwsRefusal(checked.reason) };
  const parsed = v.safeParse(GatewayConfigDocument, checked.payload);
  if (!parsed.success) {
    const where = v.getDotPath(parsed.issues[0]) ?? '(document)';
    return { ok: false, outcome: refused('invalid', `configuration document: ${where}: ${parsed.issues[0].message}`) };
  }
  const document = parsed.output;
  if (document.branch !== expected.branch || document.gateway !== expected.gatewayId) {
    return { ok: false, outcome: refused('invalid', 'the configuration is for another branch or gateway') };
  }
  return { ok: true, document };
}

export function createSignedConfig(options: SignedConfigOptions): SignedConfig {
  const { file, keys, log } = options;
  const listeners: ((document: GatewayConfigDocument) => void)[] = [];
  let document: GatewayConfigDocument | undefined;
  let jwsInUse: string | undefined;
  // One apply at a time: two pushes racing must not store the older one last.
  let chain: Promise<unknown> = Promise.resolve();

  function use(next: GatewayConfigDocument, jws: string): void {
    document = next;
    jwsInUse = jws;
    for (const listener of listeners) {
      try {
        listener(next);
      } catch (err) {
        log.error({ err, revision: next.revision }, 'configuration listener failed');
      }
    }
  }

  async function applyNow(
    command: Pick<GatewayConfigCommand, 'revision' | 'jws' | 'expiresAt'>,
  ): Promise<CommandOutcome> {
    if (command.expiresAt !== undefined && command.expiresAt < options.nowMs()) {
      return refused('expired', 'the command expired before it arrived');
    }
    const verified = verifyConfigJws(command.jws, keys, options);
    if (!verified.ok) return verified.outcome;
    const next = verified.document;
    if (next.revision !== command.revision) {
      return refused('invalid', 'the command revision differs from the signed document’s');
    }
    if (document !== undefined && next.revision < document.revision) {
      return refused('stale-revision', `revision ${next.revision} is older than ${document.revision} in use`);
    }
    if (document !== undefined && next.revision === document.revision && command.jws === jwsInUse) return OK;
    if (document !== undefined && next.revision === document.revision) {
      return refused('stale-revision', `revision ${next.revision} is already in use`);
    }
    try {
      await writeFileAtomic(file, command.jws);
    } catch (err) {
      log.error({ err, file }, 'configuration not stored');
      return refused('failed', 'the configuration could not be stored');
    }
    use(next, command.jws);
    log.info(
      { revision: next.revision, machines: next.machines.length, readers: next.readers.length },
      'configuration applied',
    );
    return OK;
  }

  return {
    get document() {
      return document;
    },
    get revision() {
      return document?.revision;
    },
    async load() {
      const text = await readOptional(file);
      if (text === undefined) return;
      const verified = verifyConfigJws(text.trim(), keys, options);
      if (!verified.ok) {
        log.error(
          { file, reason: verified.outcome.ok ? undefined : verified.outcome.error.code },
          'stored configuration refused: it does not verify (tampered, or signed with a key this gateway no longer trusts)',
        );
        return;
      }
      use(verified.document, text.trim());
      log.info({ revision: verified.document.revision }, 'stored configuration verified and in use');
    },
    apply(command) {
      const result = chain.then(() => applyNow(command));
      chain = result.catch(() => undefined);
      return result;
    },
    onChange(listener) {
      listeners.push(listener);
    },
  };
}
