/**
 * Test child for sqlite-queue.test.ts: appends records to a SqliteQueue as fast as group commit allows, 32 appends
 * in flight, and prints each record's msgId on stdout the moment its append resolved (the moment a machine would
 * get its PUBACK). The test SIGKILLs it mid-stream and checks every printed msgId is in the file.
 *
 * Usage: node sqlite-queue.child.ts <file>
 */
import { asMachineId } from '../../../protocol/index.ts';
import { recordOf } from '../testing/fixtures.ts';
import { SqliteQueue } from './sqlite-queue.ts';

const file = process.argv[2];
if (file === undefined) throw new Error('usage: sqlite-queue.child.ts <file>');
const queue = new SqliteQueue({ file, capRecords: 10_000_000, capBytes: 4 * 1024 * 1024 * 1024 });
const machines = Array.from({ length: 8 }, (_, i) => asMachineId(`m-${String(i + 1).padStart(2, '0')}`));
let n = 0;
let out = '';
let flushScheduled = false;

function print(line: string): void {
  out += line + '\n';
  if (flushScheduled) return;
  flushScheduled = true;
  setImmediate(() => {
    flushScheduled = false;
    const text = out;
    out = '';
    process.stdout.write(text);
  });
}

function next(): void {
  const i = n++;
  const machine = machines[i % machines.length]!;
  const record = i % 3 === 0 ? recordOf.workout(machine, i) : recordOf.telemetry(machine, i);
  queue.append(record, Date.now()).then(
    () => {
      print(record.payload.msgId);
      next();
    },
    (err: unknown) => {
      process.stderr.write(`append failed: ${String(err)}\n`);
      process.exit(1);
    },
  );
}

process.stdout.write('ready\n');
for (let k = 0; k < 32; k++) next();
