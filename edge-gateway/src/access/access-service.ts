/**
 * The access path: a scan from a reader (door or machine-mounted) or a credential a machine reports becomes a
 * decision, shown where the member stands, and a record.
 *
 * 1. Role: the signed configuration's `readers` say what a reader is for (check-in, check-out, or `link` at a
 *    machine); a scan at a reader it does not list is ignored (counted, logged). A machine's own `qr-scanned` /
 *    `nfc-tapped` event is a link at that machine — or an unlink when the member the gateway last linked there
 *    presents their credential again.
 * 2. What the gateway can tell alone: a card UID's hash, a QR token's signature and claims (QR keys of the signed
 *    configuration). A QR token's nonce is claimed in the persisted replay cache at once: a nonce seen before is
 *    denied `replayed-token` by the gateway without asking (the first use may have been decided offline, which the
 *    cloud has not seen yet).
 * 3. Online first: request on `gw/{gateway}/req/{name}` and wait ~700 ms for the answer; otherwise offline
 *    (offline.ts) from the allow-list. Either way within a second.
 * 4. Shown: at a machine by its command topics on the local broker (`cmd/link`, `cmd/unlink`, or `cmd/display`
 *    for a deny); at a door through the `door` listeners (log, health, GATEWAY_DOOR_COMMAND hook).
 * 5. Recorded through the durable queue: every door decision as an AccessScan (access lane, online and offline;
 *    also published as it happens on `access/{reader}/scan` while the uplink is up);
 *    every offline link/unlink as an OfflineDecision (records lane) so the cloud can apply or undo it. A record of
 *    an offline decision names the online request tried first (AccessScan `reqId`, OfflineDecision `request.reqId`):
 *    the cloud may have decided it after its deadline, and applies one tap once. Online
 *    link/unlink decisions are the cloud's own and need no record (AccessScan's action is check-in/check-out only).
 *    Credentials: AccessScan carries the credential as the protocol defines it (the UID; the QR token, which
 *    expires within 60 s and whose nonce is single-use) — the cloud needs them to reconcile; logs carry neither.
 * 6. The gateway stands by what it decided offline until the cloud has applied it: its records reach the cloud
 *    seconds later (more under load), so an online answer meanwhile may contradict them. It remembers, in memory,
 *    the members it checked in offline (forgotten at their check-out) and the links it made offline (forgotten at
 *    their unlink, or an online link/unlink at that machine), each for OFFLINE_VOUCH_MS and at most
 *    OFFLINE_VOUCH_MAX of each. The cloud's `not-checked-in` to a link of a member it checked in offline, or its
 *    `not-linked` to an unlink of a link it made offline, is then overridden: decided offline as after a timeout,
 *    with the OfflineDecision naming the request tried (the cloud applies it in order after the check-in or link
 *    records, machines/index.ts applyOfflineDecisions). Logged at info, counted in stats().overrides.
 *    Why a time bound rather than the uplink's acks: an ack says the batch is stored, not applied (the cloud applies
 *    stored records afterwards, and an offline link waits up to 2 min for its check-in); 10 min is far beyond
 *    that under load, while a wrong override is undone by the cloud (an offline link without a visit is undone).
 */
import { createEnvelopeStamper, newReqId, RECORD_KIND_LANE, topics, validatePayload } from '../../../protocol/index.ts';
import type {
  AccessScan,
  BootId,
  BranchId,
  Credential,
  Decision,
  GatewayId,
  GatewayReaderConfig,
  MachineId,
  OfflineDecision,
  ReaderId,
  ReqId,
  SourceId,
  UplinkRecord,
  UserId,
} from '../../../protocol/index.ts';
import type { Logger } from '../../../tools/runtime/logger.ts';
import { DEFAULT_ALLOW_LIST_MAX_AGE_S, type AllowList } from '../cloud-config/allow-list.ts';
import { createKeyring, type Keyring } from '../cloud-config/keys.ts';
import type { SignedConfig } from '../cloud-config/signed-config.ts';
import type { UplinkQueue } from '../uplink/queue.ts';
import { QR_LEEWAY_MS, cardHash, checkQrToken } from './credentials.ts';
import { decideOffline, memberOf, type Identified } from './offline.ts';
import type { OnlineRequester } from './online.ts';
import type { ReaderScan } from './readers.ts';
import type { ReplayCache } from './replay-cache.ts';

