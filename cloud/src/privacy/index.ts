export {
  createErasureCheck,
  createPrivacy,
  DELETION_REQUESTS,
  PRIVACY_SEALED_COLLECTIONS,
  TOMBSTONES,
  type DeletionOutcome,
  type ErasureCheck,
  type Privacy,
  type PrivacyAuth,
  type PrivacyOptions,
} from './privacy.ts';
export {
  createPrivacyRegistry,
  type DeletionContext,
  type DeletionHook,
  type ExportSection,
  type PrivacyRegistry,
} from './registry.ts';
