/**
 * Apps on the cloud broker: the `AppTokenAuthenticator` (auth.ts) built from authentication and branch
 * memberships, and the watcher that closes an app's connection once its token no longer holds.
 *
 * At CONNECT, `auth.verifyAccessToken` checks everything the HTTP guard checks (signature and claims, the revocation
 * list, the login session, an account that exists and is not suspended); the member's branches (verified email
 * only: joining one requires it) become the `live/…` grants, and for staff also the branches they are assigned to (the
 * branches service's staff assignments, as the REST routes' `canManage`). The token is tied to the connection's client
 * id.
 *
 * MQTT 3.1.1 cannot re-authenticate, so the broker closes the connection at `exp` (broker.ts) and this module closes
 * it when the token stops being valid earlier: logout, "revoke all sessions", a refresh-token reuse that revoked the
 * family, suspension, GDPR deletion — and when the member has left a branch the connection still reads.
 *
 * How revocation reaches the connection: a periodic recheck of the connected apps (every APP_RECHECK_MS), not a
 * pub/sub channel the auth flows publish on. Why:
 * - It reads the same state the HTTP guard reads (Redis revocation list and sessions, MongoDB accounts and
 *   memberships), so every way of ending a session is covered, including those that publish nothing — a suspension
 *   is a MongoDB update by the users domain, a reused refresh token revokes its family inside a rotation, and a
 *   future flow will not have to remember to publish.
 * - It works across several cloud nodes with no extra channel, and nothing is lost: a pub/sub message missed while
 *   a node's subscriber reconnects would leave a revoked connection open until `exp`; a recheck just runs again.
 * - Its cost is bounded and independent of the event rate: per pass, one pipelined Redis check per distinct token
 *   and two MongoDB `$in` queries per APP_RECHECK_BATCH connected users, and nothing at all while no app is
 *   connected. With the 2 s period a revoked connection is closed within ~2 s plus one pass (RELIABILITY (c)3, P1:
 *   ≤ 5 s).
 * If Redis or MongoDB cannot be read, connections are kept and the next pass tries again (as the identity recheck
 * in broker.ts does); expiry needs no store and still applies.
 */
import type { Aedes, Client } from 'aedes';
import { Types, trusted, type Connection } from 'mongoose';
import { isTopicLevelId } from '../../../protocol/ids.ts';
import type { BranchId, UserId } from '../../../protocol/ids.ts';
import type { Clock } from '../../../tools/runtime/clock.ts';
import type { Logger } from '../../../tools/runtime/logger.ts';
import { accountModels, type AccountDoc } from '../accounts/model.ts';
import type { AuthService } from '../auth/index.ts';
import { activeMembershipFilter, type MembershipService } from '../users/memberships.ts';
import { userModels } from '../users/models.ts';
import { APP_CLIENT_ID_PATTERN, type AppTokenAuthenticator } from './auth.ts';
import { sessionOf } from './broker.ts';

/** How often connected apps are checked against revocation, sessions, accounts and memberships. */
export const APP_RECHECK_MS = 2000;
/** Users per MongoDB query of a pass, so one query stays small however many apps are connected. */
export const APP_RECHECK_BATCH = 500;
/**
 * A binding of a client id that is not connected is kept this long: its CONNECT may still be in authentication
 * (the broker registers the client only after the authenticator answered).
 */
const UNCONNECTED_BINDING_MS = 60_000;

export interface AppTokensOptions {
  auth: Pick<AuthService, 'verifyAccessToken'> & { sessions: Pick<AuthService['sessions'], 'check'> };
  memberships: Pick<MembershipService, 'list'>;
  /**
   * The branches a staff account is assigned to (branches service `staff.branchesOf`), read at CONNECT and by the
   * recheck for staff connections; without it staff get their memberships only.
   */
  staffBranches?: (userId: string) => Promise<readonly string[]>;
  /** The cloud's connection: accounts and memberships are read in batches from it by the recheck. */
  mongo: Connection;
  aedes: Aedes;
  clock: Clock;
  log: Logger;
  /** Default APP_RECHECK_MS. */
  recheckMs?: number;
}

export type AppDisconnectReason =
  | 'unbound'
  | 'expired'
  | 'token-revoked'
  | 'session-ended'
  | 'account-deleted'
  | 'account-suspended'
  | 'membership-ended';

