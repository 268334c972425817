import { expect } from 'chai';
import * as v from 'valibot';
import { ConfigError, parseEnv } from '../../../tools/runtime/env-config.ts';
import { loadCloudConfig } from '../config.ts';
import { MAX_BATCH_BYTES, asBranchId, asGatewayId, topics } from '../../../protocol/index.ts';
import { MIN_MAX_PACKET_BYTES, brokerConfig, brokerConfigProblems, brokerEnv } from './config.ts';

const parse = (env: Record<string, string>) => parseEnv(v.object(brokerEnv), env);

describe('broker configuration (MQTT_*)', () => {
  it('defaults to the documented ports, limits and a data dir under ./data', () => {
    const c = brokerConfig(parse({}));
    expect(c.tcp).to.deep.equal({ host: '127.0.0.1', port: 1883 });
    expect(c.tls).to.deep.include({ host: '127.0.0.1', port: 8883, certFile: undefined });
    expect(c.dataDir).to.match(/\/data\/mqtt$/);
    expect(c).to.deep.include({
      maxPacketBytes: 262_144,
      wsMaxPayloadBytes: 65_536,
      connectTimeoutMs: 5000,
      drainTimeoutMs: 10_000,
    });
  });

  it('refuses a certificate without its key, a CONNECT bound above the packet bound, and bad values', () => {
    expect(brokerConfigProblems(parse({ MQTT_TLS_CERT_FILE: '/x.crt' }))).to.have.length(1);
    expect(brokerConfigProblems(parse({ MQTT_TLS_CERT_FILE: '/x.crt', MQTT_TLS_KEY_FILE: '/x.key' }))).to.deep.equal(
      [],
    );
    expect(
      brokerConfigProblems(parse({ MQTT_MAX_PACKET_BYTES: '300000', MQTT_MAX_CONNECT_BYTES: '400000' })),
    ).to.deep.equal(['MQTT_MAX_CONNECT_BYTES: expected ≤ MQTT_MAX_PACKET_BYTES']);
    const base = { MONGO_URL: 'mongodb://127.0.0.1:1/x', REDIS_URL: 'redis://127.0.0.1:1' };
    expect(() => loadCloudConfig({ ...base, MQTT_TLS_KEY_FILE: '/x.key' })).to.throw(ConfigError, /MQTT_TLS_CERT_FILE/);
    expect(() => loadCloudConfig({ ...base, MQTT_TLS_HOST: 'example.com' })).to.throw(ConfigError, /MQTT_TLS_HOST/);
    expect(() => loadCloudConfig({ ...base, MQTT_TCP_PORT: '70000' })).to.throw(ConfigError, /MQTT_TCP_PORT/);
    expect(loadCloudConfig({ ...base, MQTT_TLS_PORT: '0' }).mqtt.tls.port).to.equal(0);
  });

  it('refuses a packet bound below a gateway’s fullest uplink batch (the frame guard would cut it forever)', () => {
    const base = { MONGO_URL: 'mongodb://127.0.0.1:1/x', REDIS_URL: 'redis://127.0.0.1:1' };
    expect(MIN_MAX_PACKET_BYTES).to.be.above(MAX_BATCH_BYTES);
    expect(() => loadCloudConfig({ ...base, MQTT_MAX_PACKET_BYTES: String(64 * 1024) })).to.throw(
      ConfigError,
      /MQTT_MAX_PACKET_BYTES/,
    );
    expect(() => loadCloudConfig({ ...base, MQTT_MAX_PACKET_BYTES: String(MAX_BATCH_BYTES) })).to.throw(
      ConfigError,
      /MQTT_MAX_PACKET_BYTES/,
    );
    const c = loadCloudConfig({ ...base, MQTT_MAX_PACKET_BYTES: String(MIN_MAX_PACKET_BYTES) });
    expect(c.mqtt.maxPacketBytes).to.equal(MIN_MAX_PACKET_BYTES);
    // The fullest batch on its longest topic fits in that bound, header and packet id included.
    const topic = topics.gatewayUplink(asBranchId('b'.repeat(63)), asGatewayId('g'.repeat(63)), 'telemetry');
    const remaining = 2 + Buffer.byteLength(topic) + 2 + MAX_BATCH_BYTES; // topic length, topic, packet id, payload
    const lengthBytes = remaining < 128 ? 1 : remaining < 16_384 ? 2 : remaining < 2_097_152 ? 3 : 4;
    expect(1 + lengthBytes + remaining).to.be.at.most(MIN_MAX_PACKET_BYTES);
  });
});
