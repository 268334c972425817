/**
 * Branches, equipment, gateways and access, assembled once by startCloud: the services other domains use
 * (`branches.get`, `access.resolver`), the routes, and the gateway synchronisation (signed configuration and
 * allow-list pushes, births). Stopped with `stop()` before the broker closes.
 */
import type { KeyObject } from 'node:crypto';
import type { Aedes } from 'aedes';
import type { Redis } from 'ioredis';
import type { Middleware } from 'koa';
import type { Connection } from 'mongoose';
import type { Clock } from '../../../tools/runtime/clock.ts';
import type { Logger } from '../../../tools/runtime/logger.ts';
import { createAccess, type Access } from '../access/index.ts';
import type { AccessConfig } from '../access/config.ts';
import type { AuditLog } from '../audit/index.ts';
import type { RequireUserOptions } from '../auth/guard.ts';
import type { PublicJwk } from '../auth/keyring.ts';
import type { IdentityStore } from '../broker/identities.ts';
import { createEquipment, type Equipment } from '../equipment/service.ts';
import { equipmentRoutes } from '../equipment/routes.ts';
import type { GatewaysConfig } from '../gateways/config.ts';
import { gatewayRoutes } from '../gateways/routes.ts';
import { createGatewayStore, type GatewayDoc, type GatewayStore } from '../gateways/service.ts';
import { startGatewaySync, verificationKeys, type GatewaySync } from '../gateways/sync.ts';
import type { RouteSpec } from '../http/route.ts';
import type { AppState } from '../http/state.ts';
import { createRedisRateLimiter } from '../ratelimit/limiter.ts';
import type { DeletionHook, ExportSection } from '../privacy/registry.ts';
import type { MembershipService } from '../users/memberships.ts';
import { membershipRoutes } from './membership-routes.ts';
import { branchRoutes } from './routes.ts';
import { createBranches, type BranchesService } from './service.ts';

export interface BranchDomainsDeps {
  mongo: Connection;
  redis: Redis;
  aedes: Aedes;
  identities: IdentityStore;
  auth: {
    requireUser(options?: RequireUserOptions): Middleware<AppState>;
    keyring: {
      readonly signing: { kid: string; privateKey: KeyObject };
      verifyKey(kid: string): KeyObject | undefined;
      jwks(): { keys: PublicJwk[] };
    };
    accounts: { findById(id: string): Promise<{ status: string; role: string } | undefined> };
    audit: AuditLog;
  };
  users: {
    services: {
      /** Only active memberships count (requests and ended ones grant nothing). */
      memberships: MembershipService;
    };
    privacy: {
      registerDeletionHook(name: string, hook: DeletionHook): void;
      registerExportSection(name: string, section: ExportSection): void;
    };
  };
  clock: Clock;
  log: Logger;
  config: { access: AccessConfig; gateways: GatewaysConfig };
}

export interface BranchDomains {
  branches: BranchesService;
  equipment: Equipment;
  gateways: { store: GatewayStore; sync: GatewaySync };
  access: Access;
  routes: RouteSpec[];
  stop(): Promise<void>;
}

