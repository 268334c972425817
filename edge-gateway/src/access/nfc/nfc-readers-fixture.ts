/**
 * Test fixture for nfc-readers.test.ts: a stand-in gateway process that starts the NFC readers on the pcscd socket
 * given as argument, prints its status and the NFC child's pid as one JSON line once ready, then waits to be killed
 * (the test kills it with SIGKILL and checks that the NFC child does not outlive it).
 */
import { readFileSync } from 'node:fs';
import { createLogger } from '../../../../tools/runtime/logger.ts';
import { startNfcReaders } from './nfc-readers.ts';

const socketPath = process.argv[2];
if (!socketPath) throw new Error('usage: nfc-readers-fixture.ts <pcscd socket>');
const nfc = startNfcReaders({ log: createLogger({ name: 'fixture', level: 'silent' }), socketPath });
const status = await nfc.ready();
const children = readFileSync(`/proc/${process.pid}/task/${process.pid}/children`, 'utf8').trim().split(/\s+/);
process.stdout.write(`${JSON.stringify({ state: status.state, children: children.filter(Boolean).map(Number) })}\n`);
// Stay alive until killed; a bounded wait so a broken test cannot leave this running for long.
setTimeout(() => process.exit(2), 60_000);
