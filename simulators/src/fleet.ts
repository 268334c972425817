/**
 * A fleet of simulated machines, each with its own MQTT connection (client id = username = machine id, as a real
 * machine connects to its branch gateway), publishing on the protocol's machine topics:
 * - on every connect: retained `meta` and retained `status` (QoS 1), with a last will `{status: offline, lastWill:
 *   true, conn}` registered at CONNECT for that connection number;
 * - at `rate` Hz: a telemetry sample (QoS 0 by default, as TOPIC_POLICY says), and as they happen: workout segments,
 *   machine-state events and status changes (QoS 1).
 *
 * Reconnects use exponential backoff with jitter (the client's own fixed-period reconnect is off). While a machine is
 * disconnected its samples are dropped, as a console's would be; QoS 1 records wait in the client's queue, at most
 * `maxPending` per machine (MQTT.js's in-memory store loses messages past 65,535 packet ids: RELIABILITY.md,
 * finding 2), and past that they are dropped and counted.
 *
 * The PUBACK ledger keeps, per machine, the msgIds of QoS 1 records sent and acknowledged: what the gateway promised
 * to hold. Tests, the ingest benchmark and the run report (report/persisted.ts) compare it with MongoDB; with
 * `track`, it also keeps each telemetry sample's seq and time, so the report can count the samples stored.
 *
 * Members (with `desks`, front-desk.ts): when a session starts the machine gets a member from its branch's front desk,
 * who (once through the door and at the machine) taps their card on the machine's NFC pad — an `nfc-tapped` event
 * the gateway turns into a link decision. The machine listens on its command topics (`m/{id}/cmd/+`) for the
 * answer: `link` (the member is linked; the time from tap to link is recorded) or a `display` at level `error` (a
 * denial; its text says why). When the session ends the member taps again, which unlinks them, and goes back to the
 * desk. The workout itself starts on the machine as before: a console runs without a link, and the cloud attaches
 * segments to the member's link by event time.
 *
 * QA's faults (scenarios): `flapping` machines cut their connection abruptly every so often (their will fires) and
 * come back with the backoff; `badPayloads` machines publish a mix of unreadable, invalid and foreign payloads next
 * to their real traffic; machines with `trouble` report faults and power off for a while (machine.ts).
 */
import { connect, type IClientOptions, type MqttClient } from 'mqtt';
import type { Logger } from 'pino';
import { pino } from 'pino';
import { createEnvelopeStamper, type EnvelopeStamper } from '../../protocol/envelope.ts';
import { asBranchId, asMachineId, type BranchId } from '../../protocol/ids.ts';
import type { MachineType } from '../../protocol/messages/machine-type.ts';
import { filters, topics } from '../../protocol/topics.ts';
import type { DeskMember, FrontDesk } from './front-desk.ts';
import type { MachineDay, MachineTrouble, MemberEvent } from './machine.ts';
import { createSimMachine, toPayload, type OutgoingKind, type SimMachine } from './machine.ts';
import type { Body } from './machines/model.ts';
import { createRng, deriveSeed } from './random.ts';
import { createSeries, latencyHistogram, type SeriesPoint } from './report/series.ts';
import hdr from 'hdr-histogram-js';
import { badPayload, type BadPayloadKind } from './bad-payloads.ts';

export interface FleetMachine {
  readonly id: string;
  /** Absent: connect without a password (a bare broker). */
  readonly secret?: string | undefined;
  readonly type: MachineType;
  /** This machine's broker (its branch gateway) and branch, when they differ from the fleet's. */
  readonly url?: string | undefined;
  readonly branch?: string | undefined;
}

