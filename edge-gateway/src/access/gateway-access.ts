/**
 * The gateway's access side assembled: signed configuration and allow-list (loaded from disk and verified at
 * start, updated by `gw/{gateway}/cmd/config` and `cmd/allow-list`), readers (line readers, PC/SC NFC, machines'
 * own credential events), online requests and offline decisions (access-service.ts). gateway.ts builds it before
 * the forwarder (whose gateway messages and birth it serves) and attaches the forwarder and the local broker once
 * they exist.
 *
 * Gateway commands are answered with a CommandResponse on `…/cmd/{name}/res`: `ok`, or `invalid`, `expired`,
 * `bad-signature`, `stale-revision`, `failed`. A command whose reqId cannot be read is dropped (logged).
 */
import { execFile } from 'node:child_process';
import path from 'node:path';
import * as v from 'valibot';
import { Credential, parsePayload, parseTopic, topics } from '../../../protocol/index.ts';
import type {
  BootId,
  BranchId,
  GatewayCommandName,
  GatewayId,
  MachineId,
  ParsedTopic,
  PublicKeyJwk,
} from '../../../protocol/index.ts';
import type { Registry } from 'prom-client';
import type { Logger } from '../../../tools/runtime/logger.ts';
import { createAllowList, DEFAULT_ALLOW_LIST_MAX_AGE_S, type AllowList } from '../cloud-config/allow-list.ts';
import {
  ALLOW_LIST_FILE_NAME,
  CONFIG_FILE_NAME,
  ensurePrivateDir,
  removeLeftoverTemps,
} from '../cloud-config/files.ts';
import { createKeyring } from '../cloud-config/keys.ts';
import type { SwitchableMachines } from '../cloud-config/machine-set.ts';
import type { CommandOutcome } from '../cloud-config/outcome.ts';
import { refused } from '../cloud-config/outcome.ts';
import { createSignedConfig, type SignedConfig } from '../cloud-config/signed-config.ts';
import type { Intake } from '../local-broker/intake.ts';
import type { BirthExtras } from '../uplink/forwarder.ts';
import type { UplinkQueue } from '../uplink/queue.ts';
import { createAccessService, type AccessService, type AccessStats } from './access-service.ts';
import type { AccessConfig } from './config.ts';
import { createLineReader, type LineReader } from './line-reader.ts';
import { createAccessMetrics, type AccessMetrics } from './metrics.ts';
import { startNfcReaders, type NfcReaders, type NfcScan, type NfcStatus } from './nfc/nfc-readers.ts';
import { allowListStale } from './offline.ts';
import { createOnlineRequester, type OnlineRequester } from './online.ts';
import type { ReaderScan, ReaderStatus } from './readers.ts';
import { createReplayCache, type ReplayCache } from './replay-cache.ts';
import { createScanLimiter, createThrottledWarn, type ScanDrop } from './scan-limiter.ts';

export { ALLOW_LIST_FILE_NAME, CONFIG_FILE_NAME };
export const REPLAY_FILE_NAME = 'qr-nonces.json';
/** Machine credential events remembered by msgId, to decide a redelivered one only once. */
const RECENT_EVENTS_KEPT = 1_000;

export interface GatewayAccessOptions {
  readonly access: AccessConfig;
  readonly dataDir: string;
  readonly gatewayId: GatewayId;
  readonly branch: BranchId;
  readonly bootId: BootId;
  readonly configKeys: readonly PublicKeyJwk[];
  readonly machines: SwitchableMachines;
  readonly queue: Pick<UplinkQueue, 'append'>;
  readonly nowMs: () => number;
  readonly log: Logger;
  /** The gateway's metrics registry: the access metrics are added to it. */
  readonly registry?: Registry;
}

