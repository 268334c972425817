/**
 * Protocol version.
 *
 * The major version lives in the topic root (`nxg/v1`); a breaking change gets a new root (`nxg/v2`) so that old
 * and new devices can share a broker during a migration. The minor version travels in every record's envelope (`v`)
 * and in birth messages.
 *
 * Minor versions are additive only: new optional fields, new record kinds, new topic names, new enum values.
 * Receivers never refuse a message for carrying fields they do not know (object schemas strip unknown keys), so
 * a newer sender's extra fields still parse on an older receiver. New kinds and enum values are the exception:
 * an older receiver cannot interpret them and refuses them, so a rollout upgrades receivers before senders —
 * cloud first, then gateways, then machines.
 */

/** The root every topic starts with. */
export const PROTOCOL_ROOT = 'nxg/v1';

/** Major version, as in the topic root. */
export const PROTOCOL_MAJOR = 1;

/** Minor version this code writes into envelopes (`v`). Bump it with every additive change. */
export const PROTOCOL_MINOR = 0;

/** `major.minor`, for logs and health endpoints. */
export const PROTOCOL_VERSION = `${PROTOCOL_MAJOR}.${PROTOCOL_MINOR}`;
