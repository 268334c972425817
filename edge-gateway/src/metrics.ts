/**
 * The gateway's Prometheus metrics: one prom-client registry per gateway (never the global one), so tests can run
 * gateways side by side. Served at GET /metrics by the health server.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export interface GatewayMetrics {
  readonly registry: Registry;
  readonly machinesConnected: Gauge;
  readonly machineConnects: Counter<'result'>;
  readonly framesRefused: Counter<'reason'>;
  readonly intakeRecords: Counter<'kind'>;
  readonly intakeRejected: Counter<'origin' | 'reason'>;
  readonly intakeAppendSeconds: Histogram;
  readonly queueDepth: Gauge<'lane'>;
  readonly queueBytes: Gauge<'lane'>;
  readonly queueOldestAgeSeconds: Gauge<'lane'>;
  readonly queueEvicted: Gauge<'lane'>;
  readonly queueFull: Gauge;
  readonly queueDrainPerSecond: Gauge;
  readonly queueIntakePerSecond: Gauge<'lane'>;
  readonly queueOfflineHoursLeft: Gauge;
  readonly queueForecastLow: Gauge;
  readonly queueStorageErrors: Counter;
  readonly queueCommitRows: Histogram;
  readonly uplinkLiveRecords: Counter<'lane'>;
  readonly uplinkUp: Gauge;
  readonly uplinkConnects: Counter;
  readonly uplinkBatchesSent: Counter<'lane' | 'attempt'>;
  readonly uplinkRecordsAcked: Counter<'lane'>;
  readonly uplinkRecordsRejected: Counter<'lane'>;
  readonly uplinkAcks: Counter<'result'>;
  readonly uplinkAckSeconds: Histogram<'lane'>;
  readonly uplinkInFlightBatches: Gauge<'lane'>;
  readonly uplinkRelayed: Counter<'result'>;
  readonly commandsRelayed: Counter<'result'>;
}

export function createGatewayMetrics({ defaultMetrics = true }: { defaultMetrics?: boolean } = {}): GatewayMetrics {
  const registry = new Registry();
  registry.setDefaultLabels({ service: 'gateway' });
  if (defaultMetrics) collectDefaultMetrics({ register: registry });
  const registers = [registry];
  return {
    registry,
    machinesConnected: new Gauge({
      name: 'gateway_machines_connected',
      help: 'Machines connected to the local broker',
      registers,
    }),
    machineConnects: new Counter({
      name: 'gateway_machine_connects_total',
      help: 'Machine CONNECT attempts by result (ok, refused)',
      labelNames: ['result'] as const,
      registers,
    }),
    framesRefused: new Counter({
      name: 'gateway_mqtt_connections_cut_total',
      help: 'Machine connections cut before CONNECT: by the frame guard (oversized, …) or as too-many-pending per address',
      labelNames: ['reason'] as const,
      registers,
    }),
    intakeRecords: new Counter({
      name: 'gateway_intake_records_total',
      help: 'Machine records appended to the uplink queue, by record kind',
      labelNames: ['kind'] as const,
      registers,
    }),
    intakeRejected: new Counter({
      name: 'gateway_rejected_total',
      help: 'Payloads acknowledged but not forwarded, by origin (machine, cloud) and reason',
      labelNames: ['origin', 'reason'] as const,
      registers,
    }),
    intakeAppendSeconds: new Histogram({
      name: 'gateway_intake_append_seconds',
      help: 'Time from a machine PUBLISH reaching authorizePublish to the queue append (the PUBACK waits for it)',
      buckets: [0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5],
      registers,
    }),
    queueDepth: new Gauge({
      name: 'gateway_queue_depth',
      help: 'Records waiting in the uplink queue, by lane',
      labelNames: ['lane'] as const,
      registers,
    }),
    queueBytes: new Gauge({
      name: 'gateway_queue_bytes',
      help: 'Bytes of record JSON in the uplink queue, by lane',
      labelNames: ['lane'] as const,
      registers,
    }),
    queueOldestAgeSeconds: new Gauge({
      name: 'gateway_queue_oldest_age_seconds',
      help: 'Age of the oldest record in the uplink queue, by lane (0 when empty)',
      labelNames: ['lane'] as const,
      registers,
    }),
    queueEvicted: new Gauge({
      name: 'gateway_queue_evicted',
      help: 'Records evicted from the uplink queue since start, by lane (telemetry only)',
      labelNames: ['lane'] as const,
      registers,
    }),
    queueFull: new Gauge({
      name: 'gateway_queue_full',
      help: '1 while the uplink queue refuses new records',
      registers,
    }),
    queueDrainPerSecond: new Gauge({
      name: 'gateway_queue_drain_records_per_second',
      help: 'Records per second acked by the cloud and deleted from the uplink queue (EWMA over ~10 s)',
      registers,
    }),
    queueIntakePerSecond: new Gauge({
      name: 'gateway_queue_intake_records_per_second',
      help: 'Records per second appended to the uplink queue, by lane (EWMA over ~5 min)',
      labelNames: ['lane'] as const,
      registers,
    }),
    queueOfflineHoursLeft: new Gauge({
      name: 'gateway_queue_offline_hours_left',
      help: 'Hours of outage the queue absorbs at the current intake before it must evict (-1: no intake)',
      registers,
    }),
    queueForecastLow: new Gauge({
      name: 'gateway_queue_forecast_low',
      help: '1 while the offline hours left are below GATEWAY_QUEUE_MIN_OFFLINE_HOURS',
      registers,
    }),
    queueStorageErrors: new Counter({
      name: 'gateway_queue_storage_errors_total',
      help: 'Commits of the uplink queue that failed on storage (disk full, page limit, I/O)',
      registers,
    }),
    queueCommitRows: new Histogram({
      name: 'gateway_queue_commit_rows',
      help: 'Rows written per uplink queue transaction (group commit)',
      buckets: [1, 2, 5, 10, 25, 50, 100, 250],
      registers,
    }),
    uplinkLiveRecords: new Counter({
      name: 'gateway_uplink_live_records_total',
      help: "Machines' latest status and samples sent on the live path ahead of a backlog, by lane",
      labelNames: ['lane'] as const,
      registers,
    }),
    uplinkUp: new Gauge({ name: 'gateway_uplink_up', help: '1 while connected to the cloud broker', registers }),
    uplinkConnects: new Counter({
      name: 'gateway_uplink_connects_total',
      help: 'Successful connections to the cloud broker',
      registers,
    }),
    uplinkBatchesSent: new Counter({
      name: 'gateway_uplink_batches_sent_total',
      help: 'Batches published to the cloud, by lane and attempt (first, resend)',
      labelNames: ['lane', 'attempt'] as const,
      registers,
    }),
    uplinkRecordsAcked: new Counter({
      name: 'gateway_uplink_records_acked_total',
      help: 'Records the cloud acknowledged as durable (deleted from the queue), by lane',
      labelNames: ['lane'] as const,
      registers,
    }),
    uplinkRecordsRejected: new Counter({
      name: 'gateway_uplink_records_rejected_total',
      help: 'Records the cloud rejected (deleted from the queue, kept in the rejected list), by lane',
      labelNames: ['lane'] as const,
      registers,
    }),
    uplinkAcks: new Counter({
      name: 'gateway_uplink_acks_total',
      help: 'Acks received, by result (batch, unknown-batch, batch-error, invalid)',
      labelNames: ['result'] as const,
      registers,
    }),
    uplinkAckSeconds: new Histogram({
      name: 'gateway_uplink_ack_seconds',
      help: 'Time from a batch first being sent to its ack, by lane',
      labelNames: ['lane'] as const,
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
      registers,
    }),
    uplinkInFlightBatches: new Gauge({
      name: 'gateway_uplink_in_flight_batches',
      help: 'Batches sent and not yet answered, by lane',
      labelNames: ['lane'] as const,
      registers,
    }),
    uplinkRelayed: new Counter({
      name: 'gateway_uplink_relayed_total',
      help: 'Machine command responses relayed to the cloud broker, by result (sent, dropped-offline)',
      labelNames: ['result'] as const,
      registers,
    }),
    commandsRelayed: new Counter({
      name: 'gateway_commands_relayed_total',
      help: 'Commands from the cloud for machines, by result (delivered, invalid, unknown-machine, failed)',
      labelNames: ['result'] as const,
      registers,
    }),
  };
}
