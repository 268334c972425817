/**
 * Keeps every gateway's signed configuration and its branch's allow-list current:
 *
 * - Configuration: a GatewayConfigDocument (machines with their secrets' hashes, readers, qrKeys = the public keys
 *   that verify member QR tokens, allowListMaxAgeS) signed ES256 with the auth keyring's signing key (kid = its
 *   thumbprint). Versioned by content: the revision moves on (compare-and-set in MongoDB) whenever the content
 *   changes — a machine, a reader, a key rotation — and the document is pushed QoS1 on `gw/{gw}/cmd/config`.
 * - Allow-list: the branch's signed parts (access/allow-list.ts) on `gw/{gw}/cmd/allow-list`, pushed after a card
 *   change (debounced), by the periodic sweep when memberships changed or the list ages, and on a birth that
 *   reports an older revision.
 * - "Fetched on (re)connect": each birth on `gw/{gw}/state` is compared with the cloud's revisions and whatever is
 *   newer is pushed. Births also feed the fleet view (service.ts applyState).
 *
 * Pushes go to gateways that are online; one that is offline gets everything on its next birth. Work for one
 * gateway (and one branch's allow-list) runs one at a time, in order.
 */
import { createHash, type KeyObject } from 'node:crypto';
import type { Aedes, AedesPublishPacket } from 'aedes';
import type { Clock } from '../../../tools/runtime/clock.ts';
import type { Logger } from '../../../tools/runtime/logger.ts';
import { newReqId, type BranchId, type GatewayId } from '../../../protocol/ids.ts';
import { JWS_TYPES, signJws } from '../../../protocol/jws.ts';
import type { GatewayConfigDocument } from '../../../protocol/messages/command.ts';
import { parsePayload, validatePayload } from '../../../protocol/payloads.ts';
import { TOPIC_POLICY, filters, parseTopic, topics, type GatewayCommandName } from '../../../protocol/topics.ts';
import type { AllowLists } from '../access/allow-list.ts';
import type { Equipment } from '../equipment/service.ts';
import { nextRevision } from './revisions.ts';
import type { GatewayDoc, GatewayStore } from './service.ts';

export interface GatewaySyncDeps {
  aedes: Aedes;
  store: GatewayStore;
  equipment: Pick<Equipment, 'configOf'>;
  allowLists: AllowLists;
  keyring: {
    readonly signing: { kid: string; privateKey: KeyObject };
    jwks(): { keys: { kid: string; crv: 'P-256'; x: string; y: string }[] };
  };
  clock: Clock;
  log: Logger;
  allowListMaxAgeS: number;
  allowListDebounceMs: number;
  sweepS: number;
}

type RevisionKind = 'config' | 'allow-list';
/** Builds one configuration request may make while other nodes keep moving the revision on. */
const MAX_CONFIG_ATTEMPTS = 5;
/** The sweep sends a revision a gateway has not confirmed again after this long. */
const RESEND_AFTER_MS = 5 * 60_000;

export interface SignedConfig {
  revision: number;
  issuedAtMs: number;
  document: GatewayConfigDocument;
  jws: string;
}

export interface GatewaySync {
  /** The gateway's current configuration (a new revision first if its content changed), signed. */
  config(gateway: string): Promise<SignedConfig | undefined>;
  /** Something in the gateway's configuration changed: re-issue and push it. */
  configChanged(gateway: string): void;
  /** Cards of members of these branches changed: rebuild and push their allow-lists (debounced). */
  allowListChanged(branches: readonly string[]): void;
  /** One sweep now (tests; the timer runs it every sweepS). */
  sweep(): Promise<void>;
  /** Waits until queued pushes are done (tests, shutdown). */
  idle(): Promise<void>;
  stop(): Promise<void>;
}

/** The public keys as the configuration's qrKeys (and the enrolment's configKeys): JWK members only. */
export function verificationKeys(keyring: GatewaySyncDeps['keyring']) {
  return keyring
    .jwks()
    .keys.slice(0, 4)
    .map(({ kid, crv, x, y }) => ({ kid, crv, x, y }));
}

