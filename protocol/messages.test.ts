import { expect } from 'chai';
import { examples } from './examples.ts';
import { PAYLOAD_NAMES, parsePayload, validatePayload } from './payloads.ts';
import type { PayloadName } from './payloads.ts';

const DELETE = Symbol('delete');

interface InvalidCase {
  what: string;
  /** Index of the example to start from (default 0). */
  example?: number;
  /** Dot path → new value (or DELETE) applied to a copy of the example. */
  set: Record<string, unknown>;
  /** The failing field path the parser must report. */
  path: string;
}

const repeat = <T>(n: number, value: T): T[] => Array.from({ length: n }, () => structuredClone(value));
const sha = 'a'.repeat(64);
const RE_NFC_UID = '04a2b3c4d5e6f7';
const MSG_ID = '3f2e1d0c-9b8a-4776-8554-433221100fed';

/** Invalid variants of every payload, each with the field path its failure must name. */
const INVALID: { [K in PayloadName]: [InvalidCase, ...InvalidCase[]] } = {
  CloudState: [
    { what: 'online as a string', set: { online: 'yes' }, path: 'online' },
    { what: 'since in 1970', set: { since: 1_000 }, path: 'since' },
    { what: 'no since', set: { since: DELETE }, path: 'since' },
    { what: 'a version with a space', set: { version: 'v 1' }, path: 'version' },
  ],
  GatewayState: [
    { what: 'online neither true nor false', set: { online: 'maybe' }, path: 'online' },
    { what: 'a birth without queue', set: { queue: DELETE }, path: 'queue' },
    { what: 'a negative lane depth', set: { 'queue.telemetry.depth': -1 }, path: 'queue.telemetry.depth' },
    {
      what: '33 readers',
      set: { readers: repeat(33, { reader: 'r', kind: 'nfc', connected: true }) },
      path: 'readers',
    },
    { what: 'a reader id with a space', set: { 'readers.0.reader': 'door in' }, path: 'readers.0.reader' },
    { what: 'a will without bootId', example: 1, set: { bootId: DELETE }, path: 'bootId' },
    { what: 'a birth without conn', set: { conn: DELETE }, path: 'conn' },
    { what: 'a will without conn', example: 1, set: { conn: DELETE }, path: 'conn' },
    { what: 'a fractional conn', set: { conn: 1.5 }, path: 'conn' },
    { what: 'a will without ts', example: 1, set: { ts: DELETE }, path: 'ts' },
  ],
  UplinkBatch: [
    { what: 'no records', set: { records: [] }, path: 'records' },
    { what: '501 records', set: { records: repeat(501, examples.UplinkRecord[0]) }, path: 'records' },
    { what: 'a batchId with a slash', set: { batchId: 'b/1' }, path: 'batchId' },
    { what: 'a record field out of bounds', set: { 'records.1.payload.reps': 1_001 }, path: 'records.1.payload.reps' },
    { what: 'an unknown record kind', set: { 'records.0.kind': 'metrics' }, path: 'records.0.kind' },
    { what: 'live: false', set: { live: false }, path: 'live' },
    { what: 'a negative sentAt', set: { sentAt: -1 }, path: 'sentAt' },
    { what: 'a fractional sentAt', set: { sentAt: 1.5 }, path: 'sentAt' },
  ],
  UplinkRecord: [
    { what: 'an unknown kind', set: { kind: 'metrics' }, path: 'kind' },
    { what: 'a payload of another kind', set: { kind: 'access-scan' }, path: 'payload.reader' },
    { what: 'an unknown machine type', set: { 'payload.type': 'elliptical' }, path: 'payload.type' },
    { what: 'a negative receivedAt', set: { receivedAt: -5 }, path: 'receivedAt' },
    { what: 'receivedAt as an ISO string', set: { receivedAt: '2026-11-24T19:40:01Z' }, path: 'receivedAt' },
  ],
  UplinkAck: [
    { what: 'an invalid acked msgId', set: { 'acked.0': 'a b' }, path: 'acked.0' },
    { what: 'a reason not in kebab-case', set: { 'rejected.0.reason': 'Member Deleted' }, path: 'rejected.0.reason' },
    { what: 'a 300-character path', set: { 'rejected.0.path': 'x'.repeat(300) }, path: 'rejected.0.path' },
    { what: 'a batch error that also acks', example: 1, set: { acked: [MSG_ID] }, path: 'error' },
    { what: '501 acked ids', set: { acked: repeat(501, MSG_ID) }, path: 'acked' },
    { what: 'a short acked msgId', set: { 'acked.0': 'm-1' }, path: 'acked.0' },
    { what: 'a rejection without index', set: { 'rejected.0.index': DELETE }, path: 'rejected.0.index' },
    { what: 'a rejection at index 500', set: { 'rejected.0.index': 500 }, path: 'rejected.0.index' },
    { what: 'a negative index', example: 2, set: { 'rejected.0.index': -1 }, path: 'rejected.0.index' },
  ],
  CheckInRequest: [
    { what: 'an upper-case UID', set: { 'credential.uid': RE_NFC_UID.toUpperCase() }, path: 'credential.uid' },
    { what: 'a 5-byte UID', set: { 'credential.uid': '04a2b3c4d5' }, path: 'credential.uid' },
    { what: 'a UID with separators', set: { 'credential.uid': '04:a2:b3:c4' }, path: 'credential.uid' },
    { what: 'a reader id with #', set: { reader: 'door#' }, path: 'reader' },
    { what: 'an unknown credential kind', set: { 'credential.kind': 'face' }, path: 'credential.kind' },
    { what: 'no ts', set: { ts: DELETE }, path: 'ts' },
  ],
  CheckOutRequest: [
    { what: 'a token that is no JWS', set: { 'credential.token': 'not-a-jws' }, path: 'credential.token' },
    { what: 'a 2 kB token', set: { 'credential.token': `${'a'.repeat(2_000)}.b.c` }, path: 'credential.token' },
  ],
  LinkRequest: [
    { what: 'no machine', set: { machine: DELETE }, path: 'machine' },
    { what: 'a credential that is a string', set: { credential: 'qr' }, path: 'credential' },
  ],
  UnlinkRequest: [
    { what: 'a reason with spaces', set: { reason: 'Idle Timeout' }, path: 'reason' },
    { what: 'an upper-case machine id', set: { machine: 'ROW-03' }, path: 'machine' },
  ],
  RequestResponse: [
    { what: 'ok without decision', set: { decision: DELETE }, path: 'decision' },
    { what: 'a deny without reason', example: 1, set: { 'decision.reason': DELETE }, path: 'decision.reason' },
    { what: 'an unknown decision', set: { 'decision.decision': 'maybe' }, path: 'decision.decision' },
    { what: 'not ok without error', example: 2, set: { error: DELETE }, path: 'error' },
    {
      what: 'an error message with ANSI escapes',
      example: 2,
      set: { 'error.message': '\u001b[31mx' },
      path: 'error.message',
    },
    { what: 'an empty reqId', set: { reqId: '' }, path: 'reqId' },
  ],
  GatewayConfigCommand: [
    { what: 'a jws that is no JWS', set: { jws: 'abc' }, path: 'jws' },
    { what: 'a 240 KiB jws', set: { jws: `${'a'.repeat(240 * 1024)}.b.c` }, path: 'jws' },
    { what: 'a negative revision', set: { revision: -1 }, path: 'revision' },
  ],
  GatewayConfigDocument: [
    { what: 'a short secret hash', set: { 'machines.0.secretSha256': 'abc' }, path: 'machines.0.secretSha256' },
    { what: 'no QR key', set: { qrKeys: [] }, path: 'qrKeys' },
    { what: 'a P-384 key', set: { 'qrKeys.0.crv': 'P-384' }, path: 'qrKeys.0.crv' },
    { what: 'an unknown reader action', set: { 'readers.0.action': 'enter' }, path: 'readers.0.action' },
    {
      what: '1,001 machines',
      set: { machines: repeat(1_001, { machine: 'm', secretSha256: sha }) },
      path: 'machines',
    },
  ],
  AllowListCommand: [
    { what: 'part beyond parts', set: { part: 1 }, path: 'part' },
    { what: 'zero parts', set: { parts: 0 }, path: 'parts' },
  ],
  AllowListDocument: [
    { what: 'five cards for a member', set: { 'members.0.nfc': repeat(5, sha) }, path: 'members.0.nfc' },
    { what: '401 members', set: { members: repeat(401, { userId: 'u', nfc: [] }) }, path: 'members' },
    { what: 'part beyond parts', set: { part: 1 }, path: 'part' },
    { what: 'part 1,000', set: { part: 1_000, parts: 1_000 }, path: 'part' },
    { what: 'an upper-case user id', set: { 'members.0.userId': 'X' }, path: 'members.0.userId' },
  ],
  GatewayRebirthCommand: [
    { what: 'a 65-character reqId', set: { reqId: 'r'.repeat(65) }, path: 'reqId' },
    { what: 'an ISO expiresAt', set: { expiresAt: '2026-11-24T20:00:00Z' }, path: 'expiresAt' },
  ],
  MachineLinkCommand: [
    { what: 'an upper-case user id', set: { userId: 'ANA' }, path: 'userId' },
    { what: 'a 65-character greeting', set: { greeting: 'x'.repeat(65) }, path: 'greeting' },
  ],
  MachineUnlinkCommand: [{ what: 'a reason with spaces', set: { reason: 'Checked Out' }, path: 'reason' }],
  DisplayCommand: [
    { what: 'empty text', set: { text: '' }, path: 'text' },
    { what: 'text with a terminal escape', set: { text: '\u001b[2Jhello' }, path: 'text' },
    { what: '141 characters', set: { text: 'x'.repeat(141) }, path: 'text' },
    { what: 'a 601 s duration', set: { durationS: 601 }, path: 'durationS' },
    { what: 'an unknown level', set: { level: 'debug' }, path: 'level' },
  ],
  MachineConfigCommand: [
    { what: 'a 50 ms telemetry interval', set: { telemetryIntervalMs: 50 }, path: 'telemetryIntervalMs' },
    { what: 'unknown display units', set: { displayUnits: 'furlongs' }, path: 'displayUnits' },
    { what: 'a fractional idle time', set: { idleUnlinkS: 10.5 }, path: 'idleUnlinkS' },
  ],
  MachineRebirthCommand: [{ what: 'no reqId', set: { reqId: DELETE }, path: 'reqId' }],
  CommandResponse: [
    { what: 'not ok without error', example: 1, set: { error: DELETE }, path: 'error' },
    { what: 'an error code not in kebab-case', example: 1, set: { 'error.code': 'E42' }, path: 'error.code' },
    { what: 'ok as a string', set: { ok: 'true' }, path: 'ok' },
  ],
  MachineMeta: [
    { what: 'a field of another machine type', set: { 'fields.9': 'speedMps' }, path: 'fields' },
    { what: 'a field listed twice', set: { 'fields.9': 'strokes' }, path: 'fields' },
    { what: 'an unknown field', set: { 'fields.0': 'fooBar' }, path: 'fields.0' },
    {
      what: 'a range with max below min',
      set: { 'ranges.powerW': { min: 100, max: 10, step: 1 } },
      path: 'ranges.powerW.max',
    },
    { what: 'a zero step', set: { 'ranges.powerW.step': 0 }, path: 'ranges.powerW.step' },
    { what: 'a range beyond the field bounds', set: { 'ranges.powerW.max': 40_000 }, path: 'ranges.powerW.max' },
    { what: 'a range for a field not sent', set: { 'ranges.speedMps': { min: 0, max: 5, step: 0.1 } }, path: 'ranges' },
    { what: 'an unknown machine type', set: { type: 'elliptical' }, path: 'type' },
    { what: 'an empty manufacturer', set: { manufacturer: '' }, path: 'manufacturer' },
    { what: 'a firmware with a space', set: { firmware: 'v 1' }, path: 'firmware' },
  ],
  MachineStatus: [
    { what: 'an unknown status', set: { status: 'busy' }, path: 'status' },
    { what: 'a last will that is not offline', example: 1, set: { status: 'available' }, path: 'lastWill' },
    { what: 'lastWill: false', example: 1, set: { lastWill: false }, path: 'lastWill' },
    { what: 'since after ts', example: 2, set: { since: Date.UTC(2027, 0, 1) }, path: 'since' },
    { what: 'a negative conn', set: { conn: -1 }, path: 'conn' },
    { what: 'no conn', set: { conn: DELETE }, path: 'conn' },
  ],
  Telemetry: [
    { what: 'a treadmill beyond the uint16 km/h range', example: 1, set: { speedMps: 183 }, path: 'speedMps' },
    { what: 'a 256 bpm heart rate (beyond uint8)', set: { heartRateBpm: 256 }, path: 'heartRateBpm' },
    { what: 'a negative heart rate', set: { heartRateBpm: -1 }, path: 'heartRateBpm' },
    { what: 'a stroke rate beyond uint8 × 0.5', set: { strokeRateSpm: 128 }, path: 'strokeRateSpm' },
    { what: 'power beyond sint16', set: { powerW: 32_768 }, path: 'powerW' },
    { what: 'a fractional heart rate', set: { heartRateBpm: 150.5 }, path: 'heartRateBpm' },
    { what: 'a fractional stroke count', set: { strokes: 1.5 }, path: 'strokes' },
    { what: 'an unknown machine type', set: { type: 'elliptical' }, path: 'type' },
    { what: 'power as a string', set: { powerW: '212' }, path: 'powerW' },
    { what: 'NaN power', set: { powerW: Number.NaN }, path: 'powerW' },
    { what: 'infinite distance', set: { distanceM: Number.POSITIVE_INFINITY }, path: 'distanceM' },
    { what: 'a negative seq', set: { seq: -1 }, path: 'seq' },
    { what: 'ts in 1970', set: { ts: 0 }, path: 'ts' },
    { what: 'a msgId with a space', set: { msgId: 'has space' }, path: 'msgId' },
    { what: 'an incline beyond sint16 × 0.1 %', example: 1, set: { inclinePct: -3_276.9 }, path: 'inclinePct' },
    { what: 'an unknown training status', set: { trainingStatus: 'napping' }, path: 'trainingStatus' },
    { what: 'a sideways cross trainer', example: 3, set: { direction: 'sideways' }, path: 'direction' },
    { what: 'a 61 s eccentric phase', example: 4, set: { 'tempo.eccentricS': 61 }, path: 'tempo.eccentricS' },
    { what: 'an unknown strength phase', example: 4, set: { phase: 'flying' }, path: 'phase' },
    { what: 'an exercise not in kebab-case', example: 6, set: { exercise: 'Kettlebell Swing' }, path: 'exercise' },
  ],
  Workout: [
    { what: 'an end before the start', set: { endedAt: Date.UTC(2026, 10, 24, 19, 0) }, path: 'endedAt' },
    {
      what: 'an interval of 25 h',
      example: 1,
      set: { startedAt: Date.UTC(2026, 10, 23, 18, 0) },
      path: 'endedAt',
    },
    { what: 'more rep details than reps', set: { reps: 1 }, path: 'repDetails' },
    {
      what: '201 rep details',
      set: { reps: 500, repDetails: repeat(201, { romCm: 40, concentricS: 1, eccentricS: 2 }) },
      path: 'repDetails',
    },
    { what: 'a set on a treadmill', set: { machineType: 'treadmill' }, path: 'machineType' },
    { what: 'an unknown segment', set: { segment: 'superset' }, path: 'segment' },
    { what: 'a negative distance', example: 1, set: { distanceM: -1 }, path: 'distanceM' },
    { what: 'a set without reps', set: { reps: DELETE }, path: 'reps' },
    { what: 'an invalid user id', set: { userId: 'User 1' }, path: 'userId' },
    { what: 'a block with 25 h of work', example: 2, set: { workS: 90_000 }, path: 'workS' },
  ],
  MachineEvent: [
    { what: 'an unknown severity', set: { severity: 'fatal' }, path: 'severity' },
    { what: 'a 257-character message', set: { message: 'x'.repeat(257) }, path: 'message' },
    { what: 'an unknown event type', set: { type: 'boom' }, path: 'type' },
    { what: 'an unknown maintenance phase', example: 2, set: { phase: 'paused' }, path: 'phase' },
    { what: 'a garbage QR token', example: 3, set: { token: 'garbage' }, path: 'token' },
    { what: 'a non-hex UID', example: 4, set: { uid: 'zzzzzzzz' }, path: 'uid' },
    { what: 'an unknown machine state', example: 5, set: { state: 'exploded' }, path: 'state' },
    { what: 'a 40 kW power target', example: 6, set: { value: 40_000 }, path: 'value' },
    { what: 'an unknown target', example: 6, set: { target: 'altitude' }, path: 'target' },
  ],
  AccessScan: [
    { what: 'a deny without reason', example: 1, set: { reason: DELETE }, path: 'reason' },
    { what: 'an unknown decider', set: { decidedBy: 'magic' }, path: 'decidedBy' },
    { what: 'an unknown credential kind', set: { 'credential.kind': 'face' }, path: 'credential.kind' },
    { what: 'a 61 s latency', set: { latencyMs: 61_000 }, path: 'latencyMs' },
    { what: 'an unknown action', set: { action: 'enter' }, path: 'action' },
    { what: 'a reader id with a space', set: { reader: 'door in' }, path: 'reader' },
  ],
  OfflineDecision: [
    { what: 'a check-in (door scans are AccessScan records)', set: { name: 'check-in' }, path: 'name' },
    { what: 'an invalid machine in the request', set: { 'request.machine': 'Row' }, path: 'request.machine' },
    { what: 'an unknown decision', set: { 'decision.decision': 'perhaps' }, path: 'decision.decision' },
  ],
  LiveMachine: [
    { what: 'an unknown status', set: { status: 'busy' }, path: 'status' },
    { what: 'an upper-case machine id', set: { machine: 'ROW-03' }, path: 'machine' },
    { what: 'no ts', set: { ts: DELETE }, path: 'ts' },
  ],
  UserLiveWorkout: [
    { what: 'a sample out of bounds', set: { 'telemetry.strokeRateSpm': 500 }, path: 'telemetry.strokeRateSpm' },
    { what: 'an unknown segment', example: 1, set: { 'workout.segment': 'x' }, path: 'workout.segment' },
    { what: 'an unknown link state', example: 2, set: { state: 'maybe' }, path: 'state' },
    { what: 'an unknown type', set: { type: 'heartbeat' }, path: 'type' },
  ],
  UserNotification: [
    {
      what: '17 data entries',
      set: { data: Object.fromEntries(Array.from({ length: 17 }, (_, i) => [`k${i}`, 'v'])) },
      path: 'data',
    },
    { what: 'an empty title', set: { title: '' }, path: 'title' },
    { what: 'a 121-character title', set: { title: 'x'.repeat(121) }, path: 'title' },
    { what: 'a bell in the body', set: { body: 'ding\u0007' }, path: 'body' },
    { what: 'a 257-character data value', set: { 'data.machine': 'x'.repeat(257) }, path: 'data.machine' },
    { what: 'a category not in kebab-case', set: { category: 'Waitlist' }, path: 'category' },
  ],
  QrTokenClaims: [
    { what: 'a subject with a slash', set: { sub: 'a/b' }, path: 'sub' },
    { what: 'a short nonce', set: { nonce: 'abc' }, path: 'nonce' },
    { what: 'iat in milliseconds as a string', set: { iat: '1795549195' }, path: 'iat' },
    { what: 'no exp', set: { exp: DELETE }, path: 'exp' },
  ],
  GatewayEnrolmentRequest: [
    { what: 'a short token', set: { token: 'abc' }, path: 'token' },
    { what: 'a token with a dot', set: { token: 'a.'.repeat(20) }, path: 'token' },
    { what: 'no version', set: { version: DELETE }, path: 'version' },
  ],
  GatewayEnrolmentResponse: [
    { what: 'a gateway id in upper case', set: { gateway: 'GW' }, path: 'gateway' },
    { what: 'a short password', set: { 'mqtt.password': 'x' }, path: 'mqtt.password' },
    { what: 'no config keys', set: { configKeys: [] }, path: 'configKeys' },
  ],
};

