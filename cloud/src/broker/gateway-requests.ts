/**
 * The gateways' online requests: `gw/{gateway}/req/{name}` (check-in, check-out, link, unlink) answered on
 * `…/req/{name}/res` with a RequestResponse. Domains register one handler per request name; the dispatcher does
 * what every request needs:
 *
 *   const requests = createGatewayRequests({ aedes, redis, log, registry });
 *   requests.handle('check-in', async (request, { branch, gateway }) => ({ decision: 'allow', userId, sessionId }));
 *   await requests.start(); // once every domain has registered its handlers
 *
 * - Only the gateway itself can publish on its request topics: the broker ACL grants a gateway `req/+` under its own
 *   `gw/{gateway}` only (broker/acl.ts, GATEWAY_PUBLISH_KINDS), so the topic names the asking gateway and its branch.
 * - The payload is checked with the protocol schema of that name; an invalid one is answered `{ok: false}` when its
 *   reqId can be read (else counted and dropped: there is nobody to answer).
 * - Every request is answered within `deadlineMs` (default 500 ms, before the gateway gives up at 700 ms):
 *   a decision, a deny, or `{ok: false, error}` (timeout, busy, no handler, handler failure); a handler still running
 *   at the deadline goes on, but its late result is not sent.
 * - At most `maxInFlightPerGateway` requests of one gateway run at once; more are answered `busy` at once, so one
 *   gateway's burst cannot hold the others' decisions (the gateway may then decide offline).
 * - QoS1 redeliveries and cloud nodes sharing the broker (mqemitter-redis delivers to every node's in-process
 *   subscriber) must not decide one request twice: a claim `gwreq:{branch}:{gateway}:{reqId}` in Redis (SET NX) makes
 *   one node decide it; a redelivery after the answer gets the stored answer again (kept `dedupTtlS`). The claim
 *   alone lives only twice the deadline, so a node that died holding it does not leave the request unanswerable.
 * - Metrics: `gateway_requests_total{name, outcome}` and `gateway_request_duration_seconds{name}`.
 *
 * The gateway's subscription and the broker do not wait for a handler: the message is acknowledged at once (a lost
 * answer makes the gateway ask again or decide offline, which the cloud reconciles later).
 */
import type { Aedes, AedesPublishPacket } from 'aedes';
import type { Redis } from 'ioredis';
import { Counter, Histogram, type Registry } from 'prom-client';
import * as v from 'valibot';
import { systemClock, type Clock } from '../../../tools/runtime/clock.ts';
import type { Logger } from '../../../tools/runtime/logger.ts';
import {
  REQUEST_PAYLOADS,
  ReqId,
  TOPIC_POLICY,
  filters,
  parsePayload,
  parseTopic,
  topics,
  validatePayload,
  type BranchId,
  type Decision,
  type GatewayId,
  type PayloadOf,
  type RequestName,
  type RequestResponse,
} from '../../../protocol/index.ts';

/** The request payload of a request name, e.g. `GatewayRequestOf<'check-in'>` is a CheckInRequest. */
export type GatewayRequestOf<N extends RequestName> = PayloadOf<(typeof REQUEST_PAYLOADS)[N]>;

/** Who asked: from the topic, which only that gateway may publish on. */
export interface GatewayRequestContext {
  branch: BranchId;
  gateway: GatewayId;
  name: RequestName;
  /** Cloud clock when the request arrived (a gateway's `ts` is its own clock: diagnostics only). */
  receivedAtMs: number;
  /**
   * Aborted at the deadline, once the gateway has been answered `timeout` and decides offline: a handler should not
   * commit a decision after it (sessions opens no session then; the gateway's offline decision arrives later).
   */
  signal: AbortSignal;
}

export type GatewayRequestHandler<N extends RequestName> = (
  request: GatewayRequestOf<N>,
  ctx: GatewayRequestContext,
) => Promise<Decision>;

