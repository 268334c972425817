/**
 * Commands from the cloud to the branch's machines: the gateway subscribes to `b/{branch}/m/+/cmd/+` on the cloud
 * broker (the forwarder) and republishes each command, unchanged, on its own broker, where only that machine may
 * subscribe to it (acl.ts). A command for a machine this gateway does not know, or one that fails its schema, is
 * not passed on; it is counted and kept in the rejected list. Commands are not queued: the cloud sees the answer
 * on `…/res` (relayed by the intake) or times out.
 */
import { MACHINE_COMMAND_PAYLOADS, parsePayload, parseTopic } from '../../../protocol/index.ts';
import type { Logger } from '../../../tools/runtime/logger.ts';
import type { MachineRegistry } from '../machines-file.ts';
import type { GatewayMetrics } from '../metrics.ts';
import type { LocalBroker } from './broker.ts';
import type { RejectedList } from './rejected.ts';

export interface CommandRelayOptions {
  readonly machines: MachineRegistry;
  readonly broker: Pick<LocalBroker, 'publish'>;
  readonly rejected: RejectedList;
  readonly metrics: GatewayMetrics;
  readonly log: Logger;
}

/** Returns the handler the forwarder calls with each command topic and payload from the cloud. */
export function createCommandRelay({ machines, broker, rejected, metrics, log }: CommandRelayOptions) {
  return (topic: string, payload: Buffer): void => {
    const parsed = parseTopic(topic);
    if (parsed?.kind !== 'machine-command' || parsed.branch !== machines.branch) return;
    if (!machines.has(parsed.machine)) {
      metrics.commandsRelayed.inc({ result: 'unknown-machine' });
      rejected.add({ origin: 'cloud', reason: 'unknown-machine', topic, payload });
      return;
    }
    const checked = parsePayload(MACHINE_COMMAND_PAYLOADS[parsed.name], payload);
    if (!checked.ok) {
      metrics.commandsRelayed.inc({ result: 'invalid' });
      rejected.add({
        origin: 'cloud',
        reason: checked.reason,
        topic,
        payload,
        ...(checked.path === undefined ? {} : { path: checked.path }),
      });
      return;
    }
    broker.publish(topic, payload).then(
      () => metrics.commandsRelayed.inc({ result: 'delivered' }),
      (err: unknown) => {
        metrics.commandsRelayed.inc({ result: 'failed' });
        log.warn({ err, topic }, 'machine command not delivered');
      },
    );
  };
}
