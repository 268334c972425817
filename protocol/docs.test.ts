import { expect } from 'chai';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { PROTOCOL_DOC_PATH, renderProtocolDoc } from './docs.ts';
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

  it('renders deterministically', () => {
    expect(renderProtocolDoc()).to.equal(renderProtocolDoc());
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
    expect(output).to.include('docs/protocol.md is current');
  });
});
