/**
 * A route is declared once, with the valibot schemas it validates with; the same declaration mounts it on a router
 * and describes it in the OpenAPI document (openapi.ts), so validation and the document come from one schema.
 *
 *   export const listThings = defineRoute({
 *     method: 'get', path: '/api/things', summary: 'List things', tags: ['things'],
 *     query: ListThingsQuery,
 *     responses: { 200: { description: 'the things', schema: ThingList } },
 *     handler: async (ctx, { query }) => ({ status: 200, body: await things.list(query) }),
 *   });
 */
import type { Middleware, ParameterizedContext } from 'koa';
import type Router from '@koa/router';
import { koaBody } from 'koa-body';
import * as v from 'valibot';
import { Invalid, UnsupportedMediaType, type FieldIssue } from './errors.ts';
import type { AppState } from './state.ts';

export type HttpMethod = 'get' | 'post' | 'put' | 'patch' | 'delete';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type AnySchema = v.GenericSchema<any, any>;

export interface ResponseSpec {
  description: string;
  /** The JSON body's schema; omit for an empty body (204) or a non-JSON body (then give contentType). */
  schema?: AnySchema;
  contentType?: string;
  headers?: Record<string, { description: string; schema: { type: 'string' | 'integer' } }>;
}

export type RouteContext = ParameterizedContext<AppState>;

/** What a handler returns; the wrapper writes it to ctx. A handler may also write ctx itself and return void. */
export interface HandlerResult {
  status: number;
  body?: unknown;
  headers?: Record<string, string>;
}

type Out<S extends AnySchema | undefined> = S extends AnySchema ? v.InferOutput<S> : undefined;

export interface RouteSpec<
  B extends AnySchema | undefined = AnySchema | undefined,
  Q extends AnySchema | undefined = AnySchema | undefined,
  P extends AnySchema | undefined = AnySchema | undefined,
> {
  method: HttpMethod;
  /** koa-router syntax: /api/things/:id */
  path: string;
  summary: string;
  description?: string;
  tags: string[];
  operationId?: string;
  /** Security requirements for the document (e.g. [{ bearer: [] }]); enforcement is middleware's job. */
  security?: Record<string, string[]>[];
  body?: B;
  query?: Q;
  params?: P;
  responses: Record<number, ResponseSpec>;
  /**
   * Middleware run first, before the body is even read: authentication, authorization, rate limits. An
   * unauthenticated caller gets its 401 without making us parse (or describe the schema of) its body.
   */
  guards?: Middleware<AppState>[];
  /**
   * The general per-user/per-IP limit (cloud/src/ratelimit) runs after the guards, so an authenticated caller is
   * counted as a user. On by default for routes under /api; operations routes outside it (/health, /metrics) are
   * never limited (load balancers and scrapers poll them from one address). false opts a route out.
   */
  rateLimit?: boolean;
  handler: (
    ctx: RouteContext,
    input: { body: Out<B>; query: Out<Q>; params: Out<P> },
  ) => Promise<HandlerResult | void> | HandlerResult | void;
}

/** Identity function that keeps the schema types flowing into the handler's input. */
export function defineRoute<
  B extends AnySchema | undefined = undefined,
  Q extends AnySchema | undefined = undefined,
  P extends AnySchema | undefined = undefined,
>(spec: RouteSpec<B, Q, P>): RouteSpec<B, Q, P> {
  return spec;
}

/** Deepest JSON nesting accepted in a body; real payloads stay far below, and the key scan below stays cheap. */
export const MAX_BODY_DEPTH = 32;

const FORBIDDEN_KEYS = new Set(['__proto__', 'constructor', 'prototype']);

/**
 * Refuses keys that would be operators or paths if they ever reached a MongoDB filter or update (`$ne`, `a.b`),
 * and prototype names. mongoose's sanitizeFilter does not refuse every `$` key (RELIABILITY finding 5), so this runs
 * on every body, query and params object before any schema. Iterative, with a depth bound: a 100,000-deep body is
 * refused without recursion.
 */
