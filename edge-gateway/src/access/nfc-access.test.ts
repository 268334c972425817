/**
 * A card on a PC/SC reader decided by the gateway: a real pcscd with vpcd's virtual readers and our virtual card
 * (testing/virtual-card*.ts), nfc-pcsc in the gateway's NFC child process, the reader name mapped to a reader id by
 * GATEWAY_NFC_READERS, and the decision taken offline from the signed allow-list (the cloud unreachable). Skipped
 * only where the PC/SC Debian packages are missing or pcscd's private mount namespace is not possible (not root).
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { asBranchId, asGatewayId, asReaderId, asUserId } from '../../../protocol/index.ts';
import { hashSecret, newSecret } from '../../../tools/mqtt/secrets.ts';
import { systemClock } from '../../../tools/runtime/clock.ts';
import { createLogger } from '../../../tools/runtime/logger.ts';
import { createAllowList } from '../cloud-config/allow-list.ts';
import { ensurePrivateDir } from '../cloud-config/files.ts';
import { createKeyring } from '../cloud-config/keys.ts';
import { createSignedConfig } from '../cloud-config/signed-config.ts';
import type { GatewayConfig } from '../config.ts';
import { startGateway } from '../gateway.ts';
import { allowListCommands, configCommand, configDocument, newSigningKey } from '../testing/access-fixtures.ts';
import { eventually } from '../testing/stand-in-cloud.ts';
import {
  startVirtualReaders,
  VIRTUAL_READER_NAMES,
  virtualReadersUnavailable,
  type VirtualReaders,
} from '../testing/virtual-card-reader.ts';
import type { AccessOutcome } from './access-service.ts';
import { DEFAULT_ACCESS_CONFIG } from './config.ts';
import { ALLOW_LIST_FILE_NAME, CONFIG_FILE_NAME } from './gateway-access.ts';

const log = createLogger({ name: 'test', level: 'silent' });
const unavailable = virtualReadersUnavailable();

(unavailable === undefined ? describe : describe.skip)(
  `gateway access with a PC/SC NFC reader${unavailable === undefined ? '' : ` (skipped: ${unavailable})`}`,
  function () {
    this.timeout(60_000);
    let readers: VirtualReaders;
    let dir: string;
    before(async () => {
      readers = await startVirtualReaders();
      dir = await mkdtemp(path.join(os.tmpdir(), 'nxg-g2-nfc-'));
    });
    after(async () => {
      await readers?.dispose();
      await rm(dir, { recursive: true, force: true });
    });

    it('maps the PC/SC reader to its reader id and checks the card in offline from the allow-list', async () => {
      const branch = asBranchId('demo');
      const gatewayId = asGatewayId('gw-nfc');
      const cloudKey = newSigningKey();
      const dataDir = path.join(dir, 'data');
      await ensurePrivateDir(dataDir);
      const keys = createKeyring([cloudKey.jwk]);
      const reader = asReaderId('door-in');
      const member = asUserId('u-card');
      const uid = '04a1b2c3d4e5f6';
      // What the cloud pushed earlier, stored as the gateway stores it.
      const signed = createSignedConfig({
        file: path.join(dataDir, CONFIG_FILE_NAME),
        gatewayId,
        branch,
        keys,
        nowMs: Date.now,
        log,
      });
      const doc = configDocument({
        branch,
        gateway: gatewayId,
        revision: 1,
        qrKeys: [newSigningKey().jwk],
        readers: [{ reader, kind: 'nfc', action: 'check-in' }],
      });
      expect(await signed.apply(configCommand(cloudKey, doc))).to.deep.equal({ ok: true });
      const list = createAllowList({
        file: path.join(dataDir, ALLOW_LIST_FILE_NAME),
        branch,
        keys,
        nowMs: Date.now,
        log,
      });
      for (const part of allowListCommands(cloudKey, {
        branch,
        revision: 1,
        members: [{ userId: member, uids: [uid] }],
      })) {
        expect(await list.apply(part)).to.deep.equal({ ok: true });
      }
      const machinesFile = path.join(dir, 'machines.json');
      await writeFile(machinesFile, JSON.stringify({ gatewayId, branch, machines: [] }));
      const keysFile = path.join(dir, 'keys.json');
      await writeFile(keysFile, JSON.stringify([cloudKey.jwk]));

      const config: GatewayConfig = {
        log: { level: 'silent', pretty: false },
        machinesFile,
        secret: { value: hashSecret(newSecret()) },
        broker: { host: '127.0.0.1', port: 0, maxPacketBytes: 64 * 1024, connectTimeoutMs: 2_000 },
        health: { host: '127.0.0.1', port: 0 },
        uplink: {
          url: 'mqtt://127.0.0.1:1', // the cloud unreachable
          caFile: undefined,
          keepaliveS: 5,
          connectTimeoutMs: 1_000,
          ackTimeoutMs: 1_000,
          windowBatches: 4,
          reconnectMinMs: 200,
          reconnectMaxMs: 1_000,
          stateIntervalMs: 0,
          drainMaxPerS: 0,
          live: true,
        },
        dataDir,
        queue: {
          file: path.join(dataDir, 'uplink-queue.sqlite'),
          capRecords: 10_000,
          capBytes: 16 * 1024 * 1024,
          commitDelayMs: 2,
          commitMaxRows: 100,
          minOfflineHours: 0,
        },
        rejectedKeep: 10,
        telemetryMaxHz: 50,
        access: {
          ...DEFAULT_ACCESS_CONFIG,
          nfcReaders: [{ reader, pcscName: VIRTUAL_READER_NAMES[0] }],
          nfcSocket: readers.socketPath,
          configKeysFile: keysFile,
        },
      };
      const gateway = await startGateway({ config, log, clock: systemClock, defaultMetrics: false });
      try {
        const seen: AccessOutcome[] = [];
        gateway.access.service.onDecision((o) => seen.push(o));
        await eventually(
          () => gateway.access.status().readers.some((r) => r.reader === reader && r.connected),
          'the NFC reader connected',
          20_000,
        );
        const card = await readers.insertCard(0, { uid });
        try {
          await eventually(() => seen.length === 1, 'a decision for the card', 15_000);
        } finally {
          await card.remove();
        }
        expect(seen[0]).to.deep.include({ action: 'check-in', reader, decidedBy: 'offline' });
        expect(seen[0]!.decision).to.deep.equal({ decision: 'allow', userId: member });
        expect(gateway.queue.stats().lanes.access.depth).to.equal(1);
        console.log(`      NFC card → offline decision: ${seen[0]!.latencyMs} ms after the UID was read`);
      } finally {
        await gateway.stop();
      }
    });
  },
);
