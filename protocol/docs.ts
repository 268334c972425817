/**
 * Renders docs/protocol.md from protocol/: the topic table from `TOPIC_POLICY`, limits from the constants, the
 * telemetry field table from `TELEMETRY_MEASURES`, and for every payload its description and examples
 * (examples.ts); and docs/protocol.schema.json, the JSON Schema of every payload (json-schema.ts), which the page
 * links to instead of inlining thousands of lines. Nothing here is written by hand twice: change the code, then run
 *
 *   npm run docs:protocol          (node protocol/docs.ts --write: writes both files)
 *   node protocol/docs.ts --check  (exit 1 when either file is stale; a test does the same)
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import * as v from 'valibot';
import { ENVELOPE_FIELDS } from './envelope.ts';
import { EXAMPLE_IDS, EXAMPLE_TOPICS, examples } from './examples.ts';
import { ID_PATTERN, MSG_ID_PATTERN, OPAQUE_ID_PATTERN } from './ids.ts';
import { DENY_REASONS } from './messages/access.ts';
import {
  COMMAND_ERROR_CODES,
  MAX_ALLOW_LIST_PART_MEMBERS,
  MAX_COMMAND_JWS_LENGTH,
  MAX_SIGNED_DOCUMENT_BYTES,
} from './messages/command.ts';
import { MAX_BATCH_BYTES, MAX_BATCH_RECORDS, RECORD_KIND_LANE, REJECT_REASONS } from './messages/gateway.ts';
import { MACHINE_STATUSES } from './messages/status.ts';
import { TELEMETRY_FIELDS_BY_TYPE, TELEMETRY_MEASURES } from './messages/telemetry.ts';
import type { MeasureSpec, TelemetryField } from './messages/telemetry.ts';
import { SHARED_SCHEMAS, protocolJsonSchemaDocument, protocolJsonSchemas } from './json-schema.ts';
import { PAYLOADS, PAYLOAD_NAMES, payloadNameFor } from './payloads.ts';
import type { PayloadName } from './payloads.ts';
import { CODE_PATTERN, MAX_TIMESTAMP_MS, MIN_TIMESTAMP_MS } from './scalars.ts';
import {
  GATEWAY_COMMAND_NAMES,
  buildTopic,
  LANES,
  MACHINE_COMMAND_NAMES,
  REQUEST_NAMES,
  TOPIC_KINDS,
  TOPIC_POLICY,
  USER_LIVE_TOPICS,
  filters,
} from './topics.ts';
import type { Lane, ParsedTopic, TopicKind } from './topics.ts';
import { PROTOCOL_MINOR, PROTOCOL_ROOT, PROTOCOL_VERSION } from './version.ts';

/** Where the rendered document lives. */
export const PROTOCOL_DOC_PATH = join(import.meta.dirname, '..', 'docs', 'protocol.md');
/** Where the rendered JSON Schema lives, beside the document (which links to it by this relative name). */
export const PROTOCOL_SCHEMA_PATH = join(import.meta.dirname, '..', 'docs', 'protocol.schema.json');
const SCHEMA_FILE = 'protocol.schema.json';

const ids = EXAMPLE_IDS;

/** Example arguments and the use of every subscription filter; the type makes a new filter fail to compile here. */
const FILTER_DOCS: { [K in keyof typeof filters]: { args: Parameters<(typeof filters)[K]>; use: string } } = {
  everything: { args: [], use: 'cloud-internal tools only' },
  observer: {
    args: [ids.branch],
    use: 'a branch-scoped observer (a list: no door scans, requests, commands or batches — they carry credentials)',
  },
  gateway: { args: [ids.branch, ids.gateway], use: 'everything of one gateway (ACL subtree)' },
  gatewayCommands: { args: [ids.branch, ids.gateway], use: 'the gateway: its commands' },
  gatewayRequestResponses: { args: [ids.branch, ids.gateway], use: 'the gateway: answers to its requests' },
  machine: { args: [ids.branch, ids.rower], use: 'the machine on its gateway’s broker (ACL subtree)' },
  machineCommands: { args: [ids.branch, ids.rower], use: 'the machine: its commands' },
  branchMachines: { args: [ids.branch], use: 'the gateway’s intake on its local broker' },
  branchMachineCommands: { args: [ids.branch], use: 'the gateway: commands to relay to its machines' },
  branchMachineCommandResponses: { args: [ids.branch], use: 'the gateway: machine answers to relay' },
  branchAccessScans: { args: [ids.branch], use: 'front-desk dashboards' },
  branchLive: { args: [ids.branch], use: 'an app of that branch (ACL subtree)' },
  liveMachines: { args: [ids.branch], use: 'an app’s machine availability view' },
  userLive: { args: [ids.member], use: 'that user’s app only (ACL subtree)' },
  allGatewayStates: { args: [], use: 'cloud: gateway births and wills' },
  allGatewayUplinks: { args: [], use: 'cloud ingest' },
  allGatewayRequests: { args: [], use: 'cloud: online decisions' },
  allGatewayCommandResponses: { args: [], use: 'cloud: gateway command outcomes' },
  allMachineCommandResponses: { args: [], use: 'cloud: machine command outcomes' },
  allAccessScans: { args: [], use: 'cloud: live scans' },
};

