export {
  createPrivacy,
  DELETION_REQUESTS,
  TOMBSTONES,
  type DeletionOutcome,
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