export interface GatewayRequests {
  /** Registers the handler of a request name (one per name; a second registration replaces the first). */
  handle<N extends RequestName>(name: N, handler: GatewayRequestHandler<N>): void;
  /**
   * Subscribes to every gateway's requests; call once the handlers are registered (a request of a name without a
   * handler is answered `{ok: false, error: unsupported}`). Idempotent.
   */
  start(): Promise<void>;
  /** Unsubscribes and waits (bounded) for the answers being prepared. */
  stop(): Promise<void>;
}

export interface GatewayRequestsOptions {
  aedes: Aedes;
  /** For the one-decision-per-request claim; without it, every delivery is decided (single node, tests). */
  redis?: Redis;
  log: Logger;
  registry: Registry;
  clock?: Clock;
  /** Default 500 ms: the answer is out before the gateway gives up (GATEWAY_ACCESS_TIMEOUT_MS, 700 ms). */
  deadlineMs?: number;
  /** Default 16. */
  maxInFlightPerGateway?: number;
  /** How long a request's claim and answer are kept for redeliveries, s (default 120). */
  dedupTtlS?: number;
}

export const GATEWAY_REQUEST_DEFAULTS = {
  deadlineMs: 500,
  maxInFlightPerGateway: 16,
  dedupTtlS: 120,
} as const;

/** What happened to a request, for the metrics (a closed set). */
export type RequestOutcome =
  'allow' | 'deny' | 'invalid' | 'unanswerable' | 'busy' | 'no-handler' | 'timeout' | 'error' | 'duplicate';

interface RequestMetrics {
  requests: Counter<'name' | 'outcome'>;
  duration: Histogram<'name'>;
}

const metricsOf = new WeakMap<Registry, RequestMetrics>();

function requestMetrics(registry: Registry): RequestMetrics {
  const known = metricsOf.get(registry);
  if (known) return known;
  const registers = [registry];
  const metrics: RequestMetrics = {
    requests: new Counter({
      name: 'gateway_requests_total',
      help: 'Gateway requests (req/{name}) by name and outcome (allow, deny, invalid, busy, timeout, error, …)',
      labelNames: ['name', 'outcome'] as const,
      registers,
    }),
    duration: new Histogram({
      name: 'gateway_request_duration_seconds',
      help: 'Time from a gateway request reaching the cloud to its answer being published',
      labelNames: ['name'] as const,
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.8, 1],
      registers,
    }),
  };
  metricsOf.set(registry, metrics);
  return metrics;
}

const ReqIdOnly = v.object({ reqId: ReqId });

/** The reqId of a payload that failed its schema, when it can still be read. */
function readableReqId(payload: Buffer): ReqId | undefined {
  try {
    const result = v.safeParse(ReqIdOnly, JSON.parse(payload.toString('utf8')));
    return result.success ? result.output.reqId : undefined;
  } catch {
    return undefined;
  }
}

class DeadlineExceeded extends Error {}