const LANE_POLICY: { readonly [L in Lane]: string } = {
  access: 'sent first; never evicted',
  records: 'never evicted while space remains for them',
  telemetry: 'evicted oldest first when the queue is full',
};

/**
 * Where docs/protocol.md departs from the example and key suggestions in ../shared/FTMS.md (whose JSON keys are
 * suggestions; these schemas are the authority). A sender still using an FTMS.md key finds it stripped and listed
 * in `unknownKeys`.
 */
const FTMS_MD_DEPARTURES: readonly (readonly [ftmsMd: string, here: string, why: string])[] = [
  [
    '`ts` as an ISO 8601 string (`"2026-11-24T19:40:01.250Z"`)',
    '`ts` in integer milliseconds since the epoch, UTC (`1795549201250`); likewise every time field',
    'one spelling per instant, compares and sorts as a number, maps onto MongoDB dates and Redis scores',
  ],
  [
    '`"v": 1`',
    '`v` is the protocol **minor** version (`0` today); the major version is the topic root `nxg/v1`',
    'a major change gets a new root, so it never needs to travel in payloads',
  ],
  [
    '`msgId` of any shape (`"01JD…"`)',
    '16–64 characters of `[A-Za-z0-9_-]`, globally unique (`newMsgId()`)',
    'the cloud deduplicates by msgId alone, across every source',
  ],
  ['`speedKmh`, `avgSpeedKmh` in km/h', '`speedMps`, `avgSpeedMps` in m/s (km/h ÷ 3.6)', 'SI units, named in the key'],
  [
    '`totalEnergyKcal`, `energyPerHourKcal`, `energyPerMinuteKcal` in kcal',
    '`energyKj`, `energyPerHourKj`, `energyPerMinuteKj` in kJ (kcal × 4.184)',
    'SI units, named in the key',
  ],
  ['strength `weightKg`', '`loadKg`', 'also a plate-loaded machine’s sensed load, not only a stack weight'],
  [
    '`type` values such as “indoor bike”, “cross trainer”',
    '`treadmill`, `cross-trainer`, `rower`, `indoor-bike`, plus `selectorised`, `plate-loaded`, `functional`',
    'kebab-case codes; strength and functional machines are types too',
  ],
  [
    'Fitness Machine Feature (0x2ACC) bitmask in `meta`',
    '`meta.fields`: the list of our telemetry keys the machine sends',
    'self-describing, and checked against the machine type',
  ],
  [
    'Control Point opcodes (0x2AD9) as `cmd/{name}`',
    'only `link`, `unlink`, `display`, `config`, `rebirth` today; FTMS targets appear as `target-changed` events',
    'v1 defines no target commands; a minor version can add command names',
  ],
  [
    'heart rate `0`',
    'kept as `0` (no sensor contact), like every value within its FTMS wire range',
    'a value the wire can carry is never refused; plausibility is flagged by the cloud',
  ],
];

