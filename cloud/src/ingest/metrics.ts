/**
 * Ingest's metrics, on the cloud's registry (GET /metrics). Label values come from our own closed sets (lanes,
 * record kinds, reject and parse reasons), never from input, so cardinality stays bounded.
 */
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';

export interface IngestMetrics {
  batches: Counter<'lane' | 'outcome'>;
  batchRecords: Histogram<'lane'>;
  records: Counter<'kind' | 'outcome'>;
  deadLetters: Counter<'reason'>;
  invalidInput: Counter<'reason'>;
  ackLatency: Histogram<'lane'>;
  mongoWriteFailures: Counter<'lane'>;
  liveFailures: Counter<'stage'>;
  livePublished: Counter;
  gatewayStates: Counter<'state'>;
  queued: Gauge;
  running: Gauge;
}

const existing = new WeakMap<Registry, IngestMetrics>();

/** The ingest metrics of a registry (created once per registry, so a restart of ingest in one process reuses them). */
export function ingestMetrics(registry: Registry): IngestMetrics {
  const known = existing.get(registry);
  if (known) return known;
  const registers = [registry];
  const metrics: IngestMetrics = {
    batches: new Counter({
      name: 'ingest_batches_total',
      help: 'Uplink batches received, by lane and outcome (acked, error-acked, live, invalid, write-failed, shed)',
      labelNames: ['lane', 'outcome'] as const,
      registers,
    }),
    batchRecords: new Histogram({
      name: 'ingest_batch_records',
      help: 'Records per uplink batch',
      labelNames: ['lane'] as const,
      buckets: [1, 2, 5, 10, 25, 50, 100, 250, 500],
      registers,
    }),
    records: new Counter({
      name: 'ingest_records_total',
      help: 'Uplink records by kind and outcome (stored, duplicate, rejected, failed)',
      labelNames: ['kind', 'outcome'] as const,
      registers,
    }),
    deadLetters: new Counter({
      name: 'ingest_dead_letters_total',
      help: 'Dead letters stored, by reason',
      labelNames: ['reason'] as const,
      registers,
    }),
    invalidInput: new Counter({
      name: 'ingest_invalid_input_total',
      help: 'Invalid uplink input (whole batches and single records), by reason',
      labelNames: ['reason'] as const,
      registers,
    }),
    ackLatency: new Histogram({
      name: 'ingest_ack_latency_seconds',
      help: 'From receiving a batch to publishing its ack (the MongoDB write included)',
      labelNames: ['lane'] as const,
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers,
    }),
    mongoWriteFailures: new Counter({
      name: 'ingest_mongo_write_failures_total',
      help: 'Batches whose MongoDB write failed (no ack sent: the gateway resends)',
      labelNames: ['lane'] as const,
      registers,
    }),
    liveFailures: new Counter({
      name: 'ingest_live_state_failures_total',
      help: 'Live state updates that failed (Redis or the live topic publish), by stage',
      labelNames: ['stage'] as const,
      registers,
    }),
    livePublished: new Counter({
      name: 'ingest_live_machine_publishes_total',
      help: 'Retained live/machines/{machine} messages published',
      registers,
    }),
    gatewayStates: new Counter({
      name: 'ingest_gateway_states_total',
      help: 'Gateway births and wills received, by outcome (online, offline, cleared, stale, invalid)',
      labelNames: ['state'] as const,
      registers,
    }),
    queued: new Gauge({ name: 'ingest_batches_queued', help: 'Batches waiting for a writer', registers }),
    running: new Gauge({ name: 'ingest_batches_running', help: 'Batches being written', registers }),
  };
  existing.set(registry, metrics);
  return metrics;
}
