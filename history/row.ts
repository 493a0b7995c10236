/**
 * A position as history's writer holds it (times as µs since the epoch), made from decoded
 * Positions, and a batch's rows put in key order, grouped by vehicle, for the COPY and the rollup.
 */
import type { Timestamp } from "@bufbuild/protobuf/wkt";
import type { Position } from "../gen/fleet/v1/position_pb";

/** One position as the writer stores it; times in µs since the epoch. */
export interface Row {
  vehicleId: string;
  /** recorded_at; NaN when the point had none (it is skipped). */
  us: number;
  seq: number;
  fleetId: string;
  lat: number;
  lon: number;
  speed: number;
  heading: number;
  accuracy: number;
  orderId: string;
  status: number;
  /** received_at, or NaN when unknown. */
  receivedUs: number;
}

/** Rows of decoded positions (the fallback, and tests). */
export function rowsOf(positions: readonly Position[]): Row[] {
  return positions.map((p) => ({
    vehicleId: p.vehicleId,
    us: p.recordedAt ? timestampMicros(p.recordedAt) : NaN,
    seq: p.seq,
    fleetId: p.fleetId,
    lat: p.lat,
    lon: p.lon,
    speed: p.speed,
    heading: p.heading,
    accuracy: p.accuracy,
    orderId: p.orderId,
    status: p.status,
    receivedUs: p.receivedAt ? timestampMicros(p.receivedAt) : NaN,
  }));
}

/** Microseconds since the epoch of a Timestamp (sub-microsecond digits dropped). */
export function timestampMicros(ts: Timestamp | undefined): number {
  if (!ts) return 0;
  return Number(ts.seconds) * 1_000_000 + Math.floor(ts.nanos / 1000);
}

/** A batch's rows ready to COPY, in key order (vehicle, time), each (vehicle, time) once. */
export interface PreparedRows {
  rows: Row[];
  /** The same rows, one array per vehicle, in time order: what the rollup takes. */
  byVehicle: Row[][];
  /** Days (since the epoch) the rows fall in: their partitions must exist. */
  days: Set<number>;
}

const byTime = (a: Row, b: Row) => a.us - b.us;

/**
 * Drops points without a time and repeats of a (vehicle, time) within the batch (the first stays,
 * as the insert that ignores existing rows would keep it), and puts the rest in key order, vehicles
 * in code-unit order: concurrent writers then take their index entries in the same order, and the
 * B-tree is written leaf by leaf. Grouped by vehicle first (a batch holds few vehicles, each in
 * time order already), which cost less than one sort of the batch by a string and a time.
 */
export function prepareRows(input: readonly Row[]): PreparedRows {
  const groups = new Map<string, Row[]>();
  for (const p of input) {
    if (Number.isNaN(p.us)) continue;
    const g = groups.get(p.vehicleId);
    if (g) g.push(p);
    else groups.set(p.vehicleId, [p]);
  }
  const rows: Row[] = [];
  const byVehicle: Row[][] = [];
  const days = new Set<number>();
  for (const id of [...groups.keys()].sort()) {
    const g = groups.get(id)!;
    for (let i = 1; i < g.length; i++) {
      if (g[i]!.us < g[i - 1]!.us) {
        g.sort(byTime); // stable: of equal times, the first sent stays first
        break;
      }
    }
    const kept: Row[] = [];
    let lastUs = NaN;
    let lastDay = NaN;
    for (const p of g) {
      if (p.us === lastUs) continue;
      lastUs = p.us;
      kept.push(p);
      rows.push(p);
      const day = Math.floor(p.us / 86_400_000_000);
      if (day !== lastDay) days.add((lastDay = day));
    }
    byVehicle.push(kept);
  }
  return { rows, byVehicle, days };
}
