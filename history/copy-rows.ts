/**
 * Positions as rows of PostgreSQL's COPY text format, for the staging table of the writer.
 * Times go as integer microseconds since the epoch (exact, and cheaper than formatting dates).
 */
import type { Timestamp } from "@bufbuild/protobuf/wkt";
import type { Position } from "../gen/fleet/v1/position_pb";

/** Columns of the staging table, in COPY order. */
export const STAGING_COLUMNS =
  "vehicle_id, recorded_us, seq, fleet_id, lat, lon, speed, heading, accuracy, order_id, status, received_us";

/** Microseconds since the epoch of a Timestamp (sub-microsecond digits dropped). */
export function timestampMicros(ts: Timestamp | undefined): number {
  if (!ts) return 0;
  return Number(ts.seconds) * 1_000_000 + Math.floor(ts.nanos / 1000);
}

const SPECIAL = /[\\\t\n\r]/;

/** Escapes a text value for COPY's text format. */
export function copyText(value: string): string {
  if (!SPECIAL.test(value)) return value;
  return value.replace(/[\\\t\n\r]/g, (c) => (c === "\\" ? "\\\\" : c === "\t" ? "\\t" : c === "\n" ? "\\n" : "\\r"));
}

/** One COPY line per position; a point without recorded_at is skipped (the gateway never sends one). */
export function copyLines(positions: readonly Position[]): { text: string; rows: number; days: Set<number> } {
  let text = "";
  let rows = 0;
  const days = new Set<number>();
  for (const p of positions) {
    if (!p.recordedAt) continue;
    const us = timestampMicros(p.recordedAt);
    days.add(Math.floor(us / 86_400_000_000));
    const received = p.receivedAt ? String(timestampMicros(p.receivedAt)) : "\\N";
    text +=
      `${copyText(p.vehicleId)}\t${us}\t${p.seq}\t${copyText(p.fleetId)}\t${p.lat}\t${p.lon}\t${p.speed}\t${p.heading}\t` +
      `${p.accuracy}\t${copyText(p.orderId)}\t${p.status}\t${received}\n`;
    rows++;
  }
  return { text, rows, days };
}
