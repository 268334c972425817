/**
 * The audit log: an append-only record of authentication events and sensitive operations (who, what, on what, from
 * where, with which result). The collection is written with inserts only; this module offers no update or delete, and
 * the model refuses them. Secrets never reach it: detail keys that look like credentials are dropped.
 */
import { Schema, type Connection, type Model } from 'mongoose';

export type AuditResult = 'success' | 'failure' | 'refused';

export interface AuditEntry {
  /** Account id of who did it; null for an anonymous caller (e.g. a failed login for an unknown email). */
  actor: string | null;
  /** snake_case verb, e.g. login_failed, refresh_reuse_detected. */
  action: string;
  /** What it was done to: an account id, a session id, an email address … */
  target?: string | null;
  /** The caller's address as the API saw it (ctx.ip: X-Forwarded-For only behind a trusted proxy). */
  ip?: string | null;
  result: AuditResult;
  /** Small, non-secret context: reasons, session ids, user agent. */
  details?: Record<string, unknown>;
}

export interface AuditRecord extends AuditEntry {
  at: Date;
}

export interface AuditLog {
  /** Appends one entry; rejects only when MongoDB does (the caller decides whether that fails its operation). */
  record(entry: AuditEntry): Promise<void>;
}

/** Detail keys never stored, whatever a caller passes: the log must not become a credential store. */
const SECRET_KEY = /pass(word)?|secret|token|authorization|cookie|hash|jwt/i;

function scrub(details: Record<string, unknown> | undefined): Record<string, unknown> | undefined {
  if (!details) return undefined;
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(details)) {
    if (SECRET_KEY.test(key) || value === undefined) continue;
    // Keys become document paths: no operators or dots from whatever a caller passed along.
    const safeKey = key.replace(/^\$+/, '_').replaceAll('.', '_');
    out[safeKey] = typeof value === 'string' ? value.slice(0, 500) : value;
  }
  return out;
}

const AuditSchema = new Schema<AuditRecord>(
  {
    at: { type: Date, required: true, index: true },
    actor: { type: String, default: null, index: true },
    action: { type: String, required: true, index: true },
    target: { type: String, default: null, index: true },
    ip: { type: String, default: null },
    result: { type: String, enum: ['success', 'failure', 'refused'], required: true },
    details: { type: Schema.Types.Mixed, default: undefined },
  },
  { collection: 'audit_log', versionKey: false, strict: 'throw' },
);

const REFUSED_OPERATIONS = [
  'updateOne',
  'updateMany',
  'findOneAndUpdate',
  'findOneAndReplace',
  'replaceOne',
  'deleteOne',
  'deleteMany',
  'findOneAndDelete',
] as const;
for (const op of REFUSED_OPERATIONS) {
  AuditSchema.pre(op, function refuse() {
    throw new Error(`audit_log is append-only: ${op} is not allowed`);
  });
}

export interface AuditLogOptions {
  /** Defaults to the system time; tests may pass a clock's now. */
  now?: () => Date;
}

/** Synchronous: the collection and its indexes are created in the background, and the first record waits for that. */
export function createAuditLog(mongo: Connection, options: AuditLogOptions = {}): AuditLog {
  const Audit =
    (mongo.models.AuditEntry as Model<AuditRecord> | undefined) ?? mongo.model<AuditRecord>('AuditEntry', AuditSchema);
  let ready: Promise<unknown> | undefined;
  const now = options.now ?? (() => new Date());
  return {
    async record(entry) {
      ready ??= Audit.init().catch((err: unknown) => {
        ready = undefined; // MongoDB was down: try again with the next entry
        throw err;
      });
      await ready;
      await Audit.collection.insertOne({
        at: now(),
        actor: entry.actor,
        action: entry.action,
        target: entry.target ?? null,
        ip: entry.ip ?? null,
        result: entry.result,
        ...(entry.details ? { details: scrub(entry.details) } : {}),
      });
    },
  };
}
