/**
 * Decodes a JetStream message (a PositionBatch) straight into the rows the writer needs, by hand
 * (lib/wire/position-reader.ts): protobuf-es's reflective `fromBinary` and the Position objects it builds
 * took ~3 µs a point, a third of the writer's CPU. What the reader does not cover, and text that is
 * not UTF-8, is protobuf-es's to decode, so the result, or the error, is protobuf-es's.
 */
import { fromBinary } from "@bufbuild/protobuf";
import { PositionBatchSchema } from "../gen/fleet/v1/position_pb";
import { internedText as text, readPositionBatch, type PositionFields } from "../lib/wire";
import { rowsOf, type Row } from "./row";

const micros = (seconds: number, nanos: number) => seconds * 1_000_000 + Math.floor(nanos / 1000);

let rows: Row[] = [];
const toRow = (f: PositionFields) => {
  rows.push({
    vehicleId: text(f.bytes, f.idStart, f.idEnd, f.ascii),
    us: f.hasRecorded ? micros(f.recordedSeconds, f.recordedNanos) : NaN,
    seq: f.seq,
    fleetId: text(f.bytes, f.fleetStart, f.fleetEnd, f.ascii),
    lat: f.lat,
    lon: f.lon,
    speed: f.speed,
    heading: f.heading,
    accuracy: f.accuracy,
    orderId: text(f.bytes, f.orderStart, f.orderEnd, f.ascii),
    status: f.status,
    receivedUs: f.hasReceived ? micros(f.receivedSeconds, f.receivedNanos) : NaN,
  });
};

/** The rows of one PositionBatch message; throws protobuf-es's error for bytes that are not one. */
export function decodeBatchRows(data: Uint8Array): Row[] {
  rows = [];
  let ok = false;
  try {
    ok = readPositionBatch(data, toRow);
  } catch (err) {
    // Text that is not UTF-8 (the fatal decoder's TypeError): protobuf-es says what it makes of it.
    if (!(err instanceof TypeError)) throw err;
  }
  const out = rows;
  rows = [];
  if (ok) return out;
  return rowsOf(fromBinary(PositionBatchSchema, data).positions);
}
