/** The answer to a gateway command before its reqId is added (protocol `CommandResponse`). */
import type { ErrorInfo, JwsRefusal } from '../../../protocol/index.ts';

export type CommandOutcome = { readonly ok: true } | { readonly ok: false; readonly error: ErrorInfo };

export const OK: CommandOutcome = { ok: true };

export function refused(code: string, message: string): CommandOutcome {
  return { ok: false, error: { code, message } };
}

/** A JWS that did not verify: unreadable → `invalid`, anything about type, key or signature → `bad-signature`. */
export function jwsRefusal(reason: JwsRefusal): CommandOutcome {
  return reason === 'malformed'
    ? refused('invalid', 'the JWS cannot be read')
    : refused('bad-signature', `the JWS does not verify (${reason})`);
}
