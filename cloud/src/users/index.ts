/**
 * The members domain, assembled: models, services, GDPR export sections, and the routes under /api/users and
 * /api/admin/users. cloud.ts calls `createUsers` once with the process's connections and auth.
 */
import type { Redis } from 'ioredis';
import type { Connection } from 'mongoose';
import type { Clock } from '../../../tools/runtime/clock.ts';
import type { Logger } from '../../../tools/runtime/logger.ts';
import { accountModels } from '../accounts/model.ts';
import { createAuditLog, type AuditLog } from '../audit/index.ts';
import type { FieldCipher } from '../crypto/field-cipher.ts';
import type { RouteSpec } from '../http/route.ts';
import { createPrivacy, createPrivacyRegistry, type Privacy, type PrivacyRegistry } from '../privacy/index.ts';
import { adminUserRoutes } from './admin-routes.ts';
import type { UsersAuth, UsersContext } from './context.ts';
import { userModels } from './models.ts';
import { userRoutes } from './routes.ts';
import { createUsersServices, type UsersServices } from './services.ts';

export { SEALED_COLLECTIONS } from './models.ts';
export type { UsersAuth } from './context.ts';

export interface UsersDeps {
  mongo: Connection;
  redis: Redis;
  redisKeyPrefix: string;
  auth: UsersAuth;
  cipher: FieldCipher;
  clock: Clock;
  log: Logger;
  /** Defaults to createAuditLog(mongo). */
  audit?: AuditLog;
}

export interface Users {
  routes: RouteSpec[];
  services: UsersServices;
  privacy: Privacy & Pick<PrivacyRegistry, 'registerDeletionHook' | 'registerExportSection'>;
}

export async function createUsers(deps: UsersDeps): Promise<Users> {
  const { mongo, redis, redisKeyPrefix, auth, cipher, clock, log } = deps;
  const audit = deps.audit ?? createAuditLog(mongo);
  const [models, { Account, AccountToken }] = await Promise.all([userModels(mongo), accountModels(mongo)]);
  const context: UsersContext = { models, Account, cipher, audit, clock, log };
  const services = createUsersServices(context);
  const registry = createPrivacyRegistry();

  // The export, section by section: everything stored about the member, health values decrypted.
  registry.registerExportSection('account', async (userId) => {
    const account = await Account.findById(userId, { passwordHash: 0 }).lean();
    const tokens = await AccountToken.find({ userId }, { _id: 0, purpose: 1, createdAt: 1, expiresAt: 1 }).lean();
    return account ? { ...account, _id: account._id.toHexString(), pendingEmailTokens: tokens } : null;
  });
  registry.registerExportSection('profile', async (userId) => {
    const {
      email: _e,
      role: _r,
      status: _s,
      emailVerified: _v,
      ...profile
    } = await services.profiles
      .get(userId)
      .catch(() => ({ email: null, role: null, status: null, emailVerified: null }));
    return profile;
  });
  registry.registerExportSection('preferences', (userId) => services.settings.preferences(userId));
  registry.registerExportSection('privacy', (userId) => services.settings.privacyOf(userId));
  registry.registerExportSection('bodyMetrics', (userId) => services.bodyMetrics.exportAll(userId));
  registry.registerExportSection('activity', async (userId) =>
    models.Activity.find({ userId }, { userId: 0 }).sort({ at: 1 }).lean(),
  );
  registry.registerExportSection('devices', async (userId) =>
    models.Device.find({ userId }, { userId: 0 }).sort({ createdAt: 1 }).lean(),
  );
  registry.registerExportSection('feedback', async (userId) =>
    models.Feedback.find({ userId }, { userId: 0 }).sort({ createdAt: 1 }).lean(),
  );
  registry.registerExportSection('branchMemberships', (userId) => services.memberships.listAll(userId));
  registry.registerExportSection('loginSessions', (userId) => auth.sessions.list(userId));

  // Audit entries are the audit module's model; its collection is pseudonymised in place on deletion.
  const auditCollection = mongo.models.AuditEntry?.collection.collectionName ?? 'audit_log';
  const privacy = createPrivacy({
    mongo,
    redis,
    redisKeyPrefix,
    cipher,
    audit,
    auditCollection,
    auth,
    registry,
    clock,
    log: log.child({ module: 'privacy' }),
  });

  return {
    routes: [...userRoutes({ auth, services, privacy, context }), ...adminUserRoutes({ auth, admin: services.admin })],
    services,
    privacy: {
      ...privacy,
      registerDeletionHook: (name, hook) => registry.registerDeletionHook(name, hook),
      registerExportSection: (name, section) => registry.registerExportSection(name, section),
    },
  };
}
