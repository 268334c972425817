/**
 * The gateways' door requests (`gw/{gateway}/req/check-in` and `…/check-out`), decided by the same session service
 * as the REST routes. The branch is the gateway's own (from the topic, which only that gateway may publish on), and
 * a deny carries the reason the gateway shows at the door.
 *
 * The request's reqId is recorded with its effect (`startedVia.reqId`, `endedVia.reqId`): a decision taken after the
 * deadline — the gateway was answered `timeout` and decided offline, naming that reqId in its access scan — is then
 * recognised when the scan is reconciled, and the tap counts once (service.ts, reconcile.ts).
 */
import type { Decision, SessionId, UserId } from '../../../protocol/index.ts';
import type { GatewayRequests } from '../broker/gateway-requests.ts';
import type { CheckInResult, CheckOutResult, SessionService } from './service.ts';

function decisionOf(result: CheckInResult | CheckOutResult): Decision {
  if (result.ok) {
    return { decision: 'allow', userId: result.userId as UserId, sessionId: result.session.id as SessionId };
  }
  return { decision: 'deny', reason: result.reason, ...(result.userId ? { userId: result.userId as UserId } : {}) };
}

export function registerDoorRequests(requests: Pick<GatewayRequests, 'handle'>, sessions: SessionService): void {
  requests.handle('check-in', async (request, { branch, gateway, signal }) =>
    decisionOf(
      await sessions.checkIn({
        credential: request.credential,
        branchId: branch,
        via: { origin: 'gateway', gateway, reader: request.reader, reqId: request.reqId },
        // Past the dispatcher's deadline the gateway decides offline: no session is opened behind its back.
        signal,
      }),
    ),
  );
  requests.handle('check-out', async (request, { branch, gateway, signal }) =>
    decisionOf(
      await sessions.checkOutByCredential({
        credential: request.credential,
        branchId: branch,
        via: { origin: 'gateway', gateway, reader: request.reader, reqId: request.reqId },
        signal,
      }),
    ),
  );
}
