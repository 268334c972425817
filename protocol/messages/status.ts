/**
 * Machine availability, published retained on `m/{machine}/status` and registered as the MQTT last will.
 *
 * A last will is composed at CONNECT, so its `seq` is older than every status sent later on that connection, and
 * plain `(bootId, seq)` ordering would throw it away. Statuses therefore carry `conn`, the connection number
 * within the boot (Sparkplug's bdSeq idea): a will ends exactly the connection it was registered with.
 * `statusSupersedes` is the rule, shared by the gateway and the cloud.
 */
import * as v from 'valibot';
import { envelopeEntries } from '../envelope.ts';
import { Code, Timestamp, count, positiveZero } from '../scalars.ts';

/**
 * - `online`: connected, availability not known yet (e.g. still booting);
 * - `offline`: disconnected (last will or clean shutdown);
 * - `available`: idle and free to use;
 * - `in_use`: a workout is in progress;
 * - `maintenance`: out of service;
 * - `unknown`: the state cannot be known (the cloud's view while the machine's gateway is offline).
 */
export const MACHINE_STATUSES = ['online', 'offline', 'available', 'in_use', 'maintenance', 'unknown'] as const;
export const MachineStatusValue = v.pipe(v.picklist(MACHINE_STATUSES), v.description('Machine availability'));
export type MachineStatusValue = v.InferOutput<typeof MachineStatusValue>;

/**
 * The connection number within a boot: +1 per CONNECT, from 0. A last will carries the number of the connection
 * it was registered with. Machines (`MachineStatus`) and gateways (`GatewayState`) both carry it; `-0` is
 * normalised to `0` like `seq`.
 */
export const ConnectionNumber = v.pipe(
  count(
    Number.MAX_SAFE_INTEGER,
    'Connection number within this boot, +1 per CONNECT; a last will carries the number of its connection',
  ),
  v.transform(positiveZero),
);

/** A machine's availability change; also its last will (`status: offline`, `lastWill: true`). */
export const MachineStatus = v.pipe(
  v.object({
    ...envelopeEntries,
    status: MachineStatusValue,
    since: v.optional(
      v.pipe(Timestamp, v.description('When this status began; absent in a last will (the receiver uses its clock)')),
    ),
    conn: ConnectionNumber,
    lastWill: v.optional(v.pipe(v.literal(true), v.description('Set only in the last will registered at CONNECT'))),
    reason: v.optional(v.pipe(Code, v.description('Why, e.g. clean-shutdown, safety-key, scheduled-service'))),
  }),
  v.forward(
    v.partialCheck(
      [['status'], ['lastWill']],
      (status) => status.lastWill !== true || status.status === 'offline',
      'Invalid last will: it must say offline',
    ),
    ['lastWill'],
  ),
  v.forward(
    v.partialCheck(
      [['since'], ['ts']],
      (status) => status.since === undefined || status.since <= status.ts,
      'Invalid since: after the record time',
    ),
    ['since'],
  ),
  v.title('MachineStatus'),
  v.description(
    'Machine availability with the envelope. Retained; the last will (registered at CONNECT) is ' +
      '`{status: "offline", lastWill: true}` with the connection number `conn`.',
  ),
);
export type MachineStatus = v.InferOutput<typeof MachineStatus>;

type StatusOrder = Pick<MachineStatus, 'bootId' | 'seq' | 'ts' | 'conn' | 'lastWill'>;

/**
 * Whether `incoming` should replace `held` as a machine's current status (both from the same machine):
 * - another boot: the later event time wins (boot ids are random and cannot be ordered);
 * - same boot, another connection: the later connection wins, so a late will of an old connection is ignored;
 * - same connection: its last will ends it and nothing after the will belongs to it; otherwise `seq` decides.
 */
export function statusSupersedes(incoming: StatusOrder, held: StatusOrder | undefined): boolean {
  if (held === undefined) return true;
  if (incoming.bootId !== held.bootId) return incoming.ts > held.ts;
  if (incoming.conn !== held.conn) return incoming.conn > held.conn;
  if (held.lastWill === true) return false;
  if (incoming.lastWill === true) return true;
  return incoming.seq > held.seq;
}
