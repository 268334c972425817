import { expect } from 'chai';
import { ConfigError } from '../../tools/runtime/env-config.ts';
import { loadCloudConfig } from './config.ts';

const required = { MONGO_URL: 'mongodb://127.0.0.1:27017/nxg', REDIS_URL: 'redis://127.0.0.1:6379' };

describe('cloud configuration', () => {
  it('applies the documented defaults', () => {
    const config = loadCloudConfig(required);
    expect(config.http).to.include({ host: '127.0.0.1', port: 8080, trustProxy: false, jsonLimitBytes: 262144 });
    expect(config.http.corsOrigins).to.deep.equal([]);
    expect(config.redis.commandTimeoutMs).to.equal(500);
    expect(config.log).to.deep.equal({ level: 'info', pretty: false });
    expect(config.metrics.bearerToken).to.equal(undefined);
  });

  it('parses lists, booleans and numbers', () => {
    const config = loadCloudConfig({
      ...required,
      CORS_ORIGINS: 'https://app.nxg.test, http://localhost:3000',
      TRUST_PROXY: 'yes',
      HTTP_PORT: '0',
      LOG_FORMAT: 'pretty',
    });
    expect(config.http.corsOrigins).to.deep.equal(['https://app.nxg.test', 'http://localhost:3000']);
    expect(config.http.trustProxy).to.equal(true);
    expect(config.http.port).to.equal(0);
    expect(config.log.pretty).to.equal(true);
  });

  it('requires a metrics token when the API listens beyond loopback', () => {
    expect(() => loadCloudConfig({ ...required, HTTP_HOST: '0.0.0.0' })).to.throw(
      ConfigError,
      /METRICS_TOKEN: required/,
    );
    const config = loadCloudConfig({ ...required, HTTP_HOST: '0.0.0.0', METRICS_TOKEN: 'a-long-enough-token' });
    expect(config.metrics.bearerToken).to.equal('a-long-enough-token');
  });

  it('treats an empty value as unset', () => {
    expect(loadCloudConfig({ ...required, HTTP_PORT: '' }).http.port).to.equal(8080);
  });

  it('names every wrong variable and what it expected', () => {
    let error: unknown;
    try {
      loadCloudConfig({ MONGO_URL: 'http://nope', HTTP_PORT: '70000', TRUST_PROXY: 'maybe', CORS_ORIGINS: 'evil' });
    } catch (err) {
      error = err;
    }
    expect(error).to.be.instanceOf(ConfigError);
    const problems = (error as ConfigError).problems.join('\n');
    expect(problems).to.match(/MONGO_URL: expected a mongodb or mongodb\+srv URL/);
    expect(problems).to.match(/REDIS_URL:/);
    expect(problems).to.match(/HTTP_PORT: expected ≤ 65535 \(got "70000"\)/);
    expect(problems).to.match(/TRUST_PROXY: expected true or false/);
    expect(problems).to.match(/CORS_ORIGINS: expected comma-separated origins/);
  });
});

describe('README configuration table', () => {
  it('lists every variable the cloud reads', async () => {
    const { readFile } = await import('node:fs/promises');
    const { cloudEnvNames } = await import('./config.ts');
    const readme = await readFile(new URL('../../README.md', import.meta.url), 'utf8');
    const missing = cloudEnvNames.filter((name) => !new RegExp(`^\\|\\s*\`${name}\`\\s*\\|`, 'm').test(readme));
    expect(missing, `add these to README's configuration table: ${missing.join(', ')}`).to.deep.equal([]);
  });
});

describe('configuration errors and secrets', () => {
  it('never echoes a secret variable or the credentials in a URL', () => {
    let message = '';
    try {
      loadCloudConfig({
        MONGO_URL: 'mongo://admin:S3cretPass@db:27017/nxg',
        REDIS_URL: 'redis://r:6379',
        METRICS_TOKEN: 'short-secret',
      });
    } catch (err) {
      message = (err as Error).message;
    }
    expect(message).to.match(/MONGO_URL: .*\(got "mongo:\/\/\*\*\*@db:27017\/nxg"\)/);
    expect(message).to.match(/METRICS_TOKEN: .*\(value hidden\)/);
    expect(message).to.not.include('S3cretPass');
    expect(message).to.not.include('short-secret');
  });
});

describe('docker-compose.yml', () => {
  it('sets only variables the cloud reads, and everything it requires, for the cloud service', async () => {
    const { readFile } = await import('node:fs/promises');
    const { cloudEnvNames, loadCloudConfig: load } = await import('./config.ts');
    const compose = await readFile(new URL('../../docker-compose.yml', import.meta.url), 'utf8');
    // The cloud service's `environment:` block: indented `NAME: value` lines until the next key at its level.
    const block = /\n {2}cloud:\n[\s\S]*?\n {4}environment:\n((?: {6}.*\n| *#.*\n)+)/.exec(compose)?.[1] ?? '';
    const names = [...block.matchAll(/^ {6}([A-Z0-9_]+):/gm)].map((m) => m[1]!);
    expect(names, 'environment block of the cloud service').to.include('MONGO_URL');
    expect(names.filter((name) => !cloudEnvNames.includes(name))).to.deep.equal([]);
    // With compose's values (a token standing in for ${METRICS_TOKEN:?}), the configuration loads.
    const env = Object.fromEntries(
      [...block.matchAll(/^ {6}([A-Z0-9_]+): (.*)$/gm)].map((m) => [m[1]!, m[2]!.replace(/^'|'$/g, '')]),
    );
    env.METRICS_TOKEN = 'a-metrics-token-for-the-test';
    for (const [key, value] of Object.entries(env)) if (value.startsWith('${')) delete env[key];
    expect(() => load(env)).to.not.throw();
  });
});
