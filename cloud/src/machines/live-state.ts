/**
 * Live machine state in Redis: per machine its status, last seen, last metrics, type and display name; per gateway
 * its birth or will. Every change is a compare-and-set in one Lua script, so two cloud nodes (or two batches in
 * flight) can never move a machine backwards: a status applies only if it supersedes the held one
 * (`statusSupersedes`), meta and samples only if newer (`isNewer`), a gateway state only by
 * `gatewayStateSupersedes`. The scripts mirror those protocol functions; live-state.test.ts checks the two agree on
 * random inputs.
 *
 * Keys (under the client's key prefix, REDIS_KEY_PREFIX):
 * - `live:machines:{branch}` — set of the branch's machine ids (the availability query's index);
 * - `live:machine:{branch}:{machine}` — hash: `machine`, `gw` (the gateway its records last came through),
 *   `status`, `since`, `sBoot`, `sSeq`, `sTs`, `sConn`, `sWill`, `type`, `displayName`, `mBoot`, `mSeq`, `mTs`,
 *   `metrics` (JSON of the last sample), `tBoot`, `tSeq`, `tTs`, `lastSeen`, `firstSeen`;
 * - `live:gateway:{branch}:{gateway}` — hash: `online` (1/0), `bootId`, `conn`, `ts`, `since`, `updatedAt`.
 *
 * A machine's effective status is `unknown` (since the gateway went offline) while the gateway its records came
 * through is offline (RELIABILITY C6); its own last status is kept, so it shows again when the gateway returns.
 */
import type { Redis } from 'ioredis';
import type {
  BranchId,
  GatewayId,
  GatewayState,
  MachineId,
  MachineMeta,
  MachineStatus,
  MachineStatusValue,
  MachineType,
  Telemetry,
} from '../../../protocol/index.ts';
import { MACHINE_STATUSES, MACHINE_TYPES } from '../../../protocol/index.ts';

export const liveKeys = {
  branchMachines: (branch: BranchId) => `live:machines:${branch}`,
  machine: (branch: BranchId, machine: MachineId) => `live:machine:${branch}:${machine}`,
  gateway: (branch: BranchId, gateway: GatewayId) => `live:gateway:${branch}:${gateway}`,
};

// Shared comparison helpers of the scripts. Numbers arrive as decimal strings (no JSON: Lua would print large
// integers in %.14g and lose digits) and are compared with tonumber, exact up to 2^53 like JavaScript's.
const LUA_HELPERS = `
local function num(s) return tonumber(s) end
local function newer(boot, seq, ts, hBoot, hSeq, hTs)
  if not hBoot then return true end
  if boot == hBoot then return num(seq) > num(hSeq) end
  return num(ts) > num(hTs)
end
local function effective(h, gwOnline, gwSince)
  local status = h.status or 'unknown'
  local since = h.since or h.firstSeen
  if gwOnline == '0' then status = 'unknown'; since = gwSince or since end
  return status, since
end
`;

/**
 * KEYS: machine hash, branch set, gateway hash.
 * ARGV: 1 machine, 2 gateway, 3 seenTs ('' = none), 4 nowMs,
 *   5 hasStatus, 6 bootId, 7 seq, 8 ts, 9 conn, 10 lastWill (1/0), 11 status, 12 since ('' = absent), 13 fallback since,
 *   14 hasMeta, 15 bootId, 16 seq, 17 ts, 18 type, 19 displayName ('' = absent),
 *   20 hasTelemetry, 21 bootId, 22 seq, 23 ts, 24 metrics JSON.
 * Returns: changed (1/0: the availability apps see changed), status applied, meta applied, sample applied,
 *   effective status, since, type, displayName.
 */
