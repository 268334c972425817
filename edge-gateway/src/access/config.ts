/**
 * The access side's environment variables (spread into the gateway's one configuration parse, config.ts):
 * local readers, the online decision deadline, a door hook, and the configuration keys of a gateway that was not
 * enrolled (an enrolled gateway has them from its enrolment). Documented in README ("Edge gateway").
 */
import * as v from 'valibot';
import { ReaderId } from '../../../protocol/index.ts';
import { envInt } from '../../../tools/runtime/env-config.ts';

/** `reader=value` pairs separated by commas, e.g. `door-in=/dev/ttyACM0,door-out=/dev/ttyACM1`. */
const readerMap = (what: string) =>
  v.optional(
    v.pipe(
      v.string(),
      v.transform((s) =>
        s
          .split(',')
          .map((item) => item.trim())
          .filter((item) => item.length > 0)
          .map((item) => {
            const at = item.indexOf('=');
            return { reader: at < 0 ? '' : item.slice(0, at).trim(), value: at < 0 ? '' : item.slice(at + 1).trim() };
          }),
      ),
      v.check(
        (pairs) => pairs.every((p) => v.is(ReaderId, p.reader) && p.value.length > 0),
        `expected reader=${what} pairs separated by commas, reader ids as in the signed configuration`,
      ),
      v.check((pairs) => new Set(pairs.map((p) => p.reader)).size === pairs.length, 'a reader appears twice'),
    ),
  );

export const AccessEnvEntries = {
  /** Line readers (QR scanners as keyboard wedge or serial, or FIFOs): `door-in=/dev/ttyACM0,…`. */
  GATEWAY_QR_READERS: readerMap('path'),
  /** PC/SC readers by name: `door-in=ACS ACR122U PICC Interface 00 00,…`; unset: NFC off. */
  GATEWAY_NFC_READERS: readerMap('PC/SC reader name'),
  /** pcscd's socket (default /run/pcscd/pcscd.comm). */
  GATEWAY_NFC_SOCKET: v.optional(v.pipe(v.string(), v.minLength(1))),
  /** How long an online decision may take before the gateway decides offline. */
  GATEWAY_ACCESS_TIMEOUT_MS: envInt(700, 50, 5_000),
  /** Executable run for each door decision with arguments: reader, action, allow|deny, reason (optional hook). */
  GATEWAY_DOOR_COMMAND: v.optional(v.pipe(v.string(), v.minLength(1))),
  /** JWKS file (`{"keys": [...]}` or an array) of the cloud's configuration keys, for a gateway not enrolled. */
  GATEWAY_CONFIG_KEYS_FILE: v.optional(v.pipe(v.string(), v.minLength(1))),
};

export interface AccessConfig {
  readonly qrReaders: readonly { readonly reader: ReaderId; readonly path: string }[];
  readonly nfcReaders: readonly { readonly reader: ReaderId; readonly pcscName: string }[];
  readonly nfcSocket: string | undefined;
  readonly requestTimeoutMs: number;
  readonly doorCommand: string | undefined;
  readonly configKeysFile: string | undefined;
}

type AccessEnv = v.InferOutput<v.ObjectSchema<typeof AccessEnvEntries, undefined>>;

export function accessConfigOf(e: AccessEnv): AccessConfig {
  return {
    qrReaders: (e.GATEWAY_QR_READERS ?? []).map((p) => ({ reader: p.reader as ReaderId, path: p.value })),
    nfcReaders: (e.GATEWAY_NFC_READERS ?? []).map((p) => ({ reader: p.reader as ReaderId, pcscName: p.value })),
    nfcSocket: e.GATEWAY_NFC_SOCKET,
    requestTimeoutMs: e.GATEWAY_ACCESS_TIMEOUT_MS,
    doorCommand: e.GATEWAY_DOOR_COMMAND,
    configKeysFile: e.GATEWAY_CONFIG_KEYS_FILE,
  };
}

/** Access defaults for in-process tests and tools that build a GatewayConfig by hand. */
export const DEFAULT_ACCESS_CONFIG: AccessConfig = {
  qrReaders: [],
  nfcReaders: [],
  nfcSocket: undefined,
  requestTimeoutMs: 700,
  doorCommand: undefined,
  configKeysFile: undefined,
};
