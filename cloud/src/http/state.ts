import type { Logger } from '../../../tools/runtime/logger.ts';
import type { ProblemDocument } from './problem.ts';

/** What middleware puts on ctx.state for the handlers after it. */
export interface AppState {
  requestId: string;
  /** The request's logger: carries reqId on every line. */
  log: Logger;
  /** Set when the response is a problem document (for the access log). */
  problem?: ProblemDocument;
  /** Validated inputs (see route.ts). */
  body?: unknown;
  query?: unknown;
  params?: unknown;
}
