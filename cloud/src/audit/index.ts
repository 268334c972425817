export { createAuditLog, type AuditEntry, type AuditLog, type AuditRecord, type AuditResult } from './audit-log.ts';
