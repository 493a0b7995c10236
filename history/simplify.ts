/**
 * Track simplification to a point budget: Douglas–Peucker ordered by error (the point farthest
 * from the simplified line is added first, until the budget is spent), after the points a map must
 * never lose are kept: the first and last, where the vehicle stops and starts again, and sharp turns.
 */

export interface TrackPoint {
  lat: number;
  lon: number;
  /** ms since the epoch */
  t: number;
  speed: number;
  heading: number;
}

export interface SimplifyOptions {
  /** Below this speed (m/s) the vehicle stands still. */
  stopSpeed?: number;
  /** A change of heading (degrees) between consecutive moving points that is a turn. */
  turnDegrees?: number;
}

/** Max-heap of segments by error. */
class Heap {
  private items: [number, number, number, number][] = []; // [error, from, to, farthest]
  get size() {
    return this.items.length;
  }
  push(item: [number, number, number, number]) {
    const a = this.items;
    a.push(item);
    let i = a.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (a[p]![0] >= a[i]![0]) break;
      [a[p], a[i]] = [a[i]!, a[p]!];
      i = p;
    }
  }
  pop(): [number, number, number, number] | undefined {
    const a = this.items;
    if (a.length === 0) return undefined;
    const top = a[0]!;
    const last = a.pop()!;
    if (a.length > 0) {
      a[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < a.length && a[l]![0] > a[m]![0]) m = l;
        if (r < a.length && a[r]![0] > a[m]![0]) m = r;
        if (m === i) break;
        [a[m], a[i]] = [a[i]!, a[m]!];
        i = m;
      }
    }
    return top;
  }
}

const M_PER_DEG = 111_320;

/** A track as columns (typed arrays or plain arrays), index i being the i-th point in time order. */
export interface TrackColumns {
  readonly length: number;
  readonly lat: ArrayLike<number>;
  readonly lon: ArrayLike<number>;
  readonly speed: ArrayLike<number>;
  readonly heading: ArrayLike<number>;
}

/** Indexes of the points to keep, ascending, at most `budget` (at least 2 when there are 2 points). */
export function simplifyIndexes(points: readonly TrackPoint[], budget: number, options: SimplifyOptions = {}): number[] {
  return simplifyColumns(
    {
      length: points.length,
      lat: points.map((p) => p.lat),
      lon: points.map((p) => p.lon),
      speed: points.map((p) => p.speed),
      heading: points.map((p) => p.heading),
    },
    budget,
    options,
  );
}

/**
 * simplifyIndexes over columns: what GetTrack uses, so that a vehicle-day (86,400 points) is never
 * turned into as many objects (their allocation and collection were a visible part of its time).
 */
export function simplifyColumns(
  track: TrackColumns,
  budget: number,
  { stopSpeed = 0.5, turnDegrees = 60 }: SimplifyOptions = {},
): number[] {
  const n = track.length;
  if (n <= budget) return Array.from({ length: n }, (_, i) => i);
  budget = Math.max(2, budget);
  const { lat, lon, speed, heading } = track;
  // Local flat projection in metres: good enough for the error of a line on a map.
  const cosLat = Math.cos(((lat[0]! + lat[n - 1]!) / 2) * (Math.PI / 180));
  const x = new Float64Array(n);
  const y = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    x[i] = lon[i]! * M_PER_DEG * cosLat;
    y[i] = lat[i]! * M_PER_DEG;
  }

  let must: number[] = [0];
  for (let i = 1; i < n - 1; i++) {
    const stoppedNow = speed[i]! < stopSpeed;
    const stoppedBefore = speed[i - 1]! < stopSpeed;
    if (stoppedNow !== stoppedBefore) {
      must.push(i);
      continue;
    }
    if (!stoppedNow) {
      let dh = Math.abs(heading[i]! - heading[i - 1]!) % 360;
      if (dh > 180) dh = 360 - dh;
      if (dh >= turnDegrees) must.push(i);
    }
  }
  must.push(n - 1);
  if (must.length > budget) {
    // More stops and turns than the budget: keep an even selection of them.
    const picked = new Set<number>([0, n - 1]);
    for (let k = 1; picked.size < budget; k++) picked.add(must[Math.round((k * (must.length - 1)) / (budget - 1))]!);
    must = [...picked].sort((a, b) => a - b);
    return must.slice(0, budget);
  }

  const farthest = (a: number, b: number): [number, number, number, number] => {
    const dx = x[b]! - x[a]!;
    const dy = y[b]! - y[a]!;
    const len2 = dx * dx + dy * dy;
    let best = -1;
    let bestD = -1;
    for (let i = a + 1; i < b; i++) {
      let d: number;
      const px = x[i]! - x[a]!;
      const py = y[i]! - y[a]!;
      if (len2 === 0) d = px * px + py * py;
      else {
        const t = Math.max(0, Math.min(1, (px * dx + py * dy) / len2));
        const ex = px - t * dx;
        const ey = py - t * dy;
        d = ex * ex + ey * ey;
      }
      if (d > bestD) {
        bestD = d;
        best = i;
      }
    }
    return [bestD, a, b, best];
  };

  const keep = new Set<number>(must);
  const heap = new Heap();
  for (let k = 0; k + 1 < must.length; k++) if (must[k + 1]! - must[k]! > 1) heap.push(farthest(must[k]!, must[k + 1]!));
  while (keep.size < budget && heap.size > 0) {
    const [, a, b, i] = heap.pop()!;
    keep.add(i);
    if (i - a > 1) heap.push(farthest(a, i));
    if (b - i > 1) heap.push(farthest(i, b));
  }
  return [...keep].sort((a, b) => a - b);
}
