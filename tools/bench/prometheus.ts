/**
 * Reads histograms from a Prometheus text endpoint (the cloud's and the gateway's /metrics), so the benchmark can
 * split end-to-end latency into stages: the mean of a histogram over a step is Δsum / Δcount between two scrapes.
 */
export type Scrape = Map<string, number>;

/** `{name}_sum` and `{name}_count` of every histogram, summed over label sets. */
export async function scrape(url: string, timeoutMs = 2_000): Promise<Scrape> {
  const out: Scrape = new Map();
  let text: string;
  try {
    const response = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
    if (!response.ok) return out;
    text = await response.text();
  } catch {
    return out;
  }
  for (const line of text.split('\n')) {
    if (line.startsWith('#')) continue;
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*_(?:sum|count))(?:\{[^}]*\})?\s+(\S+)$/.exec(line);
    if (!match) continue;
    const value = Number(match[2]);
    if (Number.isFinite(value)) out.set(match[1]!, (out.get(match[1]!) ?? 0) + value);
  }
  return out;
}

/** Mean of histogram `name` between two scrapes, in ms (the histograms are in seconds); NaN without observations. */
export function meanMs(before: Scrape, after: Scrape, name: string): number {
  const count = (after.get(`${name}_count`) ?? 0) - (before.get(`${name}_count`) ?? 0);
  const sum = (after.get(`${name}_sum`) ?? 0) - (before.get(`${name}_sum`) ?? 0);
  return count > 0 ? (sum / count) * 1000 : Number.NaN;
}
