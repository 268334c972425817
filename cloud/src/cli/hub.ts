/**
 * `npm run hub -- …`: provisioning of MQTT identities in the cloud's MongoDB (MONGO_URL, parsed by the cloud's
 * own configuration rules).
 *
 *   npm run hub -- gateway add gw-demo-1 --branch demo
 *   npm run hub -- machine add tm-01 --branch demo --gateway gw-demo-1
 *   npm run hub -- gateway machines gw-demo-1 --out data/gw-demo-1.machines.json
 *   npm run hub -- observer add ops --branch demo,other
 *   npm run hub -- list [--role gateway] [--json]
 *   REDIS_URL=… npm run hub -- revoke tm-01   # REDIS_URL: every cloud node's identity cache drops it at once
 *
 * A new secret is printed once, on stdout, and never logged; only its SHA-256 hash is stored.
 */
import { writeFile } from 'node:fs/promises';
import { Command, CommanderError, Option } from '@commander-js/extra-typings';
import Table from 'cli-table3';
import { Redis } from 'ioredis';
import type { Connection } from 'mongoose';
import { pino } from 'pino';
import { ConfigError } from '../../../tools/runtime/env-config.ts';
import { IDENTITY_ROLES } from '../../../tools/mqtt/identity.ts';
import { IdentityExists, createIdentityStore, type IdentityStore } from '../broker/identities.ts';
import { publishIdentityInvalidation } from '../broker/identity-cache.ts';
import {
  ProvisioningError,
  addGateway,
  addMachine,
  addObserver,
  gatewayMachines,
  listIdentities,
  revokeIdentity,
  summarize,
  type Issued,
} from '../broker/provisioning.ts';
import { loadMongoConfig, loadRedisConfig } from '../config.ts';
import { connectMongo } from '../db/mongo.ts';

export interface HubIo {
  env: Readonly<Record<string, string | undefined>>;
  stdout: (text: string) => void;
  stderr: (text: string) => void;
}

