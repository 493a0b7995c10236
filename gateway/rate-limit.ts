/**
 * Per-vehicle limits, judged so that a vehicle uploading the backlog of an outage is never refused:
 *
 * - Fixes per second of the vehicle's own clock: a GPS receiver makes at most a few tens of fixes
 *   per second of recorded time, however fast its backlog is sent afterwards. More than `fixRate`
 *   per recorded second (beyond `fixBurst`) is a flood, refused. The budget grows with recorded
 *   time newly covered (a point that goes back into time already covered adds none, so
 *   alternating between two times gains nothing) and with wall time, so that a refused vehicle is
 *   taken again at the live rate once it waited: its retry hint means something.
 * - Bytes per second of wall time: past it the reader stops reading (HTTP/2 flow control slows the
 *   sender) instead of refusing.
 *
 * A call looks its vehicle's limits up once and charges them per point (no map lookup, no
 * allocation per point in the steady state). Points already durable are not charged at all.
 */

export interface RateLimiterOptions {
  /** Fixes per second of recorded (or wall) time one vehicle may send; 0: no flood check. */
  fixRate: number;
  /** Fixes one vehicle may send beyond `fixRate` at once. */
  fixBurst: number;
  /** Bytes of points per second of wall time one vehicle is read at; 0: no limit. */
  bytesPerSecond: number;
  /** Bytes one vehicle may send at once before reading slows down. */
  burstBytes: number;
  /** Limits unused this long are forgotten (a full budget carries no information). */
  forgetAfterMs?: number;
}

/** Recorded-time intervals remembered per vehicle (a few: backlog, live, one clock jump). */
const MAX_SPANS = 8;

/** One vehicle's budgets. */
export class VehicleLimits {
  fixTokens: number;
  /** Wall time (ms) of the last refill of the fix budget. */
  private fixLast: number;
  /**
   * Recorded time already covered, as sorted disjoint [start, end] pairs (ms), and the index of the
   * pair the last point extended: the next point in recorded order extends it in O(1).
   */
  private spans: number[] = [];
  private current = -1;
  byteTokens: number;
  private byteLast: number;

  constructor(
    private readonly o: RateLimiterOptions,
    now: number,
  ) {
    this.fixTokens = o.fixBurst;
    this.byteTokens = o.burstBytes;
    this.fixLast = now;
    this.byteLast = now;
  }

  /** Wall time (ms) the vehicle last sent. */
  get seen(): number {
    return Math.max(this.fixLast, this.byteLast);
  }

  /**
   * Takes one fix recorded at `recordedMs`, read at `now`. Returns 0 when taken, else (a flood, the
   * fix is not taken) the ms until the burst is back.
   */
  takeFix(recordedMs: number, now: number): number {
    const { fixRate, fixBurst } = this.o;
    if (fixRate <= 0) return 0;
    let gainMs = this.cover(recordedMs);
    if (now > this.fixLast) {
      gainMs += now - this.fixLast;
      this.fixLast = now;
    }
    if (gainMs > 0) this.fixTokens = Math.min(fixBurst, this.fixTokens + (gainMs * fixRate) / 1000);
    if (this.fixTokens >= 1) {
      this.fixTokens -= 1;
      return 0;
    }
    return Math.max(1000, Math.ceil(((fixBurst - this.fixTokens) * 1000) / fixRate));
  }

  /** Charges `n` bytes read at `now`; returns the ms to stop reading for (0: go on). */
  takeBytes(n: number, now: number): number {
    const { bytesPerSecond, burstBytes } = this.o;
    if (bytesPerSecond <= 0) return 0;
    if (now > this.byteLast) {
      this.byteTokens = Math.min(burstBytes, this.byteTokens + ((now - this.byteLast) * bytesPerSecond) / 1000);
      this.byteLast = now;
    }
    // Goes into debt rather than refusing: a message larger than the burst still passes, later.
    this.byteTokens -= n;
    return this.byteTokens >= 0 ? 0 : Math.ceil((-this.byteTokens * 1000) / bytesPerSecond);
  }

  /** Marks `t` as covered; returns the recorded ms newly covered (0 for a point inside a span). */
  private cover(t: number): number {
    const s = this.spans;
    const i = this.current;
    // The common case: the next point of the same run, later than every span or before the next one.
    if (i >= 0 && t >= s[2 * i + 1]! && (2 * i + 2 >= s.length || t < s[2 * i + 2]!)) {
      const gain = t - s[2 * i + 1]!;
      s[2 * i + 1] = t;
      return gain;
    }
    // Inside a span: nothing new. Otherwise a new span of length 0 (the jump itself earns nothing).
    let at = 0;
    while (2 * at < s.length && s[2 * at]! <= t) {
      if (t <= s[2 * at + 1]!) {
        this.current = at;
        return 0;
      }
      at++;
    }
    // Starts a new span before span `at`. Past MAX_SPANS the oldest-ended span is merged away:
    // the only effect is that time inside it may be credited once more.
    s.splice(2 * at, 0, t, t);
    this.current = at;
    if (s.length > 2 * MAX_SPANS) {
      // Merge the two neighbours closest to each other (the gap between them counts as covered).
      let best = 0;
      for (let k = 1; k + 1 < s.length / 2; k++) if (s[2 * k + 2]! - s[2 * k + 1]! < s[2 * best + 2]! - s[2 * best + 1]!) best = k;
      s.splice(2 * best + 1, 2);
      if (this.current > best) this.current--;
    }
    return 0;
  }
}

export interface RateLimiter {
  /** The limits of a vehicle (created with full budgets). */
  limits(vehicleId: string): VehicleLimits;
  /** Forgets idle vehicles; call now and then. */
  prune(now?: number): void;
  readonly size: number;
}

/** Creates the per-vehicle limiter. */
export function createRateLimiter(options: RateLimiterOptions): RateLimiter {
  const forgetAfterMs = options.forgetAfterMs ?? 60_000;
  const all = new Map<string, VehicleLimits>();
  return {
    limits(vehicleId) {
      let l = all.get(vehicleId);
      if (!l) {
        l = new VehicleLimits(options, Date.now());
        all.set(vehicleId, l);
      }
      return l;
    },
    prune(now = Date.now()) {
      for (const [id, l] of all) if (now - l.seen > forgetAfterMs) all.delete(id);
    },
    get size() {
      return all.size;
    },
  };
}

/**
 * Bytes a point took on the wire, near enough for a per-second budget without encoding it: the
 * fixed-size fields and tags of an UploadRequest with its 5-byte gRPC prefix, the ids, and any
 * unknown fields it carried.
 */
export function pointBytes(
  p: { vehicleId: string; orderId: string; $unknown?: { data: Uint8Array }[] },
  outer?: { $unknown?: { data: Uint8Array }[] },
): number {
  let n = 72 + p.vehicleId.length + p.orderId.length;
  if (p.$unknown) for (const u of p.$unknown) n += u.data.length + 2;
  if (outer?.$unknown) for (const u of outer.$unknown) n += u.data.length + 2;
  return n;
}