function applyChanges(value: unknown, changes: Record<string, unknown>): unknown {
  const copy = structuredClone(value);
  for (const [path, next] of Object.entries(changes)) {
    const keys = path.split('.');
    const last = keys.pop() as string;
    let node = copy as Record<string, unknown>;
    for (const key of keys) node = node[key] as Record<string, unknown>;
    if (next === DELETE) delete node[last];
    else node[last] = next;
  }
  return copy;
}

describe('protocol/messages', () => {
  it('has valid and invalid examples for every payload', () => {
    expect(Object.keys(examples)).to.have.members(PAYLOAD_NAMES);
    expect(Object.keys(INVALID)).to.have.members(PAYLOAD_NAMES);
  });

  for (const name of PAYLOAD_NAMES) {
    describe(name, () => {
      it('parses every example from JSON bytes unchanged', () => {
        for (const example of examples[name]) {
          const result = parsePayload(name, Buffer.from(JSON.stringify(example)));
          expect(result, JSON.stringify(result)).to.deep.equal({ ok: true, value: example, unknownKeys: [] });
        }
      });

      it('strips unknown keys, so a newer minor version still parses, and lists them', () => {
        const [example] = examples[name];
        const extended = JSON.stringify({ ...example, futureField: { nested: [1, 2, 3] } });
        // A JSON "__proto__" key is an own property after JSON.parse; it must neither survive nor pollute.
        const result = parsePayload(name, extended.replace(/^\{/, '{"__proto__":{"polluted":true},'));
        expect(result).to.deep.equal({ ok: true, value: example, unknownKeys: ['__proto__', 'futureField'] });
        expect(({} as Record<string, unknown>).polluted).to.equal(undefined);
      });

      for (const invalid of INVALID[name]) {
        it(`refuses ${invalid.what} at ${invalid.path}`, () => {
          const input = applyChanges(examples[name][invalid.example ?? 0], invalid.set);
          const result = validatePayload(name, input);
          expect(result.ok, 'expected a failure').to.equal(false);
          if (result.ok) return;
          expect(result.reason).to.equal('invalid');
          expect(result.path, JSON.stringify(result)).to.equal(invalid.path);
        });
      }
    });
  }

  describe('bounds that must not drop real readings', () => {
    const [rower, treadmill] = examples.Telemetry;
    const [set, interval] = examples.Workout;

    it('parses a sample with heartRateBpm 0 (no sensor contact) and the top of every FTMS wire range', () => {
      expect(validatePayload('Telemetry', { ...rower, heartRateBpm: 0 }).ok).to.equal(true);
      expect(validatePayload('Telemetry', { ...rower, heartRateBpm: 255, strokeRateSpm: 127.5 }).ok).to.equal(true);
      expect(validatePayload('Telemetry', { ...rower, powerW: -32_768, paceSPer500m: 65_535 }).ok).to.equal(true);
      const fast = { ...treadmill, speedMps: 182.04, inclinePct: -3_276.8, paceSPerKm: 65_535, beltForceN: 32_767 };
      expect(validatePayload('Telemetry', fast).ok).to.equal(true);
    });

    it('parses workout totals of 0: a set with heartRateBpm 0 and an interval without movement', () => {
      expect(validatePayload('Workout', { ...set, avgHeartRateBpm: 0, maxHeartRateBpm: 0 }).ok).to.equal(true);
      const idle = { ...interval, distanceM: 0, avgPowerW: 0, strokes: 0, avgStrokeRateSpm: 0, avgHeartRateBpm: 0 };
      expect(validatePayload('Workout', idle).ok).to.equal(true);
      expect(validatePayload('Workout', { ...set, reps: 0, repDetails: [] }).ok).to.equal(true);
    });

    it('normalises seq -0 to 0', () => {
      const result = parsePayload('Telemetry', JSON.stringify(rower).replace(/"seq":\d+/, '"seq":-0'));
      expect(result.ok).to.equal(true);
      if (result.ok) expect(Object.is(result.value.seq, 0)).to.equal(true);
      const will = parsePayload(
        'MachineStatus',
        JSON.stringify(examples.MachineStatus[1]).replace(/"conn":\d+/, '"conn":-0'),
      );
      if (will.ok) expect(Object.is(will.value.conn, 0)).to.equal(true);
      expect(will.ok).to.equal(true);
    });
  });
});
