/**
 * NXG Connect wire protocol: the single source of truth for topics, payloads, the record envelope and the
 * protocol version. Every other part imports it from here; it imports nothing of theirs.
 *
 * - version.ts — root `nxg/v1`, major and minor version, compatibility rules
 * - ids.ts — branded ids and the id rules
 * - scalars.ts — timestamps, codes, bounded text
 * - topics.ts — topic builders, `parseTopic`, subscription filters, QoS/retain policy per topic kind
 * - envelope.ts — the record envelope, ordering, the envelope stamper
 * - messages/*.ts — payload schemas and types
 * - messages/enrolment.ts — gateway enrolment over REST
 * - jws.ts — signed documents (ES256 JWS per `typ`), QR token claims, signing and verifying
 * - payloads.ts — payload registry, `parsePayload`, `parseUplinkBatch`
 * - json-schema.ts — JSON Schema of every payload
 * - examples.ts — valid examples of every payload (import it directly; it is not re-exported here)
 * - docs.ts — renders docs/protocol.md and docs/protocol.schema.json (`npm run docs:protocol`)
 */
export * from './version.ts';
export * from './ids.ts';
export * from './scalars.ts';
export * from './topics.ts';
export * from './envelope.ts';
export * from './messages/machine-type.ts';
export * from './messages/telemetry.ts';
export * from './messages/meta.ts';
export * from './messages/status.ts';
export * from './messages/workout.ts';
export * from './messages/access.ts';
export * from './messages/event.ts';
export * from './messages/command.ts';
export * from './messages/gateway.ts';
export * from './messages/cloud.ts';
export * from './messages/enrolment.ts';
export * from './jws.ts';
export * from './parse.ts';
export * from './payloads.ts';
export * from './json-schema.ts';
