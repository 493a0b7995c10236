/**
 * Latency histogram: 10 µs buckets up to 100 ms, 1 ms buckets up to 60 s, one overflow bucket.
 * Cheap to record into, mergeable across processes through a sparse JSON form.
 */
const FINE_MS = 0.01;
const FINE = 10_000; // 0..100 ms
const COARSE_MS = 1;
const COARSE = 59_900; // 100 ms..60 s
const BUCKETS = FINE + COARSE;

function bucketOf(ms: number): number {
  if (ms <= 0) return 0;
  if (ms < FINE * FINE_MS) return Math.floor(ms / FINE_MS);
  return Math.min(BUCKETS, FINE + Math.floor((ms - FINE * FINE_MS) / COARSE_MS));
}

/** Upper bound of a bucket in ms. */
function upperOf(b: number): number {
  return b < FINE ? (b + 1) * FINE_MS : FINE * FINE_MS + (b - FINE + 1) * COARSE_MS;
}

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
      counts[bucketOf(ms)]!++;
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
        if (seen >= rank) return b === BUCKETS ? max : Math.min(max, upperOf(b));
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