export async function startBranchDomains(deps: BranchDomainsDeps): Promise<BranchDomains> {
  const { mongo, redis, aedes, identities, auth, users, clock, log, config } = deps;
  const memberships = users.services.memberships;
  const audit = auth.audit;
  const branches = await createBranches({ mongo, clock, audit });
  const store = await createGatewayStore({ mongo, clock, identities });
  // The sync needs equipment and access, which announce changes to it: bound once it exists.
  const late: { sync?: GatewaySync } = {};
  const equipment = await createEquipment({
    mongo,
    clock,
    identities,
    async gatewayOf(branch, gateway) {
      const doc = await store.get(gateway);
      return doc && doc.branch === branch ? { enrolled: doc.enrolledAt !== null } : undefined;
    },
    onConfigChange: (gateway) => late.sync?.configChanged(gateway),
  });
  const access = await createAccess({
    mongo,
    redis,
    clock,
    log: log.child({ module: 'access' }),
    config: config.access,
    keyring: auth.keyring,
    memberships,
    accounts: auth.accounts,
    audit,
    branches,
    requireUser: (o) => auth.requireUser(o),
    onAllowListChange: (b) => late.sync?.allowListChanged(b),
  });
  const sync = await startGatewaySync({
    aedes,
    store,
    equipment,
    allowLists: access.allowLists,
    keyring: auth.keyring,
    clock,
    log: log.child({ module: 'gateway-sync' }),
    allowListMaxAgeS: config.access.allowListMaxAgeS,
    allowListDebounceMs: config.access.allowListDebounceMs,
    sweepS: config.access.allowListSweepS,
  });
  late.sync = sync;

  users.privacy.registerExportSection('accessCards', (userId) => access.cards.list(userId));
  users.privacy.registerDeletionHook('accessCards', async (userId) => {
    const theirBranches = (await memberships.list(userId)).map((m) => m.branchId);
    await access.cards.deleteAllOf(userId);
    sync.allowListChanged(theirBranches); // memberships already gone are caught by the sweep
  });

  const fleetEntry = async (doc: GatewayDoc) => {
    const state = doc.state;
    const current = await access.allowLists.current(doc.branch);
    const nowMs = clock.nowMs();
    const lanes = state?.queue
      ? { access: state.queue.access, records: state.queue.records, telemetry: state.queue.telemetry }
      : undefined;
    const oldestAgeS = lanes
      ? Math.max(
          -1,
          ...Object.values(lanes).map((l) => (l.depth > 0 && l.oldestAgeS !== undefined ? l.oldestAgeS : -1)),
        )
      : -1;
    const holdsCurrent = current !== undefined && state?.allowListRevision === current.revision;
    return {
      id: doc._id,
      branch: doc.branch,
      name: doc.name,
      enrolled: doc.enrolledAt !== null,
      enrolledAt: doc.enrolledAt ? doc.enrolledAt.toISOString() : null,
      hostname: doc.hostname,
      online: state?.online ?? false,
      version: state?.version ?? doc.softwareVersion,
      lastSeenAt: state?.online ? new Date(nowMs).toISOString() : doc.lastSeenAt ? doc.lastSeenAt.toISOString() : null,
      queue:
        state?.queue && lanes
          ? {
              depth: lanes.access.depth + lanes.records.depth + lanes.telemetry.depth,
              full: state.queue.full,
              lanes,
              oldestBufferedAt: oldestAgeS >= 0 ? new Date(state.ts - oldestAgeS * 1000).toISOString() : null,
            }
          : null,
      offlineHoursLeft: holdsCurrent
        ? Math.max(
            0,
            Math.round(((current.issuedAtMs + config.access.allowListMaxAgeS * 1000 - nowMs) / 3_600_000) * 10) / 10,
          )
        : null,
      machinesConnected: state?.machinesConnected ?? null,
      configRevision: { current: doc.config.revision, inUse: state?.configRevision ?? null },
      allowListRevision: { current: current?.revision ?? null, inUse: state?.allowListRevision ?? null },
    };
  };

  const requireUser = (options?: RequireUserOptions) => auth.requireUser(options);
  const routes = [
    ...branchRoutes({
      requireUser,
      branches,
      memberships,
      accounts: auth.accounts,
      // Gateways created here, and those provisioned with the hub CLI that have not been seen yet (their identity
      // would otherwise outlive the branch, and adopt it again at their first birth).
      hasGateways: async (branchId) =>
        (await store.ofBranch(branchId)).length > 0 ||
        (await identities.list({ role: 'gateway' })).some((g) => !g.disabled && g.branches.includes(branchId)),
    }),
    ...membershipRoutes({
      requireUser,
      branches,
      memberships,
      accounts: auth.accounts,
      audit,
      clock,
      onMembersChanged: (branchId) => sync.allowListChanged([branchId]),
    }),
    ...equipmentRoutes({ requireUser, branches, equipment, audit }),
    ...gatewayRoutes({
      requireUser,
      branches,
      store,
      audit,
      enrolLimiter: createRedisRateLimiter({
        redis,
        name: 'gateway-enrol',
        points: config.gateways.enrolmentAttempts,
        windowS: 900,
      }),
      tokenTtlS: config.gateways.enrolmentTokenTtlS,
      fleetEntry,
      enrolmentExtras: () => ({
        configKeys: verificationKeys(auth.keyring),
        ...(config.gateways.mqttUrl ? { url: config.gateways.mqttUrl } : {}),
      }),
      retireEquipment: (branch, gateway) => equipment.retireGatewayEquipment(branch, gateway),
      onEnrolled: (gateway) => sync.configChanged(gateway),
    }),
    ...access.routes,
  ];

  return {
    branches,
    equipment,
    gateways: { store, sync },
    access,
    routes,
    stop: () => sync.stop(),
  };
}
