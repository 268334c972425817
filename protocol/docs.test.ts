import { expect } from 'chai';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  PROTOCOL_DOC_PATH,
  PROTOCOL_SCHEMA_PATH,
  renderProtocolDoc,
  renderProtocolSchema,
  staleOutputs,
} from './docs.ts';
import { PAYLOAD_NAMES } from './payloads.ts';
import { TOPIC_KINDS, TOPIC_POLICY } from './topics.ts';

describe('protocol/docs', () => {
  it('docs/protocol.md is current (run `npm run docs:protocol` after changing protocol/)', () => {
    let current: string;
    try {
      current = readFileSync(PROTOCOL_DOC_PATH, 'utf8');
    } catch {
      expect.fail('docs/protocol.md is missing: run `npm run docs:protocol`');
    }
    // A plain equality check: a diff of thousands of lines helps nobody, the command does.
    if (current !== renderProtocolDoc()) {
      expect.fail('docs/protocol.md is stale: run `npm run docs:protocol` and commit the result');
    }
  });

  it('docs/protocol.schema.json is current (run `npm run docs:protocol` after changing protocol/)', () => {
    let current: string;
    try {
      current = readFileSync(PROTOCOL_SCHEMA_PATH, 'utf8');
    } catch {
      expect.fail('docs/protocol.schema.json is missing: run `npm run docs:protocol`');
    }
    if (current !== renderProtocolSchema()) {
      expect.fail('docs/protocol.schema.json is stale: run `npm run docs:protocol` and commit the result');
    }
    expect(staleOutputs()).to.deep.equal([]);
  });

  it('renders deterministically', () => {
    expect(renderProtocolDoc()).to.equal(renderProtocolDoc());
    expect(renderProtocolSchema()).to.equal(renderProtocolSchema());
  });

  it('keeps the JSON Schemas in protocol.schema.json, one definition per payload, and links to it', () => {
    const doc = renderProtocolDoc();
    expect(doc).not.to.include('<summary>JSON Schema</summary>');
    expect(doc).not.to.include('"$defs"');
    const schema = JSON.parse(renderProtocolSchema()) as { $schema: string; $defs: Record<string, unknown> };
    expect(schema.$schema).to.equal('https://json-schema.org/draft/2020-12/schema');
    expect(Object.keys(schema.$defs)).to.include.members([...PAYLOAD_NAMES]);
    for (const name of PAYLOAD_NAMES)
      expect(doc).to.include(`[\`protocol.schema.json#/$defs/${name}\`](protocol.schema.json)`);
    expect(renderProtocolSchema()).to.match(/^\{\n {2}"\$schema"/);
  });

  it('states the departures from FTMS.md, the resend rule, and how a retained topic is cleared', () => {
    const doc = renderProtocolDoc();
    for (const text of [
      'totalEnergyKcal',
      'speedKmh',
      'energyKj',
      'speedMps',
      'integer milliseconds',
      'kcal × 4.184',
    ]) {
      expect(doc).to.include(text);
    }
    expect(doc).to.include('A `batchId` names one exact set of records.');
    expect(doc).to.include('are **not** resent under that `batchId`');
    expect(doc).not.to.match(/records in neither list are resent/);
    expect(doc).to.include('A zero-length payload published with the retain flag is the MQTT way to clear');
    expect(doc).to.include('a retained message was cleared');
  });

  it('documents every topic kind and every payload', () => {
    const doc = renderProtocolDoc();
    for (const kind of TOPIC_KINDS) expect(doc).to.include(`| \`${TOPIC_POLICY[kind].pattern}\` | ${kind} |`);
    for (const name of PAYLOAD_NAMES) expect(doc).to.include(`\n### ${name}\n`);
  });

  it('has a --check mode that passes on the current file', () => {
    const output = execFileSync(process.execPath, [join(import.meta.dirname, 'docs.ts'), '--check'], {
      encoding: 'utf8',
    });
    expect(output).to.include('docs/protocol.md and docs/protocol.schema.json are current');
  });
});
