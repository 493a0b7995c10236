/**
 * Token bucket per vehicle: `rate` points per second sustained, `burst` at once. A call looks its
 * vehicle's bucket up once and takes from it per point (no map lookup, no allocation per point).
 */

export interface RateLimiterOptions {
  /** Tokens added per second. */
  rate: number;
  /** Bucket size. */
  burst: number;
  /** Buckets unused this long are forgotten (a full bucket carries no information). */
  forgetAfterMs?: number;
}

/** One vehicle's bucket. */
export class Bucket {
  tokens: number;
  last: number;

  constructor(
    private readonly rate: number,
    private readonly burst: number,
    now: number,
  ) {
    this.tokens = burst;
    this.last = now;
  }

  /** Takes `n` tokens; returns 0 when allowed, else the milliseconds until `n` tokens are there. */
  take(n: number, now: number): number {
    if (now > this.last) {
      this.tokens = Math.min(this.burst, this.tokens + ((now - this.last) * this.rate) / 1000);
      this.last = now;
    }
    if (this.tokens >= n) {
      this.tokens -= n;
      return 0;
    }
    if (this.rate <= 0 || n > this.burst) return Infinity;
    return Math.ceil(((n - this.tokens) * 1000) / this.rate);
  }
}

export interface RateLimiter {
  /** The bucket of a vehicle (created full). */
  bucket(vehicleId: string): Bucket;
  /** Forgets idle buckets; call now and then. */
  prune(now?: number): void;
  readonly size: number;
}

/** Creates the per-vehicle limiter. */
export function createRateLimiter({ rate, burst, forgetAfterMs = 60_000 }: RateLimiterOptions): RateLimiter {
  const buckets = new Map<string, Bucket>();
  return {
    bucket(vehicleId) {
      let b = buckets.get(vehicleId);
      if (!b) {
        b = new Bucket(rate, burst, Date.now());
        buckets.set(vehicleId, b);
      }
      return b;
    },
    prune(now = Date.now()) {
      for (const [id, b] of buckets) if (now - b.last > forgetAfterMs) buckets.delete(id);
    },
    get size() {
      return buckets.size;
    },
  };
}
