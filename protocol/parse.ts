/**
 * Turning bytes from the wire into typed values without ever throwing.
 *
 * A bad MQTT payload is not an exception (CONVENTIONS §4): the receiver gets a short machine-readable reason and
 * the failing field, counts it, logs it (rate-limited) and moves on. Failures never echo the offending value:
 * it may be a token or personal data, and it ends up in logs and dead-letter collections.
 */
import * as v from 'valibot';

/**
 * - `too-large`: more bytes than the payload kind allows (checked before decoding);
 * - `not-utf8`: not valid UTF-8;
 * - `not-json`: not JSON;
 * - `invalid`: JSON that does not match the schema (see `path` and `issue`).
 */
export type ParseFailureReason = 'too-large' | 'not-utf8' | 'not-json' | 'invalid';

export interface ParseFailure {
  readonly ok: false;
  readonly reason: ParseFailureReason;
  /** Dot path of the failing field, e.g. `records.3.payload.speedMps`; absent when the whole value failed. */
  readonly path?: string;
  /** The valibot check that failed, e.g. `max_value`, `regex`, `variant`, `object`. */
  readonly issue?: string;
  /** What was expected, e.g. `<=30` (never what was received). */
  readonly expected?: string;
}

export type ParseResult<T> = { readonly ok: true; readonly value: T } | ParseFailure;

const utf8 = new TextDecoder('utf-8', { fatal: true });
const encoder = new TextEncoder();
// Check only up to the first issue: a hostile payload costs one failure, not a full report.
const FIRST_ISSUE_ONLY = { abortEarly: true, abortPipeEarly: true } as const;

/**
 * Decodes a JSON payload of at most `maxBytes` bytes. The size is checked before anything is decoded or parsed,
 * so an oversized payload costs a length comparison.
 */
export function decodeJson(input: Uint8Array | string, maxBytes: number): ParseResult<unknown> {
  try {
    let json: string;
    if (typeof input === 'string') {
      // UTF-16 length ≤ UTF-8 byte length, so only strings that may fit need counting.
      if (input.length > maxBytes) return { ok: false, reason: 'too-large' };
      if (input.length * 3 > maxBytes && encoder.encode(input).length > maxBytes) {
        return { ok: false, reason: 'too-large' };
      }
      json = input;
    } else if (input instanceof Uint8Array) {
      if (input.byteLength > maxBytes) return { ok: false, reason: 'too-large' };
      try {
        json = utf8.decode(input);
      } catch {
        return { ok: false, reason: 'not-utf8' };
      }
    } else {
      return { ok: false, reason: 'not-json' };
    }
    try {
      return { ok: true, value: JSON.parse(json) as unknown };
    } catch {
      return { ok: false, reason: 'not-json' };
    }
  } catch {
    // Nothing above should throw; this keeps the "never throws" promise if a runtime proves otherwise.
    return { ok: false, reason: 'not-json' };
  }
}

/** Validates an already decoded value against a schema; reports the first failing field. Never throws. */
export function validate<S extends v.GenericSchema>(schema: S, value: unknown): ParseResult<v.InferOutput<S>> {
  try {
    const result = v.safeParse(schema, value, FIRST_ISSUE_ONLY);
    if (result.success) return { ok: true, value: result.output };
    return failureOf(result.issues[0]);
  } catch {
    return { ok: false, reason: 'invalid' };
  }
}

function failureOf(issue: v.BaseIssue<unknown>): ParseFailure {
  const path = v.getDotPath(issue) ?? undefined;
  const expected = issue.expected === null ? undefined : issue.expected.slice(0, 128);
  return {
    ok: false,
    reason: 'invalid',
    ...(path === undefined || path === '' ? {} : { path }),
    issue: issue.type,
    ...(expected === undefined ? {} : { expected }),
  };
}
