/**
 * Valid example payloads, at least one per payload name, shared by the tests, the simulators and
 * docs/protocol.md. Each is parsed through its schema when this module loads, so an example a schema change has
 * broken fails at import rather than in a demo.
 *
 * The JWS values are real test vectors: ES256 signatures made with throwaway keys whose public halves are
 * `EXAMPLE_QR_KEY` and `EXAMPLE_CONFIG_KEY` (the private halves were discarded). Their times are fixed, so a
 * verifier under test needs an injected clock.
 */
import * as v from 'valibot';
import { asBranchId, asGatewayId, asMachineId, asReaderId, asUserId } from './ids.ts';
import type { BranchId, GatewayId, MachineId, ReaderId, UserId } from './ids.ts';
import { PAYLOADS } from './payloads.ts';
import type { PayloadName, PayloadOf } from './payloads.ts';
import type { ParsedTopic, TopicKind } from './topics.ts';

/** The examples' "now": 2026-11-24T19:40:00Z. */
export const EXAMPLE_NOW = Date.UTC(2026, 10, 24, 19, 40, 0);
const T0 = EXAMPLE_NOW;

/** The ids the examples use (the demo branch). */
export const EXAMPLE_IDS = {
  branch: asBranchId('demo'),
  gateway: asGatewayId('gw-demo-1'),
  treadmill: asMachineId('tread-01'),
  indoorBike: asMachineId('bike-02'),
  rower: asMachineId('row-03'),
  crossTrainer: asMachineId('cross-04'),
  selectorised: asMachineId('press-05'),
  plateLoaded: asMachineId('squat-06'),
  functional: asMachineId('rig-07'),
  doorIn: asReaderId('door-in'),
  doorOut: asReaderId('door-out'),
  member: asUserId('665f1c2ab3d4e5f601234567'),
  otherMember: asUserId('665f1c2ab3d4e5f601234568'),
} as const satisfies Record<string, BranchId | GatewayId | MachineId | ReaderId | UserId>;

const ids = EXAMPLE_IDS;
const BOOT_ROWER = '7b1e0c52-3f4a-4d8e-9a61-2c5b8f0e4d17';
const BOOT_GATEWAY = 'c3d9a7e1-5b20-4f6c-8e13-9a4d2b7f6e05';
const SESSION = '665f2a91c4e8b7d3a1f05c92';

/** Public key (JWK P-256) that verifies `EXAMPLE_QR_TOKEN`; it is the config example's `qrKeys[0]`. */
export const EXAMPLE_QR_KEY = {
  kty: 'EC',
  crv: 'P-256',
  kid: 'qr-2026-11',
  x: '_yNUtI7aYQ9aZkaQoDVc84ey1LDv3AIflbS2GiP0TJc',
  y: '2fMLnCRPS_aOwTEUty4izOyzu5KBvy_WNnpkuyeHPqw',
} as const;

/** Public key (JWK P-256) that verifies the config and allow-list JWS examples. */
export const EXAMPLE_CONFIG_KEY = {
  kty: 'EC',
  crv: 'P-256',
  kid: 'cfg-2026-11',
  x: 'i8TgxkcHBo01tniQx3D1MskfLPSvabPrkgD7SexEnAw',
  y: '01pEIJRx83ba0-_tuCKfVEs4ZU0TunfsewVV9jju-r8',
} as const;

/** A member QR token for `EXAMPLE_IDS.member`: `{sub, nonce, iat: T0 - 5 s, exp: T0 + 55 s}`. */
export const EXAMPLE_QR_TOKEN =
  'eyJhbGciOiJFUzI1NiIsInR5cCI6Im54Zy1xcitqd3QiLCJraWQiOiJxci0yMDI2LTExIn0.eyJzdWIiOiI2NjVmMWMyYWIzZDRlNWY2MDEyMzQ1NjciLCJub25jZSI6InE5WHIyTG1UNHZXeiIsImlhdCI6MTc5NTU0OTE5NSwiZXhwIjoxNzk1NTQ5MjU1fQ.soAd15t9iXruamQfQQqwxBNA6fexhMZ7SXQ5ustY3CTXOBXp61cfD51M1R8FuhJX4UqSdRB4l-Ej81y11Hp84A';

