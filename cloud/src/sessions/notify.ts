/**
 * The in-app notice of a session that ended by itself (4-hour limit, closing time): a UserNotification on the
 * member's own `u/{user}/live/notification` topic (QoS0, not retained: only an app connected now sees it; push
 * notifications can subscribe to `sessions.onEnded` the same way). Ends the member chose need no notice.
 */
import type { Aedes } from 'aedes';
import type { Logger } from '../../../tools/runtime/logger.ts';
import { TOPIC_POLICY, newMsgId, topics, validatePayload, type UserId } from '../../../protocol/index.ts';
import type { SessionEnded } from './service.ts';

const NOTICES: Partial<Record<SessionEnded['reason'], { title: string; body: (minutes: number) => string }>> = {
  'auto-timeout': {
    title: 'Your gym session ended',
    body: (minutes) => `Your session was closed automatically after ${minutes} minutes. Check in again to continue.`,
  },
  'branch-closed': {
    title: 'The gym has closed',
    body: (minutes) => `Your session was closed at closing time after ${minutes} minutes.`,
  },
};

export function createEndNotifier({ aedes, log }: { aedes: Aedes; log: Logger }) {
  return (event: SessionEnded): void => {
    const notice = NOTICES[event.reason];
    if (!notice) return;
    const checked = validatePayload('UserNotification', {
      id: newMsgId(),
      ts: event.endedAtMs,
      category: 'session-ended',
      title: notice.title,
      body: notice.body(Math.round(event.durationMs / 60_000)),
      data: { sessionId: event.sessionId, reason: event.reason, branchId: event.branch },
    });
    if (!checked.ok) {
      log.error({ path: checked.path, issue: checked.issue }, 'session notice does not match UserNotification');
      return;
    }
    aedes.publish(
      {
        cmd: 'publish',
        topic: topics.userLive(event.userId as UserId, 'notification'),
        payload: Buffer.from(JSON.stringify(checked.value)),
        qos: TOPIC_POLICY['user-live'].qos,
        retain: false,
        dup: false,
      },
      (err) => {
        if (err) log.warn({ err: { message: err.message } }, 'session notice not published');
      },
    );
  };
}
