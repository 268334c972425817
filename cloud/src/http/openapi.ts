/**
 * The OpenAPI 3.1 document, built from the same route declarations (route.ts) and valibot schemas the API validates
 * with. @valibot/to-json-schema turns schemas into JSON Schema 2020-12 (OpenAPI 3.1's dialect); openapi3-ts
 * assembles the document. Problem responses (RFC 9457) are declared once and added to every operation.
 */
import { toJsonSchema } from '@valibot/to-json-schema';
import {
  OpenApiBuilder,
  type InfoObject,
  type OpenAPIObject,
  type OperationObject,
  type ParameterObject,
  type SchemaObject,
} from 'openapi3-ts/oas31';
import { canonicalPath, isRateLimited, type AnySchema, type RouteSpec } from './route.ts';
import { PROBLEM_CONTENT_TYPE } from './problem.ts';

export type OpenApiInfo = InfoObject;

/**
 * Requests are described by what a client may send (the schema's input), responses by what it receives (output).
 * 'ignore' leaves transforms and custom checks out of the document rather than failing: the server still
 * enforces them, so the document can be looser than validation but never stricter.
 */
function jsonSchema(schema: AnySchema, typeMode: 'input' | 'output' = 'input'): SchemaObject {
  const converted = toJsonSchema(schema, { target: 'draft-2020-12', errorMode: 'ignore', typeMode });
  const { $schema: _drop, ...rest } = converted as Record<string, unknown>;
  return rest;
}

/** Path `/api/things/:id` → `/api/things/{id}`. */
export function toOpenApiPath(path: string): string {
  return path.replace(/:([A-Za-z0-9_]+)/g, '{$1}');
}

function parametersOf(route: RouteSpec): ParameterObject[] {
  const params: ParameterObject[] = [];
  for (const [where, schema] of [
    ['path', route.params],
    ['query', route.query],
  ] as const) {
    if (!schema) continue;
    const object = jsonSchema(schema);
    const required = new Set(object.required ?? []);
    for (const [name, property] of Object.entries(object.properties ?? {})) {
      params.push({
        name,
        in: where,
        required: where === 'path' || required.has(name),
        schema: property,
      });
    }
  }
  return params;
}

const problemSchema: SchemaObject = {
  type: 'object',
  required: ['type', 'title', 'status', 'detail', 'instance', 'requestId'],
  properties: {
    type: { type: 'string', description: 'A relative URI naming the kind of problem, e.g. /problems/invalid-request' },
    title: { type: 'string' },
    status: { type: 'integer' },
    detail: { type: 'string' },
    instance: { type: 'string', description: 'The request path' },
    requestId: { type: 'string', description: 'Quote it when reporting a problem; it is in the server logs' },
    errors: {
      type: 'array',
      description: 'Field-level problems (400 only)',
      items: {
        type: 'object',
        required: ['in', 'field', 'reason'],
        properties: {
          in: { type: 'string', enum: ['body', 'query', 'params', 'headers'] },
          field: { type: 'string' },
          reason: { type: 'string' },
        },
      },
    },
  },
};

const problemResponse = (description: string) => ({
  description,
  content: { [PROBLEM_CONTENT_TYPE]: { schema: { $ref: '#/components/schemas/Problem' } } },
});

const rateLimitHeaders = {
  'Retry-After': { description: 'Seconds until a request may succeed', schema: { type: 'integer' } },
  'RateLimit-Limit': { description: 'Requests allowed per window', schema: { type: 'integer' } },
  'RateLimit-Remaining': { description: 'Requests left in the current window', schema: { type: 'integer' } },
  'RateLimit-Reset': { description: 'Seconds until the window resets', schema: { type: 'integer' } },
} as const;

export interface OpenApiOptions {
  /** The general rate limit is active: limited routes document their 429. */
  rateLimit?: boolean;
}

/**
 * Paths are documented once, at their canonical /api/v1 location; the /api alias of the current version is
 * mentioned in the description rather than doubling every operation.
 */
export function buildOpenApiDocument(
  info: OpenApiInfo,
  routes: readonly RouteSpec[],
  options: OpenApiOptions = {},
): OpenAPIObject {
  const builder = OpenApiBuilder.create({ openapi: '3.1.0', info, paths: {} })
    .addSchema('Problem', problemSchema)
    .addSecurityScheme('bearer', { type: 'http', scheme: 'bearer', bearerFormat: 'JWT' });

  const byPath = new Map<string, Record<string, OperationObject>>();
  for (const route of routes) {
    const responses: OperationObject['responses'] = {};
    for (const [status, spec] of Object.entries(route.responses)) {
      const contentType = spec.contentType ?? 'application/json';
      responses[status] = {
        description: spec.description,
        ...(spec.headers ? { headers: spec.headers } : {}),
        ...(spec.schema ? { content: { [contentType]: { schema: jsonSchema(spec.schema, 'output') } } } : {}),
        ...(!spec.schema && spec.contentType ? { content: { [contentType]: {} } } : {}),
      };
    }
    if (route.body || route.query || route.params) responses['400'] ??= problemResponse('Invalid input: see errors[]');
    if (route.body) {
      responses['413'] ??= problemResponse('The body is too large');
      responses['415'] ??= problemResponse('The body is not application/json');
    }
    if (route.security?.length) responses['401'] ??= problemResponse('Missing, invalid, expired or revoked token');
    if (options.rateLimit && isRateLimited(route)) {
      responses['429'] ??= {
        ...problemResponse('Too many requests from this user or address: retry after Retry-After seconds'),
        headers: rateLimitHeaders,
      };
    }
    responses['500'] ??= problemResponse('Unexpected error');
    responses['503'] ??= problemResponse('A dependency is unavailable: retry after Retry-After seconds');

    const operation: OperationObject = {
      summary: route.summary,
      ...(route.description ? { description: route.description } : {}),
      tags: route.tags,
      operationId:
        route.operationId ??
        `${route.method}${toOpenApiPath(route.path).replace(/[^A-Za-z0-9]+(.)?/g, (_m, c: string | undefined) => (c ? c.toUpperCase() : ''))}`,
      parameters: parametersOf(route),
      ...(route.body
        ? { requestBody: { required: true, content: { 'application/json': { schema: jsonSchema(route.body) } } } }
        : {}),
      responses,
      security: route.security ?? [],
    };
    const path = toOpenApiPath(canonicalPath(route.path));
    const item = byPath.get(path) ?? {};
    item[route.method] = operation;
    byPath.set(path, item);
  }
  for (const [path, item] of [...byPath.entries()].sort(([a], [b]) => a.localeCompare(b))) builder.addPath(path, item);
  return builder.getSpec();
}