export interface FleetOptions {
  /** The branch gateway's broker for machines, e.g. mqtt://127.0.0.1:1884. */
  readonly url: string;
  readonly branch: string;
  readonly machines: readonly FleetMachine[];
  /** Telemetry samples per second per machine (default 1). */
  readonly rate?: number;
  /** Run seed: the same seed gives every machine the same behaviour. */
  readonly seed: number;
  /** Simulated seconds per real second (default 1); > 1 makes sessions and sets finish sooner, for demos. */
  readonly timeScale?: number;
  /** QoS of telemetry samples (default 0, the protocol's; the ingest benchmark uses 1 to account for every one). */
  readonly telemetryQos?: 0 | 1;
  /** QoS 1 records waiting for a PUBACK, per machine, before new ones are dropped (default 1,000). */
  readonly maxPending?: number;
  /** New connections per second while the fleet starts (default 500), so a large fleet does not storm the broker. */
  readonly connectRate?: number;
  /**
   * CONNECTs awaiting their CONNACK at once, per broker (default 6). Every simulated machine connects from one
   * address, and a gateway closes connections from one address past 16 without a CONNECT yet (RELIABILITY A5): a
   * burst of thousands would be cut. Initial connects and reconnects both wait for a slot.
   */
  readonly maxPendingConnects?: number;
  /** Reconnect backoff: first delay and ceiling, ms (defaults 500 and 30,000), each with ±50 % jitter. */
  readonly backoffMs?: { readonly initial: number; readonly max: number };
  /** MQTT keepalive, s (default 30). */
  readonly keepaliveS?: number;
  /** Event time; default Date.now. */
  readonly now?: () => number;
  readonly log?: Logger;
  /** Called for every message handed to the client (benchmarks track each record to MongoDB with it). */
  readonly onPublish?: (message: PublishedMessage) => void;
  /** Members arrive following a day profile (machine.ts); absent: the spine's fixed idle gaps. */
  readonly day?: MachineDay;
  /** Members of the branch (ids drawn from them). */
  readonly members?: number;
  readonly trouble?: MachineTrouble;
  /** A member starts or ends a session on a machine (told whether or not the branch has a desk). */
  readonly onMember?: (event: MemberEvent) => void;
  /** Front desks by branch id: members check in at the doors and tap their cards on the machines they use. */
  readonly desks?: ReadonlyMap<string, FrontDesk>;
  /** A share of the machines (chosen by the seed) drops its connection abruptly about every `everyS` seconds. */
  readonly flapping?: { readonly share: number; readonly everyS: number };
  /** A share of the machines (chosen by the seed) also publishes `perS` bad payloads per second. */
  readonly badPayloads?: { readonly share: number; readonly perS: number };
  /** Keep every telemetry sample's seq and time in the ledger, for the persisted count (default false). */
  readonly track?: boolean;
  /** Length of the series' intervals (default 1 s). */
  readonly seriesIntervalMs?: number;
}

export interface PublishedMessage {
  readonly machine: string;
  readonly kind: OutgoingKind | 'meta';
  readonly qos: 0 | 1;
  readonly msgId: string;
  readonly bootId: string;
  readonly seq: number;
  readonly ts: number;
}

export interface MachineLedger {
  readonly branch: string;
  readonly bootId: string;
  /** msgIds of QoS 1 records published, in order. */
  readonly sent: string[];
  /** Their kinds, index by index with `sent`. */
  readonly kinds: (OutgoingKind | 'meta')[];
  /** msgIds the broker acknowledged (PUBACK). */
  readonly acked: Set<string>;
  /** With `track`: seq and time of every telemetry sample handed to the client, and the seqs acknowledged (QoS 1). */
  readonly telemetry: { readonly seqs: number[]; readonly ts: number[]; readonly acked: Set<number> };
  /** msgIds of the bad payloads that carried one (none of them may be stored). */
  readonly bad: string[];
}

export interface FleetStats {
  readonly machines: number;
  readonly connected: number;
  /** Machines that have connected at least once. */
  readonly everConnected: number;
  readonly connects: number;
  readonly reconnects: number;
  readonly published: Readonly<Record<OutgoingKind | 'meta', number>>;
  readonly publishedBytes: number;
  readonly acked: number;
  readonly pendingAcks: number;
  /** QoS 1 records refused because `maxPending` was reached, plus samples dropped while disconnected. */
  readonly dropped: number;
  readonly errors: number;
  /** Bad payloads published, by kind. */
  readonly bad: Readonly<Record<BadPayloadKind, number>>;
  /** Connections cut on purpose (flapping) and machine power-offs. */
  readonly flaps: number;
  readonly outages: number;
  /** Publish → PUBACK, µs. */
  readonly ackLatencyUs: { readonly p50: number; readonly p99: number; readonly max: number; readonly count: number };
  /** Members at the machines (with desks). */
  readonly links: LinkStats;
}

