/**
 * Gateways' environment variables (spread into cloud/src/config.ts, which parses the environment once).
 */
import * as v from 'valibot';
import { envInt } from '../../../tools/runtime/env-config.ts';

export const GatewaysEnv = {
  /** How long a gateway's one-time enrolment token stays valid, s. */
  GATEWAY_ENROLMENT_TOKEN_TTL_S: envInt(86_400, 60, 30 * 86_400),
  /** Enrolment attempts per client address per 15 minutes (POST /api/v1/gateways/enrol). */
  GATEWAY_ENROLMENT_ATTEMPTS: envInt(10, 1, 1_000),
  /** The broker URL gateways are told at enrolment (e.g. mqtts://mqtt.example.com:8883); empty: not told. */
  GATEWAY_MQTT_URL: v.optional(
    v.pipe(
      v.string(),
      v.check(
        (s) => s === '' || /^mqtts?:\/\/[A-Za-z0-9.:[\]-]+(:\d{1,5})?$/.test(s),
        'expected mqtt(s)://host[:port]',
      ),
    ),
    '',
  ),
};

export interface GatewaysConfig {
  enrolmentTokenTtlS: number;
  enrolmentAttempts: number;
  mqttUrl: string | undefined;
}

interface Parsed {
  GATEWAY_ENROLMENT_TOKEN_TTL_S: number;
  GATEWAY_ENROLMENT_ATTEMPTS: number;
  GATEWAY_MQTT_URL: string;
}

export function gatewaysConfigFrom(e: Parsed): GatewaysConfig {
  return {
    enrolmentTokenTtlS: e.GATEWAY_ENROLMENT_TOKEN_TTL_S,
    enrolmentAttempts: e.GATEWAY_ENROLMENT_ATTEMPTS,
    mqttUrl: e.GATEWAY_MQTT_URL === '' ? undefined : e.GATEWAY_MQTT_URL,
  };
}
