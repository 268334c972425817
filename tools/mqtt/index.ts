/**
 * MQTT pieces shared by the cloud broker and the edge gateway's broker: the frame-length guard in front of
 * `aedes.handle`, per-address connection limits, credential secrets (issue, hash, verify) and identity/client-id
 * checks.
 */
export * from './connection-limits.ts';
export * from './frame-guard.ts';
export * from './secrets.ts';
export * from './identity.ts';
