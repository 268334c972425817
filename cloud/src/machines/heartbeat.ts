/**
 * Equipment that speaks HTTP rather than MQTT: `POST /api/machines/heartbeat` with the machine's own credentials
 * (its provisioned secret as a Bearer token, SHA-256 checked against `mqtt_identities`, the same identity the MQTT
 * broker checks). Each heartbeat is applied to live state as a status record of the machine (so availability and
 * the retained topic behave exactly as for an MQTT machine); a machine silent for `timeoutMs` gets an offline
 * status like a last will (the sweep), which also releases its link. The next heartbeat after that is a new
 * "connection" (`conn` + 1), so it supersedes the will as a reconnect does.
 *
 * Redis: `hb:{branch}:{machine}` hash (`bootId`, `seq`, `conn`, `gw`, `at`) and the sorted set `hb:due`
 * (`{branch}|{machine}` scored by last heartbeat).
 */
import type { Redis } from 'ioredis';
import type { Clock } from '../../../tools/runtime/clock.ts';
import type { Logger } from '../../../tools/runtime/logger.ts';
import { verifySecret } from '../../../tools/mqtt/secrets.ts';
import type {
  BootId,
  BranchId,
  GatewayId,
  MachineId,
  MachineStatus,
  MachineStatusValue,
} from '../../../protocol/index.ts';
import { newMsgId } from '../../../protocol/index.ts';
import type { IdentityRecord } from '../broker/identities.ts';
import type { LivePublisher } from './live-publisher.ts';
import type { LiveState } from './live-state.ts';

/** A gateway id for machines that reach the cloud over HTTP, not through a branch gateway. */
export const HTTP_GATEWAY = 'http' as GatewayId;

export interface MachineIdentityReader {
  find(id: string): Promise<IdentityRecord | undefined>;
}

export interface MachineAuth {
  /** The machine's branch if the presented secret is its own and it is enabled; undefined otherwise. */
  authenticate(
    machine: string,
    secret: string | undefined,
  ): Promise<{ branch: BranchId; gateway?: string } | undefined>;
}

export function createMachineAuth(identities: MachineIdentityReader): MachineAuth {
  return {
    async authenticate(machine, secret) {
      if (!secret) return undefined;
      const identity = await identities.find(machine);
      if (!identity || identity.role !== 'machine' || identity.disabled) {
        // Same cost whether or not the machine exists.
        verifySecret(secret, '0'.repeat(64));
        return undefined;
      }
      if (!verifySecret(secret, identity.secretHash)) return undefined;
      const branch = identity.branches[0];
      if (!branch) return undefined;
      return { branch: branch as BranchId, ...(identity.gateway ? { gateway: identity.gateway } : {}) };
    },
  };
}

export interface Heartbeats {
  beat(input: {
    branch: BranchId;
    machine: MachineId;
    gateway?: string;
    status: MachineStatusValue;
    bootId?: string;
  }): Promise<{ status: MachineStatusValue; nextBeforeMs: number }>;
  /** Marks machines silent for longer than the timeout offline; resolves with how many. */
  sweep(): Promise<number>;
}

const dueKey = 'hb:due';
const ZREM_IF_DUE = `
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score or tonumber(score) > tonumber(ARGV[2]) then return 0 end
return redis.call('ZREM', KEYS[1], ARGV[1])
`;
const stateKey = (branch: string, machine: string) => `hb:${branch}:${machine}`;

export function createHeartbeats({
  redis,
  live,
  publisher,
  clock,
  log,
  timeoutMs,
}: {
  redis: Redis;
  live: LiveState;
  publisher: LivePublisher;
  clock: Clock;
  log: Logger;
  timeoutMs: number;
}): Heartbeats {
  async function apply(branch: BranchId, machine: MachineId, gateway: GatewayId, status: MachineStatus) {
    const now = clock.nowMs();
    const result = await live.applyMachine(
      { branch, machine, gateway, seenTs: status.ts, status, statusFallbackSince: now },
      now,
    );
    if (result.changed) await publisher.publish(branch, result.availability, now);
    return result;
  }

  return {
    async beat({ branch, machine, gateway, status, bootId }) {
      const now = clock.nowMs();
      const key = stateKey(branch, machine);
      const [heldBoot, heldSeq, heldConn, offline] = await redis.hmget(key, 'bootId', 'seq', 'conn', 'offline');
      const boot = bootId ?? heldBoot ?? `http-${machine}`;
      const sameBoot = boot === heldBoot;
      const seq = sameBoot ? Number(heldSeq ?? 0) + 1 : 0;
      const conn = sameBoot ? Number(heldConn ?? 0) + (offline === '1' ? 1 : 0) : 0;
      const gw = (gateway ?? HTTP_GATEWAY) as GatewayId;
      const record: MachineStatus = {
        msgId: newMsgId(),
        source: machine,
        bootId: boot as BootId,
        seq,
        ts: now,
        v: 0,
        status,
        conn,
      };
      await redis
        .multi()
        .hset(key, { bootId: boot, seq: String(seq), conn: String(conn), gw, at: String(now), offline: '0' })
        .zadd(dueKey, now, `${branch}|${machine}`)
        .exec();
      const result = await apply(branch, machine, gw, record);
      return { status: result.availability.status, nextBeforeMs: now + timeoutMs };
    },

    async sweep() {
      const now = clock.nowMs();
      const due = await redis.zrangebyscore(dueKey, '-inf', now - timeoutMs, 'LIMIT', 0, 500);
      let marked = 0;
      for (const member of due) {
        const [branch, machine] = member.split('|') as [BranchId, MachineId];
        const key = stateKey(branch, machine);
        const [bootId, seq, conn, gw] = await redis.hmget(key, 'bootId', 'seq', 'conn', 'gw');
        // Removed only if no heartbeat came meanwhile (its score would be newer).
        const removed = Number(await redis.eval(ZREM_IF_DUE, 1, dueKey, member, String(now - timeoutMs)));
        if (removed === 0 || !bootId) continue;
        const will = {
          msgId: newMsgId(),
          source: machine,
          bootId,
          seq: Number(seq ?? 0),
          ts: now,
          v: 0,
          status: 'offline',
          conn: Number(conn ?? 0),
          lastWill: true,
          reason: 'missed-heartbeats',
        } as unknown as MachineStatus;
        await redis.hset(key, 'offline', '1');
        await apply(branch, machine, (gw ?? HTTP_GATEWAY) as GatewayId, will);
        marked += 1;
        log.info({ branch, machine }, 'machine missed its heartbeats: offline');
      }
      return marked;
    },
  };
}