export function findUnsafeKeys(value: unknown, where: FieldIssue['in']): FieldIssue[] {
  const issues: FieldIssue[] = [];
  const stack: { node: unknown; path: string; depth: number }[] = [{ node: value, path: '', depth: 0 }];
  while (stack.length > 0 && issues.length < 20) {
    const { node, path, depth } = stack.pop()!;
    if (node === null || typeof node !== 'object') continue;
    if (depth > MAX_BODY_DEPTH) {
      issues.push({ in: where, field: path || '(root)', reason: `nested deeper than ${MAX_BODY_DEPTH} levels` });
      break;
    }
    if (Array.isArray(node)) {
      node.forEach((item, i) => stack.push({ node: item, path: `${path}[${i}]`, depth: depth + 1 }));
      continue;
    }
    for (const [key, child] of Object.entries(node)) {
      const childPath = path ? `${path}.${key}` : key;
      if (key.startsWith('$') || key.includes('.') || FORBIDDEN_KEYS.has(key)) {
        issues.push({
          in: where,
          field: childPath,
          reason: 'keys starting with $, containing a dot, or naming a prototype are not accepted',
        });
      } else if (where === 'query' && /[[\]$]/.test(key)) {
        issues.push({ in: where, field: childPath, reason: 'query parameter names may not contain brackets or $' });
      }
      stack.push({ node: child, path: childPath, depth: depth + 1 });
    }
  }
  return issues;
}

/** valibot issues → field issues with a dotted path and the schema's message. */
export function toFieldIssues(issues: readonly v.BaseIssue<unknown>[], where: FieldIssue['in']): FieldIssue[] {
  return issues.slice(0, 20).map((issue) => ({
    in: where,
    field: v.getDotPath(issue) ?? '(root)',
    reason: issue.message,
  }));
}

function validatePart(
  schema: AnySchema | undefined,
  value: unknown,
  where: FieldIssue['in'],
  issues: FieldIssue[],
): unknown {
  const unsafe = findUnsafeKeys(value, where);
  if (unsafe.length > 0) {
    issues.push(...unsafe);
    return undefined;
  }
  if (!schema) return undefined;
  const result = v.safeParse(schema, value);
  if (result.success) return result.output;
  issues.push(...toFieldIssues(result.issues, where));
  return undefined;
}

/** Methods whose bodies koa-body parses; a body schema on any other would never see its body. */
const BODY_METHODS: ReadonlySet<HttpMethod> = new Set(['post', 'put', 'patch']);

/**
 * Mistakes caught when the app is built rather than in production: a body on GET/DELETE, and a body schema
 * that silently drops unknown keys — `{ role: 'admin' }` must be refused with 400 naming `role` (mass assignment,
 * ASVS 5.1.2), which only v.strictObject does.
 */
function assertMountable(route: RouteSpec): void {
  const where = `${route.method.toUpperCase()} ${route.path}`;
  if (route.body && !BODY_METHODS.has(route.method)) throw new Error(`${where}: only POST, PUT and PATCH take a body`);
  if (route.body && !refusesUnknownKeys(route.body)) {
    throw new Error(`${where}: a body schema must be a v.strictObject (or a pipe, union or variant of them)`);
  }
}

function refusesUnknownKeys(schema: AnySchema): boolean {
  const s = schema as AnySchema & { pipe?: AnySchema[]; options?: AnySchema[] };
  if (s.type === 'strict_object') return true;
  if (s.type === 'object' || s.type === 'loose_object' || s.type === 'object_with_rest') return false;
  if (s.pipe?.[0] && s.pipe[0] !== schema) return refusesUnknownKeys(s.pipe[0]);
  if ((s.type === 'union' || s.type === 'variant') && s.options) return s.options.every(refusesUnknownKeys);
  return true; // arrays and scalars have no keys to smuggle
}

