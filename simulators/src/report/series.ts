/**
 * Figures over time for the report's charts: per interval of the run, messages sent, acknowledged, refused or
 * dropped, publish errors, and the PUBACK latency histogram of that interval. Closed intervals keep their histogram
 * encoded (hdr-histogram-js' compressed base64, a few hundred bytes), so the series of several processes can be
 * merged exactly (coordinator.ts) and a long run stays small (the interval grows with the run: ≤ 400 points).
 */
import hdr from 'hdr-histogram-js';

export interface SeriesPoint {
  /** Start of the interval, ms since the run started. */
  readonly atMs: number;
  sent: number;
  acked: number;
  errors: number;
  dropped: number;
  /** Machines connected at the end of the interval (summed over processes). */
  connected: number;
  /** PUBACK latency of the interval, encoded; '' when nothing was acknowledged. */
  latency: string;
}

export type Histogram = ReturnType<typeof hdr.build>;

/** The histogram every latency of the simulator goes into: 1 µs … 10 min, 3 significant digits. */
export function latencyHistogram(): Histogram {
  return hdr.build({
    lowestDiscernibleValue: 1,
    highestTrackableValue: 600_000_000,
    numberOfSignificantValueDigits: 3,
  });
}

export function encodeHistogram(histogram: Histogram): string {
  return histogram.totalCount === 0 ? '' : hdr.encodeIntoCompressedBase64(histogram);
}

/** Adds an encoded histogram into `into` (no-op for ''). */
export function addEncoded(into: Histogram, encoded: string): void {
  if (encoded === '') return;
  const decoded = hdr.decodeFromCompressedBase64(encoded);
  into.add(decoded);
  decoded.destroy();
}

/** The interval for a run of `durationS` seconds: 1 s up to 400 s, then longer so that there are ≤ 400 points. */
export function intervalFor(durationS: number | undefined): number {
  // A run until Ctrl-C (npm start's fleet): 1 minute, so a day's run keeps 1,440 points.
  if (durationS === undefined || durationS <= 0) return 60_000;
  if (durationS <= 400) return 1000;
  return Math.ceil(durationS / 400) * 1000;
}

export interface Series {
  readonly intervalMs: number;
  sent(n?: number): void;
  acked(latencyUs: number): void;
  error(): void;
  dropped(): void;
  /** Closes every interval up to `elapsedMs`; `connected` is the count to note for the ones closed now. */
  advance(elapsedMs: number, connected: number): void;
  /** Closed intervals and the open one. */
  points(connected: number): SeriesPoint[];
}

export function createSeries(intervalMs: number): Series {
  const closed: SeriesPoint[] = [];
  let open = fresh(0);
  const histogram = latencyHistogram();

  function fresh(atMs: number): SeriesPoint {
    return { atMs, sent: 0, acked: 0, errors: 0, dropped: 0, connected: 0, latency: '' };
  }

  const close = (connected: number) => {
    open.connected = connected;
    open.latency = encodeHistogram(histogram);
    histogram.reset();
    closed.push(open);
    open = fresh(open.atMs + intervalMs);
  };

  return {
    intervalMs,
    sent(n = 1) {
      open.sent += n;
    },
    acked(latencyUs) {
      open.acked += 1;
      histogram.recordValue(Math.min(600_000_000, Math.max(1, Math.round(latencyUs))));
    },
    error() {
      open.errors += 1;
    },
    dropped() {
      open.dropped += 1;
    },
    advance(elapsedMs, connected) {
      while (elapsedMs >= open.atMs + intervalMs) close(connected);
    },
    points(connected) {
      return [...closed, { ...open, connected, latency: encodeHistogram(histogram) }];
    },
  };
}

/** Sums series of several processes, interval by interval (same interval length), merging the histograms. */
export function mergeSeries(all: readonly (readonly SeriesPoint[])[]): SeriesPoint[] {
  const byAt = new Map<number, { point: SeriesPoint; histogram: Histogram }>();
  for (const series of all) {
    for (const point of series) {
      let entry = byAt.get(point.atMs);
      if (!entry) {
        entry = {
          point: { atMs: point.atMs, sent: 0, acked: 0, errors: 0, dropped: 0, connected: 0, latency: '' },
          histogram: latencyHistogram(),
        };
        byAt.set(point.atMs, entry);
      }
      entry.point.sent += point.sent;
      entry.point.acked += point.acked;
      entry.point.errors += point.errors;
      entry.point.dropped += point.dropped;
      entry.point.connected += point.connected;
      addEncoded(entry.histogram, point.latency);
    }
  }
  return [...byAt.values()]
    .sort((a, b) => a.point.atMs - b.point.atMs)
    .map(({ point, histogram }) => ({ ...point, latency: encodeHistogram(histogram) }));
}
