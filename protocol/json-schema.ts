/**
 * JSON Schema (draft 2020-12) for every payload, generated from the valibot schemas: for docs/protocol.md, for
 * contract tests, and for tools outside TypeScript.
 *
 * Some valibot checks have no JSON Schema form (brands, cross-field checks such as "endedAt ≥ startedAt"): they
 * are left out of the JSON Schema (`errorMode: 'ignore'`), so a value valid against the JSON Schema may still be
 * refused by the valibot schema, which stays the authority.
 */
import { toJsonSchemaDefs } from '@valibot/to-json-schema';
import type { JsonSchema } from '@valibot/to-json-schema';
import type * as v from 'valibot';
import { Envelope } from './envelope.ts';
import { Credential } from './messages/access.ts';
import { Decision } from './messages/gateway.ts';
import { PAYLOADS } from './payloads.ts';
import type { PayloadName } from './payloads.ts';
import { ErrorInfo } from './scalars.ts';

/** Schemas shared by several payloads, given their own definition so each payload refers to them. */
export const SHARED_SCHEMAS = { Envelope, Credential, Decision, ErrorInfo } as const;
export type SharedSchemaName = keyof typeof SHARED_SCHEMAS;

/**
 * Every payload and shared schema as JSON Schema definitions. A payload nested in another (a `Telemetry` inside
 * an `UplinkRecord`) appears as `{"$ref": "#/$defs/Telemetry"}`.
 */
export function protocolJsonSchemas(): Record<PayloadName | SharedSchemaName, JsonSchema> {
  const definitions: Record<string, v.GenericSchema> = {
    ...Object.fromEntries(Object.entries(PAYLOADS).map(([name, spec]) => [name, spec.schema])),
    ...SHARED_SCHEMAS,
  };
  return toJsonSchemaDefs(definitions, { target: 'draft-2020-12', errorMode: 'ignore' }) as Record<
    PayloadName | SharedSchemaName,
    JsonSchema
  >;
}
