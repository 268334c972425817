import { expect } from 'chai';
import { SHARED_SCHEMAS, protocolJsonSchemaDocument, protocolJsonSchemas } from './json-schema.ts';
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
    expect(rower?.properties.strokeRateSpm).to.deep.include({ type: 'number', minimum: 0, maximum: 127.5 });
    expect(rower?.properties.strokeRateSpm?.description).to.match(/strokes\/min$/);
    expect(rower?.properties.heartRateBpm).to.deep.include({ type: 'integer', minimum: 0, maximum: 255 });
    expect(rower?.properties.msgId).to.deep.include({
      type: 'string',
      maxLength: 64,
      pattern: '^[A-Za-z0-9_-]{16,64}$',
    });
    expect(rower?.properties.ts).to.deep.include({ type: 'integer', minimum: Date.UTC(2020, 0, 1) });
  });

  it('puts every definition under $defs of one document, so its references resolve inside it', () => {
    const document = protocolJsonSchemaDocument('test');
    expect(document.$defs).to.deep.equal(schemas);
    const refs = new Set<string>();
    collectRefs(document, refs);
    for (const ref of refs) expect(document.$defs).to.have.property(ref.slice('#/$defs/'.length));
    const batch = document.$defs.UplinkBatch as { properties: Record<string, Record<string, unknown>> };
    expect(batch.properties.sentAt).to.deep.include({ type: 'integer', minimum: 0 });
    // No 2020 floor and no 2100 ceiling: only the safe-integer range.
    expect(batch.properties.sentAt).to.deep.include({ maximum: Number.MAX_SAFE_INTEGER });
  });
});
