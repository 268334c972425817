/**
 * Gateway enrolment (REST, `POST /api/v1/gateways/enrol`): staff create a gateway for a branch in the cloud and get
 * a one-time token; on the branch's hardware `npm run gateway -- enrol` exchanges it for the gateway's MQTT
 * credentials and the keys that verify its signed configuration. The token is single-use and expires; a used or
 * expired one is refused (401) without saying which.
 *
 * The secret is returned once and stored by the gateway with mode 0600; the cloud keeps only its SHA-256.
 */
import * as v from 'valibot';
import { BranchId, GatewayId } from '../ids.ts';
import { Version, label } from '../scalars.ts';
import { QrVerificationKey } from './command.ts';

/** A one-time enrolment token: 32–128 base64url characters (the cloud issues 256 random bits). */
export const EnrolmentToken = v.pipe(
  v.string(),
  v.regex(/^[A-Za-z0-9_-]{32,128}$/, 'Invalid token: expected 32–128 base64url characters'),
  v.description('One-time gateway enrolment token'),
);

export const GatewayEnrolmentRequest = v.pipe(
  v.object({
    token: EnrolmentToken,
    version: v.pipe(Version, v.description('Gateway software version')),
    hostname: v.optional(label(64, 'Host name of the gateway hardware, for the fleet view')),
  }),
  v.title('GatewayEnrolmentRequest'),
  v.description('Exchange a one-time enrolment token for the gateway’s credentials.'),
);
export type GatewayEnrolmentRequest = v.InferOutput<typeof GatewayEnrolmentRequest>;

export const GatewayEnrolmentResponse = v.pipe(
  v.object({
    branch: BranchId,
    gateway: GatewayId,
    mqtt: v.object({
      username: v.pipe(GatewayId, v.description('MQTT username: the gateway id')),
      password: v.pipe(v.string(), v.minLength(16), v.maxLength(128), v.description('MQTT secret, shown once')),
      url: v.optional(
        v.pipe(v.string(), v.maxLength(512), v.description('Cloud broker URL (mqtts://…) when the cloud knows it')),
      ),
    }),
    configKeys: v.pipe(
      v.array(QrVerificationKey),
      v.minLength(1),
      v.maxLength(4),
      v.description('Public keys that verify the signed configuration and allow-list (JWS kid → key)'),
    ),
  }),
  v.title('GatewayEnrolmentResponse'),
  v.description('The gateway’s identity and credentials, returned once.'),
);
export type GatewayEnrolmentResponse = v.InferOutput<typeof GatewayEnrolmentResponse>;
