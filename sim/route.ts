/**
 * Plausible driving without servers: a Manhattan-like grid of streets around a city centre,
 * traffic lights at every intersection, vehicles that accelerate, brake, turn, take orders,
 * stop for deliveries, and report GPS fixes with jitter (and, at a small rate, deliberately
 * bad ones). Pure and deterministic for a given seed, so that tests can check the physics.
 */
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { VehicleStatus, type PositionSchema } from "../gen/fleet/v1/position_pb";

/** A seeded random source (mulberry32): fast, and the same route for the same seed. */
export type Rng = () => number;

/** Creates a seeded random number generator returning [0, 1). */
export function createRng(seed: number): Rng {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function gaussian(rng: Rng): number {
  // Box-Muller; 1 - rng() keeps log away from 0.
  return Math.sqrt(-2 * Math.log(1 - rng())) * Math.cos(2 * Math.PI * rng());
}

export interface CityOptions {
  /** Centre of the grid. */
  center?: { lat: number; lon: number };
  /** Avenues (north-south streets, before rotation) and their spacing in metres. */
  avenues?: number;
  avenueSpacingM?: number;
  /** Streets (east-west) and their spacing in metres. */
  streets?: number;
  streetSpacingM?: number;
  /** Rotation of the grid, degrees clockwise from north (Manhattan's is about 29). */
  rotationDeg?: number;
  /** Traffic light cycle in seconds (green per axis a bit under half of it). */
  lightCycleS?: number;
}

export interface City {
  readonly center: { lat: number; lon: number };
  readonly avenues: number;
  readonly streets: number;
  readonly rotationDeg: number;
  /** Grid position (metres east/north of the grid origin, before rotation) of a node. */
  nodeXY(i: number, j: number): { x: number; y: number };
  /** Latitude/longitude of a point given in grid metres. */
  toLatLon(x: number, y: number): { lat: number; lon: number };
  /** True when a vehicle travelling along `axis` may enter node (i, j) at time t (seconds). */
  green(i: number, j: number, axis: "ns" | "ew", t: number): boolean;
  /** Cruise speed (m/s) of the street a vehicle drives on. */
  cruiseSpeed(i: number, j: number, dir: Dir): number;
}

/** Directions on the grid: 0 north, 1 east, 2 south, 3 west (before rotation). */
export type Dir = 0 | 1 | 2 | 3;
const DI = [0, 1, 0, -1] as const;
const DJ = [1, 0, -1, 0] as const;

const M_PER_DEG_LAT = 111_320;

/** Creates a grid city. Defaults: about 4 × 4 km around Berlin Mitte, Manhattan-like long blocks. */
export function createCity({
  center = { lat: 52.52, lon: 13.405 },
  avenues = 17,
  avenueSpacingM = 250,
  streets = 41,
  streetSpacingM = 100,
  rotationDeg = 0,
  lightCycleS = 60,
}: CityOptions = {}): City {
  const width = (avenues - 1) * avenueSpacingM;
  const height = (streets - 1) * streetSpacingM;
  const rot = (rotationDeg * Math.PI) / 180;
  const cos = Math.cos(rot);
  const sin = Math.sin(rot);
  const mPerDegLon = M_PER_DEG_LAT * Math.cos((center.lat * Math.PI) / 180);
  const half = lightCycleS / 2;
  return {
    center,
    avenues,
    streets,
    rotationDeg,
    nodeXY: (i, j) => ({ x: i * avenueSpacingM, y: j * streetSpacingM }),
    toLatLon(x, y) {
      const cx = x - width / 2;
      const cy = y - height / 2;
      // Clockwise rotation of the grid: its "north" points to bearing rotationDeg.
      const east = cx * cos + cy * sin;
      const north = -cx * sin + cy * cos;
      return { lat: center.lat + north / M_PER_DEG_LAT, lon: center.lon + east / mPerDegLon };
    },
    green(i, j, axis, t) {
      // A fixed offset per intersection (a cheap hash), so that lights are not all in step.
      const offset = (((i * 7919 + j * 104729) % lightCycleS) + lightCycleS) % lightCycleS;
      const phase = (t + offset) % lightCycleS;
      // 3 s of all-red at the end of each half.
      return axis === "ns" ? phase < half - 3 : phase >= half && phase < lightCycleS - 3;
    },
    cruiseSpeed(i, j, dir) {
      // Every 4th avenue and every 5th street is an arterial.
      const arterial = dir % 2 === 0 ? i % 4 === 0 : j % 5 === 0;
      return arterial ? 16 : 11;
    },
  };
}

/** The lat/lon box the city's streets fill, with `marginM` metres to spare on each side (for the live map). */
export function cityBox(city: City, marginM = 0): { minLat: number; minLon: number; maxLat: number; maxLon: number } {
  const far = city.nodeXY(city.avenues - 1, city.streets - 1);
  const corners = [
    city.toLatLon(-marginM, -marginM),
    city.toLatLon(far.x + marginM, -marginM),
    city.toLatLon(-marginM, far.y + marginM),
    city.toLatLon(far.x + marginM, far.y + marginM),
  ];
  return {
    minLat: Math.min(...corners.map((c) => c.lat)),
    minLon: Math.min(...corners.map((c) => c.lon)),
    maxLat: Math.max(...corners.map((c) => c.lat)),
    maxLon: Math.max(...corners.map((c) => c.lon)),
  };
}

/** Speed and acceleration limits of the simulated vehicles (urban driving). */
export const LIMITS = { maxSpeed: 25, accel: 2.5, brake: 4, turnSpeed: 5 } as const;

/** Share of the brake limit drivers use when they see a stop coming. */
const COMFORT = 0.7;

export interface VehicleModelOptions {
  /** Chance per second that an available vehicle gets an order. */
  orderRate?: number;
  /** Delivery stop, seconds. */
  dwellS?: [number, number];
  /** GPS accuracy range in metres (the jitter's standard deviation is half of it). */
  accuracyM?: [number, number];
  /** Share of fixes that are deliberately bad (NaN, out of range, in the future). */
  badFixRate?: number;
}

/** The kind of a deliberately bad fix, so that tests and stats can tell them apart. */
export type BadFix = "nan" | "out-of-range" | "future";

export interface Fix {
  position: MessageInitShape<typeof PositionSchema>;
  /** True position and state, for tests. */
  truth: { x: number; y: number; speed: number; heading: number; stopped: boolean; onSegmentSince: number };
  bad?: BadFix;
}

export interface VehicleModel {
  readonly id: string;
  /** Advances the vehicle by dt seconds; t is the (simulated) time at the end of the step, in seconds. */
  step(dt: number, t: number): void;
  /** A GPS fix of the current state, recorded at `nowMs`. */
  fix(nowMs: number): Fix;
}

/** Creates one simulated vehicle at a random intersection. */
export function createVehicleModel(
  city: City,
  id: string,
  rng: Rng,
  { orderRate = 1 / 120, dwellS = [20, 90], accuracyM = [3, 10], badFixRate = 0.002 }: VehicleModelOptions = {},
): VehicleModel {
  let i = Math.floor(rng() * city.avenues);
  let j = Math.floor(rng() * city.streets);
  let dir: Dir = 0;
  let next: Dir = 0;
  let s = 0; // metres travelled on the current segment
  let v = 0;
  let segments = 0; // count of segments entered, so tests can tell a turn happened
  const temper = 0.85 + rng() * 0.25; // some drive faster than others
  let status = VehicleStatus.AVAILABLE;
  let orderId = "";
  let dest: { i: number; j: number } | undefined;
  let dwellUntil = -1;
  let orderSeq = 0;
  let now = 0;
  let runLight = false; // committed to cross on amber
  dir = pickDir(Math.floor(rng() * 4) as Dir);
  next = pickNext(dir);

  function inGrid(ii: number, jj: number) {
    return ii >= 0 && jj >= 0 && ii < city.avenues && jj < city.streets;
  }
  function pickDir(preferred: Dir): Dir {
    for (let k = 0; k < 4; k++) {
      const d = ((preferred + k) % 4) as Dir;
      if (inGrid(i + DI[d], j + DJ[d])) return d;
    }
    return preferred;
  }
  /** Direction to take at the end of the current segment (node i+DI, j+DJ). */
  function pickNext(d: Dir): Dir {
    const ni = i + DI[d];
    const nj = j + DJ[d];
    const options: Dir[] = [];
    const straight = d;
    const left = ((d + 3) % 4) as Dir;
    const right = ((d + 1) % 4) as Dir;
    if (dest) {
      const di = dest.i - ni;
      const dj = dest.j - nj;
      const want: Dir[] = [];
      if (di > 0) want.push(1);
      if (di < 0) want.push(3);
      if (dj > 0) want.push(0);
      if (dj < 0) want.push(2);
      const ok = want.filter((w) => w !== (d + 2) % 4);
      if (ok.length > 0) return ok[Math.floor(rng() * ok.length)]!;
    }
    const r = rng();
    const order: Dir[] = r < 0.6 ? [straight, left, right] : r < 0.8 ? [left, straight, right] : [right, straight, left];
    for (const o of order) if (inGrid(ni + DI[o], nj + DJ[o])) options.push(o);
    return options[0] ?? (((d + 2) % 4) as Dir);
  }
  const segLen = () => {
    const a = city.nodeXY(i, j);
    const b = city.nodeXY(i + DI[dir], j + DJ[dir]);
    return Math.abs(b.x - a.x) + Math.abs(b.y - a.y);
  };
  const heading = () => (dir * 90 + city.rotationDeg + 360) % 360;

  function arriveAtNode() {
    i += DI[dir];
    j += DJ[dir];
    s = 0;
    segments++;
    runLight = false;
    if (dest && dest.i === i && dest.j === j && v < 0.5) {
      dwellUntil = now + dwellS[0] + rng() * (dwellS[1] - dwellS[0]);
      v = 0;
    }
    dir = next;
    if (!inGrid(i + DI[dir], j + DJ[dir])) dir = pickDir(dir);
    next = pickNext(dir);
  }

  function subStep(dt: number) {
    if (dwellUntil >= 0) {
      v = 0;
      if (now < dwellUntil) return;
      dwellUntil = -1;
      dest = undefined;
      orderId = "";
      status = VehicleStatus.AVAILABLE;
      next = pickNext(dir);
    }
    if (!dest && status === VehicleStatus.AVAILABLE && rng() < orderRate * dt) {
      dest = { i: Math.floor(rng() * city.avenues), j: Math.floor(rng() * city.streets) };
      orderId = `order-${id}-${++orderSeq}`;
      status = VehicleStatus.ON_DELIVERY;
    }
    const len = segLen();
    const remaining = len - s;
    const ni = i + DI[dir];
    const nj = j + DJ[dir];
    const cruise = Math.min(LIMITS.maxSpeed, city.cruiseSpeed(i, j, dir) * temper);
    const isDest = dest !== undefined && dest.i === ni && dest.j === nj;
    const red = !city.green(ni, nj, dir % 2 === 0 ? "ns" : "ew", now);
    const stopAt = Math.max(0, remaining - 1);
    // Deceleration needed to stop at the line from here.
    const need = stopAt > 0.01 ? (v * v) / (2 * stopAt) : v > 0 ? Number.POSITIVE_INFINITY : 0;
    // Too close to stop within the brake limit: go through, as drivers do on amber.
    if (red && !runLight && need > LIMITS.brake) runLight = true;
    const stopForDest = isDest && need <= LIMITS.brake;
    const mustStop = stopForDest || (red && !runLight);
    if (mustStop && stopAt < 0.5) {
      v = v < 0.3 ? 0 : Math.max(0, v - LIMITS.brake * dt);
    } else if (mustStop && need >= COMFORT * LIMITS.brake) {
      // Brake just hard enough to stop at the line.
      v = Math.max(0, v - Math.min(LIMITS.brake, need) * dt);
    } else {
      let target = cruise;
      if (mustStop || next !== dir) {
        const end = mustStop ? 0 : LIMITS.turnSpeed;
        target = Math.min(target, Math.sqrt(end * end + 2 * COMFORT * LIMITS.brake * (mustStop ? stopAt : remaining)));
      }
      v = v < target ? Math.min(target, v + LIMITS.accel * dt) : Math.max(target, v - LIMITS.brake * dt);
    }
    s += v * dt;
    if (mustStop && s >= len - 0.01) {
      // Never enter the intersection while stopping for it.
      s = len - 0.01;
      if (stopForDest && v < 0.5) {
        v = 0;
        arriveAtNode();
      }
      return;
    }
    if (mustStop && stopForDest && v === 0 && stopAt < 0.5) {
      arriveAtNode();
      return;
    }
    if (s >= len) {
      const carry = s - len;
      arriveAtNode();
      s = Math.min(carry, segLen());
    }
  }

  let sinceSegment = 0;
  let lastSegments = 0;

  return {
    id,
    step(dt, t) {
      const start = t - dt;
      const n = Math.max(1, Math.ceil(dt / 0.25));
      for (let k = 1; k <= n; k++) {
        now = start + (dt * k) / n;
        subStep(dt / n);
      }
      if (segments !== lastSegments) {
        lastSegments = segments;
        sinceSegment = t;
      }
    },
    fix(nowMs) {
      const a = city.nodeXY(i, j);
      const x = a.x + DI[dir] * s;
      const y = a.y + DJ[dir] * s;
      const accuracy = accuracyM[0] + rng() * (accuracyM[1] - accuracyM[0]);
      const sd = accuracy / 2;
      const ll = city.toLatLon(x + gaussian(rng) * sd, y + gaussian(rng) * sd);
      const h = heading();
      const reportedSpeed = v > 0 ? Math.max(0, v + gaussian(rng) * 0.1) : 0;
      const reportedHeading = (h + gaussian(rng) * 1 + 360) % 360;
      const position: MessageInitShape<typeof PositionSchema> = {
        vehicleId: id,
        recordedAt: timestampFromMs(nowMs),
        lat: ll.lat,
        lon: ll.lon,
        speed: reportedSpeed,
        heading: reportedHeading,
        accuracy,
        status: status === VehicleStatus.ON_DELIVERY ? VehicleStatus.ON_DELIVERY : VehicleStatus.AVAILABLE,
        orderId,
      };
      const truth = { x, y, speed: v, heading: h, stopped: v === 0, onSegmentSince: sinceSegment };
      if (badFixRate > 0 && rng() < badFixRate) {
        const r = rng();
        const bad: BadFix = r < 1 / 3 ? "nan" : r < 2 / 3 ? "out-of-range" : "future";
        if (bad === "nan") position.lat = Number.NaN;
        else if (bad === "out-of-range") position.lat = 91 + rng() * 50;
        else position.recordedAt = timestampFromMs(nowMs + 3_600_000);
        return { position, truth, bad };
      }
      return { position, truth };
    },
  };
}
