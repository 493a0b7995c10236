/**
 * Decodes a JetStream message (a PositionBatch) straight into the rows the writer needs, by hand:
 * protobuf-es's reflective `fromBinary` and the Position objects it builds took ~3 µs a point, a
 * third of the writer's CPU. It covers what the gateway publishes (fields 1–12 of Position once each,
 * UTF-8 text, non-negative times); anything else (unknown fields, repeated fields, negative or huge
 * varints, truncated bytes) is handed to `fromBinary`, so the result, or the error, is protobuf-es's.
 */
import { fromBinary } from "@bufbuild/protobuf";
import { PositionBatchSchema, type Position } from "../gen/fleet/v1/position_pb";
import { timestampMicros } from "./copy-rows";

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

class Unsupported extends Error {}
const unsupported = new Unsupported();
const utf8 = new TextDecoder("utf-8", { fatal: true });

let buf: Uint8Array = new Uint8Array(0);
let view = new DataView(buf.buffer);
let pos = 0;

/** A varint below 2^49; larger, negative or truncated ones go to fromBinary. */
function varint(end: number): number {
  let result = 0;
  let mul = 1;
  for (let i = 0; i < 7; i++) {
    if (pos >= end) throw unsupported;
    const b = buf[pos++]!;
    result += (b & 0x7f) * mul;
    if (b < 0x80) return result;
    mul *= 128;
  }
  throw unsupported;
}

function text(end: number): string {
  const len = varint(end);
  const stop = pos + len;
  if (stop > end) throw unsupported;
  let ascii = true;
  for (let i = pos; i < stop; i++) {
    if (buf[i]! > 0x7f) {
      ascii = false;
      break;
    }
  }
  const s = ascii ? String.fromCharCode.apply(null, buf.subarray(pos, stop) as unknown as number[]) : utf8.decode(buf.subarray(pos, stop));
  pos = stop;
  return s;
}

function timestamp(end: number): number {
  const len = varint(end);
  const stop = pos + len;
  if (stop > end) throw unsupported;
  let seconds = 0;
  let nanos = 0;
  let seen = 0;
  while (pos < stop) {
    const tag = buf[pos++]!;
    if (tag === 0x08 && !(seen & 1)) {
      seconds = varint(stop);
      seen |= 1;
    } else if (tag === 0x10 && !(seen & 2)) {
      nanos = varint(stop);
      if (nanos > 999_999_999) throw unsupported;
      seen |= 2;
    } else throw unsupported;
  }
  return seconds * 1_000_000 + Math.floor(nanos / 1000);
}

function position(end: number): Row {
  const row: Row = { vehicleId: "", us: NaN, seq: 0, fleetId: "", lat: 0, lon: 0, speed: 0, heading: 0, accuracy: 0, orderId: "", status: 0, receivedUs: NaN };
  let seen = 0;
  while (pos < end) {
    const tag = buf[pos++]!;
    const field = tag >> 3;
    if (field < 1 || field > 12 || tag > 0x7f || seen & (1 << field)) throw unsupported;
    seen |= 1 << field;
    switch (tag) {
      case 0x0a: row.vehicleId = text(end); break;
      case 0x10: row.seq = varint(end); if (row.seq > 0xffffffff) throw unsupported; break;
      case 0x1a: row.us = timestamp(end); break;
      case 0x21: if (pos + 8 > end) throw unsupported; row.lat = view.getFloat64(pos, true); pos += 8; break;
      case 0x29: if (pos + 8 > end) throw unsupported; row.lon = view.getFloat64(pos, true); pos += 8; break;
      case 0x35: if (pos + 4 > end) throw unsupported; row.speed = view.getFloat32(pos, true); pos += 4; break;
      case 0x3d: if (pos + 4 > end) throw unsupported; row.heading = view.getFloat32(pos, true); pos += 4; break;
      case 0x45: if (pos + 4 > end) throw unsupported; row.accuracy = view.getFloat32(pos, true); pos += 4; break;
      case 0x4a: row.orderId = text(end); break;
      case 0x50: row.status = varint(end); if (row.status > 0x7fffffff) throw unsupported; break;
      case 0x5a: row.fleetId = text(end); break;
      case 0x62: row.receivedUs = timestamp(end); break;
      default: throw unsupported;
    }
  }
  if (pos !== end) throw unsupported;
  return row;
}

/** The rows of one PositionBatch message; throws protobuf-es's error for bytes that are not one. */
export function decodeBatchRows(data: Uint8Array): Row[] {
  buf = data;
  view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  pos = 0;
  const rows: Row[] = [];
  try {
    while (pos < data.length) {
      if (buf[pos++] !== 0x0a) throw unsupported;
      const len = varint(data.length);
      const end = pos + len;
      if (end > data.length) throw unsupported;
      rows.push(position(end));
    }
    return rows;
  } catch (err) {
    if (!(err instanceof Unsupported)) throw err;
    return rowsOf(fromBinary(PositionBatchSchema, data).positions);
  } finally {
    buf = new Uint8Array(0);
  }
}
