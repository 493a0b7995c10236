/**
 * Positions as rows of PostgreSQL's COPY text format, for `positions` itself (the writer's usual
 * path) or for its staging table (times as integer microseconds since the epoch: exact, and turned
 * into timestamptz by the insert), and the rollup's sums of new points.
 */
import type { Timestamp } from "@bufbuild/protobuf/wkt";
import type { Row } from "./batch-decoder";

/** Columns of the staging table, in COPY order. */
export const STAGING_COLUMNS =
  "vehicle_id, recorded_us, seq, fleet_id, lat, lon, speed, heading, accuracy, order_id, status, received_us";

/** Microseconds since the epoch of a Timestamp (sub-microsecond digits dropped). */
export function timestampMicros(ts: Timestamp | undefined): number {
  if (!ts) return 0;
  return Number(ts.seconds) * 1_000_000 + Math.floor(ts.nanos / 1000);
}

const SPECIAL = /[\\\t\n\r\u0000]/;

/**
 * Escapes a text value for COPY's text format. U+0000, which PostgreSQL's text cannot hold (the
 * whole batch would be refused, again at every retry), becomes U+FFFD: the gateway refuses such ids,
 * but a fleet from a token or a point published by another way could still carry one.
 */
export function copyText(value: string): string {
  if (!SPECIAL.test(value)) return value;
  return value.replace(/[\\\t\n\r\u0000]/g, (c) => (c === "\\" ? "\\\\" : c === "\t" ? "\\t" : c === "\n" ? "\\n" : c === "\r" ? "\\r" : "\uFFFD"));
}

/** A point reduced to what the rollup needs. */
export interface RollupPoint {
  vehicleId: string;
  us: number;
  lat: number;
  lon: number;
  speed: number;
}

/** A batch's rows ready to COPY, in key order (vehicle, time), each (vehicle, time) once. */
export interface PreparedRows {
  /** Also what the rollup takes (a Row is a RollupPoint). */
  rows: Row[];
  /** Days (since the epoch) the rows fall in: their partitions must exist. */
  days: Set<number>;
}

const byKey = (a: Row, b: Row) => (a.vehicleId < b.vehicleId ? -1 : a.vehicleId > b.vehicleId ? 1 : a.us - b.us);

/**
 * Drops points without a time and repeats of a (vehicle, time) within the batch (the first stays,
 * as the insert that ignores existing rows would keep it), and sorts the rest by key: concurrent
 * writers then take their index entries in the same order, and the B-tree is written leaf by leaf.
 */
export function prepareRows(input: readonly Row[]): PreparedRows {
  const seen = new Set<string>();
  const rows: Row[] = [];
  const days = new Set<number>();
  for (const p of input) {
    if (Number.isNaN(p.us)) continue;
    const key = `${p.us}\u0000${p.vehicleId}`;
    if (seen.has(key)) continue;
    seen.add(key);
    rows.push(p);
    days.add(Math.floor(p.us / 86_400_000_000));
  }
  rows.sort(byKey);
  return { rows, days };
}

/** COPY text of the staging table (STAGING_COLUMNS): times as integer microseconds. */
export function stagingText(rows: readonly Row[]): string {
  let text = "";
  for (const p of rows) {
    const received = Number.isNaN(p.receivedUs) ? "\\N" : String(p.receivedUs);
    text +=
      `${copyText(p.vehicleId)}\t${p.us}\t${p.seq}\t${copyText(p.fleetId)}\t${p.lat}\t${p.lon}\t${p.speed}\t${p.heading}\t` +
      `${p.accuracy}\t${copyText(p.orderId)}\t${p.status}\t${received}\n`;
  }
  return text;
}

/** Columns of `positions`, in the order of positionsText. */
export const POSITION_COLUMNS = "vehicle_id, recorded_at, seq, fleet_id, lat, lon, speed, heading, accuracy, order_id, status, received_at";

/**
 * Formats microseconds since the epoch as ISO 8601 in UTC with all six digits
 * (2026-11-21T12:00:58.000250Z), which timestamptz reads exactly. The date part is kept for the
 * last second formatted: a batch's times fall in few seconds.
 */
export function isoMicrosFormatter(): (us: number) => string {
  let second = NaN;
  let prefix = "";
  return (us) => {
    const s = Math.floor(us / 1_000_000);
    if (s !== second) {
      second = s;
      prefix = new Date(s * 1000).toISOString().slice(0, 19);
    }
    return `${prefix}.${String(us - s * 1_000_000).padStart(6, "0")}Z`;
  };
}

/** COPY text of `positions` itself (POSITION_COLUMNS). */
export function positionsText(rows: readonly Row[]): string {
  const recorded = isoMicrosFormatter();
  const received = isoMicrosFormatter();
  let text = "";
  for (const p of rows) {
    text +=
      `${copyText(p.vehicleId)}\t${recorded(p.us)}\t${p.seq}\t${copyText(p.fleetId)}\t${p.lat}\t${p.lon}\t${p.speed}\t${p.heading}\t` +
      `${p.accuracy}\t${copyText(p.orderId)}\t${p.status}\t${Number.isNaN(p.receivedUs) ? "\\N" : received(p.receivedUs)}\n`;
  }
  return text;
}

const R = 6371008.8;
const rad = Math.PI / 180;

/** Great-circle distance in metres (the formula of SQL's fleet_distance_m). */
export function distanceM(lat1: number, lon1: number, lat2: number, lon2: number): number {
  const a = Math.sin(((lat2 - lat1) * rad) / 2) ** 2 + Math.cos(lat1 * rad) * Math.cos(lat2 * rad) * Math.sin(((lon2 - lon1) * rad) / 2) ** 2;
  return 2 * R * Math.asin(Math.sqrt(a));
}

/** Rollup rows of new points (per vehicle and minute) and each vehicle's first point, whose leg from the stored predecessor SQL adds. */
export function rollupOf(points: readonly RollupPoint[]) {
  const byVehicle = new Map<string, RollupPoint[]>();
  for (const p of points) {
    const list = byVehicle.get(p.vehicleId);
    if (list) list.push(p);
    else byVehicle.set(p.vehicleId, [p]);
  }
  const rows = { vehicle: [] as string[], minuteUs: [] as number[], points: [] as number[], distance: [] as number[], maxSpeed: [] as number[], sumSpeed: [] as number[] };
  const firsts = { vehicle: [] as string[], us: [] as number[], lat: [] as number[], lon: [] as number[] };
  for (const [vehicle, list] of byVehicle) {
    list.sort((a, b) => a.us - b.us);
    const f = list[0]!;
    firsts.vehicle.push(vehicle);
    firsts.us.push(f.us);
    firsts.lat.push(f.lat);
    firsts.lon.push(f.lon);
    let minute = -1;
    for (let i = 0; i < list.length; i++) {
      const p = list[i]!;
      const m = Math.floor(p.us / 60_000_000) * 60_000_000;
      if (m !== minute) {
        minute = m;
        rows.vehicle.push(vehicle);
        rows.minuteUs.push(m);
        rows.points.push(0);
        rows.distance.push(0);
        rows.maxSpeed.push(p.speed);
        rows.sumSpeed.push(0);
      }
      const k = rows.points.length - 1;
      rows.points[k]!++;
      rows.sumSpeed[k]! += p.speed;
      if (p.speed > rows.maxSpeed[k]!) rows.maxSpeed[k] = p.speed;
      if (i > 0) rows.distance[k]! += distanceM(list[i - 1]!.lat, list[i - 1]!.lon, p.lat, p.lon);
    }
  }
  return { rows, firsts };
}
