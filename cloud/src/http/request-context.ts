/**
 * The first middleware: gives each request an id (echoed in X-Request-Id; a caller's id is kept when it is a sane
 * token, so traces can cross services), a child logger carrying it, and one access-log line when it ends.
 */
import { randomUUID } from 'node:crypto';
import type { Middleware } from 'koa';
import type { Logger } from '../../../tools/runtime/logger.ts';
import type { AppState } from './state.ts';

const SANE_REQUEST_ID = /^[A-Za-z0-9._:-]{8,128}$/;

/**
 * ctx.state of a request. Its logger is made on first use: a pino child (with its redaction) per request is
 * measurable work at thousands of requests per second, and most requests never log. A class, so the lazy property
 * lives on the prototype and every state object keeps one shape.
 */
class RequestState {
  readonly requestId: string;
  readonly #root: Logger;
  #log: Logger | undefined;

  constructor(root: Logger, requestId: string) {
    this.#root = root;
    this.requestId = requestId;
  }

  get log(): Logger {
    return (this.#log ??= this.#root.child({ reqId: this.requestId }));
  }

  set log(value: Logger) {
    this.#log = value;
  }
}

export function requestContext(log: Logger): Middleware<AppState> {
  return async (ctx, next) => {
    const incoming = ctx.get('X-Request-Id');
    const requestId = SANE_REQUEST_ID.test(incoming) ? incoming : randomUUID();
    ctx.state = new RequestState(log, requestId);
    ctx.set('X-Request-Id', requestId);
    const started = process.hrtime.bigint();
    try {
      await next();
    } finally {
      const ms = Number(process.hrtime.bigint() - started) / 1e6;
      // Paths only, never query strings: they may carry tokens or personal data.
      const line = { method: ctx.method, path: ctx.path, status: ctx.status, ms: Math.round(ms * 10) / 10 };
      if (ctx.status >= 500) ctx.state.log.warn(line, 'request');
      else if (log.isLevelEnabled('debug')) ctx.state.log.debug(line, 'request');
    }
  };
}
