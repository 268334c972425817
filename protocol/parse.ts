/**
 * Turning bytes from the wire into typed values without ever throwing.
 *
 * A bad MQTT payload is not an exception (CONVENTIONS §4): the receiver gets a short machine-readable reason and
 * the failing field, counts it, logs it (rate-limited) and moves on. Failures never echo the offending value:
 * it may be a token or personal data, and it ends up in logs and dead-letter collections.
 */
import * as v from 'valibot';

/**
 * - `empty`: a zero-length payload. On a retained topic this is how MQTT clears the retained message (a
 *   publisher or an operator removed the state, e.g. a decommissioned machine's `status`): the receiver drops what
 *   it holds for that topic rather than counting an error. On other topics it is just an empty message.
 * - `too-large`: more bytes than the payload kind allows (checked before decoding);
 * - `not-utf8`: not valid UTF-8;
 * - `not-json`: not JSON;
 * - `invalid`: JSON that does not match the schema (see `path` and `issue`).
 */
export type ParseFailureReason = 'empty' | 'too-large' | 'not-utf8' | 'not-json' | 'invalid';

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

/**
 * A parsed value, with the top-level keys of the input object that the schema does not know (`unknownKeys`, in
 * input order; empty when there are none or the input was not an object). Such keys are stripped from `value` so
 * that a newer minor version still parses; listing them lets a receiver count and log them (a misspelt field, or
 * an FTMS.md-style `speedKmh` where the schema has `speedMps`, is otherwise silently lost). The keys are untrusted
 * text: log them through a structured (JSON-escaping) logger.
 */
export type ParseResult<T> =
  { readonly ok: true; readonly value: T; readonly unknownKeys: readonly string[] } | ParseFailure;

/** A decoded JSON value (before any schema), or why it could not be decoded. */
export type DecodeResult = { readonly ok: true; readonly value: unknown } | ParseFailure;

const utf8 = new TextDecoder('utf-8', { fatal: true });
const encoder = new TextEncoder();
// Check only up to the first issue: a hostile payload costs one failure, not a full report.
const FIRST_ISSUE_ONLY = { abortEarly: true, abortPipeEarly: true } as const;

/**
 * Decodes a JSON payload of at most `maxBytes` bytes. The size is checked before anything is decoded or parsed,
 * so an oversized payload costs a length comparison. A zero-length payload is `empty`, not `not-json`.
 */
export function decodeJson(input: Uint8Array | string, maxBytes: number): DecodeResult {
  try {
    let json: string;
    if ((typeof input === 'string' || input instanceof Uint8Array) && input.length === 0) {
      return { ok: false, reason: 'empty' };
    }
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

/**
 * Validates an already decoded value against a schema; reports the first failing field, or the value with the
 * top-level keys the schema stripped. Never throws.
 */
export function validate<S extends v.GenericSchema>(schema: S, value: unknown): ParseResult<v.InferOutput<S>> {
  try {
    const result = v.safeParse(schema, value, FIRST_ISSUE_ONLY);
    if (result.success) return { ok: true, value: result.output, unknownKeys: unknownKeysOf(value, result.output) };
    return failureOf(result.issues[0]);
  } catch {
    return { ok: false, reason: 'invalid' };
  }
}

/**
 * The own keys of `input` that `output` lacks: for an object schema (which strips unknown keys and keeps every
 * known key that was given), exactly the keys the schema does not know — for a variant, those its chosen option
 * does not know. A JSON `"__proto__"` key is an own key after `JSON.parse`, so it is listed too.
 */
export function unknownKeysOf(input: unknown, output: unknown): string[] {
  if (!isObject(input) || !isObject(output)) return [];
  return Object.keys(input).filter((key) => !Object.hasOwn(output, key));
}

function isObject(value: unknown): value is object {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
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
