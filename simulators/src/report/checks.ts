/**
 * Expected outcomes a scenario checks at the end of its run. Each check reads the merged report; a check that
 * needs MongoDB's read-back fails (it does not pass silently) when the run had none.
 */
import type { CheckResult, RunReport } from './report.ts';

export type Check = (report: RunReport) => CheckResult;

const needsMongo = (name: string): CheckResult => ({
  name,
  ok: false,
  detail: 'no MongoDB to read back from (give --mongo-url, or run against npm start or --stack own)',
});

/** Every record and sample the gateway acknowledged is in MongoDB. */
export const nothingLost: Check = (r) => {
  const name = 'nothing acknowledged is lost';
  if (!r.persisted) return needsMongo(name);
  const p = r.persisted;
  return {
    name,
    ok: r.lost === 0 && p.records.acked + p.telemetry.acked > 0,
    detail:
      `${p.records.lost} records and ${p.telemetry.lost} samples acknowledged but not stored ` +
      `(of ${p.records.acked} + ${p.telemetry.acked} acknowledged)` +
      (r.drain && r.lost ? `, after waiting ${r.drain.waitedS} s for MongoDB` : '') +
      (r.lost && r.drain?.stillStoring
        ? ' — the hub was still storing its backlog: some may only be late (--drain)'
        : '') +
      (p.records.queued ? `; ${p.records.queued} more acknowledged records still queued at the gateways (late)` : '') +
      (r.drain?.queuedAtEnd ? `; ${r.drain.queuedAtEnd} records/samples still queued at the gateways (late)` : '') +
      (p.lostExamples.length ? `; e.g. ${p.lostExamples.slice(0, 3).join(', ')}` : ''),
  };
};

export const noDuplicates: Check = (r) => {
  const name = 'no record stored twice';
  if (!r.persisted) return needsMongo(name);
  return { name, ok: r.duplicated === 0, detail: `${r.duplicated} duplicate documents` };
};

/** At least `share` of the QoS 0 samples sent were stored (QoS 0 may drop some, e.g. during reconnects). */
export function telemetryStored(share: number): Check {
  return (r) => {
    const name = `≥ ${Math.round(share * 100)} % of telemetry samples stored`;
    if (!r.persisted) return needsMongo(name);
    const t = r.persisted.telemetry;
    const got = t.sent ? t.persisted / t.sent : 0;
    return { name, ok: got >= share, detail: `${t.persisted} of ${t.sent} (${(got * 100).toFixed(2)} %)` };
  };
}

/** Every machine connected, and is connected at the end. */
export const allConnected: Check = (r) => ({
  name: 'every machine connected, and is connected at the end',
  ok: r.counts.neverConnected === 0 && r.counts.connectedAtEnd === r.machines,
  detail: `${r.machines - r.counts.neverConnected} of ${r.machines} connected at least once; ${r.counts.connectedAtEnd} at the end`,
});

export function p99Below(ms: number): Check {
  return (r) => ({
    name: `PUBACK latency p99 < ${ms} ms`,
    ok: r.latencyUs.count > 0 && r.latencyUs.p99 < ms * 1000,
    detail: `p99 ${(r.latencyUs.p99 / 1000).toFixed(1)} ms over ${r.latencyUs.count} acknowledgements`,
  });
}

export const noPublishErrors: Check = (r) => ({
  name: 'no publish failed',
  ok: r.counts.errors === 0,
  detail: `${r.counts.errors} publish errors`,
});

export function reconnectedAtLeast(n: number): Check {
  return (r) => ({
    name: `machines reconnected (≥ ${n} reconnects)`,
    ok: r.counts.reconnects >= n,
    detail: `${r.counts.reconnects} reconnects, ${r.counts.flaps} connections cut, ${r.counts.outages} power-offs`,
  });
}

export const badNotStored: Check = (r) => {
  const name = 'no bad payload stored';
  if (!r.persisted) return needsMongo(name);
  const sent = Object.values(r.counts.bad).reduce((a, b) => a + b, 0);
  return {
    name,
    ok: sent > 0 && r.persisted.bad.stored === 0,
    detail: `${sent} bad payloads sent (${r.persisted.bad.withMsgId} with a msgId), ${r.persisted.bad.stored} stored`,
  };
};

/** Acknowledged messages per second, over the run, at least `perS`. */
export function throughputAtLeast(perS: number): Check {
  return (r) => ({
    name: `throughput ≥ ${perS} msg/s`,
    ok: r.throughput.meanPerS >= perS,
    detail: `${r.throughput.meanPerS} msg/s mean, ${r.throughput.peakPerS} peak`,
  });
}

/** Members used the machines (links happened): the day's arrivals reached the floor. */
export const membersTrained: Check = (r) => ({
  name: 'members started sessions',
  ok: r.counts.links > 0,
  detail: `${r.counts.links} sessions started, ${r.counts.unlinks} ended`,
});

const needsAccess = (name: string): CheckResult => ({
  name,
  ok: false,
  detail: 'no sessions read back (the run provisioned no members, or had no MongoDB)',
});

/** Every tap at an entrance opened a session in MongoDB, and every tap at an exit ended one. */
export const checkInsRecorded: Check = (r) => {
  const name = 'every door tap opened or ended a session';
  const stored = r.access?.stored;
  if (!r.access || !stored) return needsAccess(name);
  const { desk } = r.access;
  return {
    name,
    ok:
      desk.checkInTaps > 0 &&
      stored.sessions === desk.checkInTaps &&
      stored.conflicts === 0 &&
      stored.sessionsEnded === desk.checkOutTaps,
    detail:
      `${desk.checkInTaps} check-in taps → ${stored.sessions} sessions` +
      (stored.conflicts ? ` and ${stored.conflicts} conflicts (a tap counted twice)` : '') +
      '; ' +
      `${desk.checkOutTaps} check-out taps → ${stored.sessionsEnded} ended` +
      (desk.tapErrors ? `; ${desk.tapErrors} taps not written` : ''),
  };
};

/** Taps on the machines linked their members: none denied, answered (a tap in the run's last moments may not be). */
export const tapsLinked: Check = (r) => {
  const name = 'every tap on a machine linked its member';
  const stored = r.access?.stored;
  if (!r.access || !stored) return needsAccess(name);
  const { links, linkLatencyUs } = r.access;
  const denials = Object.entries(links.deniedBy)
    .map(([why, count]) => `${count} × "${why}"`)
    .join(', ');
  return {
    name,
    ok:
      links.linkTaps > 0 && links.denied === 0 && links.linked >= links.linkTaps * 0.99 && stored.links >= links.linked,
    detail:
      `${links.linkTaps} taps: ${links.linked} linked (tap → link p50 ${(linkLatencyUs.p50 / 1000).toFixed(0)} ms, ` +
      `p99 ${(linkLatencyUs.p99 / 1000).toFixed(0)} ms), ${links.denied} denied${denials ? ` (${denials})` : ''}; ` +
      `${stored.links} links stored`,
  };
};

/** The checks every run with provisioned members gets (run.ts adds them to the scenario's). */
export const accessChecks: readonly Check[] = [checkInsRecorded, tapsLinked];

export function runChecks(report: RunReport, checks: readonly Check[]): RunReport {
  return { ...report, checks: checks.map((check) => check(report)) };
}