/** What gateway.ts hands over once the forwarder and the local broker exist. */
export interface AccessLinks {
  /** Publishes on the cloud connection; false while the uplink is down (forwarder.relay). */
  readonly publishToCloud: (topic: string, payload: Buffer) => boolean;
  /** New records are queued (forwarder.wake). */
  readonly wake: () => void;
  /** Republishes the birth (forwarder.publishState). */
  readonly publishState: () => void;
  /** Publishes a command to a machine on the local broker (broker.publish). */
  readonly machineCommand: (topic: string, payload: Buffer) => Promise<void>;
  /** Closes the connections of machines no longer in the machine set (broker.disconnectRemoved). */
  readonly disconnectRemovedMachines?: () => number;
}

export interface AccessStatus {
  readonly configRevision: number | undefined;
  readonly allowList: {
    readonly revision: number | undefined;
    readonly members: number;
    readonly ageS: number | undefined;
    readonly maxAgeS: number;
    readonly stale: boolean;
  };
  readonly readers: readonly ReaderStatus[];
  readonly nfc: { readonly state: string; readonly detail?: string } | undefined;
  readonly decisions: AccessStats;
  readonly pendingRequests: number;
  /** Cloud answers ignored: after the gateway had decided offline (`late`), or not for a request of its own. */
  readonly ignoredAnswers: { readonly late: number; readonly stray: number };
  /** Input dropped before a decision, by reason (never decided, never queued). */
  readonly dropped: Readonly<Record<ScanDrop | 'unreadable-line' | 'unmapped-nfc-reader', number>>;
  readonly qrNoncesHeld: number;
}

export interface GatewayAccess {
  readonly service: AccessService;
  readonly signedConfig: SignedConfig;
  readonly allowList: AllowList;
  readonly replay: ReplayCache;
  readonly requester: OnlineRequester;
  /** For the forwarder: commands to this gateway and answers to its requests. */
  onGatewayMessage(topic: string, payload: Buffer): void;
  /** For the forwarder: readers and revisions in the birth. */
  birthExtras(): BirthExtras;
  /** Wraps the intake so machines' `qr-scanned` / `nfc-tapped` events (once queued) become link decisions. */
  wrapIntake(intake: Intake): Intake;
  attach(links: AccessLinks): void;
  /** Starts the readers (each connects on its own; a missing one is retried, never fatal). */
  start(): void;
  stop(): Promise<void>;
  status(): AccessStatus;
  /** A scan as a reader delivers it (line readers and NFC call this; tests too). */
  scan(scan: ReaderScan): void;
}