export async function startGatewaySync(deps: GatewaySyncDeps): Promise<GatewaySync> {
  const { aedes, store, equipment, allowLists, keyring, clock, log } = deps;
  const { Gateway } = store;
  const chains = new Map<string, Promise<void>>();
  const debounced = new Map<string, NodeJS.Timeout>();
  let stopped = false;

  /** Runs `task` after the previous task of `key`; failures are logged, never thrown. */
  const serial = (key: string, what: string, task: () => Promise<void>): Promise<void> => {
    const next = (chains.get(key) ?? Promise.resolve()).then(async () => {
      if (stopped) return;
      try {
        await task();
      } catch (err) {
        log.warn({ err, key }, `${what} failed`);
      }
    });
    chains.set(key, next);
    void next.finally(() => {
      if (chains.get(key) === next) chains.delete(key);
    });
    return next;
  };

  const publish = (branch: string, gateway: string, name: GatewayCommandName, payload: unknown) => {
    const kind = name === 'config' ? 'GatewayConfigCommand' : 'AllowListCommand';
    const checked = validatePayload(kind, payload);
    if (!checked.ok) {
      return Promise.reject(new Error(`invalid ${kind} (${checked.path ?? checked.reason}: ${checked.issue ?? ''})`));
    }
    return new Promise<void>((resolve, reject) => {
      aedes.publish(
        {
          cmd: 'publish',
          topic: topics.gatewayCommand(branch as BranchId, gateway as GatewayId, name),
          payload: Buffer.from(JSON.stringify(checked.value)),
          qos: TOPIC_POLICY['gateway-command'].qos,
          retain: false,
          dup: false,
        },
        (err?: Error) => (err ? reject(err) : resolve()),
      );
    });
  };

  /**
   * The gateway's configuration, signed; a new revision when its content changed. As for allow-lists: the document
   * is read before the content is built, the revision moves on by compare-and-set on what was read, and a lost race
   * builds again — so a revision is never signed with two contents, and a stale build never follows a newer one.
   */
  const config = async (gatewayId: string): Promise<SignedConfig | undefined> => {
    for (let attempt = 0; attempt < MAX_CONFIG_ATTEMPTS; attempt++) {
      let doc: GatewayDoc | null | undefined = await store.get(gatewayId);
      if (!doc) return undefined;
      const { machines, readers } = await equipment.configOf(gatewayId);
      const content = {
        machines,
        readers,
        qrKeys: verificationKeys(keyring),
        allowListMaxAgeS: deps.allowListMaxAgeS,
      };
      const hash = createHash('sha256').update(JSON.stringify(content)).digest('hex');
      if (doc.config.hash !== hash) {
        const now = clock.now();
        doc = await Gateway.findOneAndUpdate(
          { _id: doc._id, 'config.revision': doc.config.revision },
          { $set: { config: { revision: nextRevision(doc.config.revision, now.getTime()), hash, issuedAt: now } } },
          { returnDocument: 'after' },
        ).lean<GatewayDoc>();
        if (!doc) continue; // another node moved the revision on meanwhile: build again
      }
      const issuedAtMs = (doc.config.issuedAt ?? clock.now()).getTime();
      const document: GatewayConfigDocument = {
        branch: doc.branch as BranchId,
        gateway: doc._id as GatewayId,
        revision: doc.config.revision,
        issuedAt: issuedAtMs,
        ...(content as Pick<GatewayConfigDocument, 'machines' | 'readers' | 'qrKeys' | 'allowListMaxAgeS'>),
      };
      return {
        revision: doc.config.revision,
        issuedAtMs,
        document,
        jws: signJws(JWS_TYPES.gatewayConfig, document, keyring.signing),
      };
    }
    throw new Error(`configuration of ${gatewayId}: the revision kept moving under ${MAX_CONFIG_ATTEMPTS} builds`);
  };

  /** Commands sent and not yet answered: an `ok` moves the gateway's revision in use on (fleet view, sweep). */
  const pending = new Map<
    string,
    { gateway: string; kind: RevisionKind; revision: number; final: boolean; atMs: number }
  >();
  /** What was last sent to each gateway, so the sweep does not resend the same revision every round. */
  const lastPushed = new Map<string, { revision: number; atMs: number }>();
  const sentRecently = (kind: RevisionKind, gateway: string, revision: number) => {
    const last = lastPushed.get(`${kind}:${gateway}`);
    return last !== undefined && last.revision === revision && clock.nowMs() - last.atMs < RESEND_AFTER_MS;
  };
  const sent = (kind: RevisionKind, gateway: string, revision: number, reqId: string, final: boolean) => {
    const atMs = clock.nowMs();
    pending.set(reqId, { gateway, kind, revision, final, atMs });
    lastPushed.set(`${kind}:${gateway}`, { revision, atMs });
  };

  const pushConfig = async (gatewayId: string, onlyIfBehind?: number, fromSweep = false) => {
    const signed = await config(gatewayId);
    if (!signed) return;
    if (onlyIfBehind !== undefined && onlyIfBehind >= signed.revision) return;
    if (fromSweep && sentRecently('config', gatewayId, signed.revision)) return;
    const reqId = newReqId();
    sent('config', gatewayId, signed.revision, reqId, true);
    await publish(signed.document.branch, gatewayId, 'config', {
      reqId,
      revision: signed.revision,
      jws: signed.jws,
    });
    log.info({ gateway: gatewayId, revision: signed.revision }, 'gateway configuration pushed');
  };

  /** Pushes the branch's current allow-list to the given gateways (default: its online ones). */
  const pushAllowList = async (
    branch: string,
    only?: { gateway: string; heldRevision?: number; fromSweep?: boolean },
  ) => {
    const signed = await allowLists.signed(branch);
    const targets = only
      ? (only.heldRevision !== undefined && only.heldRevision >= signed.revision) ||
        (only.fromSweep && sentRecently('allow-list', only.gateway, signed.revision))
        ? []
        : [only.gateway]
      : (await store.ofBranch(branch)).filter((g) => g.enrolledAt && g.state?.online).map((g) => g._id);
    for (const gateway of targets) {
      for (const [part, jws] of signed.parts.entries()) {
        const reqId = newReqId();
        sent('allow-list', gateway, signed.revision, reqId, part === signed.parts.length - 1);
        await publish(branch, gateway, 'allow-list', {
          reqId,
          revision: signed.revision,
          part,
          parts: signed.parts.length,
          jws,
        });
      }
      log.info(
        { branch, gateway, revision: signed.revision, parts: signed.parts.length, members: signed.members },
        'allow-list pushed',
      );
    }
  };

  const refreshAndPush = async (branch: string) => {
    const { changed } = await allowLists.refresh(branch);
    if (changed) await pushAllowList(branch);
  };

  const onState = (packet: AedesPublishPacket, done: () => void) => {
    done();
    const topic = parseTopic(packet.topic);
    if (topic?.kind !== 'gateway-state') return;
    const parsed = parsePayload('GatewayState', packet.payload);
    if (!parsed.ok) return; // ingest counts and logs refused states
    const state = parsed.value;
    const { branch, gateway } = topic;
    void serial(`gw:${gateway}`, 'gateway birth', async () => {
      const applied = await store.applyState(gateway, branch, state, clock.nowMs());
      if (!applied || !state.online || !applied.enrolledAt) return;
      await pushConfig(gateway, state.configRevision);
      await serial(`al:${branch}`, 'allow-list push', () =>
        pushAllowList(branch, {
          gateway,
          ...(state.allowListRevision !== undefined ? { heldRevision: state.allowListRevision } : {}),
        }),
      );
    });
  };

  const onCommandResponse = (packet: AedesPublishPacket, done: () => void) => {
    done();
    const topic = parseTopic(packet.topic);
    if (topic?.kind !== 'gateway-command-response') return;
    const parsed = parsePayload('CommandResponse', packet.payload);
    if (!parsed.ok) return;
    const sentAs = pending.get(parsed.value.reqId);
    pending.delete(parsed.value.reqId);
    if (parsed.value.ok && sentAs?.gateway === topic.gateway && sentAs.final) {
      // The whole revision is with the gateway (the last part of an allow-list comes last: QoS1, one topic).
      void store
        .noteRevisionInUse(sentAs.gateway, sentAs.kind, sentAs.revision)
        .catch((err: unknown) => log.warn({ err, gateway: sentAs.gateway }, 'revision in use not recorded'));
    }
    if (!parsed.value.ok) {
      log.warn(
        { branch: topic.branch, gateway: topic.gateway, command: topic.name, error: parsed.value.error },
        'gateway refused a command',
      );
    }
  };

  const sweep = async () => {
    const expired = clock.nowMs() - RESEND_AFTER_MS;
    for (const [reqId, p] of pending) if (p.atMs < expired) pending.delete(reqId);
    const branches = await store.branchesWithGateways();
    for (const branch of branches) {
      await serial(`al:${branch}`, 'allow-list sweep', () => refreshAndPush(branch));
      // A push lost on the way (the gateway reconnected in between) is repeated for gateways still behind.
      const current = await allowLists.current(branch);
      for (const g of await store.ofBranch(branch)) {
        if (!g.enrolledAt || !g.state?.online) continue;
        await serial(`gw:${g._id}`, 'configuration sweep', () => pushConfig(g._id, g.state?.configRevision, true));
        if (current && (g.state.allowListRevision ?? -1) < current.revision) {
          const held = g.state.allowListRevision;
          await serial(`al:${branch}`, 'allow-list sweep', () =>
            pushAllowList(branch, {
              gateway: g._id,
              fromSweep: true,
              ...(held !== undefined ? { heldRevision: held } : {}),
            }),
          );
        }
      }
    }
  };

  await new Promise<void>((resolve) => aedes.subscribe(filters.allGatewayStates(), onState, resolve));
  await new Promise<void>((resolve) =>
    aedes.subscribe(filters.allGatewayCommandResponses(), onCommandResponse, resolve),
  );
  let sweeping: Promise<void> | undefined;
  const timer = setInterval(() => {
    sweeping ??= sweep()
      .catch((err: unknown) => log.warn({ err }, 'gateway sweep failed'))
      .finally(() => (sweeping = undefined));
  }, deps.sweepS * 1000);
  timer.unref();

  return {
    config,
    configChanged(gateway) {
      void serial(`gw:${gateway}`, 'configuration push', async () => {
        const doc = await store.get(gateway);
        if (doc?.enrolledAt && doc.state?.online) await pushConfig(gateway);
        else await config(gateway); // the revision moves on now; the gateway gets it at its next birth
      });
    },
    allowListChanged(branches) {
      for (const branch of new Set(branches)) {
        // The first change of a burst sets the timer and later ones ride along: restarting it on every change would
        // hold a busy branch's revocations back for as long as changes keep coming.
        if (debounced.has(branch)) continue;
        const t = setTimeout(() => {
          debounced.delete(branch);
          void serial(`al:${branch}`, 'allow-list push', () => refreshAndPush(branch));
        }, deps.allowListDebounceMs);
        t.unref();
        debounced.set(branch, t);
      }
    },
    sweep,
    async idle() {
      while (debounced.size > 0 || chains.size > 0) {
        await Promise.all([...chains.values()]);
        if (debounced.size > 0) await new Promise((r) => setTimeout(r, 20));
      }
    },
    async stop() {
      clearInterval(timer);
      for (const t of debounced.values()) clearTimeout(t);
      debounced.clear();
      await new Promise<void>((resolve) => aedes.unsubscribe(filters.allGatewayStates(), onState, resolve));
      await new Promise<void>((resolve) =>
        aedes.unsubscribe(filters.allGatewayCommandResponses(), onCommandResponse, resolve),
      );
      await sweeping;
      stopped = true;
      await Promise.all([...chains.values()]);
    },
  };
}
