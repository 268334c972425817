/**
 * Every error leaves the API as RFC 9457 application/problem+json. Errors we throw on purpose (AppError) say what
 * went wrong; errors of the body parser keep their 4xx status; an unavailable MongoDB or Redis is a 503 (never a
 * 500, RELIABILITY C2/C3); anything else is a bug: a generic 500 whose details go to the log only.
 */
import { STATUS_CODES } from 'node:http';
import type { Middleware } from 'koa';
import type { ErrorReporter } from '../observability/sentry.ts';
import { AppError, Invalid, NotFound } from './errors.ts';
import type { AppState } from './state.ts';

export const PROBLEM_CONTENT_TYPE = 'application/problem+json';

interface ProblemCore {
  type: string;
  title: string;
  status: number;
  detail: string;
}

/** RFC 9457 members, plus our requestId and any extension (e.g. errors[] on a 400). */
export type ProblemDocument = ProblemCore & { instance: string; requestId: string } & Record<string, unknown>;

/** Errors raised while MongoDB or Redis cannot be reached: the client may retry, nothing is wrong with the request. */
export function isDependencyOutage(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  const name = err.name;
  if (
    name === 'MongoServerSelectionError' ||
    name === 'MongooseServerSelectionError' ||
    name === 'MongoNetworkError' ||
    name === 'MongoNetworkTimeoutError' ||
    name === 'MongoNotConnectedError' ||
    name === 'MongoTopologyClosedError' ||
    name === 'MaxRetriesPerRequestError'
  ) {
    return true;
  }
  // ioredis reports these as plain Errors.
  return /^(Command timed out|Connection is closed|Stream isn't writeable)/.test(err.message);
}

interface HttpLikeError extends Error {
  status?: number;
  statusCode?: number;
  expose?: boolean;
  headers?: Record<string, string>;
  type?: string;
}

function problemFor(err: unknown): {
  doc: ProblemCore & Record<string, unknown>;
  headers: Record<string, string>;
  log: 'none' | 'warn' | 'error';
} {
  if (err instanceof AppError) {
    return {
      doc: {
        type: `/problems/${err.code}`,
        title: STATUS_CODES[err.status] ?? 'Error',
        status: err.status,
        detail: err.message,
        ...err.extensions,
      },
      headers: err.headers,
      log: err.status >= 500 ? 'warn' : 'none',
    };
  }
  if (isDependencyOutage(err)) {
    return {
      doc: {
        type: '/problems/service-unavailable',
        title: STATUS_CODES[503] ?? 'Service Unavailable',
        status: 503,
        detail: 'a dependency is unavailable, try again shortly',
      },
      headers: { 'Retry-After': '5' },
      log: 'warn',
    };
  }
  const httpErr = err as HttpLikeError;
  const status = httpErr?.status ?? httpErr?.statusCode;
  if (status === 400 && /prototype/i.test(httpErr.message)) {
    // The JSON parser (co-body's bourne) refuses `__proto__` keys before our key scan sees them: same answer.
    return problemFor(
      new Invalid([{ in: 'body', field: '__proto__', reason: 'keys naming a prototype are not accepted' }]),
    );
  }
  if (typeof status === 'number' && status >= 400 && status < 500) {
    // Body-parser and router errors (http-errors): their status is right, their message may echo input, so we
    // word the common ones ourselves.
    const code = bodyErrorCode(httpErr, status);
    return {
      doc: { type: `/problems/${code.code}`, title: STATUS_CODES[status] ?? 'Error', status, detail: code.detail },
      headers: {},
      log: 'none',
    };
  }
  return {
    doc: {
      type: '/problems/internal',
      title: STATUS_CODES[500] ?? 'Internal Server Error',
      status: 500,
      detail: 'an unexpected error occurred; quote the request id when reporting it',
    },
    headers: {},
    log: 'error',
  };
}

function bodyErrorCode(err: HttpLikeError, status: number): { code: string; detail: string } {
  if (status === 413) return { code: 'payload-too-large', detail: 'the body is too large' };
  if (status === 415) return { code: 'unsupported-media-type', detail: 'the body has an unsupported content type' };
  if (status === 405) return { code: 'method-not-allowed', detail: 'the method is not allowed on this resource' };
  if (status === 404) return { code: 'not-found', detail: 'not found' };
  if (err.type === 'entity.parse.failed' || /JSON|Unexpected token|invalid json/i.test(err.message)) {
    return { code: 'malformed-body', detail: 'the body is not valid JSON' };
  }
  return { code: 'bad-request', detail: err.expose && err.message ? err.message.slice(0, 200) : 'bad request' };
}

/**
 * Renders errors from everything after it, and turns an unmatched route into a 404 problem. Server errors (5xx) go
 * to the error reporter (Sentry) with the request id; client errors (4xx) do not.
 */
export function problemMiddleware({ reporter }: { reporter?: ErrorReporter } = {}): Middleware<AppState> {
  return async (ctx, next) => {
    try {
      await next();
      if (ctx.body === undefined || ctx.body === null) {
        // The router leaves these without a body: give them one, in our format (Allow stays set on a 405).
        if (ctx.status === 404) throw new NotFound(`no route for ${ctx.method} ${ctx.path}`);
        if (ctx.status === 405) throw new AppError('method-not-allowed', 405, `${ctx.method} is not allowed here`);
        if (ctx.status === 501) {
          // The router's answer to a method it does not know at all (TRACE, CONNECT, …). Not a server fault: the
          // resource exists with other methods (405, Allow kept) or does not exist (404).
          if (!ctx.response.get('Allow')) throw new NotFound(`no route for ${ctx.method} ${ctx.path}`);
          throw new AppError('method-not-allowed', 405, `${ctx.method} is not allowed here`);
        }
      }
    } catch (err) {
      const { doc, headers, log } = problemFor(err);
      if (log === 'error') ctx.state.log.error({ err }, 'request failed');
      else if (log === 'warn')
        ctx.state.log.warn(
          { err: { name: (err as Error).name, message: (err as Error).message } },
          'request failed: dependency',
        );
      if (doc.status >= 500 && reporter?.enabled) {
        const route = (ctx as { _matchedRoute?: string | RegExp })._matchedRoute;
        reporter.capture(err, {
          requestId: ctx.state.requestId,
          method: ctx.method,
          path: ctx.path,
          ...(typeof route === 'string' ? { route } : {}),
          status: doc.status,
          headers: ctx.headers,
        });
      }
      ctx.status = doc.status;
      for (const [name, value] of Object.entries(headers)) ctx.set(name, value);
      ctx.type = PROBLEM_CONTENT_TYPE;
      const body: ProblemDocument = { ...doc, instance: ctx.path, requestId: ctx.state.requestId };
      ctx.body = body;
      ctx.state.problem = body;
    }
  };
}