const APPLY_MACHINE = `${LUA_HELPERS}
local FIELDS = {'status','since','sBoot','sSeq','sTs','sConn','sWill','type','displayName','mBoot','mSeq','mTs',
  'tBoot','tSeq','tTs','lastSeen','firstSeen','gw'}
local raw = redis.call('HMGET', KEYS[1], unpack(FIELDS))
local h = {}
for i, f in ipairs(FIELDS) do if raw[i] then h[f] = raw[i] end end
local gw = redis.call('HMGET', KEYS[3], 'online', 'since')
local beforeStatus, beforeSince = effective(h, gw[1], gw[2])
local beforeType, beforeName = h.type or '', h.displayName or ''
local set = {'machine', ARGV[1], 'gw', ARGV[2]}
local function put(f, value) set[#set + 1] = f; set[#set + 1] = value; h[f] = value end
if not h.firstSeen then put('firstSeen', ARGV[4]) end
if ARGV[3] ~= '' and (not h.lastSeen or num(ARGV[3]) > num(h.lastSeen)) then put('lastSeen', ARGV[3]) end

local statusApplied = 0
if ARGV[5] == '1' then
  local apply
  if not h.sBoot then apply = true
  elseif ARGV[6] ~= h.sBoot then apply = num(ARGV[8]) > num(h.sTs)
  elseif num(ARGV[9]) ~= num(h.sConn) then apply = num(ARGV[9]) > num(h.sConn)
  elseif h.sWill == '1' then apply = false
  elseif ARGV[10] == '1' then apply = true
  else apply = num(ARGV[7]) > num(h.sSeq) end
  if apply then
    statusApplied = 1
    local since = ARGV[12]
    if since == '' then
      if h.status == ARGV[11] and h.since then since = h.since else since = ARGV[13] end
    end
    put('sBoot', ARGV[6]); put('sSeq', ARGV[7]); put('sTs', ARGV[8]); put('sConn', ARGV[9]); put('sWill', ARGV[10])
    put('status', ARGV[11]); put('since', since)
  end
end

local metaApplied = 0
if ARGV[14] == '1' and newer(ARGV[15], ARGV[16], ARGV[17], h.mBoot, h.mSeq, h.mTs) then
  metaApplied = 1
  put('mBoot', ARGV[15]); put('mSeq', ARGV[16]); put('mTs', ARGV[17]); put('type', ARGV[18])
  if ARGV[19] == '' then
    redis.call('HDEL', KEYS[1], 'displayName'); h.displayName = nil
  else
    put('displayName', ARGV[19])
  end
end

local sampleApplied = 0
if ARGV[20] == '1' and newer(ARGV[21], ARGV[22], ARGV[23], h.tBoot, h.tSeq, h.tTs) then
  sampleApplied = 1
  put('tBoot', ARGV[21]); put('tSeq', ARGV[22]); put('tTs', ARGV[23]); put('metrics', ARGV[24])
end

redis.call('HSET', KEYS[1], unpack(set))
redis.call('SADD', KEYS[2], ARGV[1])
local afterStatus, afterSince = effective(h, gw[1], gw[2])
local afterType, afterName = h.type or '', h.displayName or ''
local changed = 0
if afterStatus ~= beforeStatus or afterSince ~= beforeSince or afterType ~= beforeType or afterName ~= beforeName then
  changed = 1
end
return {changed, statusApplied, metaApplied, sampleApplied, afterStatus, afterSince, afterType, afterName}
`;

/**
 * KEYS: gateway hash. ARGV: 1 online (1/0), 2 bootId, 3 conn, 4 ts, 5 since, 6 nowMs.
 * Returns: applied (1/0), the online flag held before ('' = none).
 */
const APPLY_GATEWAY = `
local h = redis.call('HMGET', KEYS[1], 'online', 'bootId', 'conn', 'ts')
local online, boot, conn, ts = h[1], h[2], h[3], h[4]
local apply
if not boot then apply = true
elseif ARGV[2] ~= boot then apply = tonumber(ARGV[4]) > tonumber(ts)
elseif tonumber(ARGV[3]) ~= tonumber(conn) then apply = tonumber(ARGV[3]) > tonumber(conn)
elseif online == '0' then apply = false
elseif ARGV[1] == '0' then apply = true
else apply = tonumber(ARGV[4]) > tonumber(ts) end
if not apply then return {0, online or ''} end
local since = ARGV[5]
if online == ARGV[1] then since = redis.call('HGET', KEYS[1], 'since') or since end
redis.call('HSET', KEYS[1], 'online', ARGV[1], 'bootId', ARGV[2], 'conn', ARGV[3], 'ts', ARGV[4], 'since', since,
  'updatedAt', ARGV[6])
return {1, online or ''}
`;

/** What one batch tells about one machine: its newest status, meta and sample in the batch, and its latest time. */
export interface MachineUpdate {
  branch: BranchId;
  machine: MachineId;
  gateway: GatewayId;
  /** Latest event time of any of its records. */
  seenTs?: number;
  status?: MachineStatus;
  /** For a status without `since` (a last will): when the gateway queued it, or now. */
  statusFallbackSince?: number;
  meta?: MachineMeta;
  telemetry?: Telemetry;
}

