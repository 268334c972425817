/**
 * Publishes a machine's availability for apps, retained, on `b/{branch}/live/machines/{machine}` (LiveMachine). The
 * payload is checked against its schema before it leaves: apps trust what the cloud sends.
 *
 * With an `overlay` (machines/overlay.ts) the status apps see is the overlaid one (`in_use` while a member is linked,
 * `maintenance` while out of order), and `observe` hears every machine status that is published (links are released
 * when a machine goes offline).
 */
import type { Aedes } from 'aedes';
import type { Logger } from '../../../tools/runtime/logger.ts';
import { TOPIC_POLICY, topics, validatePayload } from '../../../protocol/index.ts';
import type { BranchId, LiveMachine } from '../../../protocol/index.ts';
import type { Availability } from './live-state.ts';

export interface LivePublisher {
  /** Resolves once the broker has taken the message (stored as retained and handed to subscribers). */
  publish(branch: BranchId, availability: Availability, asOfMs: number): Promise<void>;
}

export interface LiveHooks {
  overlay?: { apply(branch: BranchId, availability: Availability): Promise<Availability> };
  /** Called with the machine's own availability (before the overlay); must not throw. */
  observe?: (branch: BranchId, availability: Availability) => void;
}

export function createLivePublisher({
  aedes,
  log,
  hooks = {},
}: {
  aedes: Aedes;
  log: Logger;
  hooks?: LiveHooks;
}): LivePublisher {
  const policy = TOPIC_POLICY['live-machine'];
  return {
    async publish(branch, own, asOfMs) {
      hooks.observe?.(branch, own);
      const availability = hooks.overlay ? await hooks.overlay.apply(branch, own) : own;
      const payload: LiveMachine = { ...availability, ts: asOfMs };
      const checked = validatePayload('LiveMachine', payload);
      if (!checked.ok) {
        // Our own bug, never the sender's: say which field, and send nothing apps could misread.
        log.error(
          { machine: availability.machine, path: checked.path, issue: checked.issue },
          'live machine payload invalid',
        );
        return Promise.reject(new Error(`invalid LiveMachine payload (${checked.path ?? checked.reason})`));
      }
      return new Promise((resolve, reject) => {
        aedes.publish(
          {
            cmd: 'publish',
            topic: topics.liveMachine(branch, availability.machine),
            payload: Buffer.from(JSON.stringify(checked.value)),
            qos: policy.qos,
            retain: policy.retained,
            dup: false,
          },
          (err) => (err ? reject(err) : resolve()),
        );
      });
    },
  };
}