export function createGatewayRequests(options: GatewayRequestsOptions): GatewayRequests {
  const { aedes, redis, log } = options;
  const deadlineMs = options.deadlineMs ?? GATEWAY_REQUEST_DEFAULTS.deadlineMs;
  const maxInFlight = options.maxInFlightPerGateway ?? GATEWAY_REQUEST_DEFAULTS.maxInFlightPerGateway;
  const dedupTtlS = options.dedupTtlS ?? GATEWAY_REQUEST_DEFAULTS.dedupTtlS;
  const clock = options.clock ?? systemClock;
  const metrics = requestMetrics(options.registry);
  const handlers = new Map<RequestName, GatewayRequestHandler<RequestName>>();
  const inFlight = new Map<string, number>();
  const pending = new Set<Promise<void>>();
  let stopped = false;

  // Long enough to cover a decision (a handler past the deadline is aborted), short enough that a crashed node's claim
  // is gone when the gateway asks again.
  const claimTtlMs = 2 * deadlineMs;
  const claimKey = (branch: string, gateway: string, reqId: string) => `gwreq:${branch}:${gateway}:${reqId}`;

  function publish(branch: BranchId, gateway: GatewayId, name: RequestName, response: RequestResponse): Promise<void> {
    const checked = validatePayload('RequestResponse', response);
    const body: RequestResponse = checked.ok
      ? checked.value
      : { reqId: response.reqId, ok: false, error: { code: 'internal' } };
    if (!checked.ok)
      log.error({ name, path: checked.path, issue: checked.issue }, 'a handler returned an invalid decision');
    return new Promise((resolve) => {
      aedes.publish(
        {
          cmd: 'publish',
          topic: topics.gatewayRequestResponse(branch, gateway, name),
          payload: Buffer.from(JSON.stringify(body)),
          qos: TOPIC_POLICY['gateway-request-response'].qos,
          retain: false,
          dup: false,
        },
        (err) => {
          if (err) log.warn({ err: { message: err.message }, gateway, name }, 'request answer not published');
          resolve();
        },
      );
    });
  }

  /**
   * Claims the request for this node. `claimed`: decide it; `answered`: a redelivery, here is the stored answer;
   * `elsewhere`: another delivery is deciding it. Without Redis (or while it fails) every delivery is decided.
   */
  async function claim(
    branch: string,
    gateway: string,
    reqId: string,
  ): Promise<{ state: 'claimed' } | { state: 'answered'; response: RequestResponse } | { state: 'elsewhere' }> {
    if (!redis) return { state: 'claimed' };
    const key = claimKey(branch, gateway, reqId);
    try {
      const set = await redis.set(key, '', 'PX', claimTtlMs, 'NX');
      if (set === 'OK') return { state: 'claimed' };
      const held = await redis.get(key);
      if (!held) return { state: 'elsewhere' };
      const parsed = parsePayload('RequestResponse', held);
      return parsed.ok ? { state: 'answered', response: parsed.value } : { state: 'elsewhere' };
    } catch (err) {
      log.warn({ err: { message: (err as Error).message } }, 'request claim unavailable: deciding without it');
      return { state: 'claimed' };
    }
  }

  function remember(branch: string, gateway: string, response: RequestResponse): void {
    if (!redis) return;
    redis
      .set(claimKey(branch, gateway, response.reqId), JSON.stringify(response), 'EX', dedupTtlS)
      .catch((err: Error) => log.warn({ err: { message: err.message } }, 'request answer not kept for redeliveries'));
  }

  async function dispatch(packet: AedesPublishPacket, receivedAtMs: number, started: number): Promise<void> {
    const topic = parseTopic(packet.topic);
    if (topic?.kind !== 'gateway-request') return;
    const { branch, gateway, name } = topic;
    const payload = Buffer.isBuffer(packet.payload) ? packet.payload : Buffer.from(packet.payload);
    const count = (outcome: RequestOutcome) => metrics.requests.inc({ name, outcome });
    const answer = async (response: RequestResponse, outcome: RequestOutcome) => {
      await publish(branch, gateway, name, response);
      metrics.duration.observe({ name }, (performance.now() - started) / 1000);
      count(outcome);
    };

    const parsed = parsePayload(REQUEST_PAYLOADS[name], payload);
    if (!parsed.ok) {
      const reqId = readableReqId(payload);
      log.warn({ gateway, branch, name, reason: parsed.reason, path: parsed.path }, 'invalid gateway request');
      if (!reqId) return count('unanswerable');
      return answer(
        { reqId, ok: false, error: { code: 'invalid-request', message: parsed.path ?? parsed.reason } },
        'invalid',
      );
    }
    const request = parsed.value;
    const { reqId } = request;

    const gatewayKey = `${branch}/${gateway}`;
    const running = inFlight.get(gatewayKey) ?? 0;
    if (running >= maxInFlight) {
      return answer({ reqId, ok: false, error: { code: 'busy', message: 'too many requests in flight' } }, 'busy');
    }
    const handler = handlers.get(name);
    if (!handler) {
      return answer(
        { reqId, ok: false, error: { code: 'unsupported', message: `no handler for ${name}` } },
        'no-handler',
      );
    }

    inFlight.set(gatewayKey, running + 1);
    let timer: NodeJS.Timeout | undefined;
    const expired = new AbortController();
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => {
          expired.abort();
          reject(new DeadlineExceeded());
        },
        Math.max(1, deadlineMs - (performance.now() - started)),
      );
    });
    const work = (async () => {
      const claimed = await claim(branch, gateway, reqId);
      if (claimed.state !== 'claimed') return claimed;
      // Nobody waits for a decision any more (a slow Redis took the time): the gateway decides offline.
      if (expired.signal.aborted) return { state: 'late' as const };
      const decision = await handler(request, { branch, gateway, name, receivedAtMs, signal: expired.signal });
      // Kept for redeliveries. A decision after the deadline is not: the gateway was told `timeout`, and a
      // redelivery gets that same answer.
      if (!expired.signal.aborted) remember(branch, gateway, { reqId, ok: true, decision });
      return { state: 'decided' as const, decision };
    })();
    // The handler runs to its end even past the deadline: it holds its in-flight slot until then.
    void work
      .catch(() => undefined)
      .finally(() => {
        const left = (inFlight.get(gatewayKey) ?? 1) - 1;
        if (left <= 0) inFlight.delete(gatewayKey);
        else inFlight.set(gatewayKey, left);
      });
    try {
      // `late` never wins the race (it comes after the deadline fired), but the type has it.
      const result = await Promise.race([work, deadline]);
      if (result.state === 'elsewhere' || result.state === 'late') return count('duplicate');
      if (result.state === 'answered') return answer(result.response, 'duplicate');
      return answer({ reqId, ok: true, decision: result.decision }, result.decision.decision);
    } catch (err) {
      if (err instanceof DeadlineExceeded) {
        log.warn({ gateway, branch, name, reqId, deadlineMs }, 'gateway request not decided in time');
        const response: RequestResponse = {
          reqId,
          ok: false,
          error: { code: 'timeout', message: 'no decision in time' },
        };
        remember(branch, gateway, response);
        return answer(response, 'timeout');
      }
      log.error({ err, gateway, branch, name, reqId }, 'gateway request handler failed');
      const response: RequestResponse = {
        reqId,
        ok: false,
        error: { code: 'internal', message: 'the request could not be decided' },
      };
      remember(branch, gateway, response);
      return answer(response, 'error');
    } finally {
      clearTimeout(timer);
    }
  }

  const onRequest = (packet: AedesPublishPacket, done: () => void) => {
    done(); // never hold the broker: the answer goes out on its own topic
    if (stopped) return;
    const started = performance.now();
    const task = dispatch(packet, clock.nowMs(), started)
      .catch((err: unknown) => log.error({ err }, 'gateway request dispatch failed'))
      .finally(() => pending.delete(task));
    pending.add(task);
  };

  let subscribed: Promise<void> | undefined;

  return {
    handle(name, handler) {
      handlers.set(name, handler as unknown as GatewayRequestHandler<RequestName>);
    },
    start() {
      subscribed ??= new Promise<void>((resolve) => aedes.subscribe(filters.allGatewayRequests(), onRequest, resolve));
      return subscribed;
    },
    async stop() {
      stopped = true;
      if (subscribed) {
        await subscribed;
        await new Promise<void>((resolve) => aedes.unsubscribe(filters.allGatewayRequests(), onRequest, resolve));
      }
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        Promise.allSettled([...pending]),
        new Promise((resolve) => (timer = setTimeout(resolve, deadlineMs + 200))),
      ]);
      clearTimeout(timer);
    },
  };
}
