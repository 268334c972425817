/**
 * Email addresses as account keys: one normal form, so `Ann@Example.COM ` and `ann@example.com` are one account.
 * The whole address is lower-cased: mailbox names are case-sensitive in theory (RFC 5321) and never in practice,
 * and two accounts differing only by case would be a support and phishing hazard.
 */
import * as v from 'valibot';

export const EMAIL_MAX_LENGTH = 254;

export function normaliseEmail(email: string): string {
  return email.normalize('NFKC').trim().toLowerCase();
}

/**
 * A valibot schema: a syntactically valid address (checked before normalising, so the OpenAPI document states
 * `format: email` and its length exactly as enforced), then normalised.
 */
export const EmailSchema = v.pipe(
  v.string('expected an email address'),
  v.maxLength(EMAIL_MAX_LENGTH, `expected at most ${EMAIL_MAX_LENGTH} characters`),
  // RFC 5321's dot-atom form (any address a mail server takes), as JSON Schema's `format: email` describes it.
  v.rfcEmail('expected an email address'),
  v.transform(normaliseEmail),
);
