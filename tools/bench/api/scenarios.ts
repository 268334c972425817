/**
 * The requests bench:api sends, and the accounts and login sessions they need (made through the API, as apps do).
 */
import { randomBytes } from 'node:crypto';
import type { Client } from 'undici';
import type { Outcome, Send } from './load.ts';

export interface Session {
  accessToken: string;
  refreshToken: string;
}

async function post(url: string, body: unknown, headers: Record<string, string> = {}): Promise<Response> {
  return fetch(url, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', 'User-Agent': 'nxg-bench/1.0', ...headers },
    body: JSON.stringify(body),
  });
}

export interface BenchAccount {
  email: string;
  password: string;
  /** Login sessions of this account: the first for its reads and writes, the others for refresh. */
  sessions: Session[];
}

/**
 * `accounts` member accounts (pending verification may read and write their own profile and body metrics), each
 * with `sessionsPerAccount` login sessions, made through the API with a few requests in flight. Many accounts:
 * writes of one member are serialised and logins reserve a per-account attempt, so real load comes from many. Many
 * sessions: a refresh-token family can serve one refresh at a time (a parallel reuse is reuse detection).
 */
export async function createBenchAccounts(
  cloudUrl: string,
  accounts: number,
  sessionsPerAccount: number,
  onProgress: (done: number) => void,
): Promise<BenchAccount[]> {
  const tag = randomBytes(4).toString('hex');
  const made: BenchAccount[] = Array.from({ length: accounts }, (_, i) => ({
    email: `bench-${tag}-${i}@nxg.test`,
    password: `bench-${randomBytes(12).toString('base64url')}`,
    sessions: [],
  }));
  const steps: (() => Promise<void>)[] = [];
  for (const account of made) {
    steps.push(async () => {
      const res = await post(`${cloudUrl}/api/auth/register`, { email: account.email, password: account.password });
      if (res.status !== 202) throw new Error(`register: ${res.status} ${await res.text()}`);
      for (let j = 0; j < sessionsPerAccount; j++) {
        const login = await post(`${cloudUrl}/api/auth/login`, { email: account.email, password: account.password });
        if (login.status !== 200) throw new Error(`login: ${login.status} ${await login.text()}`);
        const body = (await login.json()) as Session;
        account.sessions.push({ accessToken: body.accessToken, refreshToken: body.refreshToken });
      }
    });
  }
  let next = 0;
  let done = 0;
  await Promise.all(
    Array.from({ length: 4 }, async () => {
      while (next < steps.length) {
        await steps[next++]!();
        onProgress(++done / steps.length);
      }
    }),
  );
  return made;
}

/** The first answer of each request kind and refusal status, for the report: a failure should say what it was. */
export const firstRefusals = new Map<string, string>();

async function finish(
  what: string,
  response: { statusCode: number; body: { dump(): Promise<void>; text(): Promise<string> } },
): Promise<Outcome> {
  const key = `${what} → ${response.statusCode}`;
  if (response.statusCode >= 400 && !firstRefusals.has(key)) {
    firstRefusals.set(key, (await response.body.text()).slice(0, 200));
  } else {
    await response.body.dump();
  }
  return { status: response.statusCode };
}

/** GET `path`, with headers per request (e.g. the token of the member whose turn it is). */
export function getRequest(path: string, headers: (i: number) => Record<string, string> = () => ({})): Send {
  return async (client, i) => finish(`GET ${path}`, await client.request({ method: 'GET', path, headers: headers(i) }));
}

/** POST JSON, the body built per request. */
export function postRequest(
  path: string,
  body: (i: number) => unknown,
  headers: (i: number) => Record<string, string> = () => ({}),
): Send {
  return jsonRequest('POST', path, body, headers);
}

export function putRequest(
  path: string,
  body: (i: number) => unknown,
  headers: (i: number) => Record<string, string> = () => ({}),
): Send {
  return jsonRequest('PUT', path, body, headers);
}

function jsonRequest(
  method: 'POST' | 'PUT',
  path: string,
  body: (i: number) => unknown,
  headers: (i: number) => Record<string, string>,
): Send {
  return async (client, i) =>
    finish(
      `${method} ${path}`,
      await client.request({
        method,
        path,
        headers: { 'content-type': 'application/json', ...headers(i) },
        body: JSON.stringify(body(i)),
      }),
    );
}

/**
 * Token refresh with rotation: each request takes an idle login session, presents its current refresh token and
 * keeps the new one. When every session is busy the request waits for one (the wait counts in its latency: it
 * was due already).
 */
export function refreshRequest(sessions: readonly Session[]): Send {
  const idle = [...sessions];
  const waiting: ((s: Session) => void)[] = [];
  const take = () => {
    const session = idle.pop();
    return session ? Promise.resolve(session) : new Promise<Session>((resolve) => waiting.push(resolve));
  };
  const give = (session: Session) => {
    const waiter = waiting.shift();
    if (waiter) waiter(session);
    else idle.push(session);
  };
  return async (client: Client) => {
    const session = await take();
    try {
      const response = await client.request({
        method: 'POST',
        path: '/api/auth/refresh',
        headers: { 'content-type': 'application/json', 'user-agent': 'nxg-bench/1.0' },
        body: JSON.stringify({ refreshToken: session.refreshToken }),
      });
      if (response.statusCode === 200) {
        const body = (await response.body.json()) as Session;
        session.refreshToken = body.refreshToken;
        session.accessToken = body.accessToken;
        return { status: 200 };
      }
      return await finish('POST /api/auth/refresh', response);
    } finally {
      give(session);
    }
  };
}

/** Realistic body-metrics writes: a weight that drifts a little per request. */
export function bodyMetricsBody(i: number): unknown {
  return { measurements: { weightKg: Math.round((72 + (Math.abs(i) % 50) / 10) * 10) / 10, heightCm: 178 } };
}