export type AccessAction = 'check-in' | 'check-out' | 'link' | 'unlink';

export interface AccessOutcome {
  readonly action: AccessAction;
  readonly reader?: ReaderId;
  readonly machine?: MachineId;
  readonly decision: Decision;
  readonly decidedBy: 'online' | 'offline';
  /** Scan to decision, ms. */
  readonly latencyMs: number;
  readonly reqId: ReqId;
  /**
   * Why the cloud was not asked or did not decide (offline decisions only). `cloud-behind`: the cloud answered
   * `not-checked-in` / `not-linked` against this gateway's own offline check-in or link it has not applied yet.
   */
  readonly fallback?: 'offline' | 'timeout' | 'error' | 'replayed' | 'cloud-behind';
}

export interface DoorDecision {
  readonly reader: ReaderId;
  readonly action: 'check-in' | 'check-out';
  readonly decision: Decision;
  readonly decidedBy: 'online' | 'offline';
}

export interface AccessServiceOptions {
  readonly branch: BranchId;
  readonly gatewayId: GatewayId;
  readonly bootId: BootId;
  readonly signedConfig: SignedConfig;
  readonly allowList: AllowList;
  readonly replay: ReplayCache;
  readonly requester: OnlineRequester;
  readonly queue: Pick<UplinkQueue, 'append'>;
  /** Called after each record is queued (forwarder.wake). */
  readonly onQueued: () => void;
  /** Publishes the scan as it happens on `access/{reader}/scan` (the cloud connection; best effort, not queued). */
  readonly publishScan?: (topic: string, payload: Buffer) => void;
  /** Publishes a command to a machine on the local broker. */
  readonly machineCommand: (topic: string, payload: Buffer) => Promise<void>;
  readonly nowMs: () => number;
  readonly log: Logger;
  /** Bounds of the memory of this gateway's own offline check-ins and links (point 6); defaults for tests to lower. */
  readonly vouch?: { readonly maxAgeMs: number; readonly maxEntries: number };
}

export interface AccessStats {
  readonly decisions: number;
  readonly online: number;
  readonly offline: number;
  readonly allowed: number;
  readonly denied: number;
  readonly unconfiguredReader: number;
  readonly recordFailures: number;
  /** Cloud answers overridden by the gateway's own offline decisions the cloud had not applied yet. */
  readonly overrides: { readonly notCheckedIn: number; readonly notLinked: number };
  readonly last?: {
    readonly action: AccessAction;
    readonly decision: string;
    readonly decidedBy: string;
    readonly atMs: number;
  };
}

export interface AccessService {
  /** A scan at a reader of this gateway (line reader, NFC). Undefined when the reader is not configured. */
  scan(scan: ReaderScan): Promise<AccessOutcome | undefined>;
  /** A credential a machine reported (its qr-scanned / nfc-tapped event): link or unlink at that machine. */
  machineCredential(machine: MachineId, credential: Credential, atMs: number): Promise<AccessOutcome>;
  /** Listeners for door decisions (display/relay hook). */
  onDoor(listener: (decision: DoorDecision) => void): void;
  /** Every decision, door or machine, once shown and its record (if any) queued. */
  onDecision(listener: (outcome: AccessOutcome) => void): void;
  /** The reader configuration in use. */
  readers(): readonly GatewayReaderConfig[];
  stats(): AccessStats;
}

/** How long a machine command the gateway sends stays executable (a link shown minutes late is worse than none). */
const MACHINE_COMMAND_TTL_MS = 10_000;

/** How long the gateway stands by an offline check-in or link against the cloud's contrary answer (point 6). */
export const OFFLINE_VOUCH_MS = 10 * 60_000;
/** At most this many offline check-ins, and as many offline links, are remembered (oldest forgotten first). */
export const OFFLINE_VOUCH_MAX = 10_000;

