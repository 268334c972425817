/**
 * The Koa application. Middleware reads top down, outermost first:
 *   request id + access log → metrics → security headers → CORS → API version → compression → problem+json → routes
 * (each route: its guards → the general rate limit → body → validation → handler; see route.ts).
 * Security headers and CORS sit outside the problem renderer so error responses carry them too.
 */
import Koa from 'koa';
import Router from '@koa/router';
import cors from '@koa/cors';
import compress from 'koa-compress';
import helmet from 'koa-helmet';
import * as v from 'valibot';
import type { Logger } from '../../../tools/runtime/logger.ts';
import { PROTOCOL_ROOT } from '../../../protocol/version.ts';
import type { CloudConfig } from '../config.ts';
import { httpMetrics, type CloudMetrics } from '../metrics/metrics.ts';
import type { ErrorReporter } from '../observability/sentry.ts';
import { mountApiDocs } from './api-docs.ts';
import { Forbidden } from './errors.ts';
import { buildOpenApiDocument } from './openapi.ts';
import { problemMiddleware } from './problem.ts';
import { requestContext } from './request-context.ts';
import { API_VERSION, defineRoute, isApiPath, mountRoutes, type RouteSpec } from './route.ts';
import type { AppState } from './state.ts';

export interface AppDeps {
  config: Pick<CloudConfig['http'], 'corsOrigins' | 'trustProxy' | 'jsonLimitBytes'> & { trustProxyHops?: number };
  log: Logger;
  metrics: CloudMetrics;
  version: string;
  /** Every route of every domain; they are mounted and documented together. */
  routes: readonly RouteSpec[];
  /** The general per-user/per-IP limit (cloud/src/ratelimit/api-limit.ts), run after each /api route's guards. */
  rateLimit?: Koa.Middleware<AppState>;
  /** Where server errors (5xx) are reported (cloud/src/observability/sentry.ts). */
  errorReporter?: ErrorReporter;
}

/** Response header naming the API's major version, on every /api response (errors included). */
export const API_VERSION_HEADER = 'API-Version';

/** Paths never compressed: Prometheus scrapes are small and frequent; /mqtt is a WebSocket upgrade. */
const UNCOMPRESSED = /^\/(metrics|mqtt)(\/|$)/;

/**
 * A CORS preflight that @koa/cors let through carries an origin not on the allow-list: refuse it plainly (403, no
 * Access-Control-* headers) rather than let the router answer OPTIONS with 200.
 */
function refuseForeignPreflight(allowedOrigins: ReadonlySet<string>): Koa.Middleware<AppState> {
  return async (ctx, next) => {
    if (
      ctx.method === 'OPTIONS' &&
      ctx.get('Access-Control-Request-Method') &&
      !allowedOrigins.has(ctx.get('Origin'))
    ) {
      throw new Forbidden('this origin may not call the API');
    }
    await next();
  };
}