/** Exit codes: 0 done, 1 refused (bad id, exists, unknown), 2 usage, 78 configuration (EX_CONFIG). */
export async function runHub(argv: readonly string[], io: HubIo): Promise<number> {
  let connection: Connection | undefined;
  const withStore = async <T>(work: (store: IdentityStore) => Promise<T>): Promise<T> => {
    const mongo = loadMongoConfig(io.env);
    // The driver's own errors only, on stderr: stdout is for results and secrets.
    const log = pino({ level: 'error' }, pino.destination(2));
    connection = await connectMongo({ ...mongo, log });
    return work(createIdentityStore(connection));
  };
  const printIssued = (issued: Issued, json: boolean) => {
    const { identity, secret } = issued;
    if (json) {
      io.stdout(`${JSON.stringify({ ...summarize(identity), secret })}\n`);
      return;
    }
    const where = identity.gateway ? ` on gateway ${identity.gateway}` : '';
    io.stdout(
      `${identity.role} ${identity.id} created (branch ${identity.branches.join(',')}${where}).\n` +
        `secret (shown once; store it now): ${secret}\n`,
    );
  };
  const splitList = (value: string) =>
    value
      .split(',')
      .map((s) => s.trim())
      .filter((s) => s.length > 0);

  const program = new Command('hub')
    .description('Provision MQTT identities (gateways, machines, observers) of NXG Connect')
    .exitOverride()
    .configureOutput({ writeOut: io.stdout, writeErr: io.stderr })
    .showHelpAfterError();

  const gateway = program.command('gateway').description('gateways (one per branch)');
  gateway
    .command('add')
    .argument('<id>', 'gateway id (its MQTT username and client id)')
    .requiredOption('--branch <branch>', 'the branch it serves')
    .option('--json', 'print JSON')
    .action(async (id, opts) => {
      printIssued(await withStore((store) => addGateway({ store }, { id, branch: opts.branch })), !!opts.json);
    });
  gateway
    .command('machines')
    .argument('<id>', 'gateway id')
    .option('--out <file>', 'write the JSON to this file instead of stdout')
    .description("the gateway's machines with their secrets' hashes, as the gateway's machines file")
    .action(async (id, opts) => {
      const file = await withStore((store) => gatewayMachines({ store }, id));
      const text = `${JSON.stringify(file, null, 2)}\n`;
      if (opts.out) {
        await writeFile(opts.out, text, { mode: 0o640 });
        io.stdout(`${file.machines.length} machine(s) of ${id} written to ${opts.out}\n`);
      } else {
        io.stdout(text);
      }
    });

  program
    .command('observer')
    .description('read-only observers (operators, mosquitto_sub, dashboards)')
    .command('add')
    .argument('<id>', 'observer id (username; client id: the id or id.<suffix>)')
    .requiredOption('--branch <branches>', 'comma-separated branches it may read')
    .option('--json', 'print JSON')
    .action(async (id, opts) => {
      const branches = splitList(opts.branch);
      printIssued(await withStore((store) => addObserver({ store }, { id, branches })), !!opts.json);
    });

  program
    .command('machine')
    .description("machines (they connect to their gateway's broker)")
    .command('add')
    .argument('<id>', 'machine id (its MQTT username and client id on the gateway)')
    .requiredOption('--branch <branch>', 'its branch')
    .requiredOption('--gateway <gateway>', 'the gateway it connects to')
    .option('--json', 'print JSON')
    .action(async (id, opts) => {
      const issued = await withStore((store) =>
        addMachine({ store }, { id, branch: opts.branch, gateway: opts.gateway }),
      );
      printIssued(issued, !!opts.json);
    });

  program
    .command('list')
    .description('every identity (never secrets or hashes)')
    .addOption(new Option('--role <role>', 'only this role').choices(IDENTITY_ROLES))
    .option('--json', 'print JSON')
    .action(async (opts) => {
      const list = await withStore((store) => listIdentities({ store }, opts.role ? { role: opts.role } : {}));
      if (opts.json) {
        io.stdout(`${JSON.stringify(list, null, 2)}\n`);
        return;
      }
      const table = new Table({
        head: ['id', 'role', 'branches', 'gateway', 'created', 'state'],
        style: { head: [], border: [] },
      });
      for (const i of list) {
        table.push([
          i.id,
          i.role,
          i.branches.join(','),
          i.gateway ?? '',
          i.createdAt,
          i.disabled ? 'revoked' : 'active',
        ]);
      }
      io.stdout(`${table.toString()}\n`);
    });

  program
    .command('revoke')
    .argument('<id>', 'identity id')
    .description(
      'disable an identity; with REDIS_URL the cloud nodes refuse it at once, connected clients are dropped within MQTT_IDENTITY_RECHECK_MS',
    )
    .action(async (id) => {
      await withStore((store) => revokeIdentity({ store }, id));
      io.stdout(`${id} revoked\n`);
      await tellCloudNodes(id);
    });

  /**
   * The cloud nodes cache identities (broker/identity-cache.ts): with REDIS_URL (and the cloud's REDIS_KEY_PREFIX)
   * they drop this one at once and refuse its next CONNECT; without, they notice within MQTT_IDENTITY_CACHE_TTL_MS.
   */
  async function tellCloudNodes(id: string): Promise<void> {
    const later = 'cloud nodes refuse it within MQTT_IDENTITY_CACHE_TTL_MS';
    if (!io.env.REDIS_URL) {
      io.stderr(`hub: REDIS_URL is not set: ${later}\n`);
      return;
    }
    let redis: Redis | undefined;
    try {
      const config = loadRedisConfig(io.env);
      redis = new Redis(config.url, {
        lazyConnect: true,
        enableOfflineQueue: false,
        maxRetriesPerRequest: 0,
        retryStrategy: () => null,
        connectTimeout: 5000,
        commandTimeout: Math.max(config.commandTimeoutMs, 2000),
      });
      redis.on('error', () => undefined);
      await redis.connect();
      await publishIdentityInvalidation(redis, config.keyPrefix, id);
    } catch (err) {
      io.stderr(`hub: could not tell the cloud nodes over Redis (${(err as Error).message}): ${later}\n`);
    } finally {
      redis?.disconnect();
    }
  }

  try {
    await program.parseAsync([...argv], { from: 'user' });
    return 0;
  } catch (err) {
    if (err instanceof CommanderError) return err.exitCode === 0 ? 0 : 2;
    if (err instanceof ConfigError) {
      io.stderr(`hub: ${err.message}\n`);
      return 78;
    }
    if (err instanceof ProvisioningError || err instanceof IdentityExists) {
      io.stderr(`hub: ${err.message}\n`);
      return 1;
    }
    io.stderr(`hub: ${err instanceof Error ? err.message : String(err)}\n`);
    return 1;
  } finally {
    await connection?.close();
  }
}

if (import.meta.main) {
  const code = await runHub(process.argv.slice(2), {
    env: process.env,
    stdout: (text) => process.stdout.write(text),
    stderr: (text) => process.stderr.write(text),
  });
  process.exitCode = code;
}