/** The signed form of `examples.GatewayConfigDocument[0]`. */
export const EXAMPLE_CONFIG_JWS =
  'eyJhbGciOiJFUzI1NiIsInR5cCI6Im54Zy1nYXRld2F5LWNvbmZpZytqd3QiLCJraWQiOiJjZmctMjAyNi0xMSJ9.eyJicmFuY2giOiJkZW1vIiwiZ2F0ZXdheSI6Imd3LWRlbW8tMSIsInJldmlzaW9uIjo3LCJpc3N1ZWRBdCI6MTc5NTU0NTYwMDAwMCwibWFjaGluZXMiOlt7Im1hY2hpbmUiOiJ0cmVhZC0wMSIsInNlY3JldFNoYTI1NiI6IjY3YTAxMGM0ZGU1ODk0OTA4OTM3Y2NkOGYxZjBiYmFlNzQyMTFkNmExODYyNzRiNzcwZDRjZjlkNmYyNDhkY2QifSx7Im1hY2hpbmUiOiJyb3ctMDMiLCJzZWNyZXRTaGEyNTYiOiJiMDAxZDk3MjUyYmZkMWQ1MzFiNTQ3NTE3NTNkYWZjMTkzNjkwMDBhZDJjMWE5Mjk4N2I2ZTE5OGU4ZTIwOTJlIn0seyJtYWNoaW5lIjoicHJlc3MtMDUiLCJzZWNyZXRTaGEyNTYiOiJmZTMyMGY4M2M2ZjAxY2QxZDFjNGE3MTE4MWZjNTk0MzVkNmNiMjQ2NmYzNGMwOWRkMzE5YmI3MzUwOGVhMGVkIn1dLCJyZWFkZXJzIjpbeyJyZWFkZXIiOiJkb29yLWluIiwia2luZCI6Im5mYyIsImFjdGlvbiI6ImNoZWNrLWluIn0seyJyZWFkZXIiOiJkb29yLW91dCIsImtpbmQiOiJxciIsImFjdGlvbiI6ImNoZWNrLW91dCJ9XSwicXJLZXlzIjpbeyJraWQiOiJxci0yMDI2LTExIiwiY3J2IjoiUC0yNTYiLCJ4IjoiX3lOVXRJN2FZUTlhWmthUW9EVmM4NGV5MUxEdjNBSWZsYlMyR2lQMFRKYyIsInkiOiIyZk1MbkNSUFNfYU93VEVVdHk0aXpPeXp1NUtCdnlfV05ucGt1eWVIUHF3In1dLCJ0ZWxlbWV0cnlJbnRlcnZhbE1zIjoxMDAwLCJhbGxvd0xpc3RNYXhBZ2VTIjo2MDQ4MDB9.zLxM5Lw8VDdQBI5SNH7t3I3ENrwK9trjifvj5oI_EMB-u33ijMSH7mInHKEkvfj3xJtWBl4-YJ6mpS3UMxOaKQ';

/** The signed form of `examples.AllowListDocument[0]`. */
export const EXAMPLE_ALLOW_LIST_JWS =
  'eyJhbGciOiJFUzI1NiIsInR5cCI6Im54Zy1hbGxvdy1saXN0K2p3dCIsImtpZCI6ImNmZy0yMDI2LTExIn0.eyJicmFuY2giOiJkZW1vIiwicmV2aXNpb24iOjQyLCJwYXJ0IjowLCJwYXJ0cyI6MSwiaXNzdWVkQXQiOjE3OTU1NDg2MDAwMDAsIm1lbWJlcnMiOlt7InVzZXJJZCI6IjY2NWYxYzJhYjNkNGU1ZjYwMTIzNDU2NyIsInZhbGlkVW50aWwiOjE4Mjc1MzI4MDAwMDAsIm5mYyI6WyJlMGY0NmNjNDlmMjgwMmFiN2I2MGQyY2JlZGNiOGIyNmNmZjU0YjY3YjJlMmI2ZmNlMzZhNzI5NWJhZThhMDViIl19LHsidXNlcklkIjoiNjY1ZjFjMmFiM2Q0ZTVmNjAxMjM0NTY4IiwibmZjIjpbXX1dfQ.k0XIdPVv0TXTa_NNuRgBSXwOYAOSys92BSvxJeGbYbh9kIFLidqlomsu4kW1__kXPszsXcMPpTaZ46EoVmaiVg';

