/**
 * `sys/cloud/state`, retained: whether the cloud is up (protocol/messages/cloud.ts). Published by the broker at
 * start (online) and at a graceful stop (offline), so gateways can tell "cloud restarting" from a network fault.
 */
import type { Aedes } from 'aedes';
import { PROTOCOL_MINOR } from '../../../protocol/version.ts';
import type { CloudState } from '../../../protocol/messages/cloud.ts';
import { TOPIC_POLICY, topics } from '../../../protocol/topics.ts';

export function publishCloudState(
  aedes: Aedes,
  state: { online: boolean; since: number; version: string },
): Promise<void> {
  const payload: CloudState = { online: state.online, since: state.since, v: PROTOCOL_MINOR, version: state.version };
  const policy = TOPIC_POLICY['cloud-state'];
  return new Promise<void>((resolve, reject) => {
    aedes.publish(
      {
        cmd: 'publish',
        topic: topics.cloudState(),
        payload: Buffer.from(JSON.stringify(payload)),
        qos: policy.qos,
        retain: policy.retained,
        dup: false,
      },
      (err) => (err ? reject(err) : resolve()),
    );
  });
}
