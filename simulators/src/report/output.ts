/**
 * The report's three forms: a table for the terminal (cli-table3), JSON, and one self-contained HTML page with
 * charts — uPlot (MIT, ~50 KB) and its stylesheet inlined from node_modules, the data embedded, nothing fetched
 * (gyms and CI machines are often offline).
 */
import { readFileSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';
import Table from 'cli-table3';
import type { RunReport } from './report.ts';

const ms = (us: number) => `${(us / 1000).toFixed(1)} ms`;
const n = (value: number) => value.toLocaleString('en-US');

/** Rows of the summary: [what, value], shared by the table and the page. */
export function summaryRows(r: RunReport): [string, string][] {
  const rows: [string, string][] = [
    ['scenario', `${r.scenario} (seed ${r.seed})`],
    ['target', r.target],
    [
      'fleet',
      `${n(r.machines)} machines, ${r.branches} branches, ${r.gateways} gateways, ${n(r.members)} members, ${r.processes} process(es)`,
    ],
    ['run time', `${r.durationS.toFixed(1)} s`],
    [
      'sent',
      `${n(r.counts.sentTotal)} (${Object.entries(r.counts.sent)
        .map(([k, v]) => `${k} ${n(v)}`)
        .join(', ')})`,
    ],
    ['throughput', `${n(r.throughput.meanPerS)} msg/s mean, ${n(r.throughput.peakPerS)} peak`],
    ['acknowledged (PUBACK)', `${n(r.counts.acked)} (pending at the end ${n(r.counts.pendingAtEnd)})`],
  ];
  if (r.persisted) {
    const p = r.persisted;
    rows.push(
      [
        'persisted records',
        `${n(p.records.persisted)} of ${n(p.records.sent)} (${n(p.records.unacked)} never acknowledged)`,
      ],
      [
        'persisted telemetry',
        `${n(p.telemetry.persisted)} of ${n(p.telemetry.sent)} (${n(p.telemetry.notStored)} unacknowledged QoS 0 not stored)`,
      ],
      [
        'lost (acked, not stored)',
        `${n(r.lost ?? 0)}` +
          (p.records.queued
            ? ` (besides ${n(p.records.queued)} acknowledged records still queued at the gateways: late)`
            : ''),
      ],
      ['duplicated', n(r.duplicated ?? 0)],
    );
  } else {
    rows.push(['persisted', 'not read back (no MongoDB)']);
  }
  if (r.drain) {
    const queued =
      r.drain.queuedAtEnd === undefined
        ? ''
        : `; ${n(r.drain.queuedAtEnd)} still queued at the gateways${r.drain.queuedAtEnd > 0 ? ' (late, not lost)' : ''}`;
    rows.push([
      'wait for MongoDB',
      `${n(r.drain.waitedS)} s${r.drain.stillStoring ? ', still storing at the end' : ''}${queued}`,
    ]);
  }
  for (const q of r.gatewayQueues ?? []) {
    const total = Object.values(q.byLane).reduce((a, b) => a + b, 0);
    if (total === 0) continue;
    rows.push([
      `left in ${q.gateway}'s queue`,
      `${Object.entries(q.byLane)
        .map(([lane, count]) => `${lane} ${n(count)}`)
        .join(', ')}` +
        (q.keptIn ? `; kept in ${q.keptIn} (start it again to deliver them)` : '; removed with the run'),
    ]);
  }
  rows.push(
    [
      'PUBACK latency p50 / p95 / p99 / max',
      `${ms(r.latencyUs.p50)} / ${ms(r.latencyUs.p95)} / ${ms(r.latencyUs.p99)} / ${ms(r.latencyUs.max)}`,
    ],
    ['dropped / publish errors', `${n(r.counts.dropped)} / ${n(r.counts.errors)}`],
    [
      'connects / reconnects',
      `${n(r.counts.connects)} / ${n(r.counts.reconnects)} (cut ${n(r.counts.flaps)}, power-offs ${n(r.counts.outages)})`,
    ],
    ['connected at the end', `${n(r.counts.connectedAtEnd)} of ${n(r.machines)}`],
    ['sessions on machines (start / end)', `${n(r.counts.links)} / ${n(r.counts.unlinks)}`],
  );
  if (r.access) {
    const { desk, links, linkLatencyUs, stored } = r.access;
    rows.push(
      [
        'members at the doors',
        `${n(desk.arrivals)} arrived, ${n(desk.departures)} left, ${n(desk.inGym)} in the gym at the end; ` +
          `taps: ${n(desk.checkInTaps)} in, ${n(desk.checkOutTaps)} out; longest wait at a door ${ms(desk.doorWaitMaxMs * 1000)}` +
          (desk.noMemberFree ? `; ${n(desk.noMemberFree)} sessions with no member free` : ''),
      ],
      [
        'taps on machines',
        `${n(links.linkTaps)} to link: ${n(links.linked)} linked, ${n(links.denied)} denied; ${n(links.unlinkTaps)} to unlink: ` +
          `${n(links.unlinked)} unlinked, ${n(links.unlinkDenied)} refused` +
          (links.unlinkDenied
            ? ` (${Object.entries(links.unlinkDeniedBy)
                .map(([why, count]) => `${count} × "${why}"`)
                .join(', ')})`
            : ''),
      ],
      [
        'tap → link p50 / p95 / p99 / max',
        `${ms(linkLatencyUs.p50)} / ${ms(linkLatencyUs.p95)} / ${ms(linkLatencyUs.p99)} / ${ms(linkLatencyUs.max)}`,
      ],
    );
    if (stored)
      rows.push([
        'stored sessions / links',
        `${n(stored.sessions)} sessions (${n(stored.sessionsEnded)} ended, ${n(stored.conflicts)} conflicts), ${n(stored.links)} machine links` +
          (stored.waitedS ? ` (read after waiting ${n(stored.waitedS)} s for the cloud to apply them)` : ''),
      ]);
  }
  const bad = Object.values(r.counts.bad).reduce((a, b) => a + b, 0);
  if (bad > 0)
    rows.push([
      'bad payloads',
      Object.entries(r.counts.bad)
        .map(([k, v]) => `${k} ${n(v)}`)
        .join(', '),
    ]);
  rows.push(
    ['memory', `${n(r.memory.rssMiB)} MiB RSS, ${r.memory.perMachineKiB} KiB per machine`],
    ['CPU', `${(r.cpu.ms / 1000).toFixed(1)} s, ${r.cpu.usPerMessage} µs per message`],
  );
  return rows;
}

export function renderTable(r: RunReport, { color }: { color: boolean }): string {
  const style = color ? {} : { style: { head: [], border: [] } };
  const summary = new Table({ head: ['what', 'value'], ...style, wordWrap: true, colWidths: [38, 80] });
  summary.push(...summaryRows(r));
  const checks = new Table({ head: ['check', 'result', 'detail'], ...style, wordWrap: true, colWidths: [48, 8, 62] });
  for (const check of r.checks) checks.push([check.name, check.ok ? 'passed' : 'FAILED', check.detail]);
  const passed = r.checks.filter((c) => c.ok).length;
  return `${summary.toString()}\n${checks.toString()}\nchecks: ${passed} passed, ${r.checks.length - passed} failed\n`;
}

const require = createRequire(import.meta.url);

function uplotAssets(): { js: string; css: string } {
  const dir = path.join(path.dirname(require.resolve('uplot/package.json')), 'dist');
  return {
    js: readFileSync(path.join(dir, 'uPlot.iife.min.js'), 'utf8'),
    css: readFileSync(path.join(dir, 'uPlot.min.css'), 'utf8'),
  };
}

const escapeHtml = (text: string) =>
  text.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);