/** An enrolled example card UID (7 bytes); its SHA-256 is in the allow-list example. */
export const EXAMPLE_NFC_UID = '04a2b3c4d5e6f7';

type PayloadInput<K extends PayloadName> = v.InferInput<(typeof PAYLOADS)[K]['schema']>;

function parsed<K extends PayloadName>(name: K, inputs: [PayloadInput<K>, ...PayloadInput<K>[]]) {
  return inputs.map((input) => v.parse(PAYLOADS[name].schema, input)) as [PayloadOf<K>, ...PayloadOf<K>[]];
}

// Envelope fields of the rower's records, seq and time counting up from T0.
const rowerEnvelope = (seq: number, msgId: string) => ({
  msgId,
  source: 'row-03',
  bootId: BOOT_ROWER,
  seq,
  ts: T0 + seq * 250,
  v: 0,
});
const machineEnvelope = (source: string, seq: number, msgId: string) => ({
  msgId,
  source,
  bootId: `boot-${source}-1`,
  seq,
  ts: T0 + seq * 1000,
  v: 0,
});
const gatewayEnvelope = (seq: number, msgId: string) => ({
  msgId,
  source: 'gw-demo-1',
  bootId: BOOT_GATEWAY,
  seq,
  ts: T0 + seq * 1000,
  v: 0,
});

const telemetryRower: PayloadInput<'Telemetry'> = {
  ...rowerEnvelope(1842, '01JD8Z3K4M5N6P7Q8R9S0T1V2W'),
  type: 'rower',
  strokeRateSpm: 28.5,
  strokes: 412,
  distanceM: 1893,
  paceSPer500m: 118,
  powerW: 212,
  heartRateBpm: 151,
  energyKj: 405.8,
  elapsedS: 465,
  trainingStatus: 'high-intensity-interval',
};

const workoutSet: PayloadInput<'Workout'> = {
  ...machineEnvelope('press-05', 310, 'c0f2e6a8-0b1d-4c3e-9f5a-6b7c8d9e0f10'),
  segment: 'set',
  machineType: 'selectorised',
  startedAt: T0 - 45_000,
  endedAt: T0 - 5_000,
  userId: ids.member,
  sessionId: SESSION,
  index: 3,
  exercise: 'chest-press',
  reps: 10,
  loadKg: 45,
  avgRomCm: 41.5,
  tempo: { concentricS: 1.1, eccentricS: 2.3 },
  repDetails: [
    { romCm: 42, concentricS: 1, eccentricS: 2.2, peakVelocityMps: 0.71 },
    { romCm: 41, concentricS: 1.2, eccentricS: 2.4, peakVelocityMps: 0.64 },
  ],
  energyKj: 18.4,
  avgHeartRateBpm: 118,
};

const statusInUse: PayloadInput<'MachineStatus'> = {
  ...rowerEnvelope(1790, '01JD8Z2A4M5N6P7Q8R9S0T1V2W'),
  status: 'in_use',
  since: T0 + 1790 * 250 - 465_000,
  conn: 2,
};

const accessScanAllow: PayloadInput<'AccessScan'> = {
  ...gatewayEnvelope(5120, 'e1a2b3c4-d5e6-4f70-8192-a3b4c5d6e7f8'),
  reader: 'door-in',
  action: 'check-in',
  credential: { kind: 'nfc', uid: EXAMPLE_NFC_UID },
  decision: 'allow',
  decidedBy: 'online',
  userId: ids.member,
  sessionId: SESSION,
  reqId: 'req-4f1d2c3b',
  latencyMs: 84,
};

const linkRequest: PayloadInput<'LinkRequest'> = {
  reqId: 'req-9a8b7c6d',
  ts: T0,
  machine: 'row-03',
  credential: { kind: 'qr', token: EXAMPLE_QR_TOKEN },
};

