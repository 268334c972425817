/**
 * Ingest's environment variables (spread into cloud/src/config.ts, which parses the environment once).
 */
import { envInt } from '../../../tools/runtime/env-config.ts';

export const IngestEnv = {
  /** Uplink batches written to MongoDB at the same time (across gateways and lanes; one at a time per lane). */
  INGEST_CONCURRENCY: envInt(4, 1, 64),
  /**
   * Batches received and waiting for a writer. When full, the broker is held (backpressure on the gateways'
   * connections) for a short while, then the batch is dropped unanswered and the gateway resends it.
   */
  INGEST_MAX_QUEUED_BATCHES: envInt(64, 1, 10_000),
  /** Deadline of each MongoDB operation of a batch; past it the batch is not acked (the gateway resends it). */
  INGEST_WRITE_TIMEOUT_MS: envInt(10_000, 100, 120_000),
  /**
   * Fault injection only (RELIABILITY C1: kill the cloud between the MongoDB write and the ack): waits this long
   * after a batch is stored before acking it. 0 in production.
   */
  INGEST_ACK_DELAY_MS: envInt(0, 0, 60_000),
};

export interface IngestConfig {
  concurrency: number;
  maxQueuedBatches: number;
  writeTimeoutMs: number;
  /** Fault injection only: a pause between the MongoDB write and the ack. */
  ackDelayMs?: number;
}

type Parsed = { [K in keyof typeof IngestEnv]: number };

export function ingestConfigFrom(e: Parsed): IngestConfig {
  return {
    concurrency: e.INGEST_CONCURRENCY,
    maxQueuedBatches: e.INGEST_MAX_QUEUED_BATCHES,
    writeTimeoutMs: e.INGEST_WRITE_TIMEOUT_MS,
    ackDelayMs: e.INGEST_ACK_DELAY_MS,
  };
}
