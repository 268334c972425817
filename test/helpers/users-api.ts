/**
 * Small HTTP helpers for the members API tests (cloud/src/users, cloud/src/privacy): one call, its status, parsed
 * body and headers. Field-encryption keys for test clouds, so no test writes a development keyring into ./data.
 */
import { randomBytes } from 'node:crypto';

export interface ApiResponse<T = Record<string, unknown>> {
  status: number;
  body: T;
  headers: Headers;
}

export async function call<T = Record<string, unknown>>(
  baseUrl: string,
  method: string,
  path: string,
  token?: string,
  body?: unknown,
): Promise<ApiResponse<T>> {
  const headers: Record<string, string> = {};
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const res = await fetch(`${baseUrl}${path}`, {
    method,
    headers,
    ...(body !== undefined ? { body: typeof body === 'string' ? body : JSON.stringify(body) } : {}),
  });
  const text = await res.text();
  let parsed: unknown = undefined;
  if (text) {
    try {
      parsed = JSON.parse(text);
    } catch {
      parsed = text;
    }
  }
  return { status: res.status, body: parsed as T, headers: res.headers };
}

export interface FieldKeys {
  /** FIELD_ENCRYPTION_KEYS / PSEUDONYM_KEY (and free MQTT ports) for startTestCloud's env. */
  env: Record<string, string>;
  k1: Buffer;
  pseudonymKey: Buffer;
}

export function testFieldKeys(): FieldKeys {
  const k1 = randomBytes(32);
  const pseudonymKey = randomBytes(32);
  return {
    k1,
    pseudonymKey,
    env: {
      FIELD_ENCRYPTION_KEYS: `k1:${k1.toString('base64')}`,
      PSEUDONYM_KEY: pseudonymKey.toString('base64'),
      // Free ports: other suites' clouds may be running at the same time on this machine.
      MQTT_TCP_PORT: '0',
      MQTT_TLS_PORT: '0',
    },
  };
}

/** The field names of a 400 problem's errors[]. */
export function fieldsOf(body: unknown): string[] {
  const errors = (body as { errors?: { field: string }[] }).errors ?? [];
  return errors.map((e) => e.field);
}