/** A bounded, insertion-ordered memory of recent offline decisions: by count and by age. */
function createRecent<K, V extends { readonly atMs: number }>(
  nowMs: () => number,
  bounds: { readonly maxAgeMs: number; readonly maxEntries: number },
) {
  const entries = new Map<K, V>();
  const prune = () => {
    const now = nowMs();
    for (const [key, value] of entries) {
      if (entries.size <= bounds.maxEntries && now - value.atMs <= bounds.maxAgeMs) break;
      entries.delete(key);
    }
  };
  return {
    set(key: K, value: V) {
      entries.delete(key); // re-inserted at the end: the order stays the order of decision
      entries.set(key, value);
      prune();
    },
    get(key: K): V | undefined {
      prune();
      return entries.get(key);
    },
    delete: (key: K) => entries.delete(key),
  };
}

export function createAccessService(options: AccessServiceOptions): AccessService {
  const { branch, signedConfig, allowList, replay, requester, log, nowMs } = options;
  const stamper = createEnvelopeStamper({
    source: options.gatewayId as string as SourceId,
    bootId: options.bootId,
    now: nowMs,
  });
  const doorListeners: ((decision: DoorDecision) => void)[] = [];
  const decisionListeners: ((outcome: AccessOutcome) => void)[] = [];
  /** Who the gateway last linked at each machine (from its own allow decisions). */
  const linked = new Map<MachineId, UserId>();
  /** Members this gateway checked in offline (not out since), and links it made offline: point 6. */
  const vouch = options.vouch ?? { maxAgeMs: OFFLINE_VOUCH_MS, maxEntries: OFFLINE_VOUCH_MAX };
  const checkedInOffline = createRecent<UserId, { readonly atMs: number }>(nowMs, vouch);
  const linkedOffline = createRecent<MachineId, { readonly userId: UserId; readonly atMs: number }>(nowMs, vouch);
  let qrKeys: Keyring | undefined;
  let qrKeysOf: unknown;
  const counts = {
    decisions: 0,
    online: 0,
    offline: 0,
    allowed: 0,
    denied: 0,
    unconfiguredReader: 0,
    recordFailures: 0,
  };
  const overrides = { notCheckedIn: 0, notLinked: 0 };
  let last: AccessStats['last'];

  function currentQrKeys(): Keyring | undefined {
    const doc = signedConfig.document;
    if (doc === undefined) return undefined;
    if (qrKeysOf !== doc) {
      qrKeys = createKeyring(doc.qrKeys);
      qrKeysOf = doc;
    }
    return qrKeys;
  }

  function maxAgeS(): number {
    return signedConfig.document?.allowListMaxAgeS ?? DEFAULT_ALLOW_LIST_MAX_AGE_S;
  }

  async function identify(credential: Credential): Promise<Identified> {
    if (credential.kind === 'nfc') return { kind: 'nfc', uidHash: cardHash(credential.uid) };
    const check = checkQrToken(credential.token, currentQrKeys(), nowMs());
    if (!check.ok) return { kind: 'qr', check, replayed: false };
    const fresh = await replay.claim(
      check.claims.nonce,
      check.claims.exp * 1000 + QR_LEEWAY_MS,
      check.claims.iat * 1000 - QR_LEEWAY_MS,
    );
    return { kind: 'qr', check, replayed: !fresh };
  }

  async function queueRecord(record: UplinkRecord): Promise<void> {
    const checked = validatePayload(record.kind === 'access-scan' ? 'AccessScan' : 'OfflineDecision', record.payload);
    if (!checked.ok) {
      counts.recordFailures += 1;
      log.error({ kind: record.kind, path: checked.path, issue: checked.issue }, 'access record invalid: not queued');
      return;
    }
    try {
      await options.queue.append(record, nowMs());
      options.onQueued();
    } catch (err) {
      counts.recordFailures += 1;
      log.error({ err, kind: record.kind, lane: RECORD_KIND_LANE[record.kind] }, 'access record not queued');
    }
  }

  function note(outcome: AccessOutcome): void {
    counts.decisions += 1;
    counts[outcome.decidedBy] += 1;
    if (outcome.decision.decision === 'allow') counts.allowed += 1;
    else counts.denied += 1;
    last = { action: outcome.action, decision: outcome.decision.decision, decidedBy: outcome.decidedBy, atMs: nowMs() };
    log.info(
      {
        action: outcome.action,
        reader: outcome.reader,
        machine: outcome.machine,
        decision: outcome.decision.decision,
        reason: outcome.decision.decision === 'deny' ? outcome.decision.reason : undefined,
        userId: outcome.decision.userId,
        decidedBy: outcome.decidedBy,
        fallback: outcome.fallback,
        latencyMs: outcome.latencyMs,
      },
      'access decision',
    );
    for (const listener of decisionListeners) {
      try {
        listener(outcome);
      } catch (err) {
        log.error({ err }, 'access decision listener failed');
      }
    }
  }

  async function showAtMachine(machine: MachineId, outcome: AccessOutcome, reqId: ReqId): Promise<void> {
    const expiresAt = nowMs() + MACHINE_COMMAND_TTL_MS;
    const d = outcome.decision;
    let name: 'link' | 'unlink' | 'display';
    let payload: Record<string, unknown>;
    if (d.decision === 'deny' && d.reason === 'unlinked') {
      name = 'display';
      payload = { reqId, expiresAt, text: 'Unlinked: see you next set', level: 'info', durationS: 3 };
    } else if (d.decision === 'deny') {
      name = 'display';
      payload = { reqId, expiresAt, text: denyText(d.reason), level: 'error', durationS: 5 };
    } else if (outcome.action === 'unlink') {
      name = 'unlink';
      payload = { reqId, expiresAt, reason: 'member', ...(d.userId === undefined ? {} : { userId: d.userId }) };
    } else if (d.userId !== undefined) {
      name = 'link';
      payload = {
        reqId,
        expiresAt,
        userId: d.userId,
        ...(d.sessionId === undefined ? {} : { sessionId: d.sessionId }),
        ...(d.greeting === undefined ? {} : { greeting: d.greeting }),
      };
    } else {
      name = 'display';
      payload = { reqId, expiresAt, text: 'Welcome', level: 'success', durationS: 3 };
    }
    try {
      await options.machineCommand(topics.machineCommand(branch, machine, name), Buffer.from(JSON.stringify(payload)));
    } catch (err) {
      log.warn({ err, machine, command: name }, 'decision not shown on the machine');
    }
  }

  function showAtDoor(decision: DoorDecision): void {
    for (const listener of doorListeners) {
      try {
        listener(decision);
      } catch (err) {
        log.error({ err }, 'door listener failed');
      }
    }
  }

  async function door(scan: ReaderScan, action: 'check-in' | 'check-out'): Promise<AccessOutcome> {
    const identified = await identify(scan.credential);
    const reqId = newReqId();
    let decision: Decision;
    let decidedBy: 'online' | 'offline' = 'offline';
    let fallback: AccessOutcome['fallback'];
    // Whether the cloud was asked: then the record names the request even when the gateway decided offline, since
    // the cloud may have taken its decision too late to answer — it is the same tap, applied once (docs/sessions.md).
    let asked = false;
    if (identified.kind === 'qr' && identified.replayed) {
      decision = decideOffline(action, identified, offlineContext());
      fallback = 'replayed';
    } else {
      asked = true;
      const answer = await requester.ask(action, {
        reqId,
        ts: nowMs(),
        reader: scan.reader,
        credential: scan.credential,
      });
      if (answer.ok) {
        decision = answer.decision;
        decidedBy = 'online';
      } else {
        decision = decideOffline(action, identified, offlineContext());
        fallback = answer.why;
      }
    }
    if (decision.decision === 'allow' && decision.userId !== undefined) {
      // Online, the cloud knows; offline, the gateway stands by its check-in until the cloud has applied it.
      if (action === 'check-in' && decidedBy === 'offline') checkedInOffline.set(decision.userId, { atMs: nowMs() });
      else checkedInOffline.delete(decision.userId);
    }
    const latencyMs = Math.max(0, Math.round(nowMs() - scan.atMs));
    const outcome: AccessOutcome = {
      action,
      reader: scan.reader,
      decision,
      decidedBy,
      latencyMs,
      reqId,
      ...(fallback === undefined ? {} : { fallback }),
    };
    showAtDoor({ reader: scan.reader, action, decision, decidedBy });
    const record: AccessScan = {
      ...stamper.stamp(),
      reader: scan.reader,
      action,
      credential: scan.credential,
      decision: decision.decision,
      ...(decision.decision === 'deny' ? { reason: decision.reason } : {}),
      decidedBy,
      ...(decision.userId === undefined ? {} : { userId: decision.userId }),
      ...(decision.decision === 'allow' && decision.sessionId !== undefined ? { sessionId: decision.sessionId } : {}),
      ...(asked ? { reqId } : {}),
      latencyMs: Math.min(60_000, latencyMs),
    };
    options.publishScan?.(topics.accessScan(branch, scan.reader), Buffer.from(JSON.stringify(record)));
    await queueRecord({ kind: 'access-scan', receivedAt: nowMs(), payload: record });
    // Listeners hear of a decision once it is shown and its record is queued.
    note(outcome);
    return outcome;
  }

  function offlineContext() {
    return { allowList, maxAgeS: maxAgeS(), nowMs: nowMs() };
  }

  async function atMachine(machine: MachineId, credential: Credential, atMs: number, reader?: ReaderId) {
    const identified = await identify(credential);
    const reqId = newReqId();
    const userId = memberOf(identified, allowList);
    const unlinking = userId !== undefined && linked.get(machine) === userId;
    const action: AccessAction = unlinking ? 'unlink' : 'link';
    let decision: Decision;
    let decidedBy: 'online' | 'offline' = 'offline';
    let fallback: AccessOutcome['fallback'];
    const ts = nowMs();
    const request = unlinking ? { reqId, ts, machine, userId, reason: 'member' } : { reqId, ts, machine, credential };
    if (identified.kind === 'qr' && identified.replayed) {
      decision = decideOffline('link', identified, offlineContext());
      fallback = 'replayed';
    } else {
      const answer = unlinking
        ? await requester.ask('unlink', { reqId, ts, machine, userId, reason: 'member' })
        : await requester.ask('link', { reqId, ts, machine, credential });
      if (answer.ok) {
        decision = answer.decision;
        decidedBy = 'online';
        const overridden = overrideOf(machine, identified, unlinking, userId, answer.decision, reqId);
        if (overridden !== undefined) {
          decision = overridden;
          decidedBy = 'offline';
          fallback = 'cloud-behind';
        }
      } else {
        decision = unlinking ? { decision: 'allow', userId } : decideOffline('link', identified, offlineContext());
        fallback = answer.why;
      }
    }
    // The cloud toggles too: a link request by the member already linked there (say, linked from the app, which
    // this gateway never saw) unlinks them, answered as deny `unlinked` with the unlink command sent by the cloud.
    // `not-linked` (and not overridden): the cloud holds no link of theirs here, so the next tap is a link again.
    if (decision.decision === 'deny' && (decision.reason === 'unlinked' || decision.reason === 'not-linked')) {
      linked.delete(machine);
      linkedOffline.delete(machine);
    }
    if (decision.decision === 'allow') {
      if (unlinking) {
        linked.delete(machine);
        linkedOffline.delete(machine);
      } else {
        const member = decision.userId ?? userId;
        if (member !== undefined) linked.set(machine, member);
        if (member !== undefined && decidedBy === 'offline')
          linkedOffline.set(machine, { userId: member, atMs: nowMs() });
        else linkedOffline.delete(machine);
      }
    }
    const outcome: AccessOutcome = {
      action,
      machine,
      ...(reader === undefined ? {} : { reader }),
      decision,
      decidedBy,
      latencyMs: Math.max(0, Math.round(nowMs() - atMs)),
      reqId,
      ...(fallback === undefined ? {} : { fallback }),
    };
    await showAtMachine(machine, outcome, reqId);
    if (decidedBy === 'offline') {
      // The request carries the reqId the cloud was asked with (if it was): the cloud applies a link or unlink it
      // already took online — answered too late — only once.
      const payload = { ...stamper.stamp(), name: action, request, decision } as OfflineDecision;
      await queueRecord({ kind: 'offline-decision', receivedAt: nowMs(), payload });
    }
    note(outcome);
    return outcome;
  }

  /**
   * The decision the gateway takes instead of the cloud's answer when that answer contradicts the gateway's own
   * offline check-in or link the cloud has not applied yet (point 6); undefined to keep the cloud's answer.
   */
  function overrideOf(
    machine: MachineId,
    identified: Identified,
    unlinking: boolean,
    userId: UserId | undefined,
    answer: Decision,
    reqId: ReqId,
  ): Decision | undefined {
    if (answer.decision !== 'deny' || userId === undefined) return undefined;
    if (unlinking && answer.reason === 'not-linked') {
      const mine = linkedOffline.get(machine);
      if (mine?.userId !== userId) return undefined;
      overrides.notLinked += 1;
      log.info(
        { machine, userId, reqId, cloud: answer.reason, linkedOfflineAgoMs: nowMs() - mine.atMs },
        'cloud answer overridden: this gateway linked the member offline, not applied by the cloud yet; unlinked offline',
      );
      return { decision: 'allow', userId };
    }
    if (!unlinking && answer.reason === 'not-checked-in') {
      const mine = checkedInOffline.get(userId);
      if (mine === undefined) return undefined;
      const offline = decideOffline('link', identified, offlineContext());
      if (offline.decision !== 'allow') return undefined; // the gateway would not allow it either: the cloud's deny
      overrides.notCheckedIn += 1;
      log.info(
        { machine, userId, reqId, cloud: answer.reason, checkedInOfflineAgoMs: nowMs() - mine.atMs },
        'cloud answer overridden: this gateway checked the member in offline, not applied by the cloud yet; linked offline',
      );
      return offline;
    }
    return undefined;
  }

  return {
    async scan(scan) {
      const role = signedConfig.document?.readers.find((r) => r.reader === scan.reader);
      if (role === undefined) {
        counts.unconfiguredReader += 1;
        log.warn({ reader: scan.reader }, 'scan at a reader the configuration does not list: ignored');
        return undefined;
      }
      if ('machine' in role) return atMachine(role.machine, scan.credential, scan.atMs, scan.reader);
      return door(scan, role.action);
    },
    machineCredential: (machine, credential, atMs) => atMachine(machine, credential, atMs),
    onDoor(listener) {
      doorListeners.push(listener);
    },
    onDecision(listener) {
      decisionListeners.push(listener);
    },
    readers: () => signedConfig.document?.readers ?? [],
    stats: () => ({ ...counts, overrides: { ...overrides }, ...(last === undefined ? {} : { last }) }),
  };
}

function denyText(reason: string): string {
  switch (reason) {
    case 'membership-inactive':
      return 'Membership not active';
    case 'expired-token':
      return 'QR code expired: refresh it in the app';
    case 'replayed-token':
      return 'QR code already used';
    case 'machine-busy':
      return 'Machine in use';
    case 'allow-list-stale':
      return 'Cannot check right now: ask at the desk';
    case 'not-checked-in':
      return 'Check in at the door first';
    case 'machine-unavailable':
      return 'Machine unavailable';
    case 'blocked':
      return 'Card blocked: ask at the desk';
    case 'outside-opening-hours':
      return 'The gym is closed now';
    case 'rate-limited':
      return 'Too many scans: wait a moment';
    default:
      return 'Not recognised';
  }
}
