/**
 * Bad payloads for the bad-payload-storm scenario: what a buggy or hostile console sends next to its real traffic.
 * - `not-json`: a payload cut short (no msgId can be read from it);
 * - `invalid`: a well-formed envelope with a body the schema refuses (a machine state that does not exist);
 * - `wrong-source`: a valid event that names another machine as its source, on this machine's topic;
 * - `oversized`: a payload above the gateway's packet limit (64 KiB by default): the gateway cuts the connection.
 * None of them may reach MongoDB: the report checks the msgIds of those that carry one.
 */
import { newBootId, newMsgId } from '../../protocol/ids.ts';
import type { OutgoingKind } from './machine.ts';
import type { Rng } from './random.ts';

export const BAD_PAYLOAD_KINDS = ['not-json', 'invalid', 'wrong-source', 'oversized'] as const;
export type BadPayloadKind = (typeof BAD_PAYLOAD_KINDS)[number];

export interface BadPayload {
  readonly kind: BadPayloadKind;
  readonly lane: OutgoingKind;
  readonly payload: string;
  /** The msgId it carries, when it carries one. */
  readonly msgId?: string;
}

const OVERSIZED_BYTES = 80 * 1024;

/** One bad payload, its kind drawn with weights 30 / 40 / 28 / 2 %. */
export function badPayload(rng: Rng, { machine, other }: { machine: string; other: string }): BadPayload {
  const roll = rng.next();
  // An envelope of its own (another boot), so that the machine's real seq numbering is left alone.
  const envelope = (source: string) => ({
    msgId: newMsgId(),
    source,
    bootId: newBootId(),
    seq: rng.int(0, 1_000_000),
    ts: Date.now(),
    v: 0,
  });
  if (roll < 0.3) {
    const text = JSON.stringify({ ...envelope(machine), type: 'machine-state', state: 'started' });
    return { kind: 'not-json', lane: rng.chance(0.5) ? 'telemetry' : 'event', payload: text.slice(0, rng.int(1, 40)) };
  }
  if (roll < 0.7) {
    const body = { ...envelope(machine), type: 'machine-state', state: 'exploded', by: 'user' };
    return { kind: 'invalid', lane: 'event', payload: JSON.stringify(body), msgId: body.msgId };
  }
  if (roll < 0.98 && other !== machine) {
    const body = { ...envelope(other), type: 'machine-state', state: 'paused', by: 'user' };
    return { kind: 'wrong-source', lane: 'event', payload: JSON.stringify(body), msgId: body.msgId };
  }
  const body = { ...envelope(machine), type: 'machine-state', state: 'paused', note: 'x'.repeat(OVERSIZED_BYTES) };
  return { kind: 'oversized', lane: 'event', payload: JSON.stringify(body), msgId: body.msgId };
}
