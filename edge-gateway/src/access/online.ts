/**
 * Online decisions: the gateway publishes a request on `gw/{gateway}/req/{name}` (QoS 1, over the forwarder's
 * connection) and waits for the RequestResponse with the same reqId on `…/req/{name}/res`. No answer within the
 * timeout (GATEWAY_ACCESS_TIMEOUT_MS, 700 ms, above the cloud's GATEWAY_REQUEST_DEADLINE_MS of 500 ms so the cloud
 * answers — a decision or `timeout` — before the gateway gives up), the link down, or an `ok: false` answer: the
 * caller decides offline. Only answers on this gateway's own `…/req/{name}/res` topic with the reqId and name of a
 * waiting request count. An answer that comes after the gateway decided offline (a slow link) is ignored: one scan
 * gets one decision; it is counted (`late`) and logged. The cloud may have applied that late decision (a check-in
 * committed after its deadline): the offline decision's record names the same reqId, and the cloud applies the tap
 * once (docs/sessions.md "One tap, one effect").
 */
import { parsePayload, parseTopic, topics } from '../../../protocol/index.ts';
import type {
  BranchId,
  CheckInRequest,
  Decision,
  GatewayId,
  LinkRequest,
  RequestName,
  ReqId,
  UnlinkRequest,
} from '../../../protocol/index.ts';
import type { Logger } from '../../../tools/runtime/logger.ts';

/** Requests given up that are remembered to recognise a late answer. */
const GIVEN_UP_KEPT = 1_000;

export type RequestOf<N extends RequestName> = N extends 'check-in' | 'check-out'
  ? CheckInRequest
  : N extends 'link'
    ? LinkRequest
    : UnlinkRequest;

export type OnlineAnswer =
  | { readonly ok: true; readonly decision: Decision }
  | { readonly ok: false; readonly why: 'offline' | 'timeout' | 'error'; readonly error?: string };

export interface OnlineRequesterOptions {
  readonly branch: BranchId;
  readonly gatewayId: GatewayId;
  /** Publishes on the cloud connection; false when the uplink is down (forwarder.relay). */
  readonly publish: (topic: string, payload: Buffer) => boolean;
  readonly timeoutMs: number;
  readonly log: Logger;
}

export interface OnlineRequester {
  ask<N extends RequestName>(name: N, request: RequestOf<N>): Promise<OnlineAnswer>;
  /** Hands a message from `gw/{gateway}/req/+/res` to the waiting request. */
  onResponse(topic: string, payload: Buffer): void;
  /** Requests waiting for an answer. */
  readonly waiting: number;
  /** Answers that came after their request was decided offline (ignored). */
  readonly late: number;
  /** Answers ignored otherwise: another gateway's topic, unreadable, or a reqId this gateway never asked. */
  readonly stray: number;
  /** Answers every waiting request with `offline` (shutdown). */
  close(): void;
}

export function createOnlineRequester(options: OnlineRequesterOptions): OnlineRequester {
  const { branch, gatewayId, log } = options;
  const pending = new Map<ReqId, { name: RequestName; settle: (answer: OnlineAnswer) => void }>();
  /** Requests given up (timeout, offline) recently, so an answer after that is told apart from a stray one. */
  const givenUp = new Map<ReqId, RequestName>();
  let late = 0;
  let stray = 0;

  return {
    ask(name, request) {
      const payload = Buffer.from(JSON.stringify(request));
      return new Promise<OnlineAnswer>((resolve) => {
        const timer = setTimeout(() => settle({ ok: false, why: 'timeout' }), options.timeoutMs);
        const settle = (answer: OnlineAnswer) => {
          if (!pending.delete(request.reqId)) return;
          clearTimeout(timer);
          if (!answer.ok && answer.why !== 'error') {
            givenUp.set(request.reqId, name);
            if (givenUp.size > GIVEN_UP_KEPT) givenUp.delete(givenUp.keys().next().value!);
          }
          resolve(answer);
        };
        pending.set(request.reqId, { name, settle });
        if (!options.publish(topics.gatewayRequest(branch, gatewayId, name), payload)) {
          settle({ ok: false, why: 'offline' });
        }
      });
    },
    onResponse(topic, payload) {
      const parsed = parseTopic(topic);
      if (parsed?.kind !== 'gateway-request-response' || parsed.branch !== branch || parsed.gateway !== gatewayId) {
        stray += 1;
        log.warn({ topic }, 'request response on another gateway’s topic ignored');
        return;
      }
      const response = parsePayload('RequestResponse', payload);
      if (!response.ok) {
        stray += 1;
        log.warn({ topic, reason: response.reason, path: response.path }, 'unreadable request response ignored');
        return;
      }
      const reqId = response.value.reqId;
      const waiter = pending.get(reqId);
      if (waiter === undefined || waiter.name !== parsed.name) {
        if (givenUp.get(reqId) === parsed.name) {
          givenUp.delete(reqId);
          late += 1;
          log.warn({ name: parsed.name, reqId }, 'cloud answer after the gateway decided offline: ignored');
        } else {
          stray += 1;
          log.warn({ name: parsed.name, reqId }, 'answer to no request of this gateway ignored');
        }
        return;
      }
      const value = response.value;
      waiter.settle(
        value.ok ? { ok: true, decision: value.decision } : { ok: false, why: 'error', error: value.error.code },
      );
    },
    get waiting() {
      return pending.size;
    },
    get late() {
      return late;
    },
    get stray() {
      return stray;
    },
    close() {
      for (const waiter of [...pending.values()]) waiter.settle({ ok: false, why: 'offline' });
    },
  };
}
