/**
 * Errors a handler may throw on purpose. The problem middleware renders them as RFC 9457 problem+json; anything
 * else is a bug and becomes a generic 500 with the request id (details only in the log).
 */

/** One field-level problem: where (a dotted path into the body, query or params) and why. */
export interface FieldIssue {
  in: 'body' | 'query' | 'params' | 'headers';
  field: string;
  reason: string;
}

export interface AppErrorOptions {
  cause?: unknown;
  /** Extra members of the problem document (RFC 9457 extensions). */
  extensions?: Record<string, unknown>;
  /** Response headers, e.g. Retry-After. */
  headers?: Record<string, string>;
}

export class AppError extends Error {
  /** Short kebab-case code; the problem's `type` is `/problems/{code}`. */
  readonly code: string;
  readonly status: number;
  readonly extensions: Record<string, unknown>;
  readonly headers: Record<string, string>;
  /** True: the message is safe to show to the client. */
  readonly expose = true;

  constructor(code: string, status: number, detail: string, options: AppErrorOptions = {}) {
    super(detail, { cause: options.cause });
    this.name = 'AppError';
    this.code = code;
    this.status = status;
    this.extensions = options.extensions ?? {};
    this.headers = options.headers ?? {};
  }
}

export class Invalid extends AppError {
  readonly issues: readonly FieldIssue[];
  constructor(issues: readonly FieldIssue[], detail = 'the request is not valid') {
    super('invalid-request', 400, detail, { extensions: { errors: issues } });
    this.issues = issues;
  }
}

export class Unauthorized extends AppError {
  constructor(detail = 'authentication is required') {
    super('unauthorized', 401, detail, { headers: { 'WWW-Authenticate': 'Bearer' } });
  }
}

export class Forbidden extends AppError {
  constructor(detail = 'not allowed') {
    super('forbidden', 403, detail);
  }
}

export class NotFound extends AppError {
  constructor(detail = 'not found') {
    super('not-found', 404, detail);
  }
}

export class Conflict extends AppError {
  constructor(code: string, detail: string) {
    super(code, 409, detail);
  }
}

export class PayloadTooLarge extends AppError {
  constructor(limitBytes: number) {
    super('payload-too-large', 413, `the body exceeds ${limitBytes} bytes`);
  }
}

export class UnsupportedMediaType extends AppError {
  constructor(expected: string) {
    super('unsupported-media-type', 415, `expected a body of type ${expected}`);
  }
}

export class TooManyRequests extends AppError {
  /** `headers`: more response headers, e.g. the RateLimit-* fields. */
  constructor(retryAfterS: number, detail = 'too many requests', headers: Record<string, string> = {}) {
    super('too-many-requests', 429, detail, {
      headers: { ...headers, 'Retry-After': String(Math.max(1, Math.ceil(retryAfterS))) },
    });
  }
}

export class ServiceUnavailable extends AppError {
  constructor(detail = 'a dependency is unavailable, try again shortly', retryAfterS = 5) {
    super('service-unavailable', 503, detail, { headers: { 'Retry-After': String(retryAfterS) } });
  }
}