/** Loads the stored configuration and allow-list (verified again) and applies the configuration's machines. */
export async function createGatewayAccess(options: GatewayAccessOptions): Promise<GatewayAccess> {
  const { access, dataDir, gatewayId, branch, log, nowMs, machines } = options;
  await ensurePrivateDir(dataDir);
  const leftovers = await removeLeftoverTemps(dataDir);
  if (leftovers > 0) log.warn({ leftovers }, 'temporary files of an interrupted write removed');
  const keys = createKeyring(options.configKeys);
  if (keys.invalid.length > 0) log.error({ kids: keys.invalid }, 'configuration keys that are no P-256 key: ignored');
  let links: AccessLinks | undefined;

  const signedConfig = createSignedConfig({
    file: path.join(dataDir, CONFIG_FILE_NAME),
    gatewayId,
    branch,
    keys,
    nowMs,
    log: log.child({ part: 'config' }),
  });
  const allowList = createAllowList({
    file: path.join(dataDir, ALLOW_LIST_FILE_NAME),
    branch,
    keys,
    nowMs,
    log: log.child({ part: 'allow-list' }),
  });
  const replay = createReplayCache({ file: path.join(dataDir, REPLAY_FILE_NAME), nowMs, log });
  const requester = createOnlineRequester({
    branch,
    gatewayId,
    publish: (topic, payload) => links?.publishToCloud(topic, payload) ?? false,
    timeoutMs: access.requestTimeoutMs,
    log,
  });
  const service = createAccessService({
    branch,
    gatewayId,
    bootId: options.bootId,
    signedConfig,
    allowList,
    replay,
    requester,
    queue: options.queue,
    onQueued: () => links?.wake(),
    publishScan: (topic, payload) => void links?.publishToCloud(topic, payload),
    machineCommand: async (topic, payload) => {
      if (links === undefined) throw new Error('local broker not attached');
      await links.machineCommand(topic, payload);
    },
    nowMs,
    log: log.child({ part: 'decisions' }),
  });

  signedConfig.onChange((doc) => {
    machines.replace(doc.machines);
    // A machine the configuration removed is cut off now, not only refused at its next CONNECT.
    links?.disconnectRemovedMachines?.();
    links?.publishState();
  });
  allowList.onChange(() => links?.publishState());
  const metrics: AccessMetrics | undefined =
    options.registry === undefined
      ? undefined
      : createAccessMetrics(options.registry, {
          allowListAgeS: () => status().allowList.ageS,
          readersConnected: () => readerStatuses().filter((r) => r.connected).length,
          configRevision: () => signedConfig.revision,
          ignoredAnswers: () => ({ late: requester.late, stray: requester.stray }),
          dropped: () => status().dropped,
        });
  service.onDecision((o) => {
    metrics?.decisions.inc({ action: o.action, decision: o.decision.decision, decided_by: o.decidedBy });
    metrics?.decisionSeconds.observe({ decided_by: o.decidedBy }, o.latencyMs / 1000);
  });
  await signedConfig.load();
  await allowList.load();
  await replay.load();

  if (access.doorCommand !== undefined) {
    const command = access.doorCommand;
    service.onDoor((d) => {
      const args = [d.reader, d.action, d.decision.decision, d.decision.decision === 'deny' ? d.decision.reason : ''];
      execFile(command, args, { timeout: 5_000 }, (err) => {
        if (err) log.warn({ err: err.message, reader: d.reader }, 'door command failed');
      });
    });
  }

  // Readers ------------------------------------------------------------------------------------------------
  const lineReaders: LineReader[] = [];
  let nfc: NfcReaders | undefined;
  const nfcByName = new Map(access.nfcReaders.map((r) => [r.pcscName, r.reader] as const));
  let scansInFlight = new Set<Promise<unknown>>();
  const recentEvents = new Set<string>();
  const limiter = createScanLimiter({ nowMs });
  const warnDrop = createThrottledWarn(log, nowMs);
  let unmappedNfc = 0;

  /** Input admission: a repeat of the same credential or a flood from one source is dropped, counted and logged. */
  function admitted(source: string, credential: Credential, fields: Record<string, unknown>): boolean {
    const drop = limiter.admit(source, credential);
    if (drop === undefined) return true;
    warnDrop(`${drop}:${source}`, { ...fields, reason: drop }, 'scan dropped before a decision');
    return false;
  }

  function scan(s: ReaderScan): void {
    if (!admitted(`reader:${s.reader}`, s.credential, { reader: s.reader })) return;
    const running = service.scan(s).catch((err: unknown) => log.error({ err, reader: s.reader }, 'scan failed'));
    scansInFlight.add(running);
    void running.finally(() => scansInFlight.delete(running));
  }

  function onNfcScan(event: NfcScan): void {
    const reader = nfcByName.get(event.readerName);
    if (reader === undefined) {
      unmappedNfc += 1;
      warnDrop(
        `unmapped:${event.readerName}`,
        { readerName: event.readerName },
        'card on a PC/SC reader not mapped in GATEWAY_NFC_READERS: ignored',
      );
      return;
    }
    // A member token on the card (NDEF) identifies the member like a QR token; otherwise the UID does.
    const fromToken =
      event.token === undefined ? undefined : v.safeParse(Credential, { kind: 'qr', token: event.token });
    const credential: Credential =
      fromToken?.success === true ? fromToken.output : { kind: 'nfc', uid: event.uid.toLowerCase() };
    scan({ reader, credential, atMs: nowMs() });
  }

  function readerStatuses(): ReaderStatus[] {
    const statuses: ReaderStatus[] = lineReaders.map((r) => r.status());
    if (access.nfcReaders.length > 0) {
      const s: NfcStatus | undefined = nfc?.status();
      for (const r of access.nfcReaders) {
        const present = s?.state === 'ok' && s.readers.some((x) => x.name === r.pcscName);
        statuses.push({
          reader: r.reader,
          kind: 'nfc',
          connected: present,
          ...(present ? {} : { detail: s?.detail ?? (s?.state === 'ok' ? 'reader not attached' : 'NFC not started') }),
        });
      }
    }
    return statuses;
  }

  function status(): AccessStatus {
    const issuedAt = allowList.issuedAt;
    const maxAgeS = signedConfig.document?.allowListMaxAgeS ?? DEFAULT_ALLOW_LIST_MAX_AGE_S;
    const ageS = issuedAt === undefined ? undefined : Math.max(0, Math.round((nowMs() - issuedAt) / 1000));
    const nfcStatus = nfc?.status();
    return {
      configRevision: signedConfig.revision,
      allowList: {
        revision: allowList.revision,
        members: allowList.size,
        ageS,
        maxAgeS,
        stale: allowListStale({ allowList, maxAgeS, nowMs: nowMs() }),
      },
      readers: readerStatuses(),
      nfc:
        nfcStatus === undefined
          ? undefined
          : { state: nfcStatus.state, ...(nfcStatus.detail === undefined ? {} : { detail: nfcStatus.detail }) },
      decisions: service.stats(),
      pendingRequests: requester.waiting,
      ignoredAnswers: { late: requester.late, stray: requester.stray },
      dropped: {
        ...limiter.dropped,
        'unreadable-line': lineReaders.reduce((sum, r) => sum + r.unreadable, 0),
        'unmapped-nfc-reader': unmappedNfc,
      },
      qrNoncesHeld: replay.size,
    };
  }

  // Commands ------------------------------------------------------------------------------------------------
  function answer(name: GatewayCommandName, reqId: string, outcome: CommandOutcome): void {
    metrics?.commands.inc({ command: name, result: outcome.ok ? 'ok' : outcome.error.code });
    const payload = outcome.ok ? { reqId, ok: true } : { reqId, ok: false, error: outcome.error };
    const sent = links?.publishToCloud(
      topics.gatewayCommandResponse(branch, gatewayId, name),
      Buffer.from(JSON.stringify(payload)),
    );
    if (sent !== true) log.debug({ command: name, reqId }, 'command answer not sent: uplink down');
  }

  function readableReqId(payload: Buffer): string | undefined {
    try {
      const value = JSON.parse(payload.toString('utf8')) as { reqId?: unknown };
      return typeof value.reqId === 'string' && value.reqId.length <= 64 && /^[A-Za-z0-9_.:-]+$/.test(value.reqId)
        ? value.reqId
        : undefined;
    } catch {
      return undefined;
    }
  }

  async function onCommand(parsed: Extract<ParsedTopic, { kind: 'gateway-command' }>, payload: Buffer) {
    const name = parsed.name;
    if (name === 'config') {
      const command = parsePayload('GatewayConfigCommand', payload);
      if (!command.ok) return refuseUnreadable(name, payload, command.path);
      answer(name, command.value.reqId, await signedConfig.apply(command.value));
    } else if (name === 'allow-list') {
      const command = parsePayload('AllowListCommand', payload);
      if (!command.ok) return refuseUnreadable(name, payload, command.path);
      answer(name, command.value.reqId, await allowList.apply(command.value));
    } else {
      const command = parsePayload('GatewayRebirthCommand', payload);
      if (!command.ok) return refuseUnreadable(name, payload, command.path);
      if (command.value.expiresAt !== undefined && command.value.expiresAt < nowMs()) {
        answer(name, command.value.reqId, refused('expired', 'the command expired before it arrived'));
        return;
      }
      links?.publishState();
      answer(name, command.value.reqId, { ok: true });
    }
  }

  function refuseUnreadable(name: GatewayCommandName, payload: Buffer, where: string | undefined): void {
    const reqId = readableReqId(payload);
    log.warn({ command: name, path: where, reqId }, 'gateway command refused: invalid');
    if (reqId !== undefined)
      answer(name, reqId, refused('invalid', `invalid command${where === undefined ? '' : ` at ${where}`}`));
    else metrics?.commands.inc({ command: name, result: 'unanswerable' }); // nobody to answer: counted only
  }

  return {
    service,
    signedConfig,
    allowList,
    replay,
    requester,
    onGatewayMessage(topic, payload) {
      const parsed = parseTopic(topic);
      if (parsed?.kind === 'gateway-request-response') {
        requester.onResponse(topic, payload);
      } else if (parsed?.kind === 'gateway-command') {
        onCommand(parsed, payload).catch((err: unknown) => log.error({ err, topic }, 'gateway command failed'));
      }
    },
    birthExtras() {
      return {
        readers: readerStatuses().map((r) => ({ reader: r.reader, kind: r.kind, connected: r.connected })),
        ...(signedConfig.revision === undefined ? {} : { configRevision: signedConfig.revision }),
        ...(allowList.revision === undefined ? {} : { allowListRevision: allowList.revision }),
      };
    },
    wrapIntake(intake) {
      return {
        async accept(machine, topic, packet) {
          await intake.accept(machine, topic, packet);
          if (topic.kind === 'machine-event') onMachineEvent(machine, packet.payload);
        },
      };
    },
    attach(next) {
      links = next;
    },
    start() {
      for (const { reader, path: file } of access.qrReaders) {
        const r = createLineReader({ reader, path: file, onScan: scan, log: log.child({ part: 'reader' }), nowMs });
        lineReaders.push(r);
        r.start();
      }
      if (access.nfcReaders.length > 0) {
        nfc = startNfcReaders({
          log: log.child({ part: 'nfc' }),
          ...(access.nfcSocket === undefined ? {} : { socketPath: access.nfcSocket }),
        });
        nfc.on('scan', onNfcScan);
        nfc.on('status', (s) => {
          log.info({ state: s.state, detail: s.detail, readers: s.readers.length }, 'NFC status');
          links?.publishState();
        });
      }
    },
    async stop() {
      for (const r of lineReaders) r.close();
      await nfc?.close();
      requester.close();
      await Promise.allSettled([...scansInFlight]);
      scansInFlight = new Set();
    },
    status,
    scan,
  };

  function onMachineEvent(machine: MachineId, raw: Buffer | string): void {
    const event = parsePayload('MachineEvent', raw);
    if (!event.ok) return; // the intake has refused and recorded it
    const e = event.value;
    if (e.source !== machine) return; // refused by the intake (wrong-source)
    if (e.type !== 'qr-scanned' && e.type !== 'nfc-tapped') return;
    // A QoS 1 redelivery (the machine missed our PUBACK) is queued once and decided once: a card tapped once must
    // not link and then unlink.
    if (recentEvents.has(e.msgId)) return;
    recentEvents.add(e.msgId);
    if (recentEvents.size > RECENT_EVENTS_KEPT) recentEvents.delete(recentEvents.values().next().value!);
    let credential: Credential | undefined;
    if (e.type === 'qr-scanned') credential = { kind: 'qr', token: e.token };
    else if (e.type === 'nfc-tapped') credential = { kind: 'nfc', uid: e.uid };
    if (credential === undefined) return;
    if (!admitted(`machine:${machine}`, credential, { machine })) return;
    const atMs = nowMs();
    const running = service
      .machineCredential(machine, credential, atMs)
      .catch((err: unknown) => log.error({ err, machine }, 'machine credential failed'));
    scansInFlight.add(running);
    void running.finally(() => scansInFlight.delete(running));
  }
}