const gatewayConfigDocument: PayloadInput<'GatewayConfigDocument'> = {
  branch: 'demo',
  gateway: 'gw-demo-1',
  revision: 7,
  issuedAt: T0 - 3_600_000,
  machines: [
    { machine: 'tread-01', secretSha256: '67a010c4de5894908937ccd8f1f0bbae74211d6a186274b770d4cf9d6f248dcd' },
    { machine: 'row-03', secretSha256: 'b001d97252bfd1d531b54751753dafc19369000ad2c1a92987b6e198e8e2092e' },
    { machine: 'press-05', secretSha256: 'fe320f83c6f01cd1d1c4a71181fc59435d6cb2466f34c09dd319bb73508ea0ed' },
  ],
  readers: [
    { reader: 'door-in', kind: 'nfc', action: 'check-in' },
    { reader: 'door-out', kind: 'qr', action: 'check-out' },
  ],
  qrKeys: [{ kid: EXAMPLE_QR_KEY.kid, crv: 'P-256', x: EXAMPLE_QR_KEY.x, y: EXAMPLE_QR_KEY.y }],
  telemetryIntervalMs: 1000,
  allowListMaxAgeS: 604_800,
};

const allowListDocument: PayloadInput<'AllowListDocument'> = {
  branch: 'demo',
  revision: 42,
  part: 0,
  parts: 1,
  issuedAt: T0 - 600_000,
  members: [
    {
      userId: ids.member,
      validUntil: Date.UTC(2027, 10, 30),
      nfc: ['e0f46cc49f2802ab7b60d2cbedcb8b26cff54b67b2e2b6fce36a7295bae8a05b'],
    },
    { userId: ids.otherMember, nfc: [] },
  ],
};