export interface LinkStats {
  /** Sessions that got a member from the desk (sessions running when the fleet started have none). */
  readonly sessionsWithMember: number;
  /** Taps on a machine's NFC pad to link, and the second taps that unlink. */
  readonly linkTaps: number;
  readonly unlinkTaps: number;
  /** `link` commands received for a tap, and denials of a tap to link (`display` at level error) by their text. */
  readonly linked: number;
  readonly denied: number;
  readonly deniedBy: Readonly<Record<string, number>>;
  /** Unlinks confirmed (the gateway's "Unlinked" display, or an `unlink` command). */
  readonly unlinked: number;
  /** Taps to unlink answered with an error (e.g. the cloud did not know the link yet), by their text. */
  readonly unlinkDenied: number;
  readonly unlinkDeniedBy: Readonly<Record<string, number>>;
  /** Sessions that ended with their tap still unanswered. */
  readonly unanswered: number;
}

export interface Fleet {
  /** Resolves once every machine has connected at least once; rejects after `timeoutMs`. */
  whenConnected(timeoutMs?: number): Promise<void>;
  stats(): FleetStats;
  /** PUBACK latency of the whole run so far, encoded (hdr compressed base64). */
  latencyEncoded(): string;
  /** Tap on a machine → its `link` command, encoded likewise ('' when none). */
  linkLatencyEncoded(): string;
  /** The run's figures over time, intervals since the fleet started. */
  series(): SeriesPoint[];
  /** PUBACK ledger per machine id. */
  ledger(): ReadonlyMap<string, MachineLedger>;
  /**
   * Ends the faults (flapping, bad payloads, power-offs: powered-off machines come back now) and the members' arrivals,
   * and waits until every machine is connected again and the taps made have their answers (those at most 5 s), at
   * most `timeoutMs`; resolves with how many are connected.
   */
  calm(timeoutMs: number): Promise<number>;
  /** Status `offline` (clean-shutdown) from every connected machine, then DISCONNECT. Idempotent. */
  stop(): Promise<void>;
}

interface Runner {
  readonly sim: SimMachine;
  readonly url: string;
  readonly client: MqttClient;
  readonly stamper: EnvelopeStamper;
  readonly ledger: MachineLedger;
  readonly branch: BranchId;
  readonly desk: FrontDesk | undefined;
  /** The member at the machine (with a desk), and where their link stands. */
  member: DeskMember | undefined;
  link: 'none' | 'walking' | 'tapped' | 'linked' | 'denied';
  tappedAt: number;
  memberTimer: NodeJS.Timeout | undefined;
  conn: number;
  everConnected: boolean;
  attempt: number;
  pending: number;
  /** Powered off (an outage): no ticks, no reconnects until it powers on. */
  off: boolean;
  tickTimer: NodeJS.Timeout | undefined;
  reconnectTimer: NodeJS.Timeout | undefined;
  faultTimer: NodeJS.Timeout | undefined;
  badTimer: NodeJS.Timeout | undefined;
}

const PAYLOAD_QOS: Record<Exclude<OutgoingKind, 'telemetry'> | 'meta', 1> = {
  meta: 1,
  status: 1,
  workout: 1,
  event: 1,
};

