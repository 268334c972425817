/**
 * The simulator bench's baseline (tools/bench/sim.ts): what bare MQTT.js does on one core with the same shape of
 * load — `machines` connections, each publishing one fixed ~300-byte JSON sample at `rate` Hz at QoS 0, no envelope
 * stamping, no physics, no ledger. The simulator adds all of that; the gap between the two is its own cost.
 *
 * `node tools/bench/sim-baseline.ts <url> <machines> <rate> <seconds>` prints one JSON line: msgPerS, cpuUsPerMsg,
 * rssPerConnectionKiB.
 */
import { connectAsync, type MqttClient } from 'mqtt';

const [url, machinesArg, rateArg, secondsArg] = process.argv.slice(2);
if (!url || !machinesArg || !rateArg || !secondsArg) {
  process.stderr.write('usage: node tools/bench/sim-baseline.ts <url> <machines> <rate> <seconds>\n');
  process.exit(2);
}
const machines = Number(machinesArg);
const rate = Number(rateArg);
const seconds = Number(secondsArg);

// A telemetry sample of the size the simulator sends (envelope + a treadmill's FTMS fields).
const payload = JSON.stringify({
  msgId: '01JD8Z1Q4M5N6P7Q8R9S0T1V2W',
  source: 'treadmill-0001',
  bootId: 'b0f4c2a8-9d1e-4f7a-8c3b-2e6d5a9f1c70',
  seq: 123456,
  ts: 1_795_680_000_000,
  v: 1,
  type: 'treadmill',
  speedKmh: 10.4,
  inclinePct: 1.5,
  distanceM: 2345,
  heartRateBpm: 142,
  powerW: 212,
  energyKcal: 187,
  elapsedS: 754,
});

global.gc?.();
const rssBefore = process.memoryUsage().rss;
const clients: MqttClient[] = [];
for (let i = 0; i < machines; i++) {
  clients.push(
    await connectAsync(url, {
      clientId: `baseline-${i}`,
      protocolVersion: 4,
      clean: true,
      reconnectPeriod: 0,
      queueQoSZero: false,
    }),
  );
}
const rssConnected = process.memoryUsage().rss;
let sent = 0;
const intervalMs = 1000 / rate;
const timersById: NodeJS.Timeout[] = [];
const timers = clients.map((client, i) => {
  const topic = `nxg/v1/b/bench/m/baseline-${i}/telemetry`;
  return setTimeout(
    () => {
      timersById[i] = setInterval(() => {
        client.publish(topic, payload, { qos: 0 });
        sent += 1;
      }, intervalMs);
    },
    (i / machines) * intervalMs,
  );
});
const cpuBefore = process.cpuUsage();
const started = performance.now();
await new Promise((resolve) => setTimeout(resolve, seconds * 1000));
const elapsedS = (performance.now() - started) / 1000;
const cpu = process.cpuUsage(cpuBefore);
for (const t of [...timers, ...timersById]) clearTimeout(t);
const result = {
  msgPerS: Math.round(sent / elapsedS),
  cpuUsPerMsg: sent ? Math.round(((cpu.user + cpu.system) / sent) * 10) / 10 : 0,
  rssPerConnectionKiB: Math.round(((rssConnected - rssBefore) / machines / 1024) * 10) / 10,
};
await Promise.all(clients.map((client) => client.endAsync(true)));
process.stdout.write(`${JSON.stringify(result)}\n`);
process.exit(0);