/** Renders docs/protocol.md. Deterministic: the same code always renders the same text. */
export function renderProtocolDoc(): string {
  const schemas = protocolJsonSchemas();
  const usage = payloadUsage();
  const out: string[] = [];
  const line = (text = '') => out.push(text);

  line(`# NXG Connect wire protocol — \`${PROTOCOL_ROOT}\``);
  line();
  line('<!-- Generated by protocol/docs.ts. Do not edit: change protocol/ and run `npm run docs:protocol`. -->');
  line();
  line(
    `Protocol version **${PROTOCOL_VERSION}**: topic root \`${PROTOCOL_ROOT}\`, minor version \`${PROTOCOL_MINOR}\`. ` +
      'This page is generated from `protocol/`; the valibot schemas there are the authority, and a test fails ' +
      'when this page is stale. Import everything from `protocol/index.ts`.',
  );
  line();
  line(
    `The JSON Schema (draft 2020-12) of every payload is in [\`${SCHEMA_FILE}\`](${SCHEMA_FILE}), generated ` +
      `from the same code: validate a payload against \`${SCHEMA_FILE}#/$defs/<PayloadName>\`. Cross-field rules ` +
      '(e.g. `endedAt ≥ startedAt`) and brands have no JSON Schema form, so a value valid against the JSON Schema ' +
      'may still be refused by the valibot schema.',
  );
  line();
  line('## Contents');
  line();
  for (const [title, anchor] of [
    ['Compatibility', 'compatibility'],
    ['Identifiers and scalars', 'identifiers-and-scalars'],
    ['Record envelope', 'record-envelope'],
    ['Topics', 'topics'],
    ['Subscription filters', 'subscription-filters'],
    ['Parsing payloads', 'parsing-payloads'],
    ['Lanes and record kinds', 'lanes-and-record-kinds'],
    ['Uplink batches and acks', 'uplink-batches-and-acks'],
    ['Requests and commands', 'requests-and-commands'],
    ['Machine status, gateway state and the last will', 'machine-status-gateway-state-and-the-last-will'],
    ['Telemetry fields', 'telemetry-fields'],
    ['Departures from FTMS.md', 'departures-from-ftmsmd'],
    ['Payloads', 'payloads'],
    ['Shared definitions', 'shared-definitions'],
  ]) {
    line(`- [${title}](#${anchor})`);
  }
  line();

  line('## Compatibility');
  line();
  line(`- A breaking change gets a new topic root (\`nxg/v2\`); \`${PROTOCOL_ROOT}\` only ever grows.`);
  line(
    '- Minor versions are additive: new optional fields, record kinds, topic names, enum values. The sender’s ' +
      'minor version travels in every record (`v`) and in births.',
  );
  line(
    '- Object schemas strip unknown keys instead of refusing them, so a newer sender’s extra fields still parse ' +
      'on an older receiver; the parsers list them in `unknownKeys` so they can be counted and logged.',
  );
  line(
    '- New kinds and enum values cannot be understood by an older receiver and are refused there, so a rollout ' +
      'upgrades receivers first: cloud, then gateways, then machines.',
  );
  line(
    '- Codes (reasons, error codes, fault codes) are open sets: a receiver treats an unknown code like the generic ' +
      'case (an unknown deny reason is still a deny).',
  );
  line('- MQTT 3.1.1 only (Aedes): correlation ids (`reqId`, `batchId`) live in payloads. QoS 2 is never used.');
  line();

  line('## Identifiers and scalars');
  line();
  line('| What | Rule | Example |');
  line('| --- | --- | --- |');
  line(
    `| Topic-level id (branch, gateway, machine, reader, user) | \`${ID_PATTERN.source}\` — never \`+ # / $\` | ` +
      `\`${ids.rower}\` |`,
  );
  line(
    `| Message id (\`msgId\`; also a notification's \`id\`) | \`${MSG_ID_PATTERN.source}\`, **globally unique**: ` +
      'the cloud deduplicates by msgId alone, across all sources. Use `newMsgId()` (a UUID); a ULID or 128 random ' +
      'bits in base64url also fit | `01JD8Z3K4M5N6P7Q8R9S0T1V2W` |',
  );
  line(
    `| Other opaque ids (bootId, reqId, batchId, sessionId) | \`${OPAQUE_ID_PATTERN.source}\` (UUIDs, ULIDs, ` +
      'ObjectIds); compared only within their scope (a source, a gateway, the cloud) | ' +
      '`7b1e0c52-3f4a-4d8e-9a61-2c5b8f0e4d17` |',
  );
  line(
    `| Timestamp (event times: \`ts\`, \`since\`, \`startedAt\`, …) | integer ms since the Unix epoch (UTC), ` +
      `${new Date(MIN_TIMESTAMP_MS).toISOString()} … ${new Date(MAX_TIMESTAMP_MS).toISOString()} | ` +
      `\`${examples.CloudState[0].since}\` |`,
  );
  line(
    '| Diagnostic clock (`sentAt` of a batch, `receivedAt` of a record) | any non-negative safe integer, ms: never a ' +
      'reason to refuse. A gateway whose clock is not set yet may send small values (shortly after 1970); the ' +
      'cloud treats them as untrusted (lag and skew figures only, flagged when implausible) | ' +
      `\`${examples.UplinkBatch[0].sentAt}\` |`,
  );
  line(`| Code | \`${CODE_PATTERN.source}\` | \`membership-inactive\` |`);
  line('| Text | bounded length, no control characters (newline only where multi-line) | |');
  line();
  line(
    'Every string and array is bounded and every number has bounds (for telemetry, the range of its FTMS wire ' +
      'type), so a hostile payload cannot make a receiver hold unbounded memory or store a value no machine can ' +
      'produce.',
  );
  line();

  line('## Record envelope');
  line();
  line(
    'Every record (meta, status, telemetry, workout, event, access scan, offline decision) carries these fields ' +
      'at its top level. The cloud orders and deduplicates by them, never by arrival time.',
  );
  line();
  line('| Field | Meaning |');
  line('| --- | --- |');
  const envelopeSchema = schemas.Envelope as { properties: Record<string, { description?: string }> };
  for (const field of ENVELOPE_FIELDS) {
    line(`| \`${field}\` | ${cell(envelopeSchema.properties[field]?.description ?? '')} |`);
  }
  line();
  line(
    '- Newer means a higher `seq` within one `bootId`, a later `ts` across boots (`isNewer`). Writes are ' +
      'idempotent by `msgId`. Use `createEnvelopeStamper` to produce envelopes. `seq: -0` is read as `0`.',
  );
  line();

  line('## Topics');
  line();
  line(
    `All topics start with \`${PROTOCOL_ROOT}/\`. Machine data topics live on the gateway’s local broker only; ` +
      'the cloud receives them as records in uplink batches. Apps may read only `live/…` and their own `u/{user}/…`.',
  );
  line();
  line('| Topic | Kind | From → to | Broker | QoS | Retained | Payload |');
  line('| --- | --- | --- | --- | --- | --- | --- |');
  for (const kind of TOPIC_KINDS) {
    const policy = TOPIC_POLICY[kind];
    line(
      `| \`${policy.pattern}\` | ${kind} | ${policy.from.join(', ')} → ${policy.to.join(', ')} | ` +
        `${policy.brokers.join(', ')} | ${policy.qos} | ${policy.retained ? 'yes' : 'no'} | ` +
        `${payloadCell(kind)} |`,
    );
  }
  line();
  line(
    '**Clearing retained state.** A zero-length payload published with the retain flag is the MQTT way to clear ' +
      'a retained topic (e.g. the `meta` and `status` of a decommissioned machine). Subscribers receive it as an ' +
      'empty message: `parsePayload` answers `{ ok: false, reason: "empty" }`, and the receiver drops what it ' +
      'holds for that topic instead of counting an error.',
  );
  line();
  line('What each topic is for:');
  line();
  for (const kind of TOPIC_KINDS) line(`- \`${TOPIC_POLICY[kind].pattern}\` — ${TOPIC_POLICY[kind].summary}`);
  line();
  line(
    '`parseTopic(topic)` returns the kind and variable levels, or `undefined` for anything not in the tree ' +
      '(another version root, a bad id, an unknown name, extra or missing levels). Example topics:',
  );
  line();
  for (const kind of TOPIC_KINDS) line(`- ${kind}: \`${buildTopic(EXAMPLE_TOPICS[kind])}\``);
  line();

  line('## Subscription filters');
  line();
  line(
    'An ACL must check that a requested filter lies *within* an allowed one (`filterWithin`, or ' +
      '`filterWithinAny` for a list of grants), not that it matches it. Builders in `filters`:',
  );
  line();
  line('| Builder | Filter (example ids) | Used by |');
  line('| --- | --- | --- |');
  for (const [name, doc] of Object.entries(FILTER_DOCS)) {
    const build = filters[name as keyof typeof filters] as (...args: readonly unknown[]) => string | readonly string[];
    const built = build(...doc.args);
    const shown = typeof built === 'string' ? [built] : built;
    line(`| \`filters.${name}\` | ${shown.map((filter) => `\`${filter}\``).join('<br>')} | ${doc.use} |`);
  }
  line();
  line(
    '**Observers** get `filters.observer(branch)`: machine availability, gateway births and wills, and machine ' +
      'meta, status, telemetry and workouts — never door scans (`access/+/scan`), gateway requests or commands ' +
      '(`gw/+/req/…`, `gw/+/cmd/…`), machine commands (`m/+/cmd/…`), machine events (`m/+/event`: `qr-scanned` ' +
      'and `nfc-tapped` carry a credential presented at a machine), uplink batches or acks. Those carry member ' +
      'credentials (NFC card UIDs, QR tokens), the signed allow-list and configuration, or member links.',
  );
  line();

  line('## Parsing payloads');
  line();
  line(
    '`parsePayload(name, bytes)` never throws. It answers `{ ok: true, value, unknownKeys }` or ' +
      '`{ ok: false, reason, path?, issue?, expected? }` — never echoing the received value, which may be a token ' +
      'or personal data.',
  );
  line();
  line('| `reason` | Meaning |');
  line('| --- | --- |');
  line(
    '| `empty` | a zero-length payload: on a retained topic, **a retained message was cleared** (drop the state ' +
      'held for that topic) |',
  );
  line('| `too-large` | more bytes than the payload’s limit (checked before decoding) |');
  line('| `not-utf8` | not valid UTF-8 |');
  line('| `not-json` | not JSON |');
  line('| `invalid` | JSON that does not match the schema: `path` names the first failing field, `issue` the check |');
  line();
  line(
    '`unknownKeys` lists the top-level keys of the input object that the schema does not know (they are stripped ' +
      'from `value`): count and log them, so a misspelt or FTMS.md-style key (`speedKmh`, `totalEnergyKcal`) ' +
      'does not vanish silently. `parseUplinkBatch` reports them per record too, payload keys prefixed ' +
      '(`payload.speedKmh`).',
  );
  line();

  line('## Lanes and record kinds');
  line();
  line(
    'The gateway’s durable queue has three lanes; order holds per source within a lane. A record is ' +
      '`{kind, receivedAt?, payload}`: `payload` is the message as its source published it, envelope included.',
  );
  line();
  line('| Lane | Record kinds | Policy |');
  line('| --- | --- | --- |');
  for (const lane of LANES) {
    const kinds = Object.entries(RECORD_KIND_LANE)
      .filter(([, l]) => l === lane)
      .map(([kind]) => `\`${kind}\``);
    line(`| ${lane} | ${kinds.join(', ')} | ${LANE_POLICY[lane]} |`);
  }
  line();

  line('## Uplink batches and acks');
  line();
  line(
    `- A batch (\`UplinkBatch\`) holds 1–${MAX_BATCH_RECORDS} records of one lane and at most ` +
      `${MAX_BATCH_BYTES / 1024} KiB.`,
  );
  line(
    '- **A `batchId` names one exact set of records.** The gateway resends a batch unchanged (same `batchId`, same ' +
      'records in the same order) until an ack for that `batchId` answers it. Records the ack names in neither ' +
      '`acked` nor `rejected` are **not** resent under that `batchId`: they return to the queue and travel in a ' +
      'new batch with a new `batchId`.',
  );
  line(
    '- The cloud reads a batch with `parseUplinkBatch`: first the shell (`batchId`, `sentAt`, an array of ' +
      `1–${MAX_BATCH_RECORDS} records of any shape), then each record on its own against \`UplinkRecord\`, so ` +
      'one bad record — even one without a readable `msgId` — is rejected alone.',
  );
  line(
    '- Rejected records are named by `index` (position in the batch, from 0; always present) and by `msgId` when ' +
      'it could be read; the gateway matches them by `index`. A record whose `msgId` an earlier record of the ' +
      'same batch already has is rejected as `duplicate-in-batch` (the first is kept).',
  );
  line(
    '- After the MongoDB write the cloud answers on `ack`: `acked` (durable, duplicates of stored records ' +
      'included) and `rejected` (dead-lettered with a reason). The gateway deletes exactly those.',
  );
  line(
    '- Only a shell that cannot be read fails the whole batch (empty, too large, not JSON, no readable ' +
      '`batchId`, no record array): the ack carries `error` and empty lists, and the gateway moves the batch to ' +
      'its local rejected table instead of resending it forever.',
  );
  line(
    '- `sentAt` and `receivedAt` are diagnostic clocks: any non-negative integer is accepted, and the cloud ' +
      'treats them as untrusted.',
  );
  line(
    '- `live: true` marks a snapshot of each machine’s latest status and sample sent beside a draining backlog: ' +
      'applied to live state only, never written, never acked, never resent.',
  );
  line(`- Known reject reasons: ${REJECT_REASONS.map((r) => `\`${r}\``).join(', ')}.`);
  line();

  line('## Requests and commands');
  line();
  line('Every request and command carries a `reqId` that its response echoes.');
  line();
  line('| Topic | Name | Payload | Response |');
  line('| --- | --- | --- | --- |');
  for (const kind of ['gateway-request', 'gateway-command', 'machine-command'] as const) {
    for (const { name, topic } of namedVariants(kind)) {
      const response = payloadNameFor({ ...topic, kind: `${kind}-response` } as ParsedTopic);
      line(
        `| \`${TOPIC_POLICY[kind].pattern}\` | \`${name}\` | ${payloadLink(payloadNameFor(topic))} | ` +
          `${payloadLink(response)} |`,
      );
    }
  }
  line();
  line(`- Known deny reasons: ${DENY_REASONS.map((r) => `\`${r}\``).join(', ')}.`);
  line(`- Known command error codes: ${COMMAND_ERROR_CODES.map((r) => `\`${r}\``).join(', ')}.`);
  line(
    '- A command received after its `expiresAt` is answered with `expired` and not executed. Gateway ' +
      'configuration and allow-list parts are ES256 JWS signed by the cloud; the gateway verifies them before use.',
  );
  line(
    `- A signed document (configuration, allow-list part) is at most ${MAX_SIGNED_DOCUMENT_BYTES / 1024} KiB of ` +
      `JSON, so that its JWS fits the ${MAX_COMMAND_JWS_LENGTH / 1024} KiB limit of a command; an allow-list ` +
      `part holds at most ${MAX_ALLOW_LIST_PART_MEMBERS} members, whose largest form fits that.`,
  );
  line();

  line('## Machine status, gateway state and the last will');
  line();
  line(`Machine status values: ${MACHINE_STATUSES.map((s) => `\`${s}\``).join(', ')}.`);
  line();
  line(
    '- A last will is composed at CONNECT, so it is older than everything sent later on that connection, and the ' +
      'broker may publish it late — after the sender has reconnected. Machine statuses and gateway states ' +
      'therefore carry `conn`, the connection number within the boot (+1 per CONNECT), and a will carries ' +
      '`lastWill: true` and the `conn` of its connection.',
  );
  line(
    '- `statusSupersedes(incoming, held)` (machines): another boot → later `ts` wins; same boot, another ' +
      'connection → higher `conn` wins; same connection → a will ends it (nothing after it applies), otherwise ' +
      'higher `seq` wins.',
  );
  line(
    '- `gatewayStateSupersedes(incoming, held)` (gateways): another boot → later `ts` wins (a will’s `ts` is ' +
      'when it was registered); same boot, another connection → higher `conn` wins, so a late will of an earlier ' +
      'connection does not override a newer birth; same connection → an offline state (its will or a clean ' +
      'shutdown) ends it, otherwise the later birth wins.',
  );
  line('- The cloud shows `unknown` for every machine of a gateway whose state is offline.');
  line();

  line('## Telemetry fields');
  line();
  line(
    'Fields follow the Bluetooth FTMS 1.0 characteristics, in SI units named in the key (speed m/s, energy kJ, ' +
      'distance m, time s; rates per minute and heart rate in bpm as on every console). Absent or “not ' +
      'available” values are omitted.',
  );
  line();
  line(
    '**Bounds are the range of the field’s FTMS wire type**, converted to our unit — not physiological limits. ' +
      'A value the wire can carry is a value a real machine can report (heart rate is a uint8: 0–255 bpm, and 0 ' +
      'means no sensor contact), so it parses; only what no machine could encode is refused. Whether a value is ' +
      'plausible for the machine (against the ranges in its `meta`) is the cloud’s job at ingest: it flags, never ' +
      'refuses. Fields without an FTMS equivalent (strength, functional) are bounded by what such a sensor can ' +
      'measure. Workout totals use the same bounds.',
  );
  line();
  line('| Field | Unit | Min | Max | Integer | FTMS wire type | Machine types | Meaning |');
  line('| --- | --- | --- | --- | --- | --- | --- | --- |');
  for (const [field, spec] of Object.entries(TELEMETRY_MEASURES) as [TelemetryField, MeasureSpec][]) {
    line(
      `| \`${field}\` | ${spec.unit} | ${spec.min} | ${spec.max} | ${spec.integer ? 'yes' : 'no'} | ` +
        `${cell(spec.ftms ?? '—')} | ${typesWithField(field)} | ${cell(spec.description)} |`,
    );
  }
  line();
  line(
    'Non-numeric fields: `trainingStatus` (FTMS Training Status, all types), `direction` (cross trainer), ' +
      '`phase` and `tempo` (strength), `exercise` and `phase` (functional).',
  );
  line();

  line('## Departures from FTMS.md');
  line();
  line(
    '`../shared/FTMS.md` gathered the FTMS facts and suggested JSON keys; where this protocol differs, it is ' +
      'listed here. The FTMS.md rower example travels as the first `Telemetry` example below ' +
      '(`"totalEnergyKcal": 97` → `"energyKj": 405.8`, ISO `ts` → integer ms). A sender using an FTMS.md key ' +
      'still parses, with that key stripped and listed in `unknownKeys`.',
  );
  line();
  line('| FTMS.md | This protocol | Why |');
  line('| --- | --- | --- |');
  for (const [ftmsMd, here, why] of FTMS_MD_DEPARTURES) line(`| ${cell(ftmsMd)} | ${cell(here)} | ${cell(why)} |`);
  line();

  line('## Payloads');
  line();
  line(
    `Each payload with its topics, size limit and examples (from \`protocol/examples.ts\`). Its JSON Schema is ` +
      `\`${SCHEMA_FILE}#/$defs/<name>\`.`,
  );
  line();
  for (const name of PAYLOAD_NAMES) {
    line(`### ${name}`);
    line();
    line(v.getDescription(PAYLOADS[name].schema) ?? '');
    line();
    const topics = usage.get(name);
    line(
      `- Topics: ${topics === undefined ? 'none (nested, or a JWS payload)' : topics.map((t) => `\`${t}\``).join(', ')}`,
    );
    line(`- Largest accepted: ${PAYLOADS[name].maxBytes / 1024} KiB`);
    line(`- JSON Schema: [\`${SCHEMA_FILE}#/$defs/${name}\`](${SCHEMA_FILE})`);
    line();
    for (const example of examples[name]) {
      line('```json');
      line(JSON.stringify(example, null, 2));
      line('```');
      line();
    }
  }

  line('## Shared definitions');
  line();
  line(
    `Schemas several payloads refer to (\`{"$ref": "#/$defs/X"}\`), also under \`$defs\` in ` +
      `[\`${SCHEMA_FILE}\`](${SCHEMA_FILE}): ` +
      `${(Object.keys(SHARED_SCHEMAS) as (keyof typeof SHARED_SCHEMAS)[]).map((name) => `\`${name}\``).join(', ')}.`,
  );
  return out.join('\n');
}

/** Renders docs/protocol.schema.json: every payload's JSON Schema under `$defs`, pretty-printed. Deterministic. */
export function renderProtocolSchema(): string {
  const title = `NXG Connect wire protocol ${PROTOCOL_ROOT} (${PROTOCOL_VERSION}): payload schemas`;
  return `${JSON.stringify(protocolJsonSchemaDocument(title), null, 2)}\n`;
}

/** Every concrete variant of a topic kind (one per name or user topic), with its pattern. */
function topicVariants(kind: TopicKind): { pattern: string; topic: ParsedTopic }[] {
  const pattern = TOPIC_POLICY[kind].pattern;
  const base = EXAMPLE_TOPICS[kind];
  if (base.kind === 'user-live') {
    return USER_LIVE_TOPICS.map((topic) => ({ pattern: pattern.replace('{topic}', topic), topic: { ...base, topic } }));
  }
  if ('name' in base) {
    return namedVariants(base.kind).map(({ name, topic }) => ({ pattern: pattern.replace('{name}', name), topic }));
  }
  return [{ pattern, topic: base }];
}

type NamedKind = Extract<ParsedTopic, { name: string }>['kind'];

function namedVariants(kind: NamedKind): { name: string; topic: ParsedTopic }[] {
  const base = EXAMPLE_TOPICS[kind];
  const names: readonly string[] =
    kind === 'gateway-request' || kind === 'gateway-request-response'
      ? REQUEST_NAMES
      : kind === 'gateway-command' || kind === 'gateway-command-response'
        ? GATEWAY_COMMAND_NAMES
        : MACHINE_COMMAND_NAMES;
  return names.map((name) => ({ name, topic: { ...base, name } as ParsedTopic }));
}

/** Payload name → the topic patterns that carry it. */
function payloadUsage(): Map<PayloadName, string[]> {
  const usage = new Map<PayloadName, string[]>();
  for (const kind of TOPIC_KINDS) {
    for (const { pattern, topic } of topicVariants(kind)) {
      const name = payloadNameFor(topic);
      const list = usage.get(name) ?? [];
      if (!list.includes(pattern)) list.push(pattern);
      usage.set(name, list);
    }
  }
  return usage;
}

function payloadCell(kind: TopicKind): string {
  const variants = topicVariants(kind).map(({ topic }) => ({
    label: 'name' in topic ? topic.name : topic.kind === 'user-live' ? topic.topic : '',
    payload: payloadNameFor(topic),
  }));
  const [first] = variants;
  if (first !== undefined && variants.every((variant) => variant.payload === first.payload)) {
    return payloadLink(first.payload);
  }
  return variants.map((variant) => `${variant.label}: ${payloadLink(variant.payload)}`).join('<br>');
}

function payloadLink(name: PayloadName): string {
  return `[${name}](#${name.toLowerCase()})`;
}

