/**
 * Errors to Sentry through @sentry/node. A client of our own (NodeClient on a Scope of our own), not Sentry.init():
 * no global singleton, no auto-instrumentation of every module we load, several clouds side by side in one test
 * process. Only server errors are reported (the problem renderer calls capture for 5xx; a 4xx is the client's
 * business), tagged with the request id so an event and its log lines meet.
 *
 * No personal data or secrets leave: automatic collection (dataCollection) is off, the request is described by method, path (never the
 * query string) and headers, and beforeSend strips credentials (Authorization, Cookie, …), bodies, cookies and
 * anything shaped like a JWT from every event — a last line that holds whatever a future integration adds.
 */
import {
  NodeClient,
  Scope,
  defaultStackParser,
  linkedErrorsIntegration,
  makeNodeTransport,
  type ErrorEvent,
} from '@sentry/node';
import type { Logger } from '../../../tools/runtime/logger.ts';
import type { SentryConfig } from './config.ts';

export interface ErrorContext {
  requestId: string;
  method: string;
  /** The path only; query strings may carry tokens or personal data. */
  path: string;
  /** The matched route template, e.g. /api/v1/users/:id. */
  route?: string;
  status: number;
  headers: Record<string, string | string[] | undefined>;
}

export interface ErrorReporter {
  /** False when no DSN is configured: capture and flush do nothing. */
  readonly enabled: boolean;
  capture(err: unknown, context: ErrorContext): void;
  /** Sends what is queued, then stops the client; resolves false if the deadline passed first. */
  close(timeoutMs: number): Promise<boolean>;
}

/** Request headers that never leave the process, lower-case. */
const SECRET_HEADERS = new Set([
  'authorization',
  'proxy-authorization',
  'cookie',
  'set-cookie',
  'x-api-key',
  'x-auth-token',
  'x-csrf-token',
]);

/** A compact JWS (header.payload.signature) anywhere in a string: access and refresh tokens look like this. */
const JWT_LIKE = /eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*/g;
const BEARER = /\b(Bearer|Basic)\s+[A-Za-z0-9._~+/=-]{8,}/gi;

function scrubText(text: string): string {
  return text.replace(JWT_LIKE, '[redacted token]').replace(BEARER, '$1 [redacted]');
}

/** beforeSend: what may leave the process. Exported for its unit test. */
export function scrubEvent(event: ErrorEvent): ErrorEvent {
  if (event.request) {
    const { headers, url, method } = event.request;
    const kept: Record<string, string> = {};
    for (const [name, value] of Object.entries(headers ?? {})) {
      if (!SECRET_HEADERS.has(name.toLowerCase())) kept[name] = scrubText(String(value));
    }
    // Bodies, cookies and query strings are dropped whole: they are where personal data and tokens travel.
    event.request = { method, url: url?.split('?')[0], headers: kept };
  }
  if (event.user) event.user = event.user.id === undefined ? {} : { id: event.user.id };
  for (const exception of event.exception?.values ?? []) {
    if (exception.value) exception.value = scrubText(exception.value);
  }
  if (event.message) event.message = scrubText(event.message);
  delete event.breadcrumbs;
  return event;
}

const disabled: ErrorReporter = {
  enabled: false,
  capture() {},
  close: () => Promise.resolve(true),
};

export function createErrorReporter({
  config,
  release,
  log,
}: {
  config: SentryConfig;
  release: string;
  log: Logger;
}): ErrorReporter {
  if (!config.dsn) return disabled;
  const client = new NodeClient({
    dsn: config.dsn,
    environment: config.environment,
    release,
    sampleRate: config.sampleRate,
    // Nothing collected automatically; what we attach ourselves goes through scrubEvent.
    dataCollection: {
      userInfo: false,
      cookies: false,
      httpHeaders: { request: { deny: [...SECRET_HEADERS] }, response: false },
      httpBodies: [],
      urlQueryParams: false,
      databaseQueryData: false,
      queues: false,
    },
    // Only what we capture ourselves: no global handlers, breadcrumbs or module instrumentation.
    integrations: [linkedErrorsIntegration()],
    enableRuntimeChannelInjection: false,
    maxBreadcrumbs: 0,
    transport: makeNodeTransport,
    stackParser: defaultStackParser,
    beforeSend: scrubEvent,
  });
  const scope = new Scope();
  scope.setClient(client);
  client.init();
  log.info({ environment: config.environment, sampleRate: config.sampleRate }, 'errors reported to Sentry');

  return {
    enabled: true,
    capture(err, context) {
      const eventScope = scope.clone();
      eventScope.setTag('request_id', context.requestId);
      eventScope.setTag('status', String(context.status));
      if (context.route) eventScope.setTag('route', context.route);
      const headers: Record<string, string> = {};
      for (const [name, value] of Object.entries(context.headers)) {
        if (value !== undefined) headers[name] = Array.isArray(value) ? value.join(', ') : value;
      }
      eventScope.addEventProcessor((event) => ({
        ...event,
        request: { method: context.method, url: context.path, headers },
      }));
      eventScope.captureException(err);
    },
    async close(timeoutMs) {
      try {
        return await client.close(timeoutMs);
      } catch (err) {
        log.warn({ err: { message: (err as Error).message } }, 'sentry: flush failed');
        return false;
      }
    },
  };
}