export function createApp({ config, log, metrics, version, routes, rateLimit, errorReporter }: AppDeps): Koa<AppState> {
  // With a trusted proxy, ctx.ip is read that many X-Forwarded-For entries from the right: the leftmost entries
  // are whatever the client sent.
  const app = new Koa<AppState>({ proxy: config.trustProxy, maxIpsCount: config.trustProxyHops ?? 1 });
  // Errors are rendered by problemMiddleware and logged there with the request id; Koa's own handler would
  // print stack traces to stderr.
  app.silent = true;

  const allowedOrigins = new Set(config.corsOrigins);
  const infoRoute = defineRoute({
    method: 'get',
    path: '/api',
    summary: 'What this API is and where its reference lives',
    tags: ['operations'],
    responses: {
      200: {
        description: 'API information',
        schema: v.object({
          name: v.string(),
          version: v.string(),
          protocol: v.string(),
          docs: v.string(),
          openapi: v.string(),
          apiVersion: v.number(),
        }),
      },
    },
    handler: () => ({
      status: 200,
      body: {
        name: 'NXG Connect',
        version,
        protocol: PROTOCOL_ROOT,
        docs: '/api/docs',
        openapi: '/api/openapi.json',
        apiVersion: API_VERSION,
      },
    }),
  });
  const openApiRoute = defineRoute({
    method: 'get',
    path: '/api/openapi.json',
    summary: 'This OpenAPI 3.1 document',
    tags: ['operations'],
    responses: { 200: { description: 'The OpenAPI document', contentType: 'application/json' } },
    handler: () => ({ status: 200, body: openApiDocument }),
  });
  const allRoutes = [infoRoute, openApiRoute, ...routes];
  const openApiDocument = buildOpenApiDocument(
    {
      title: 'NXG Connect API',
      version,
      description:
        'REST API of the NXG Connect gym IoT hub. Errors are application/problem+json (RFC 9457). ' +
        `Paths are versioned (/api/v${API_VERSION}/…); /api/… is an alias of the current version, and every ` +
        `response names its version in the ${API_VERSION_HEADER} header.`,
    },
    allRoutes,
    { rateLimit: rateLimit !== undefined },
  );

  const router = new Router<AppState>();
  mountRoutes(router, allRoutes, {
    jsonLimitBytes: config.jsonLimitBytes,
    ...(rateLimit ? { rateLimit } : {}),
  });
  mountApiDocs(router);

  app.use(requestContext(log));
  app.use(httpMetrics(metrics));
  app.use(
    helmet({
      contentSecurityPolicy: {
        directives: {
          defaultSrc: ["'self'"],
          scriptSrc: ["'self'"],
          // Swagger UI sets inline styles; it runs no inline script (init.js is a file).
          styleSrc: ["'self'", "'unsafe-inline'"],
          imgSrc: ["'self'", 'data:'],
          connectSrc: ["'self'"],
          frameAncestors: ["'none'"],
          // helmet's default would make browsers rewrite /api/docs' requests to https on a plain-HTTP deployment
          // (TLS is terminated in front of us, where there is TLS at all); HSTS covers the HTTPS case.
          upgradeInsecureRequests: null,
        },
      },
      strictTransportSecurity: { maxAge: 31_536_000, includeSubDomains: true },
    }),
  );
  app.use(
    cors({
      // @koa/cors answers `*` unless given a function: only listed origins get an exact echo (with Vary: Origin).
      origin: (ctx) => {
        const origin = ctx.get('Origin');
        return allowedOrigins.has(origin) ? origin : '';
      },
      allowMethods: ['GET', 'POST', 'PUT', 'PATCH', 'DELETE'],
      allowHeaders: ['Authorization', 'Content-Type', 'X-Request-Id', 'Idempotency-Key'],
      exposeHeaders: [
        'X-Request-Id',
        'Retry-After',
        'Location',
        API_VERSION_HEADER,
        'RateLimit-Limit',
        'RateLimit-Remaining',
        'RateLimit-Reset',
      ],
      maxAge: 600,
    }),
  );
  app.use(async (ctx, next) => {
    if (isApiPath(ctx.path)) ctx.set(API_VERSION_HEADER, String(API_VERSION));
    await next();
  });
  app.use(compress({ threshold: 1024, filter: (type) => /json|text|javascript|css/.test(type) }));
  app.use(async (ctx, next) => {
    if (UNCOMPRESSED.test(ctx.path)) ctx.compress = false;
    await next();
  });
  app.use(problemMiddleware(errorReporter ? { reporter: errorReporter } : {}));
  app.use(refuseForeignPreflight(allowedOrigins));
  app.use(router.routes());
  app.use(staticRoutesWin);
  app.use(router.allowedMethods());
  return app;
}

/**
 * For the Allow header of OPTIONS and 405 answers, a literal route outranks a parameterised one on the same path
 * (as in find-my-way): `POST /api/sessions/end` is not also `GET /api/sessions/:id` with id "end". Without this the
 * router advertises GET on /api/sessions/end. Runs before allowedMethods reads `ctx.matched` (it only acts when no
 * route answered).
 */
async function staticRoutesWin(ctx: Koa.Context, next: Koa.Next): Promise<void> {
  const matched = (ctx as { matched?: { paramNames: unknown[]; methods: string[] }[] }).matched;
  if (matched?.some((layer) => layer.paramNames.length === 0 && layer.methods.length > 0)) {
    (ctx as { matched?: unknown[] }).matched = matched.filter((layer) => layer.paramNames.length === 0);
  }
  await next();
}