/** Valid examples per payload name; the first of each is the canonical one shown first in the docs. */
export const examples: { readonly [K in PayloadName]: readonly [PayloadOf<K>, ...PayloadOf<K>[]] } = {
  CloudState: parsed('CloudState', [{ online: true, since: T0 - 86_400_000, v: 0, version: '0.1.0' }]),
  GatewayState: parsed('GatewayState', [
    {
      online: true,
      v: 0,
      bootId: BOOT_GATEWAY,
      conn: 3,
      since: T0 - 7_200_000,
      ts: T0,
      version: '0.1.0',
      queue: {
        access: { depth: 0 },
        records: { depth: 12, bytes: 9_830, oldestAgeS: 1.8 },
        telemetry: { depth: 340, bytes: 102_400, oldestAgeS: 4.2, evicted: 0 },
        full: false,
        capBytes: 268_435_456,
      },
      readers: [
        { reader: 'door-in', kind: 'nfc', connected: true },
        { reader: 'door-out', kind: 'qr', connected: true },
      ],
      machinesConnected: 7,
      configRevision: 7,
      allowListRevision: 42,
    },
    { online: false, v: 0, bootId: BOOT_GATEWAY, conn: 3, ts: T0 - 7_200_000, lastWill: true },
  ]),
  UplinkBatch: parsed('UplinkBatch', [
    {
      batchId: 'b-2c9e4f71-0001',
      sentAt: T0 + 500,
      records: [
        { kind: 'status', receivedAt: T0 + 1790 * 250 + 3, payload: statusInUse },
        { kind: 'workout', receivedAt: T0 - 4_990, payload: workoutSet },
      ],
    },
    {
      batchId: 'b-2c9e4f71-0002',
      sentAt: T0 + 600,
      records: [{ kind: 'telemetry', receivedAt: T0 + 1842 * 250 + 4, payload: telemetryRower }],
    },
  ]),
  UplinkRecord: parsed('UplinkRecord', [
    { kind: 'telemetry', receivedAt: T0 + 1842 * 250 + 4, payload: telemetryRower },
    { kind: 'access-scan', receivedAt: T0 + 5_120_000, payload: accessScanAllow },
  ]),
  UplinkAck: parsed('UplinkAck', [
    {
      batchId: 'b-2c9e4f71-0001',
      acked: ['01JD8Z2A4M5N6P7Q8R9S0T1V2W'],
      rejected: [{ msgId: 'c0f2e6a8-0b1d-4c3e-9f5a-6b7c8d9e0f10', index: 1, reason: 'member-deleted' }],
    },
    { batchId: 'b-2c9e4f71-0003', acked: [], rejected: [], error: 'invalid' },
    {
      batchId: 'b-2c9e4f71-0004',
      acked: ['01JD8Z3K4M5N6P7Q8R9S0T1V2W'],
      rejected: [
        { index: 1, reason: 'invalid', path: 'payload.msgId' },
        { msgId: '01JD8Z3K4M5N6P7Q8R9S0T1V2W', index: 2, reason: 'duplicate-in-batch' },
      ],
    },
  ]),
  CheckInRequest: parsed('CheckInRequest', [
    { reqId: 'req-4f1d2c3b', ts: T0, reader: 'door-in', credential: { kind: 'nfc', uid: EXAMPLE_NFC_UID } },
  ]),
  CheckOutRequest: parsed('CheckOutRequest', [
    { reqId: 'req-5e2d3c4b', ts: T0, reader: 'door-out', credential: { kind: 'qr', token: EXAMPLE_QR_TOKEN } },
  ]),
  LinkRequest: parsed('LinkRequest', [linkRequest]),
  UnlinkRequest: parsed('UnlinkRequest', [
    { reqId: 'req-6f3e4d5c', ts: T0, machine: 'row-03', userId: ids.member, reason: 'idle-timeout' },
  ]),
  RequestResponse: parsed('RequestResponse', [
    {
      reqId: 'req-4f1d2c3b',
      ok: true,
      decision: { decision: 'allow', userId: ids.member, sessionId: SESSION, greeting: 'Hi Ana' },
    },
    { reqId: 'req-9a8b7c6d', ok: true, decision: { decision: 'deny', reason: 'machine-busy', userId: ids.member } },
    { reqId: 'req-5e2d3c4b', ok: false, error: { code: 'unavailable', message: 'session store unavailable' } },
  ]),
  GatewayConfigCommand: parsed('GatewayConfigCommand', [
    { reqId: 'cmd-1a2b3c4d', expiresAt: T0 + 3_600_000, revision: 7, jws: EXAMPLE_CONFIG_JWS },
  ]),
  GatewayConfigDocument: parsed('GatewayConfigDocument', [gatewayConfigDocument]),
  AllowListCommand: parsed('AllowListCommand', [
    { reqId: 'cmd-2b3c4d5e', revision: 42, part: 0, parts: 1, jws: EXAMPLE_ALLOW_LIST_JWS },
  ]),
  AllowListDocument: parsed('AllowListDocument', [allowListDocument]),
  GatewayRebirthCommand: parsed('GatewayRebirthCommand', [{ reqId: 'cmd-3c4d5e6f' }]),
  MachineLinkCommand: parsed('MachineLinkCommand', [
    { reqId: 'cmd-4d5e6f70', expiresAt: T0 + 30_000, userId: ids.member, sessionId: SESSION, greeting: 'Hi Ana' },
  ]),
  MachineUnlinkCommand: parsed('MachineUnlinkCommand', [
    { reqId: 'cmd-5e6f7081', userId: ids.member, reason: 'checked-out' },
  ]),
  DisplayCommand: parsed('DisplayCommand', [
    { reqId: 'cmd-6f708192', text: 'Great set! 10 × 45 kg', level: 'success', durationS: 5 },
  ]),
  MachineConfigCommand: parsed('MachineConfigCommand', [
    { reqId: 'cmd-708192a3', telemetryIntervalMs: 500, idleUnlinkS: 120 },
  ]),
  MachineRebirthCommand: parsed('MachineRebirthCommand', [{ reqId: 'cmd-8192a3b4' }]),
  CommandResponse: parsed('CommandResponse', [
    { reqId: 'cmd-4d5e6f70', ok: true },
    { reqId: 'cmd-1a2b3c4d', ok: false, error: { code: 'stale-revision', message: 'holding revision 8' } },
  ]),
  MachineMeta: parsed('MachineMeta', [
    {
      ...rowerEnvelope(1, '01JD8Y0A1B2C3D4E5F6G7H8J9K'),
      type: 'rower',
      manufacturer: 'Concept2',
      model: 'RowErg PM5',
      firmware: '32.004',
      serial: '430512345',
      displayName: 'Rower 3',
      fields: [
        'strokeRateSpm',
        'strokes',
        'distanceM',
        'paceSPer500m',
        'powerW',
        'heartRateBpm',
        'energyKj',
        'elapsedS',
        'resistanceLevel',
      ],
      ranges: {
        resistanceLevel: { min: 1, max: 10, step: 1 },
        powerW: { min: 0, max: 1_000, step: 1 },
        heartRateBpm: { min: 30, max: 220, step: 1 },
      },
      displayUnits: 'metric',
      telemetryIntervalMs: 1000,
    },
    {
      ...machineEnvelope('press-05', 0, 'b1c2d3e4-f5a6-4b7c-8d9e-0f1a2b3c4d5e'),
      type: 'selectorised',
      manufacturer: 'Technogym',
      model: 'Selection 900 Chest Press',
      firmware: '2.4.1',
      fields: ['reps', 'loadKg', 'romCm', 'positionCm', 'velocityMps', 'tempo', 'phase'],
      ranges: { loadKg: { min: 5, max: 100, step: 5 } },
    },
  ]),
  MachineStatus: parsed('MachineStatus', [
    statusInUse,
    { ...rowerEnvelope(12, '01JD8Y1Z1B2C3D4E5F6G7H8J9K'), status: 'offline', conn: 2, lastWill: true },
    {
      ...machineEnvelope('tread-01', 88, 'a9b8c7d6-e5f4-4a3b-9c2d-1e0f9a8b7c6d'),
      status: 'maintenance',
      since: T0 + 80_000,
      conn: 0,
      reason: 'scheduled-service',
    },
  ]),
  Telemetry: parsed('Telemetry', [
    telemetryRower,
    {
      ...machineEnvelope('tread-01', 120, 'f0e1d2c3-b4a5-4968-8776-655443322110'),
      type: 'treadmill',
      speedMps: 3.33,
      avgSpeedMps: 3.1,
      distanceM: 2_480,
      inclinePct: 2.5,
      elevationGainM: 31.2,
      paceSPerKm: 300,
      heartRateBpm: 146,
      energyKj: 690.4,
      elapsedS: 800,
    },
    {
      ...machineEnvelope('bike-02', 300, 'e1d2c3b4-a596-4877-9665-544332211009'),
      type: 'indoor-bike',
      speedMps: 9.4,
      cadenceRpm: 88.5,
      powerW: 245,
      resistanceLevel: 12,
      distanceM: 11_020,
      heartRateBpm: 158,
      elapsedS: 1_200,
    },
    {
      ...machineEnvelope('cross-04', 75, 'd2c3b4a5-9687-4766-8554-433221100998'),
      type: 'cross-trainer',
      speedMps: 2.2,
      stepRateSpm: 132,
      strides: 1_820,
      resistanceLevel: 8,
      powerW: 160,
      direction: 'forward',
      elapsedS: 840,
    },
    {
      ...machineEnvelope('press-05', 305, 'c3b4a596-8776-4655-9443-322110099887'),
      type: 'selectorised',
      phase: 'eccentric',
      reps: 7,
      loadKg: 45,
      romCm: 42,
      positionCm: 18.5,
      velocityMps: -0.21,
      tempo: { concentricS: 1.1, eccentricS: 2.2 },
    },
    {
      ...machineEnvelope('squat-06', 40, 'b4a59687-7665-4544-8332-211009988776'),
      type: 'plate-loaded',
      phase: 'concentric',
      reps: 3,
      romCm: 55,
      velocityMps: 0.48,
    },
    {
      ...machineEnvelope('rig-07', 210, 'a5968776-6554-4433-9221-100998877665'),
      type: 'functional',
      exercise: 'kettlebell-swing',
      phase: 'work',
      reps: 8,
      rounds: 1,
      loadKg: 16,
      heartRateBpm: 162,
      remainingS: 22,
    },
  ]),
  Workout: parsed('Workout', [
    workoutSet,
    {
      ...rowerEnvelope(1900, '01JD8Z5B4M5N6P7Q8R9S0T1V2W'),
      segment: 'interval',
      machineType: 'rower',
      intent: 'work',
      startedAt: T0 + 1900 * 250 - 480_000,
      endedAt: T0 + 1900 * 250 - 1_000,
      userId: ids.member,
      distanceM: 2_000,
      avgPowerW: 205,
      maxPowerW: 388,
      strokes: 226,
      avgStrokeRateSpm: 28.2,
      avgPaceSPer500m: 119.6,
      energyKj: 420.5,
      avgHeartRateBpm: 149,
      maxHeartRateBpm: 171,
    },
    {
      ...machineEnvelope('rig-07', 260, '96877665-5443-4322-9110-099887766554'),
      segment: 'block',
      machineType: 'functional',
      startedAt: T0 - 300_000,
      endedAt: T0 - 60_000,
      exercise: 'kettlebell-swing',
      rounds: 3,
      reps: 36,
      loadKg: 16,
      workS: 150,
      restS: 90,
      avgHeartRateBpm: 155,
    },
  ]),
  MachineEvent: parsed('MachineEvent', [
    {
      ...machineEnvelope('tread-01', 90, '87766554-4332-4211-8009-988776655443'),
      type: 'fault',
      code: 'belt-overheat',
      severity: 'critical',
      vendorCode: 'E-042',
      message: 'Belt temperature above 70 °C',
    },
    {
      ...machineEnvelope('tread-01', 95, '77665544-3322-4110-8998-877665544332'),
      type: 'fault-cleared',
      code: 'belt-overheat',
    },
    {
      ...machineEnvelope('tread-01', 96, '66554433-2211-4009-8887-766554433221'),
      type: 'maintenance',
      phase: 'started',
      ticket: 'WO-2026-1182',
    },
    { ...rowerEnvelope(1700, '01JD8Z1Q4M5N6P7Q8R9S0T1V2W'), type: 'qr-scanned', token: EXAMPLE_QR_TOKEN },
    {
      ...machineEnvelope('press-05', 290, '55443322-1100-4998-8776-655443322110'),
      type: 'nfc-tapped',
      uid: EXAMPLE_NFC_UID,
    },
    { ...rowerEnvelope(1702, '01JD8Z1R4M5N6P7Q8R9S0T1V2W'), type: 'machine-state', state: 'started', by: 'user' },
    {
      ...machineEnvelope('bike-02', 280, '44332211-0099-4887-8665-544332211009'),
      type: 'target-changed',
      target: 'powerW',
      value: 250,
    },
  ]),
  AccessScan: parsed('AccessScan', [
    accessScanAllow,
    {
      ...gatewayEnvelope(5121, 'f2a3b4c5-d6e7-4f80-9102-b3c4d5e6f7a8'),
      reader: 'door-in',
      action: 'check-in',
      credential: { kind: 'qr', token: EXAMPLE_QR_TOKEN },
      decision: 'deny',
      reason: 'membership-inactive',
      decidedBy: 'offline',
      userId: ids.member,
      latencyMs: 12,
    },
  ]),
  OfflineDecision: parsed('OfflineDecision', [
    {
      ...gatewayEnvelope(5200, 'a3b4c5d6-e7f8-4091-8213-c4d5e6f7a8b9'),
      name: 'link',
      request: linkRequest,
      decision: { decision: 'allow', userId: ids.member },
    },
  ]),
  LiveMachine: parsed('LiveMachine', [
    {
      machine: 'row-03',
      type: 'rower',
      displayName: 'Rower 3',
      status: 'in_use',
      since: T0 + 1790 * 250 - 465_000,
      ts: T0 + 1790 * 250 + 20,
    },
    { machine: 'tread-01', status: 'unknown', since: T0, ts: T0 },
  ]),
  UserLiveWorkout: parsed('UserLiveWorkout', [
    { type: 'sample', machine: 'row-03', ts: T0 + 1842 * 250 + 30, telemetry: telemetryRower },
    { type: 'segment', machine: 'press-05', ts: T0 - 4_900, workout: workoutSet },
    { type: 'link', machine: 'row-03', ts: T0, state: 'linked', sessionId: SESSION },
  ]),
  UserNotification: parsed('UserNotification', [
    {
      id: '0e9d8c7b-6a5f-4e3d-9c2b-1a0f9e8d7c6b',
      ts: T0,
      category: 'waitlist-ready',
      title: 'Rower 3 is free',
      body: 'You are next on the waitlist.\nClaim it within 2 minutes.',
      data: { machine: 'row-03', branch: 'demo' },
    },
  ]),
  QrTokenClaims: parsed('QrTokenClaims', [
    { sub: ids.member, nonce: 'q9Xr2LmT4vWz', iat: T0 / 1000 - 5, exp: T0 / 1000 + 55 },
  ]),
  GatewayEnrolmentRequest: parsed('GatewayEnrolmentRequest', [
    { token: 'o2VbX9kq4Lr7tZc1mN8pQ3sW6yA0dF5hJ2uE7iK9gB4', version: '0.4.0', hostname: 'demo-gw-01' },
  ]),
  GatewayEnrolmentResponse: parsed('GatewayEnrolmentResponse', [
    {
      branch: ids.branch,
      gateway: ids.gateway,
      mqtt: {
        username: ids.gateway,
        password: 'Zm9vYmFyYmF6cXV4cXV1eGNvcmdlZ3JhdWx0Z2FycGx5',
        url: 'mqtts://cloud.example:8883',
      },
      configKeys: [{ kid: EXAMPLE_CONFIG_KEY.kid, crv: 'P-256', x: EXAMPLE_CONFIG_KEY.x, y: EXAMPLE_CONFIG_KEY.y }],
    },
  ]),
};