/** A machine's availability as apps see it (the LiveMachine payload without `ts`). */
export interface Availability {
  machine: MachineId;
  status: MachineStatusValue;
  since: number;
  type?: MachineType;
  displayName?: string;
}

export interface MachineApplyResult {
  /** Whether what apps see changed (status, since, type or display name): republish the live topic. */
  changed: boolean;
  statusApplied: boolean;
  metaApplied: boolean;
  sampleApplied: boolean;
  availability: Availability;
}

export interface GatewayApplyResult {
  applied: boolean;
  /** Whether the gateway went from online to offline or back (or appeared/disappeared): republish its machines. */
  onlineChanged: boolean;
}

/** A machine as the availability endpoint shows it. */
export interface MachineView extends Availability {
  gateway?: GatewayId;
  lastSeen?: number;
  /** The last sample's measures (envelope left out). */
  metrics?: Record<string, unknown>;
  metricsTs?: number;
}

export interface LiveState {
  applyMachine(update: MachineUpdate, nowMs: number): Promise<MachineApplyResult>;
  /** Applies a gateway's birth or will; `undefined` (a cleared retained state) removes what is held. */
  applyGateway(
    branch: BranchId,
    gateway: GatewayId,
    state: GatewayState | undefined,
    nowMs: number,
  ): Promise<GatewayApplyResult>;
  /** The machines of a branch whose records came through `gateway` (all of the branch's if omitted). */
  listBranch(branch: BranchId, gateway?: GatewayId): Promise<MachineView[]>;
  /** One machine of a branch, as listBranch shows it; undefined when the cloud holds no live state of it. */
  get(branch: BranchId, machine: MachineId): Promise<MachineView | undefined>;
}

type ScriptResult = [number, number, number, number, string, string, string, string];

interface ScriptedRedis {
  nxgLiveApplyMachine(k1: string, k2: string, k3: string, ...argv: string[]): Promise<ScriptResult>;
  nxgLiveApplyGateway(k1: string, ...argv: string[]): Promise<[number, string]>;
}

const STATUSES: ReadonlySet<string> = new Set(MACHINE_STATUSES);
const TYPES: ReadonlySet<string> = new Set(MACHINE_TYPES);
const ENVELOPE_KEYS = new Set(['msgId', 'source', 'bootId', 'seq', 'ts', 'v']);

