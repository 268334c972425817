/**
 * Where other parts of the cloud plug into GDPR export and deletion. A domain that keeps personal data registers
 * an export section (what the member gets back) and, when a plain delete by user id is not enough — objects in
 * storage, caches on gateways, anonymised statistics to keep — a deletion hook.
 *
 * Hooks must be idempotent: a hook that fails is retried later (the deletion stays pending until every hook has
 * succeeded once), and a retry may run a hook that had already done part of its work.
 */
import type { Logger } from '../../../tools/runtime/logger.ts';

export interface DeletionContext {
  /** The keyed hash that stands in for the member from now on (audit entry, tombstone). */
  pseudonym: string;
  log: Logger;
}

export type DeletionHook = (userId: string, context: DeletionContext) => Promise<void>;
export type ExportSection = (userId: string) => Promise<unknown>;

export interface PrivacyRegistry {
  registerDeletionHook(name: string, hook: DeletionHook): void;
  registerExportSection(name: string, section: ExportSection): void;
  deletionHooks(): ReadonlyMap<string, DeletionHook>;
  exportSections(): ReadonlyMap<string, ExportSection>;
}

const NAME = /^[a-z][a-zA-Z0-9_.-]{0,63}$/;

export function createPrivacyRegistry(): PrivacyRegistry {
  const hooks = new Map<string, DeletionHook>();
  const sections = new Map<string, ExportSection>();
  const add = <T>(map: Map<string, T>, kind: string, name: string, value: T) => {
    if (!NAME.test(name)) throw new Error(`${kind} name ${JSON.stringify(name)}: expected ${NAME}`);
    // Two parts claiming one name is a wiring mistake: fail at start-up, not by silently replacing one.
    if (map.has(name)) throw new Error(`${kind} ${name} is already registered`);
    map.set(name, value);
  };
  return {
    registerDeletionHook: (name, hook) => add(hooks, 'deletion hook', name, hook),
    registerExportSection: (name, section) => add(sections, 'export section', name, section),
    deletionHooks: () => hooks,
    exportSections: () => sections,
  };
}