/** JSON safe inside a <script> element: no `</script>`, no `<!--`. */
const scriptJson = (value: unknown) =>
  JSON.stringify(value)
    .replace(/</g, '\\u003c')
    .replace(/\u2028/g, '\\u2028')
    .replace(/\u2029/g, '\\u2029');

export function renderHtml(r: RunReport): string {
  const { js, css } = uplotAssets();
  const rows = summaryRows(r)
    .map(([k, v]) => `<tr><th>${escapeHtml(k)}</th><td>${escapeHtml(v)}</td></tr>`)
    .join('\n');
  const checks = r.checks
    .map(
      (c) =>
        `<tr class="${c.ok ? 'ok' : 'fail'}"><td>${escapeHtml(c.name)}</td><td>${c.ok ? 'passed' : 'FAILED'}</td><td>${escapeHtml(c.detail)}</td></tr>`,
    )
    .join('\n');
  const events = r.events.map((e) => `<li>${e.t.toFixed(1)} s: ${escapeHtml(e.what)}</li>`).join('\n');
  const passed = r.checks.filter((c) => c.ok).length;
  const title = `NXG simulator: ${r.scenario}, ${r.startedAt}`;
  // The chart code runs in the browser; it reads only the embedded data.
  const chartCode = `
const report = JSON.parse(document.getElementById('report-data').textContent);
const s = report.series;
const t = s.map((p) => p.t);
const events = report.events;
const width = () => Math.min(1100, document.body.clientWidth - 40);
const markEvents = (u) => {
  const ctx = u.ctx;
  ctx.save();
  ctx.strokeStyle = '#c0392b';
  ctx.setLineDash([4, 4]);
  for (const e of events) {
    const x = u.valToPos(e.t, 'x', true);
    ctx.beginPath();
    ctx.moveTo(x, u.bbox.top);
    ctx.lineTo(x, u.bbox.top + u.bbox.height);
    ctx.stroke();
  }
  ctx.restore();
};
const chart = (el, title, series, data, label) =>
  new uPlot(
    {
      title,
      width: width(),
      height: 300,
      scales: { x: { time: false } },
      axes: [{ label: 'seconds since start' }, { label }],
      series: [{ label: 's' }, ...series],
      hooks: { draw: [markEvents] },
    },
    [t, ...data],
    document.getElementById(el),
  );
chart('latency', 'PUBACK latency over time', [
  { label: 'p50 ms', stroke: '#2e86de' },
  { label: 'p99 ms', stroke: '#e67e22' },
  { label: 'max ms', stroke: '#c0392b', dash: [6, 4] },
], [s.map((p) => p.p50Ms), s.map((p) => p.p99Ms), s.map((p) => p.maxMs)], 'ms');
chart('throughput', 'Throughput over time', [
  { label: 'sent msg/s', stroke: '#27ae60' },
  { label: 'acknowledged msg/s', stroke: '#8e44ad' },
], [s.map((p) => p.sentPerS), s.map((p) => p.ackedPerS)], 'messages/s');
chart('connections', 'Machines connected, drops and errors', [
  { label: 'connected', stroke: '#16a085' },
  { label: 'dropped', stroke: '#d35400' },
  { label: 'errors', stroke: '#c0392b' },
], [s.map((p) => p.connected), s.map((p) => p.dropped), s.map((p) => p.errors)], 'count');
`;
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>${escapeHtml(title)}</title>
<style>${css}</style>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 20px; color: #222; }
table { border-collapse: collapse; margin: 12px 0; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f4f4f4; font-weight: 600; }
tr.ok td:nth-child(2) { color: #1e8449; font-weight: 600; }
tr.fail td:nth-child(2) { color: #c0392b; font-weight: 600; }
.chart { margin: 16px 0; }
</style>
</head>
<body>
<h1>${escapeHtml(r.scenario)}</h1>
<p>${escapeHtml(r.description)}</p>
<p>Started ${escapeHtml(r.startedAt)} on ${escapeHtml(r.host.cpuModel)} (${r.host.cores} cores, Node ${escapeHtml(r.host.node)}).
Checks: <strong>${passed} passed, ${r.checks.length - passed} failed</strong>.</p>
<table>${rows}</table>
<h2>Checks</h2>
<table><tr><th>check</th><th>result</th><th>detail</th></tr>${checks}</table>
<h2>Over time</h2>
${events ? `<p>Dashed red lines: scenario events.</p><ul>${events}</ul>` : ''}
<div id="latency" class="chart"></div>
<div id="throughput" class="chart"></div>
<div id="connections" class="chart"></div>
<script id="report-data" type="application/json">${scriptJson(r)}</script>
<script>${js}</script>
<script>${chartCode}</script>
</body>
</html>
`;
}

/** Writes `<base>.json` and `<base>.html`; returns their paths. */
export async function writeReport(r: RunReport, base: string): Promise<{ json: string; html: string }> {
  await mkdir(path.dirname(base), { recursive: true });
  const json = `${base}.json`;
  const html = `${base}.html`;
  await writeFile(json, `${JSON.stringify(r, null, 2)}\n`);
  await writeFile(html, renderHtml(r));
  return { json, html };
}
