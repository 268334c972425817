/**
 * CONNECT authentication for the cloud broker. Gateways and observers present their identity id as username and
 * their secret as password; the client id is bound to the identity (tools/mqtt/identity.ts), so nobody can take
 * over another identity's session by connecting with its client id (aedes #16/#153; RELIABILITY M5: the refused
 * CONNECT never reaches Aedes' registerClient, so the victim stays connected). Anonymous clients, wrong secrets,
 * revoked identities and roles a listener does not serve are answered CONNACK 5 (M1), one answer for all so a
 * prober learns nothing about which ids exist.
 *
 * Apps: MQTT over WebSocket with their access token as password, checked by an `AppTokenAuthenticator`
 * (app-tokens.ts, which also closes connections whose token is revoked); without one, only observers connect there.
 */
import { isTopicLevelId } from '../../../protocol/ids.ts';
import type { BranchId, UserId } from '../../../protocol/ids.ts';
import { checkConnectIdentity, clientIdAllowed } from '../../../tools/mqtt/identity.ts';
import { verifySecret } from '../../../tools/mqtt/secrets.ts';
import type { Principal } from './acl.ts';
import type { IdentityStore } from './identities.ts';

export type ListenerName = 'tls' | 'tcp' | 'ws';

/** What an app's access token says, once verified. */
export interface AppPrincipal {
  user: UserId;
  /** Branches whose `live/…` topics the app may read. */
  branches: readonly BranchId[];
  /** When the token expires: the broker closes the connection then (MQTT 3.1.1 cannot re-authenticate). */
  expiresAtMs: number;
}

/**
 * Extension point for the accounts work: verifies an app's access token (the MQTT password on the WebSocket
 * listener) and says who it belongs to, or undefined when it is not valid (expired, revoked, wrong audience…).
 * It must not throw for a bad token; a throw is treated as "service unavailable" (CONNACK 3).
 */
export type AppTokenAuthenticator = (
  token: string,
  /** The CONNECT's client id, so the check can tie the token to the connection (revocation closes that one). */
  connection: { clientId: string },
) => Promise<AppPrincipal | undefined>;

/** Client ids of apps: `u.{user}` or `u.{user}.{suffix}`; two dots can never be an identity's client id. */
export const APP_CLIENT_ID_PATTERN = /^u\.([a-z0-9][a-z0-9-]{0,62})(?:\.[A-Za-z0-9_-]{1,32})?$/;
/** A JWT-shaped password (three base64url parts) on the WebSocket listener is an app token, not a secret. */
const TOKEN_SHAPE = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/;
const MAX_TOKEN_LENGTH = 8192;

/** Why a CONNECT was refused; label values of `mqtt_connections_refused_total`. */
export type AuthRefusal =
  | 'no-username'
  | 'bad-username'
  | 'bad-client-id'
  | 'bad-credentials'
  | 'revoked'
  | 'role-not-allowed'
  | 'bad-token'
  | 'store-unavailable';

export type AuthResult =
  { ok: true; principal: Principal; expiresAtMs?: number } | { ok: false; reason: AuthRefusal; returnCode: 3 | 5 };

/** Which roles each listener serves. Machines never connect to the cloud: they talk to their gateway. */
const LISTENER_ROLES: Record<ListenerName, readonly Principal['role'][]> = {
  tls: ['gateway', 'observer'],
  tcp: ['gateway', 'observer'],
  ws: ['observer', 'app'],
};

const refuse = (reason: AuthRefusal): AuthResult => ({
  ok: false,
  reason,
  returnCode: reason === 'store-unavailable' ? 3 : 5,
});

export interface Authenticator {
  authenticate(input: {
    listener: ListenerName;
    clientId: string;
    username: string | undefined;
    password: Buffer | undefined;
  }): Promise<AuthResult>;
}

export function createAuthenticator({
  identities,
  appTokens,
}: {
  identities: IdentityStore;
  appTokens?: AppTokenAuthenticator | undefined;
}): Authenticator {
  async function authenticateApp(clientId: string, password: string): Promise<AuthResult> {
    let app: AppPrincipal | undefined;
    try {
      app = await appTokens!(password, { clientId });
    } catch {
      return refuse('store-unavailable');
    }
    if (!app) return refuse('bad-token');
    const match = APP_CLIENT_ID_PATTERN.exec(clientId);
    if (!match || match[1] !== app.user) return refuse('bad-client-id');
    if (!isTopicLevelId(app.user) || !app.branches.every((b) => isTopicLevelId(b))) return refuse('bad-token');
    return {
      ok: true,
      principal: { role: 'app', id: clientId, user: app.user, branches: [...app.branches] },
      expiresAtMs: app.expiresAtMs,
    };
  }

  return {
    async authenticate({ listener, clientId, username, password }) {
      if (listener === 'ws' && appTokens && password && password.length <= MAX_TOKEN_LENGTH) {
        const text = password.toString('utf8');
        if (TOKEN_SHAPE.test(text)) return authenticateApp(clientId, text);
      }
      // Before any lookup: the username must be an id, the client id bound to it (RELIABILITY A6).
      const check = checkConnectIdentity(username, clientId);
      if (!check.ok) return refuse(check.reason);
      let record;
      try {
        record = await identities.find(check.identityId);
      } catch {
        return refuse('store-unavailable');
      }
      // Hash the presented secret even for an unknown id, so timing does not tell which ids exist.
      const secretOk = verifySecret(password, record?.secretHash ?? '');
      if (!record || !secretOk) return refuse('bad-credentials');
      if (record.disabled) return refuse('revoked');
      if (!clientIdAllowed(record.role, record.id, clientId)) return refuse('bad-client-id');
      const branches = record.branches.filter((b) => isTopicLevelId(b)) as BranchId[];
      let principal: Principal;
      if (record.role === 'gateway' && branches.length === 1) {
        principal = { role: 'gateway', id: record.id, branch: branches[0]! };
      } else if (record.role === 'observer' && branches.length > 0) {
        principal = { role: 'observer', id: record.id, branches };
      } else {
        return refuse('role-not-allowed');
      }
      if (!LISTENER_ROLES[listener].includes(principal.role)) return refuse('role-not-allowed');
      return { ok: true, principal };
    },
  };
}
