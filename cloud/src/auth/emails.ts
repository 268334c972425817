/**
 * The texts of authentication emails. Links go to the member app (APP_BASE_URL), which posts the token to the API:
 * a link that acted on GET would be triggered by mail scanners that prefetch links. The token travels in the URL
 * fragment, which browsers never send to a server or in a Referer.
 */
import type { MailMessage } from '../mail/mailer.ts';

export interface EmailLinks {
  appBaseUrl: string;
}

const hours = (s: number) => (s >= 3600 ? `${Math.round(s / 3600)} hours` : `${Math.round(s / 60)} minutes`);
const signature = '\n\n— NXG Connect\n';

export function verificationEmail(to: string, token: string, ttlS: number, { appBaseUrl }: EmailLinks): MailMessage {
  const link = `${appBaseUrl}/verify-email#token=${token}`;
  return {
    kind: 'verify-email',
    to,
    subject: 'Confirm your email address',
    text:
      `Welcome to NXG Connect.\n\nPlease confirm your email address by opening this link:\n\n${link}\n\n` +
      `The link is valid for ${hours(ttlS)}. If you did not sign up, ignore this email.${signature}`,
  };
}

export function alreadyRegisteredEmail(to: string, { appBaseUrl }: EmailLinks): MailMessage {
  return {
    kind: 'already-registered',
    to,
    subject: 'You already have an NXG Connect account',
    text:
      `Someone (hopefully you) tried to sign up with this email address, but you already have an account.\n\n` +
      `Log in at ${appBaseUrl}/login — or, if you forgot your password, reset it at ${appBaseUrl}/forgot-password.\n\n` +
      `If this was not you, you can ignore this email: nothing was changed.${signature}`,
  };
}

export function resetPasswordEmail(to: string, token: string, ttlS: number, { appBaseUrl }: EmailLinks): MailMessage {
  const link = `${appBaseUrl}/reset-password#token=${token}`;
  return {
    kind: 'reset-password',
    to,
    subject: 'Reset your NXG Connect password',
    text:
      `To choose a new password, open this link:\n\n${link}\n\nThe link is valid for ${hours(ttlS)} and works ` +
      `once. If you did not ask for it, ignore this email: your password stays as it is.${signature}`,
  };
}

export function passwordChangedEmail(to: string, { appBaseUrl }: EmailLinks): MailMessage {
  return {
    kind: 'password-changed',
    to,
    subject: 'Your NXG Connect password was changed',
    text:
      `Your password was just changed, and every device was signed out.\n\nIf this was not you, reset your ` +
      `password at once at ${appBaseUrl}/forgot-password and contact your gym.${signature}`,
  };
}
