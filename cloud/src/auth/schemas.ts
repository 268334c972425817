/**
 * Request and response schemas of the authentication routes: validation, types and the OpenAPI document at once.
 * Bodies are strict (unknown keys → 400 naming them). Password rules beyond the length bound are checked by the
 * service, which knows the email they must not contain.
 */
import * as v from 'valibot';
import { EmailSchema } from '../accounts/email.ts';
import { ACCOUNT_STATUSES, ROLES } from '../accounts/model.ts';
import { PASSWORD_MAX_LENGTH, PASSWORD_MIN_LENGTH } from '../accounts/password.ts';

/** Any string up to a bound: the policy (≥ 12 characters, not common) is the service's, with a precise reason. */
const Password = v.pipe(
  v.string('expected a string'),
  v.minLength(1, 'expected a password'),
  // UTF-16 units; the policy counts characters. 4 units per character bounds the worst case.
  v.maxLength(PASSWORD_MAX_LENGTH * 4, `expected at most ${PASSWORD_MAX_LENGTH} characters`),
);

/** A new password: the length bound is stated here (and in the document); the service checks the rest. */
const NewPassword = v.pipe(
  Password,
  v.minLength(PASSWORD_MIN_LENGTH, `expected at least ${PASSWORD_MIN_LENGTH} characters`),
  // JSON Schema counts characters, as the policy does; the UTF-16 bound above is only a backstop.
  v.metadata({ maxLength: PASSWORD_MAX_LENGTH }),
  v.description('12 to 128 characters, not a commonly used password, not containing the email'),
);

/** A refresh token: opaque; any string up to a bound, so a wrong one is a 401 (not a 400) like an expired one. */
const RefreshToken = v.pipe(v.string('expected a token'), v.minLength(1), v.maxLength(200));

/** The single-use token from a verification or reset email: 256 random bits, base64url. */
const MailedToken = v.pipe(
  v.string('expected a token'),
  v.regex(/^[A-Za-z0-9_-]{43}$/, 'expected the token from the email'),
);

export const RegisterBody = v.strictObject({ email: EmailSchema, password: NewPassword });

export const LoginBody = v.strictObject({ email: EmailSchema, password: Password });

export const RefreshBody = v.strictObject({ refreshToken: RefreshToken });

export const TokenBody = v.strictObject({ token: MailedToken });

export const ForgotBody = v.strictObject({ email: EmailSchema });

export const ResetBody = v.strictObject({ token: MailedToken, password: NewPassword });

/** An RFC 9457 problem document, as every error response of the API is. */
export const ProblemBody = v.object({
  type: v.string(),
  title: v.string(),
  status: v.number(),
  detail: v.string(),
  instance: v.string(),
  requestId: v.string(),
});

export const Accepted = v.object({
  status: v.literal('accepted'),
  message: v.string(),
});

export const AccountView = v.object({
  id: v.string(),
  email: v.string(),
  role: v.picklist(ROLES),
  status: v.picklist(ACCOUNT_STATUSES),
  /** Set when suspended. */
  suspendedReason: v.nullable(v.string()),
  emailVerified: v.boolean(),
  createdAt: v.pipe(v.string(), v.isoTimestamp()),
});

export const TokenResponse = v.object({
  accessToken: v.string(),
  tokenType: v.literal('Bearer'),
  /** Seconds. */
  expiresIn: v.number(),
  refreshToken: v.string(),
  refreshExpiresIn: v.number(),
  /** The login session (see /api/users/sessions). */
  sessionId: v.string(),
});

export const LoginResponse = v.object({
  ...TokenResponse.entries,
  user: AccountView,
});

export const Jwks = v.object({
  keys: v.array(
    v.object({
      kty: v.literal('EC'),
      crv: v.literal('P-256'),
      x: v.string(),
      y: v.string(),
      kid: v.string(),
      alg: v.literal('ES256'),
      use: v.literal('sig'),
    }),
  ),
});

export const SessionView = v.object({
  id: v.string(),
  userAgent: v.string(),
  ip: v.string(),
  createdAt: v.pipe(v.string(), v.isoTimestamp()),
  lastUsedAt: v.pipe(v.string(), v.isoTimestamp()),
  /** The session the calling token belongs to. */
  current: v.boolean(),
});

export const SessionList = v.object({ sessions: v.array(SessionView) });

export const SessionParams = v.object({
  id: v.pipe(v.string(), v.regex(/^[A-Za-z0-9_-]{16,64}$/, 'expected a session id')),
});
