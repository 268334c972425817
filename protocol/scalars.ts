/**
 * Scalar building blocks shared by the message schemas: time, codes, bounded text, hashes, tokens.
 *
 * Every string and number on the wire is bounded, so that a hostile or broken sender cannot make a receiver hold
 * a 200 MiB string or store a value no machine can produce.
 */
import * as v from 'valibot';

/** Earliest accepted timestamp (2020-01-01T00:00:00Z): an unset RTC reports 1970, which must not pass. */
export const MIN_TIMESTAMP_MS = Date.UTC(2020, 0, 1);
/** Latest accepted timestamp (2100-01-01T00:00:00Z). Clock skew against "now" is the receiver's policy. */
export const MAX_TIMESTAMP_MS = Date.UTC(2100, 0, 1);

/**
 * A point in time: integer milliseconds since the Unix epoch (UTC). Integers compare and sort cheaply, cannot be
 * written in two ways (unlike ISO strings with offsets) and map directly onto MongoDB dates and Redis scores.
 */
export const Timestamp = v.pipe(
  v.number(),
  v.safeInteger(),
  v.minValue(MIN_TIMESTAMP_MS),
  v.maxValue(MAX_TIMESTAMP_MS),
  v.description('Unix time in integer milliseconds (UTC), 2020-01-01 … 2100-01-01'),
);
export type Timestamp = v.InferOutput<typeof Timestamp>;

/**
 * A diagnostic clock reading: integer milliseconds since the Unix epoch as the sender's clock showed it, used for
 * lag and clock-skew figures only (a batch's `sentAt`, a record's `receivedAt`). It has no 2020 floor, because it
 * must never cause a refusal: a gateway whose clock is not set yet (no RTC battery, no NTP since boot) may send
 * small values such as a few seconds after 1970. Receivers treat it as untrusted — compare it with their own clock,
 * flag implausible values, and never order, deduplicate or expire anything by it.
 */
export const DiagnosticTimestamp = v.pipe(
  v.number(),
  v.safeInteger(),
  v.minValue(0),
  v.description('Diagnostic clock reading, integer ms since the epoch; untrusted (the clock may not be set)'),
);
export type DiagnosticTimestamp = v.InferOutput<typeof DiagnosticTimestamp>;

/** A machine-readable code: lowercase kebab-case, 1–64 characters (reasons, error codes, fault codes). */
export const CODE_PATTERN = /^[a-z][a-z0-9-]{0,63}$/;

/**
 * A machine-readable code. Codes are open sets: each place documents the values it knows, and a receiver treats
 * an unknown code like the generic case (an unknown deny reason is still a deny), so adding one is a minor change.
 */
export const Code = v.pipe(
  v.string(),
  v.maxLength(64),
  v.regex(CODE_PATTERN, 'Invalid code: expected ^[a-z][a-z0-9-]{0,63}$'),
  v.description('Machine-readable code (lowercase kebab-case)'),
);
export type Code = v.InferOutput<typeof Code>;

// Control characters would let a payload rewrite log lines and machine consoles; newline is allowed only where
// text is meant to be multi-line.
const SINGLE_LINE = /^[^\p{Cc}]*$/u;
const MULTI_LINE = /^(?:[^\p{Cc}]|\n)*$/u;

/** Human-readable single-line text of at most `max` UTF-16 units, without control characters. */
export function text(max: number, description: string) {
  return v.pipe(
    v.string(),
    v.maxLength(max),
    v.regex(SINGLE_LINE, 'Invalid text: control characters are not allowed'),
    v.description(description),
  );
}

/** Like {@link text}, but newlines are allowed. */
export function multilineText(max: number, description: string) {
  return v.pipe(
    v.string(),
    v.maxLength(max),
    v.regex(MULTI_LINE, 'Invalid text: control characters other than newline are not allowed'),
    v.description(description),
  );
}

/** A non-empty single-line label (model names, firmware versions, exercise names). */
export function label(max: number, description: string) {
  return v.pipe(text(max, description), v.minLength(1));
}

/**
 * `-0` → `0`, every other number unchanged: for counters (`seq`, `conn`), where JSON `-0` passes every integer
 * check but would survive into storage and `Object.is` comparisons as a different value.
 */
export function positiveZero(value: number): number {
  return value === 0 ? 0 : value;
}

/** An integer count from 0 to `max`. */
export function count(max: number, description: string) {
  return v.pipe(v.number(), v.safeInteger(), v.minValue(0), v.maxValue(max), v.description(description));
}

/** A SHA-256 digest in lowercase hex (64 characters). */
export const Sha256Hex = v.pipe(
  v.string(),
  v.length(64),
  v.regex(/^[0-9a-f]{64}$/, 'Invalid digest: expected 64 lowercase hex digits'),
  v.description('SHA-256 digest, lowercase hex'),
);

/** A JWS in compact serialisation (`header.payload.signature`, base64url), at most `max` characters. */
export function jwsCompact(max: number, description: string) {
  return v.pipe(v.string(), v.maxLength(max), v.jwsCompact(), v.description(description));
}

/** A software or firmware version: 1–64 characters of `[0-9A-Za-z.+_-]` (semver and vendor schemes alike). */
export const Version = v.pipe(
  v.string(),
  v.maxLength(64),
  v.regex(/^[0-9A-Za-z.+_-]{1,64}$/, 'Invalid version: expected 1–64 of [0-9A-Za-z.+_-]'),
  v.description('Software or firmware version'),
);

/**
 * Why something failed: a code for programs and an optional message for people. Messages must not contain
 * secrets or personal data: they end up in logs.
 */
export const ErrorInfo = v.object({
  code: Code,
  message: v.optional(text(256, 'Human-readable detail, no secrets or personal data')),
});
export type ErrorInfo = v.InferOutput<typeof ErrorInfo>;