function typesWithField(field: TelemetryField): string {
  const types = Object.entries(TELEMETRY_FIELDS_BY_TYPE)
    .filter(([, fields]) => fields.includes(field))
    .map(([type]) => type);
  return types.length === Object.keys(TELEMETRY_FIELDS_BY_TYPE).length ? 'all' : types.join(', ');
}

function cell(text: string): string {
  return text.replaceAll('|', '\\|').replaceAll('\n', ' ');
}

/** The generated files and their renderers. */
const OUTPUTS = [
  { path: PROTOCOL_DOC_PATH, name: 'docs/protocol.md', render: renderProtocolDoc },
  { path: PROTOCOL_SCHEMA_PATH, name: 'docs/protocol.schema.json', render: renderProtocolSchema },
] as const;

/** The generated files that differ from what the code renders (missing files included). */
export function staleOutputs(): string[] {
  return OUTPUTS.filter(({ path, render }) => {
    let current: string | undefined;
    try {
      current = readFileSync(path, 'utf8');
    } catch {
      current = undefined;
    }
    return current !== render();
  }).map(({ name }) => name);
}

function main(args: readonly string[]): number {
  if (args.includes('--write')) {
    for (const { path, render } of OUTPUTS) {
      mkdirSync(dirname(path), { recursive: true });
      writeFileSync(path, render());
      console.log(`wrote ${path}`);
    }
    return 0;
  }
  if (args.includes('--check')) {
    const stale = staleOutputs();
    if (stale.length > 0) {
      const verb = stale.length === 1 ? 'is' : 'are';
      console.error(`${stale.join(' and ')} ${verb} stale: run \`npm run docs:protocol\` and commit the result.`);
      return 1;
    }
    console.log('docs/protocol.md and docs/protocol.schema.json are current');
    return 0;
  }
  process.stdout.write(renderProtocolDoc());
  return 0;
}

if (import.meta.main) process.exitCode = main(process.argv.slice(2));
