import { expect } from 'chai';
import { SHARED_SCHEMAS, protocolJsonSchemas } from './json-schema.ts';
import { PAYLOAD_NAMES } from './payloads.ts';

function collectRefs(value: unknown, refs: Set<string>): void {
  if (Array.isArray(value)) for (const item of value) collectRefs(item, refs);
  else if (value !== null && typeof value === 'object') {
    for (const [key, item] of Object.entries(value)) {
      if (key === '$ref' && typeof item === 'string') refs.add(item);
      else collectRefs(item, refs);
    }
  }
}

describe('protocol/json-schema', () => {
  const schemas = protocolJsonSchemas();

  it('has a definition for every payload and shared schema', () => {
    expect(Object.keys(schemas)).to.have.members([...PAYLOAD_NAMES, ...Object.keys(SHARED_SCHEMAS)]);
  });

  it('only refers to definitions that exist', () => {
    const refs = new Set<string>();
    collectRefs(schemas, refs);
    expect(refs.size).to.be.greaterThan(0);
    for (const ref of refs) {
      expect(ref).to.match(/^#\/\$defs\//);
      expect(schemas).to.have.property(ref.slice('#/$defs/'.length));
    }
  });

  it('carries bounds, patterns and units into the JSON Schema', () => {
    const rower = (
      schemas.Telemetry as { oneOf: { properties: Record<string, Record<string, unknown>> }[] }
    ).oneOf.find((option) => (option.properties.type as { const?: string }).const === 'rower');
    expect(rower?.properties.strokeRateSpm).to.deep.include({ type: 'number', minimum: 0, maximum: 120 });
    expect(rower?.properties.strokeRateSpm?.description).to.match(/strokes\/min$/);
    expect(rower?.properties.msgId).to.deep.include({ type: 'string', maxLength: 64 });
    expect(rower?.properties.ts).to.deep.include({ type: 'integer', minimum: Date.UTC(2020, 0, 1) });
  });
});