/** One example topic per kind, on the example ids (used by the docs and the round-trip tests). */
export const EXAMPLE_TOPICS: { readonly [K in TopicKind]: Extract<ParsedTopic, { kind: K }> } = {
  'cloud-state': { kind: 'cloud-state' },
  'gateway-state': { kind: 'gateway-state', branch: ids.branch, gateway: ids.gateway },
  'gateway-uplink': { kind: 'gateway-uplink', branch: ids.branch, gateway: ids.gateway, lane: 'records' },
  'gateway-ack': { kind: 'gateway-ack', branch: ids.branch, gateway: ids.gateway },
  'gateway-request': { kind: 'gateway-request', branch: ids.branch, gateway: ids.gateway, name: 'check-in' },
  'gateway-request-response': {
    kind: 'gateway-request-response',
    branch: ids.branch,
    gateway: ids.gateway,
    name: 'check-in',
  },
  'gateway-command': { kind: 'gateway-command', branch: ids.branch, gateway: ids.gateway, name: 'allow-list' },
  'gateway-command-response': {
    kind: 'gateway-command-response',
    branch: ids.branch,
    gateway: ids.gateway,
    name: 'allow-list',
  },
  'machine-meta': { kind: 'machine-meta', branch: ids.branch, machine: ids.rower },
  'machine-status': { kind: 'machine-status', branch: ids.branch, machine: ids.rower },
  'machine-telemetry': { kind: 'machine-telemetry', branch: ids.branch, machine: ids.rower },
  'machine-workout': { kind: 'machine-workout', branch: ids.branch, machine: ids.selectorised },
  'machine-event': { kind: 'machine-event', branch: ids.branch, machine: ids.treadmill },
  'machine-command': { kind: 'machine-command', branch: ids.branch, machine: ids.rower, name: 'link' },
  'machine-command-response': {
    kind: 'machine-command-response',
    branch: ids.branch,
    machine: ids.rower,
    name: 'link',
  },
  'access-scan': { kind: 'access-scan', branch: ids.branch, reader: ids.doorIn },
  'live-machine': { kind: 'live-machine', branch: ids.branch, machine: ids.rower },
  'user-live': { kind: 'user-live', user: ids.member, topic: 'workout' },
};