export function startFleet(options: FleetOptions): Fleet {
  const rate = options.rate ?? 1;
  if (!(rate > 0 && rate <= 1000)) throw new RangeError(`rate must be in (0, 1000] samples/s, got ${rate}`);
  const timeScale = options.timeScale ?? 1;
  const now = options.now ?? Date.now;
  const log = options.log ?? pino({ level: 'silent' });
  const fleetBranch: BranchId = asBranchId(options.branch);
  const tickMs = 1000 / rate;
  const tickS = (timeScale * tickMs) / 1000;
  const intervalMs = Math.round(tickMs);
  // The protocol bounds telemetryIntervalMs to 100 ms … 60 s; faster benchmark rates leave it out of the meta.
  const telemetryIntervalMs = intervalMs >= 100 && intervalMs <= 60_000 ? intervalMs : undefined;
  const telemetryQos = options.telemetryQos ?? 0;
  const maxPending = options.maxPending ?? 1_000;
  const backoff = options.backoffMs ?? { initial: 500, max: 30_000 };
  const connectGapMs = 1000 / (options.connectRate ?? 500);
  const track = options.track ?? false;
  const maxPendingConnects = options.maxPendingConnects ?? 6;
  const gates = new Map<string, { active: number; queue: (() => void)[] }>();

  const published: Record<OutgoingKind | 'meta', number> = { meta: 0, status: 0, telemetry: 0, workout: 0, event: 0 };
  const bad: Record<BadPayloadKind, number> = { 'not-json': 0, invalid: 0, 'wrong-source': 0, oversized: 0 };
  let publishedBytes = 0;
  let connects = 0;
  let reconnects = 0;
  let acked = 0;
  let dropped = 0;
  let errors = 0;
  let flaps = 0;
  let outages = 0;
  let stopping: Promise<void> | undefined;
  let calmed = false;
  const ackLatency = latencyHistogram();
  /** Tap on the machine → its `link` command, µs. */
  const linkLatency = latencyHistogram();
  const linkCounts = {
    sessionsWithMember: 0,
    linkTaps: 0,
    unlinkTaps: 0,
    linked: 0,
    denied: 0,
    unlinked: 0,
    unanswered: 0,
    unlinkDenied: 0,
  };
  const deniedBy: Record<string, number> = {};
  const unlinkDeniedBy: Record<string, number> = {};
  const runnerById = new Map<string, Runner>();
  const started = performance.now();
  const series = createSeries(options.seriesIntervalMs ?? 1000);
  const connectWaiters = new Set<() => void>();
  const runners: Runner[] = [];
  const ordinals = new Map<MachineType, number>();
  const startTimers: NodeJS.Timeout[] = [];
  const seriesTimer = setInterval(() => series.advance(performance.now() - started, connectedCount()), 250);
  seriesTimer.unref();

  const publish = (runner: Runner, kind: OutgoingKind | 'meta', body: Body) => {
    const machine = asMachineId(runner.sim.id);
    const topic = topics.machineUplink(runner.branch, machine, kind);
    const qos = kind === 'telemetry' ? telemetryQos : PAYLOAD_QOS[kind];
    if (qos === 0 && !runner.client.connected) {
      dropped += 1;
      series.dropped();
      return;
    }
    if (qos === 1 && runner.pending >= maxPending) {
      dropped += 1;
      series.dropped();
      return;
    }
    const payload = toPayload(runner.stamper, kind, body, runner.conn);
    const text = JSON.stringify(payload);
    const msgId = payload.msgId as string;
    options.onPublish?.({
      machine: runner.sim.id,
      kind,
      qos,
      msgId,
      bootId: payload.bootId as string,
      seq: payload.seq as number,
      ts: payload.ts as number,
    });
    published[kind] += 1;
    publishedBytes += text.length;
    series.sent();
    if (kind === 'telemetry' && track) {
      runner.ledger.telemetry.seqs.push(payload.seq as number);
      runner.ledger.telemetry.ts.push(payload.ts as number);
    }
    if (qos === 0) {
      try {
        runner.client.publish(topic, text, { qos: 0 });
      } catch (err) {
        publishThrew(runner, err);
      }
      return;
    }
    if (kind !== 'telemetry') {
      runner.ledger.sent.push(msgId);
      runner.ledger.kinds.push(kind);
    }
    runner.pending += 1;
    const sentAt = performance.now();
    try {
      publishQos1(runner, topic, text, kind, msgId, payload, sentAt);
    } catch (err) {
      runner.pending -= 1;
      publishThrew(runner, err);
    }
  };

  /** MQTT.js throws when asked to publish on a client it has closed (its stores gone): counted, never fatal. */
  const publishThrew = (runner: Runner, err: unknown) => {
    errors += 1;
    series.error();
    log.debug({ machine: runner.sim.id, err: (err as Error).message }, 'publish threw');
  };

  const publishQos1 = (
    runner: Runner,
    topic: string,
    text: string,
    kind: OutgoingKind | 'meta',
    msgId: string,
    payload: Body,
    sentAt: number,
  ) => {
    runner.client.publish(topic, text, { qos: 1, retain: kind === 'status' || kind === 'meta' }, (err) => {
      runner.pending -= 1;
      if (err) {
        errors += 1;
        series.error();
        log.debug({ machine: runner.sim.id, err: err.message }, 'publish failed');
        return;
      }
      if (kind === 'telemetry') {
        if (track) runner.ledger.telemetry.acked.add(payload.seq as number);
      } else {
        runner.ledger.acked.add(msgId);
      }
      acked += 1;
      const us = Math.max(1, Math.round((performance.now() - sentAt) * 1000));
      ackLatency.recordValue(Math.min(600_000_000, us));
      series.acked(us);
    });
  };

  const tap = (runner: Runner, purpose: 'link' | 'unlink') => {
    if (!runner.member || runner.off) return;
    if (purpose === 'link') {
      linkCounts.linkTaps += 1;
      runner.link = 'tapped';
      runner.tappedAt = performance.now();
    } else linkCounts.unlinkTaps += 1;
    publish(runner, 'event', { type: 'nfc-tapped', uid: runner.member.uid });
  };

  /** A session starts: a member from the desk walks up and, once there, taps to link. */
  const memberArrives = (runner: Runner) => {
    // Once the run is calming down no new member comes in: the taps in flight get their answers before the end.
    if (!runner.desk || runner.member || stopping || calmed) return;
    const taken = runner.desk.take();
    if (!taken) return;
    linkCounts.sessionsWithMember += 1;
    runner.member = taken.member;
    runner.link = 'walking';
    runner.memberTimer = setTimeout(() => {
      runner.memberTimer = undefined;
      if (!stopping) tap(runner, 'link');
    }, taken.readyInMs);
  };

  /** The session is over: a linked (or still answering) member taps again to unlink, then goes back to the desk. */
  const memberLeaves = (runner: Runner) => {
    const member = runner.member;
    if (!member || !runner.desk) return;
    clearTimeout(runner.memberTimer);
    runner.memberTimer = undefined;
    if (runner.link === 'tapped') linkCounts.unanswered += 1;
    if (runner.link === 'linked' || runner.link === 'tapped') tap(runner, 'unlink');
    runner.member = undefined;
    runner.link = 'none';
    runner.desk.release(member);
  };

  const onCommand = (runner: Runner, topic: string, payload: Buffer) => {
    const name = topic.slice(topic.lastIndexOf('/') + 1);
    let body: { userId?: unknown; level?: unknown; text?: unknown };
    try {
      body = JSON.parse(payload.toString('utf8')) as typeof body;
    } catch {
      return;
    }
    if (name === 'link' && runner.link === 'tapped') {
      runner.link = 'linked';
      linkCounts.linked += 1;
      const us = Math.max(1, Math.round((performance.now() - runner.tappedAt) * 1000));
      linkLatency.recordValue(Math.min(600_000_000, us));
    } else if (name === 'unlink') {
      linkCounts.unlinked += 1;
    } else if (name === 'display' && body.level === 'error') {
      const why = typeof body.text === 'string' ? body.text.slice(0, 60) : 'unknown';
      if (runner.link === 'tapped') {
        // The answer to this member's tap to link.
        runner.link = 'denied';
        linkCounts.denied += 1;
        deniedBy[why] = (deniedBy[why] ?? 0) + 1;
      } else {
        // Nobody is waiting for a link here: the answer to the last member's tap to unlink.
        linkCounts.unlinkDenied += 1;
        unlinkDeniedBy[why] = (unlinkDeniedBy[why] ?? 0) + 1;
      }
    } else if (name === 'display' && typeof body.text === 'string' && body.text.startsWith('Unlinked')) {
      linkCounts.unlinked += 1;
    }
  };

  const tick = (runner: Runner) => {
    if (runner.off) return;
    for (const out of runner.sim.tick(now())) publish(runner, out.kind, out.body);
    const outageS = runner.sim.takeOutage();
    if (outageS !== undefined && !calmed) void powerOff(runner, (outageS * 1000) / timeScale);
  };

  // The will belongs to one connection: compose it just before each CONNECT (status.ts, `conn`).
  const armWill = (runner: Runner) => {
    runner.conn += 1;
    const will = toPayload(runner.stamper, 'status', { status: 'offline', lastWill: true }, runner.conn);
    runner.client.options.will = {
      topic: topics.machineStatus(runner.branch, asMachineId(runner.sim.id)),
      payload: Buffer.from(JSON.stringify(will)),
      qos: 1,
      retain: true,
    };
  };

  /** Runs `connectNow` once a CONNECT slot to the runner's broker is free; the slot frees at CONNACK or close. */
  const whenSlot = (runner: Runner, connectNow: () => void) => {
    let gate = gates.get(runner.url);
    if (!gate) gates.set(runner.url, (gate = { active: 0, queue: [] }));
    const g = gate;
    const leave = () => {
      g.active -= 1;
      const next = g.queue.shift();
      if (next) {
        g.active += 1;
        next();
      }
    };
    const enter = () => {
      if (stopping) return leave();
      let released = false;
      const release = () => {
        if (released) return;
        released = true;
        runner.client.off('connect', release);
        runner.client.off('close', release);
        leave();
      };
      runner.client.once('connect', release);
      runner.client.once('close', release);
      connectNow();
    };
    if (g.active < maxPendingConnects) {
      g.active += 1;
      enter();
    } else g.queue.push(enter);
  };

  const scheduleReconnect = (runner: Runner) => {
    if (stopping || runner.off || runner.reconnectTimer) return;
    const ceiling = Math.min(backoff.max, backoff.initial * 2 ** runner.attempt);
    const delay = ceiling * (0.5 + Math.random() * 0.5);
    runner.attempt += 1;
    runner.reconnectTimer = setTimeout(() => {
      runner.reconnectTimer = undefined;
      if (stopping || runner.off) return;
      whenSlot(runner, () => {
        reconnects += 1;
        armWill(runner);
        runner.client.reconnect();
      });
    }, delay);
  };

  /** Clean power-off: status offline, DISCONNECT (no will), and back after `forMs`. */
  const powerOff = async (runner: Runner, forMs: number) => {
    if (runner.off || stopping) return;
    runner.off = true;
    outages += 1;
    await goOffline(runner);
    runner.faultTimer = setTimeout(() => {
      runner.faultTimer = undefined;
      if (stopping) return;
      runner.off = false;
      runner.attempt = 0;
      whenSlot(runner, () => {
        reconnects += 1;
        armWill(runner);
        runner.client.reconnect();
      });
    }, forMs);
  };

  /** Cuts the connection without a DISCONNECT, as a dropped network does: the broker publishes the will. */
  const flap = (runner: Runner) => {
    if (stopping || runner.off || !runner.client.connected) return;
    flaps += 1;
    runner.client.stream.destroy();
  };

  const sendBad = (runner: Runner, rng: ReturnType<typeof createRng>) => {
    if (stopping || runner.off || !runner.client.connected) return;
    const other = runners[rng.int(0, runners.length - 1)]!.sim.id;
    const made = badPayload(rng, { machine: runner.sim.id, other });
    bad[made.kind] += 1;
    if (made.msgId !== undefined) runner.ledger.bad.push(made.msgId);
    const topic = topics.machineUplink(runner.branch, asMachineId(runner.sim.id), made.lane);
    runner.client.publish(topic, made.payload, { qos: made.lane === 'telemetry' ? 0 : 1 }, () => undefined);
  };

  options.machines.forEach((machine, index) => {
    const ordinal = (ordinals.get(machine.type) ?? 0) + 1;
    ordinals.set(machine.type, ordinal);
    const sim = createSimMachine({
      id: machine.id,
      type: machine.type,
      seed: options.seed,
      ordinal,
      tickS,
      telemetryIntervalMs,
      nowMs: now(),
      day: options.day,
      members: options.members,
      trouble: options.trouble,
      onMember: (event) => {
        options.onMember?.(event);
        // A session running when the fleet starts began before the run: its member is not the desk's.
        const runner = runnerById.get(event.machine);
        if (!runner) return;
        if (event.type === 'link') memberArrives(runner);
        else memberLeaves(runner);
      },
    });
    const clientOptions: IClientOptions = {
      clientId: machine.id,
      username: machine.id,
      ...(machine.secret === undefined ? {} : { password: machine.secret }),
      protocolVersion: 4,
      clean: true,
      keepalive: options.keepaliveS ?? 30,
      connectTimeout: 10_000,
      reconnectPeriod: 0,
      queueQoSZero: false,
      manualConnect: true,
    };
    const client = connect(machine.url ?? options.url, clientOptions);
    const stamper = createEnvelopeStamper({ source: asMachineId(machine.id), now });
    const runner: Runner = {
      sim,
      url: machine.url ?? options.url,
      client,
      stamper,
      ledger: {
        branch: machine.branch ?? options.branch,
        bootId: stamper.bootId,
        sent: [],
        kinds: [],
        acked: new Set(),
        telemetry: { seqs: [], ts: [], acked: new Set() },
        bad: [],
      },
      branch: machine.branch === undefined ? fleetBranch : asBranchId(machine.branch),
      desk: options.desks?.get(machine.branch ?? options.branch),
      member: undefined,
      link: 'none',
      tappedAt: 0,
      memberTimer: undefined,
      conn: -1,
      everConnected: false,
      attempt: 0,
      pending: 0,
      off: false,
      tickTimer: undefined,
      reconnectTimer: undefined,
      faultTimer: undefined,
      badTimer: undefined,
    };
    runners.push(runner);
    runnerById.set(machine.id, runner);
    if (runner.desk) {
      client.on('message', (topic, payload) => onCommand(runner, topic, payload));
    }
    // Which machines flap or send bad payloads depends on the seed and the machine alone.
    const faultRng = createRng(deriveSeed(options.seed, `${machine.id}/faults`));
    const flapping = options.flapping !== undefined && faultRng.chance(options.flapping.share);
    const sendsBad = options.badPayloads !== undefined && faultRng.chance(options.badPayloads.share);
    client.on('connect', () => {
      connects += 1;
      runner.attempt = 0;
      // Clean sessions: the command subscription is made again on every connection.
      if (runner.desk) client.subscribe(filters.machineCommands(runner.branch, asMachineId(machine.id)), { qos: 1 });
      publish(runner, 'meta', sim.meta);
      publish(runner, 'status', { status: sim.status, since: sim.statusSince });
      if (!runner.everConnected) {
        runner.everConnected = true;
        for (const waiter of connectWaiters) waiter();
        // Spread the machines' ticks over the interval so the broker sees a steady stream, not bursts.
        const offset = (index / options.machines.length) * tickMs;
        runner.tickTimer = setTimeout(() => {
          tick(runner);
          runner.tickTimer = setInterval(() => tick(runner), intervalMs);
        }, offset);
        if (flapping) {
          const everyMs = options.flapping.everyS * 1000;
          const next = () => {
            runner.faultTimer = setTimeout(
              () => {
                flap(runner);
                next();
              },
              everyMs * faultRng.between(0.5, 1.5),
            );
          };
          next();
        }
        if (sendsBad) {
          const gapMs = 1000 / options.badPayloads.perS;
          runner.badTimer = setInterval(() => sendBad(runner, faultRng), gapMs);
        }
      }
    });
    client.on('close', () => scheduleReconnect(runner));
    // A refused CONNECT (wrong secret, unknown machine) is worth one warning per machine until it gets in; other
    // errors come with a close and a reconnect.
    let warned = false;
    client.on('connect', () => (warned = false));
    client.on('error', (err: Error & { code?: unknown }) => {
      const refused = typeof err.code === 'number' && err.code > 0;
      if (refused && !warned) {
        warned = true;
        log.warn({ machine: machine.id, err: err.message }, 'connection refused by the broker; retrying with backoff');
      } else {
        log.debug({ machine: machine.id, err: err.message }, 'mqtt error');
      }
    });
    startTimers.push(
      setTimeout(() => {
        if (stopping) return;
        whenSlot(runner, () => {
          armWill(runner);
          client.connect();
        });
      }, index * connectGapMs),
    );
  });

  function connectedCount() {
    let n = 0;
    for (const runner of runners) if (runner.client.connected) n += 1;
    return n;
  }
  const allConnectedOnce = () => runners.every((runner) => runner.everConnected);

  /** Status `offline` (clean-shutdown) if connected, then DISCONNECT. */
  const goOffline = async (runner: Runner) => {
    const { client } = runner;
    if (client.connected) {
      const body = { status: 'offline', since: now(), reason: 'clean-shutdown' };
      const stamped = toPayload(runner.stamper, 'status', body, runner.conn);
      const msgId = stamped.msgId as string;
      const topic = topics.machineStatus(runner.branch, asMachineId(runner.sim.id));
      published.status += 1;
      runner.ledger.sent.push(msgId);
      runner.ledger.kinds.push('status');
      await Promise.race([
        client.publishAsync(topic, JSON.stringify(stamped), { qos: 1, retain: true }).then(
          () => {
            runner.ledger.acked.add(msgId);
            acked += 1;
          },
          () => undefined,
        ),
        new Promise((resolve) => setTimeout(resolve, 2_000)),
      ]);
    }
    await Promise.race([client.endAsync(!client.connected), new Promise((resolve) => setTimeout(resolve, 2_000))]);
    if (!client.disconnected) client.end(true);
  };

  const stopRunner = async (runner: Runner) => {
    clearTimeout(runner.reconnectTimer);
    clearTimeout(runner.tickTimer);
    clearInterval(runner.tickTimer);
    clearTimeout(runner.faultTimer);
    clearInterval(runner.badTimer);
    clearTimeout(runner.memberTimer);
    await goOffline(runner);
  };

  return {
    whenConnected(timeoutMs = 30_000) {
      if (allConnectedOnce()) return Promise.resolve();
      return new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => {
          connectWaiters.delete(check);
          const missing = runners.filter((runner) => !runner.everConnected).map((runner) => runner.sim.id);
          reject(
            new Error(
              `${missing.length} machines not connected after ${timeoutMs} ms: ${missing.slice(0, 5).join(', ')}`,
            ),
          );
        }, timeoutMs);
        const check = () => {
          if (!allConnectedOnce()) return;
          clearTimeout(timer);
          connectWaiters.delete(check);
          resolve();
        };
        connectWaiters.add(check);
      });
    },
    stats() {
      const pendingAcks = runners.reduce((sum, runner) => sum + runner.pending, 0);
      return {
        machines: runners.length,
        connected: connectedCount(),
        everConnected: runners.filter((runner) => runner.everConnected).length,
        connects,
        reconnects,
        published: { ...published },
        publishedBytes,
        acked,
        pendingAcks,
        dropped,
        errors,
        bad: { ...bad },
        flaps,
        outages,
        ackLatencyUs: {
          p50: ackLatency.totalCount ? ackLatency.getValueAtPercentile(50) : 0,
          p99: ackLatency.totalCount ? ackLatency.getValueAtPercentile(99) : 0,
          max: ackLatency.totalCount ? ackLatency.maxValue : 0,
          count: ackLatency.totalCount,
        },
        links: { ...linkCounts, deniedBy: { ...deniedBy }, unlinkDeniedBy: { ...unlinkDeniedBy } },
      };
    },
    latencyEncoded() {
      return ackLatency.totalCount === 0 ? '' : hdr.encodeIntoCompressedBase64(ackLatency);
    },
    linkLatencyEncoded() {
      return linkLatency.totalCount === 0 ? '' : hdr.encodeIntoCompressedBase64(linkLatency);
    },
    series() {
      const connected = connectedCount();
      series.advance(performance.now() - started, connected);
      return series.points(connected);
    },
    ledger() {
      return new Map(runners.map((runner) => [runner.sim.id, runner.ledger]));
    },
    async calm(timeoutMs) {
      calmed = true;
      for (const runner of runners) {
        clearInterval(runner.badTimer);
        runner.badTimer = undefined;
        if (runner.faultTimer !== undefined) {
          clearTimeout(runner.faultTimer);
          runner.faultTimer = undefined;
          if (runner.off) {
            runner.off = false;
            runner.attempt = 0;
            whenSlot(runner, () => {
              reconnects += 1;
              armWill(runner);
              runner.client.reconnect();
            });
          }
        }
      }
      // Members on their way to a machine stay there; a tap already made is given time for its answer.
      for (const runner of runners) {
        if (runner.link !== 'walking') continue;
        clearTimeout(runner.memberTimer);
        runner.memberTimer = undefined;
      }
      const deadline = Date.now() + timeoutMs;
      const answersDue = Date.now() + Math.min(timeoutMs, 5_000);
      const tapsAnswered = () => Date.now() > answersDue || runners.every((runner) => runner.link !== 'tapped');
      while ((connectedCount() < runners.length || !tapsAnswered()) && Date.now() < deadline && !stopping)
        await new Promise((resolve) => setTimeout(resolve, 200));
      return connectedCount();
    },
    stop() {
      stopping ??= (async () => {
        clearInterval(seriesTimer);
        for (const timer of startTimers) clearTimeout(timer);
        await Promise.all(runners.map(stopRunner));
      })();
      return stopping;
    },
  };
}
