/**
 * Latency histogram: 10 µs buckets up to 2 s, one overflow bucket. Cheap to record into,
 * mergeable across processes through a sparse JSON form.
 */
const BUCKET_MS = 0.01;
const BUCKETS = 200_000;

/** Sparse form: [bucket, count] pairs, plus the largest value seen. */
export interface HistogramJSON {
  buckets: [number, number][];
  max: number;
}

export interface Histogram {
  record(ms: number): void;
  readonly count: number;
  /** The value below which `q` (0..1) of the samples fall, in ms (bucket upper bound). */
  quantile(q: number): number;
  readonly max: number;
  merge(other: HistogramJSON): void;
  toJSON(): HistogramJSON;
}

/** Creates an empty histogram. */
export function createHistogram(): Histogram {
  const counts = new Uint32Array(BUCKETS + 1);
  let count = 0;
  let max = 0;
  return {
    record(ms) {
      const b = ms <= 0 ? 0 : Math.min(BUCKETS, Math.floor(ms / BUCKET_MS));
      counts[b]!++;
      count++;
      if (ms > max) max = ms;
    },
    get count() {
      return count;
    },
    get max() {
      return max;
    },
    quantile(q) {
      if (count === 0) return NaN;
      const rank = Math.max(1, Math.ceil(q * count));
      let seen = 0;
      for (let b = 0; b <= BUCKETS; b++) {
        seen += counts[b]!;
        if (seen >= rank) return b === BUCKETS ? max : Math.min(max, (b + 1) * BUCKET_MS);
      }
      return max;
    },
    merge(other) {
      for (const [b, c] of other.buckets) {
        counts[b]! += c;
        count += c;
      }
      if (other.max > max) max = other.max;
    },
    toJSON() {
      const buckets: [number, number][] = [];
      for (let b = 0; b <= BUCKETS; b++) if (counts[b]) buckets.push([b, counts[b]!]);
      return { buckets, max };
    },
  };
}
