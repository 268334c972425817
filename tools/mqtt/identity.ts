/**
 * Who may connect, checked before anything else: the MQTT username is an identity id (a topic-level id, the same
 * rule as every id in the tree, protocol/ids.ts) and the client id is bound to it. Checked here, before any lookup
 * or ACL substitution, so `+`, `#`, `/`, `$`, NUL, over-long or prototype-named values never reach a topic, a
 * filter or an object key (CVE-2017-7650; NanoMQ #2344; GHSA-52qw-whmv-87c5). RELIABILITY A4 and A6.
 */
import { ID_MAX_LENGTH, isTopicLevelId } from '../../protocol/ids.ts';

/** The roles of MQTT identities. Apps are not identities: they connect with their access token (accounts). */
export const IDENTITY_ROLES = ['gateway', 'machine', 'observer'] as const;
export type IdentityRole = (typeof IDENTITY_ROLES)[number];

/**
 * An observer may connect several times at once (dashboards, `mosquitto_sub` sessions) as `id.suffix`. `.` never
 * appears in an id, so no suffix can produce another identity's client id.
 */
export const OBSERVER_CLIENT_SUFFIX_PATTERN = /^[A-Za-z0-9_-]{1,32}$/;
/** Longest client id any identity can use: an id, `.`, a suffix. */
export const MAX_CLIENT_ID_LENGTH = ID_MAX_LENGTH + 1 + 32;

/** Whether `value` may be an identity id: a topic-level id that is not a name Object.prototype answers to. */
export function isIdentityId(value: unknown): value is string {
  return typeof value === 'string' && isTopicLevelId(value) && !(value in Object.prototype);
}

export type ConnectIdentityCheck =
  { ok: true; identityId: string } | { ok: false; reason: 'no-username' | 'bad-username' | 'bad-client-id' };

/**
 * The checks that need no lookup: a username that is a valid identity id, and a client id that is that id or
 * (for observers, decided once the role is known) `id.suffix`. Anything else is refused before authentication.
 */
export function checkConnectIdentity(username: string | undefined, clientId: string): ConnectIdentityCheck {
  if (username === undefined || username === '') return { ok: false, reason: 'no-username' };
  if (!isIdentityId(username)) return { ok: false, reason: 'bad-username' };
  if (clientId !== username && !isObserverClientIdOf(username, clientId)) {
    return { ok: false, reason: 'bad-client-id' };
  }
  return { ok: true, identityId: username };
}

/** Whether `clientId` is allowed for identity `identityId` of `role`: exactly the id, or `id.suffix` for observers. */
export function clientIdAllowed(role: IdentityRole, identityId: string, clientId: string): boolean {
  if (clientId === identityId) return true;
  return role === 'observer' && isObserverClientIdOf(identityId, clientId);
}

function isObserverClientIdOf(identityId: string, clientId: string): boolean {
  if (clientId.length > MAX_CLIENT_ID_LENGTH || !clientId.startsWith(`${identityId}.`)) return false;
  return OBSERVER_CLIENT_SUFFIX_PATTERN.test(clientId.slice(identityId.length + 1));
}