/** Live state on a Redis client (its key prefix applies to every key). */
export function createLiveState(redis: Redis): LiveState {
  const scripted = redis as Redis & Partial<ScriptedRedis>;
  if (!scripted.nxgLiveApplyMachine) {
    redis.defineCommand('nxgLiveApplyMachine', { numberOfKeys: 3, lua: APPLY_MACHINE });
    redis.defineCommand('nxgLiveApplyGateway', { numberOfKeys: 1, lua: APPLY_GATEWAY });
  }
  const r = redis as Redis & ScriptedRedis;

  return {
    async applyMachine(u, nowMs) {
      const s = u.status;
      const m = u.meta;
      const t = u.telemetry;
      const argv = [
        u.machine,
        u.gateway,
        u.seenTs === undefined ? '' : String(u.seenTs),
        String(nowMs),
        ...(s
          ? [
              '1',
              s.bootId,
              String(s.seq),
              String(s.ts),
              String(s.conn),
              s.lastWill === true ? '1' : '0',
              s.status,
              s.since === undefined ? '' : String(s.since),
              String(u.statusFallbackSince ?? nowMs),
            ]
          : ['0', '', '', '', '', '', '', '', '']),
        ...(m ? ['1', m.bootId, String(m.seq), String(m.ts), m.type, m.displayName ?? ''] : ['0', '', '', '', '', '']),
        ...(t ? ['1', t.bootId, String(t.seq), String(t.ts), JSON.stringify(measuresOf(t))] : ['0', '', '', '', '']),
      ];
      const [changed, statusApplied, metaApplied, sampleApplied, status, since, type, displayName] =
        await r.nxgLiveApplyMachine(
          liveKeys.machine(u.branch, u.machine),
          liveKeys.branchMachines(u.branch),
          liveKeys.gateway(u.branch, u.gateway),
          ...argv,
        );
      return {
        changed: changed === 1,
        statusApplied: statusApplied === 1,
        metaApplied: metaApplied === 1,
        sampleApplied: sampleApplied === 1,
        availability: availabilityOf(u.machine, { status, since, type, displayName }),
      };
    },

    async applyGateway(branch, gateway, state, nowMs) {
      const key = liveKeys.gateway(branch, gateway);
      if (state === undefined) {
        const held = await redis.hget(key, 'online');
        await redis.del(key);
        return { applied: held !== null, onlineChanged: held === '0' };
      }
      const since = state.online ? state.since : (state.since ?? nowMs);
      const [applied, before] = await r.nxgLiveApplyGateway(
        key,
        state.online ? '1' : '0',
        state.bootId,
        String(state.conn),
        String(state.ts),
        String(since),
        String(nowMs),
      );
      const now = state.online ? '1' : '0';
      // A gateway seen for the first time online changes nothing apps see; first seen offline, it does.
      const onlineChanged = applied === 1 && before !== now && (before !== '' || now === '0');
      return { applied: applied === 1, onlineChanged };
    },

    async listBranch(branch, gateway) {
      const ids = (await redis.smembers(liveKeys.branchMachines(branch))).sort();
      return viewsOf(branch, ids, gateway);
    },

    async get(branch, machine) {
      // One machine's hash (and its gateway's), not the branch's: a link or a status check reads this per tap.
      return (await viewsOf(branch, [machine]))[0];
    },
  };

  /** The views of these machines of a branch (those whose hash exists), through `gateway` only if given. */
  async function viewsOf(branch: BranchId, ids: readonly string[], gateway?: GatewayId): Promise<MachineView[]> {
    if (ids.length === 0) return [];
    const reads = redis.pipeline();
    for (const id of ids) reads.hgetall(liveKeys.machine(branch, id as MachineId));
    const hashes = ((await reads.exec()) ?? []).map(([err, value]) => {
      if (err) throw err;
      return value as Record<string, string>;
    });
    const gateways = [...new Set(hashes.map((h) => h.gw).filter((g): g is string => g !== undefined))];
    const gatewayReads = redis.pipeline();
    for (const g of gateways) gatewayReads.hmget(liveKeys.gateway(branch, g as GatewayId), 'online', 'since');
    const gatewayStates = new Map<string, { online: string | null; since: string | null }>();
    ((await gatewayReads.exec()) ?? []).forEach(([err, value], i) => {
      if (err) throw err;
      const [online, since] = value as [string | null, string | null];
      gatewayStates.set(gateways[i]!, { online, since });
    });
    const views: MachineView[] = [];
    hashes.forEach((h, i) => {
      // A machine in the index whose hash is gone (deleted by an operator) is skipped, not shown half.
      if (h.machine === undefined) return;
      if (gateway !== undefined && h.gw !== gateway) return;
      const gw = h.gw === undefined ? undefined : gatewayStates.get(h.gw);
      let status = h.status ?? 'unknown';
      let since = h.since ?? h.firstSeen ?? '0';
      if (gw?.online === '0') {
        status = 'unknown';
        since = gw.since ?? since;
      }
      const view: MachineView = {
        ...availabilityOf(ids[i] as MachineId, {
          status,
          since,
          type: h.type ?? '',
          displayName: h.displayName ?? '',
        }),
        ...(h.gw === undefined ? {} : { gateway: h.gw as GatewayId }),
        ...(h.lastSeen === undefined ? {} : { lastSeen: Number(h.lastSeen) }),
        ...(h.metrics === undefined ? {} : { metrics: parseMetrics(h.metrics) }),
        ...(h.tTs === undefined ? {} : { metricsTs: Number(h.tTs) }),
      };
      views.push(view);
    });
    return views;
  }
}

function availabilityOf(
  machine: MachineId,
  h: { status: string; since: string; type: string; displayName: string },
): Availability {
  return {
    machine,
    status: (STATUSES.has(h.status) ? h.status : 'unknown') as MachineStatusValue,
    since: Number(h.since) || 0,
    ...(TYPES.has(h.type) ? { type: h.type as MachineType } : {}),
    ...(h.displayName === '' ? {} : { displayName: h.displayName }),
  };
}

/** A sample's measures without its envelope: what the availability endpoint shows as the last metrics. */
export function measuresOf(sample: Telemetry): Record<string, unknown> {
  return Object.fromEntries(Object.entries(sample).filter(([key]) => !ENVELOPE_KEYS.has(key)));
}

function parseMetrics(json: string): Record<string, unknown> | undefined {
  try {
    const value: unknown = JSON.parse(json);
    return typeof value === 'object' && value !== null ? (value as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}