/** The API's major version: canonical paths are /api/v1/…, and /api/… is the alias of the current version. */
export const API_VERSION = 1;
const API_PREFIX = '/api';
const API_PATHS = `${API_PREFIX}/`;
const VERSIONED_PREFIX = `${API_PREFIX}/v${API_VERSION}`;
const VERSIONED_PATHS = `${VERSIONED_PREFIX}/`;

/** True for /api and /api/…: the paths that are versioned, aliased and rate-limited (checked on every request). */
export function isApiPath(path: string): boolean {
  return path === API_PREFIX || path.startsWith(API_PATHS);
}

/**
 * Where a route declared as /api/things lives canonically: /api/v1/things (documented in OpenAPI). Paths outside
 * /api, and paths already versioned, stay as declared.
 */
export function canonicalPath(path: string): string {
  if (!isApiPath(path) || path === VERSIONED_PREFIX || path.startsWith(VERSIONED_PATHS)) return path;
  return VERSIONED_PREFIX + path.slice(API_PREFIX.length);
}

/** The paths a route answers on: the canonical one, then the /api alias when it differs. */
export function mountedPaths(route: Pick<RouteSpec, 'path'>): string[] {
  const canonical = canonicalPath(route.path);
  return canonical === route.path ? [route.path] : [canonical, route.path];
}

/** Whether the general rate limit applies to a route (see RouteSpec.rateLimit). */
export function isRateLimited(route: Pick<RouteSpec, 'path' | 'rateLimit'>): boolean {
  return route.rateLimit !== false && isApiPath(route.path);
}

export interface MountOptions {
  jsonLimitBytes: number;
  /** The general rate limit, run after each limited route's guards (isRateLimited). */
  rateLimit?: Middleware<AppState>;
}

/**
 * Mounts routes on a router: guards, the general rate limit, content-type check, JSON parsing within limits,
 * validation, then the handler. Each route answers on its canonical /api/v1 path and on the /api alias; all canonical
 * paths are registered before any alias, so an alias pattern can never shadow a versioned path.
 */
export function mountRoutes(router: Router<AppState>, routes: readonly RouteSpec[], options: MountOptions): void {
  const parseJson = koaBody({
    json: true,
    jsonStrict: true,
    jsonLimit: options.jsonLimitBytes,
    urlencoded: false,
    text: false,
    multipart: false,
    patchNode: false,
    patchKoa: true,
  });

  const registrations: { path: string; route: RouteSpec; chain: Middleware<AppState>[] }[][] = [[], []];
  for (const route of routes) {
    assertMountable(route);
    const chain: Middleware<AppState>[] = [...(route.guards ?? [])];
    if (options.rateLimit && isRateLimited(route)) chain.push(options.rateLimit);
    if (route.body) {
      chain.push(async (ctx, next) => {
        // Form bodies would turn `email[$ne]=x` into an operator object: JSON only (ASVS 4 13.2.5).
        if (!ctx.is('application/json')) throw new UnsupportedMediaType('application/json');
        await next();
      });
      chain.push(parseJson);
    }
    chain.push(async (ctx, next) => {
      const issues: FieldIssue[] = [];
      ctx.state.params = validatePart(route.params, { ...ctx.params }, 'params', issues);
      ctx.state.query = validatePart(route.query, { ...ctx.query }, 'query', issues);
      if (route.body) ctx.state.body = validatePart(route.body, ctx.request.body, 'body', issues);
      if (issues.length > 0) throw new Invalid(issues);
      await next();
    });
    chain.push(async (ctx) => {
      const result = await route.handler(ctx, {
        body: ctx.state.body as never,
        query: ctx.state.query as never,
        params: ctx.state.params as never,
      });
      if (!result) return;
      ctx.status = result.status;
      for (const [name, value] of Object.entries(result.headers ?? {})) ctx.set(name, value);
      if (result.body !== undefined) ctx.body = result.body;
    });
    mountedPaths(route).forEach((path, i) => registrations[i]!.push({ path, route, chain }));
  }
  for (const { path, route, chain } of registrations.flat()) {
    router.register(path, [route.method.toUpperCase()], chain, { name: route.operationId ?? null });
  }
}
