/**
 * The access path's Prometheus metrics, registered on the gateway's own registry (metrics.ts) and served with the
 * others at GET /metrics.
 */
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';

export interface AccessMetrics {
  readonly decisions: Counter<'action' | 'decision' | 'decided_by'>;
  readonly decisionSeconds: Histogram<'decided_by'>;
  readonly commands: Counter<'command' | 'result'>;
}

export function createAccessMetrics(
  registry: Registry,
  figures: {
    allowListAgeS: () => number | undefined;
    readersConnected: () => number;
    configRevision: () => number | undefined;
    ignoredAnswers: () => { late: number; stray: number };
    dropped: () => Readonly<Record<string, number>>;
  },
): AccessMetrics {
  const registers = [registry];
  new Gauge({
    name: 'gateway_access_allow_list_age_seconds',
    help: 'Age of the allow-list in use (oldest part issuedAt), s; absent without one',
    registers,
    collect() {
      this.reset();
      const age = figures.allowListAgeS();
      if (age !== undefined) this.set(age);
    },
  });
  new Gauge({
    name: 'gateway_access_config_revision',
    help: 'Revision of the signed configuration in use; absent without one',
    registers,
    collect() {
      this.reset();
      const revision = figures.configRevision();
      if (revision !== undefined) this.set(revision);
    },
  });
  new Gauge({
    name: 'gateway_access_readers_connected',
    help: 'Local readers (line, NFC) connected',
    registers,
    collect() {
      this.set(figures.readersConnected());
    },
  });
  new Gauge({
    name: 'gateway_access_ignored_answers',
    help: 'Cloud answers ignored since start: late (after the gateway decided offline) or stray (not its own request)',
    labelNames: ['kind'] as const,
    registers,
    collect() {
      const { late, stray } = figures.ignoredAnswers();
      this.set({ kind: 'late' }, late);
      this.set({ kind: 'stray' }, stray);
    },
  });
  new Gauge({
    name: 'gateway_access_input_dropped',
    help: 'Reader and machine input dropped before a decision since start, by reason',
    labelNames: ['reason'] as const,
    registers,
    collect() {
      for (const [reason, count] of Object.entries(figures.dropped())) this.set({ reason }, count);
    },
  });
  return {
    decisions: new Counter({
      name: 'gateway_access_decisions_total',
      help: 'Access decisions by action (check-in, check-out, link, unlink), decision and who decided (online, offline)',
      labelNames: ['action', 'decision', 'decided_by'] as const,
      registers,
    }),
    decisionSeconds: new Histogram({
      name: 'gateway_access_decision_seconds',
      help: 'Time from a scan to its decision, by who decided',
      labelNames: ['decided_by'] as const,
      buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1, 2, 5],
      registers,
    }),
    commands: new Counter({
      name: 'gateway_access_commands_total',
      help: 'Gateway commands (config, allow-list, rebirth) by result (ok or the error code)',
      labelNames: ['command', 'result'] as const,
      registers,
    }),
  };
}