export interface AppTokens {
  /** Pass it to startCloudBroker as `appTokens`. */
  authenticate: AppTokenAuthenticator;
  /** One pass of the check; resolves with the connections it closed (also run every `recheckMs`). */
  recheck(): Promise<{ clientId: string; reason: AppDisconnectReason }[]>;
  /** Stops the periodic check (also done when the broker closes). */
  stop(): void;
}

/** What the token presented by a client id says, kept while that client may be connected. */
interface Binding {
  user: string;
  tokenId: string;
  sessionId: string;
  expiresAtMs: number;
  /** A staff account's token: its assigned branches count as held by the recheck. */
  staff: boolean;
  /** performance.now() when bound: bookkeeping only, not the business clock. */
  boundAt: number;
}

interface ConnectedApp {
  client: Client;
  user: string;
  branches: readonly string[];
  binding: Binding | undefined;
}

export async function createAppTokens(options: AppTokensOptions): Promise<AppTokens> {
  const { auth, memberships, mongo, aedes, clock, log, staffBranches } = options;
  const recheckMs = options.recheckMs ?? APP_RECHECK_MS;
  const [{ Account }, { Membership }] = await Promise.all([accountModels(mongo), userModels(mongo)]);
  const bindings = new Map<string, Binding>();
  let warnedAt = -Infinity;

  const authenticate: AppTokenAuthenticator = async (token, { clientId }) => {
    // Rejects only when Redis or MongoDB is unreachable: the broker answers CONNACK 3 then.
    const access = await auth.verifyAccessToken(token);
    if (!access) return undefined;
    const staff = access.role === 'staff' && staffBranches !== undefined;
    const [held, assigned] = await Promise.all([
      access.emailVerified ? memberships.list(access.userId) : [],
      staff ? staffBranches(access.userId) : [],
    ]);
    const branches = [...new Set([...held.map((m) => m.branchId), ...assigned])].filter((b) => isTopicLevelId(b));
    // A client id of another user is refused by the broker (auth.ts); only a bound one is remembered.
    if (APP_CLIENT_ID_PATTERN.exec(clientId)?.[1] === access.userId) {
      bindings.set(clientId, {
        user: access.userId,
        tokenId: access.tokenId,
        sessionId: access.sessionId,
        expiresAtMs: access.expiresAtMs,
        staff,
        boundAt: performance.now(),
      });
    }
    return { user: access.userId as UserId, branches: branches as BranchId[], expiresAtMs: access.expiresAtMs };
  };

  function connectedApps(): ConnectedApp[] {
    const clients = Object.values((aedes as unknown as { clients: Record<string, Client> }).clients);
    const apps: ConnectedApp[] = [];
    for (const client of clients) {
      const principal = sessionOf(client)?.principal;
      if (principal?.role !== 'app') continue;
      apps.push({ client, user: principal.user, branches: principal.branches, binding: bindings.get(client.id) });
    }
    return apps;
  }

  function pruneBindings(apps: readonly ConnectedApp[]): void {
    const connected = new Set(apps.map((a) => a.client.id));
    const now = performance.now();
    for (const [clientId, binding] of bindings) {
      if (!connected.has(clientId) && now - binding.boundAt > UNCONNECTED_BINDING_MS) bindings.delete(clientId);
    }
  }

  /** Revocation list and login session of each distinct token, in one pipelined burst. */
  async function tokenStates(apps: readonly ConnectedApp[]) {
    const distinct = new Map<string, Binding>();
    for (const { binding } of apps) if (binding) distinct.set(binding.tokenId, binding);
    const entries = [...distinct.values()];
    const states = await Promise.all(entries.map((b) => auth.sessions.check(b.tokenId, b.sessionId)));
    return new Map(entries.map((b, i) => [b.tokenId, states[i]!]));
  }

  /** Account status and branches of each distinct user, APP_RECHECK_BATCH users per query. */
  async function userStates(apps: readonly ConnectedApp[]) {
    const users = [...new Set(apps.map((a) => a.user))];
    const status = new Map<string, AccountDoc['status']>();
    const branches = new Map<string, Set<string>>();
    for (let i = 0; i < users.length; i += APP_RECHECK_BATCH) {
      const batch = users.slice(i, i + APP_RECHECK_BATCH);
      const ids = batch.filter((id) => Types.ObjectId.isValid(id)).map((id) => new Types.ObjectId(id));
      const [accounts, held] = await Promise.all([
        // `trusted`: the connection sanitises filters (no operators from requests); these ids are ours.
        Account.find({ _id: trusted({ $in: ids }) }, { status: 1 }).lean(),
        // Only active memberships grant live topics (a request or an ended membership does not).
        Membership.find(
          { userId: trusted({ $in: batch }), ...activeMembershipFilter(clock.now()) },
          { userId: 1, branchId: 1 },
        ).lean(),
      ]);
      for (const account of accounts) status.set(account._id.toHexString(), account.status);
      for (const m of held) {
        let set = branches.get(m.userId);
        if (!set) branches.set(m.userId, (set = new Set()));
        set.add(m.branchId);
      }
    }
    // Staff connections (few): their assignments, one read per staff user and pass.
    const staffUsers = [...new Set(apps.filter((a) => a.binding?.staff).map((a) => a.user))];
    if (staffBranches && staffUsers.length > 0) {
      const assigned = await Promise.all(staffUsers.map((u) => staffBranches(u)));
      staffUsers.forEach((user, i) => {
        let set = branches.get(user);
        if (!set) branches.set(user, (set = new Set()));
        for (const b of assigned[i]!) set.add(b);
      });
    }
    return { status, branches };
  }

  let running: Promise<{ clientId: string; reason: AppDisconnectReason }[]> | undefined;
  async function pass(): Promise<{ clientId: string; reason: AppDisconnectReason }[]> {
    const apps = connectedApps();
    pruneBindings(apps);
    if (apps.length === 0) return [];
    const verdicts = new Map<ConnectedApp, AppDisconnectReason>();
    const now = clock.nowMs();
    for (const app of apps) {
      // Cannot happen unless authentication took longer than UNCONNECTED_BINDING_MS: unknown token, fail closed.
      if (!app.binding) verdicts.set(app, 'unbound');
      // The broker's timer closes it at exp too; this pass also follows an injected clock.
      else if (app.binding.expiresAtMs <= now) verdicts.set(app, 'expired');
    }
    const pending = apps.filter((app) => !verdicts.has(app));
    if (pending.length > 0) {
      try {
        const [tokens, users] = await Promise.all([tokenStates(pending), userStates(pending)]);
        for (const app of pending) {
          const token = tokens.get(app.binding!.tokenId)!;
          const status = users.status.get(app.user);
          const held = users.branches.get(app.user);
          if (token.revoked) verdicts.set(app, 'token-revoked');
          else if (!token.sessionAlive) verdicts.set(app, 'session-ended');
          else if (status === undefined) verdicts.set(app, 'account-deleted');
          else if (status === 'suspended') verdicts.set(app, 'account-suspended');
          else if (app.branches.some((b) => !held?.has(b))) verdicts.set(app, 'membership-ended');
        }
      } catch (err) {
        // Stores unreachable: keep the connections, the next pass tries again. One warning a minute at most.
        if (performance.now() - warnedAt > 60_000) {
          warnedAt = performance.now();
          log.warn({ err }, 'app connection recheck failed; connections kept until the next pass');
        }
      }
    }
    const closedNow: { clientId: string; reason: AppDisconnectReason }[] = [];
    for (const [app, reason] of verdicts) {
      if (app.client.closed) continue;
      log.info({ clientId: app.client.id, reason }, 'mqtt app token no longer valid: disconnecting');
      app.client.close();
      // Unless a new connection with that client id has bound a fresh token meanwhile.
      if (bindings.get(app.client.id) === app.binding) bindings.delete(app.client.id);
      closedNow.push({ clientId: app.client.id, reason });
    }
    return closedNow;
  }

  function recheck() {
    // One pass at a time: a slow store must not pile passes up.
    running ??= pass().finally(() => {
      running = undefined;
    });
    return running;
  }

  const timer = setInterval(() => {
    recheck().catch((err: unknown) => log.error({ err }, 'app connection recheck crashed'));
  }, recheckMs);
  timer.unref();
  const stop = () => clearInterval(timer);
  (aedes as unknown as NodeJS.EventEmitter).once('closed', stop);

  return { authenticate, recheck, stop };
}
