/** Prometheus histograms read from a service's /metrics text, for the benches' side figures. */

export interface PromHistogram {
  /** Cumulative counts by upper bound, ascending (+Inf last). */
  buckets: [le: number, count: number][];
  count: number;
  sum: number;
}

/** The histogram `name` in a /metrics text (one series: filter the lines first when it has several). */
export function readHistogram(text: string, name: string): PromHistogram {
  const buckets: [number, number][] = [];
  let count = 0;
  let sum = 0;
  for (const line of text.split("\n")) {
    const bucket = new RegExp(`^${name}_bucket\\{.*le="([^"]+)".*\\} (\\S+)$`).exec(line);
    if (bucket) buckets.push([bucket[1] === "+Inf" ? Infinity : Number(bucket[1]), Number(bucket[2])]);
    const total = new RegExp(`^${name}_(count|sum)(?:\\{.*\\})? (\\S+)$`).exec(line);
    if (total) total[1] === "count" ? (count = Number(total[2])) : (sum = Number(total[2]));
  }
  buckets.sort((a, b) => a[0] - b[0]);
  return { buckets, count, sum };
}

/** What was observed between two readings of the same histogram. */
export function histogramDelta(before: PromHistogram, after: PromHistogram): PromHistogram {
  const earlier = new Map(before.buckets);
  return {
    buckets: after.buckets.map(([le, n]) => [le, n - (earlier.get(le) ?? 0)]),
    count: after.count - before.count,
    sum: after.sum - before.sum,
  };
}

/** Several histograms as one (the same metric of several processes): buckets, counts and sums added. */
export function addHistograms(hs: PromHistogram[]): PromHistogram {
  const buckets = new Map<number, number>();
  for (const h of hs) for (const [le, n] of h.buckets) buckets.set(le, (buckets.get(le) ?? 0) + n);
  return {
    buckets: [...buckets].sort((a, b) => a[0] - b[0]),
    count: hs.reduce((a, h) => a + h.count, 0),
    sum: hs.reduce((a, h) => a + h.sum, 0),
  };
}

/** A service's /metrics text (`url` is the service's admin URL, where /metrics is served). */
export async function fetchMetrics(url: string): Promise<string> {
  return (await fetch(`${url}/metrics`)).text();
}

/** The histogram `name` as observed between two readings of the same /metrics. */
export function histogramBetween(before: string, after: string, name: string): PromHistogram {
  return histogramDelta(readHistogram(before, name), readHistogram(after, name));
}

/** The upper bound of the bucket quantile `q` falls in (NaN without buckets). */
export function bucketBound(h: PromHistogram, q: number): number {
  const total = h.buckets.at(-1)?.[1] ?? 0;
  return h.buckets.find(([, n]) => n >= q * total)?.[0] ?? NaN;
}

/**
 * What a service's `process_event_loop_delay_seconds` (lib/metrics.ts) counted between two readings
 * of its /metrics: how often its event loop was late by more than 5, 10 and 20 ms.
 */
export function loopDelayLine(before: string, after: string): string {
  const h = histogramBetween(before, after, "process_event_loop_delay_seconds");
  if (h.count === 0) return "no event-loop samples";
  const over = (s: number) => h.count - (h.buckets.find(([le]) => le >= s)?.[1] ?? h.count);
  return `event loop late > 5 ms ${over(0.005)} times, > 10 ms ${over(0.01)}, > 20 ms ${over(0.02)} (of ${h.count} samples, one per 10 ms)`;
}
