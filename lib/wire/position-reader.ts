/**
 * Reads a PositionBatch (a JetStream positions message) by hand, for the sinks that take every
 * point of the stream (history, tracker): protobuf-es's reflective `fromBinary` and the objects it
 * builds cost more than the rest of their work per point. The reader hands each position over as
 * numbers and byte ranges of the message (no object per point, no string unless the caller makes
 * one). It covers what the gateway publishes: fields 1–12 of Position once each, times with
 * non-negative seconds below 2^49. For anything else (unknown or repeated fields, other wire types,
 * negative or huge varints, truncated bytes) it answers false, and the caller decodes the message
 * with `fromBinary`, so that the result, or the error, is protobuf-es's.
 */

/** One position, as read: reused for every position of a message (copy what you keep). */
export interface PositionFields {
  /** The message being read. */
  bytes: Uint8Array;
  /** Byte ranges of the three strings in `bytes` (UTF-8, not checked). */
  idStart: number;
  idEnd: number;
  orderStart: number;
  orderEnd: number;
  fleetStart: number;
  fleetEnd: number;
  /** All three strings are ASCII (no byte over 0x7f). */
  ascii: boolean;
  seq: number;
  /** recorded_at; `hasRecorded` false when the message had none. */
  hasRecorded: boolean;
  recordedSeconds: number;
  recordedNanos: number;
  /** received_at; `hasReceived` false when the message had none. */
  hasReceived: boolean;
  receivedSeconds: number;
  receivedNanos: number;
  lat: number;
  lon: number;
  speed: number;
  heading: number;
  accuracy: number;
  status: number;
}

class Unsupported extends Error {}
const unsupported = new Unsupported();

let buf: Uint8Array = new Uint8Array(0);
let view = new DataView(buf.buffer);
let pos = 0;
let ascii = true;
let tsSeconds = 0;
let tsNanos = 0;

const fields: PositionFields = {
  bytes: buf,
  idStart: 0,
  idEnd: 0,
  orderStart: 0,
  orderEnd: 0,
  fleetStart: 0,
  fleetEnd: 0,
  ascii: true,
  seq: 0,
  hasRecorded: false,
  recordedSeconds: 0,
  recordedNanos: 0,
  hasReceived: false,
  receivedSeconds: 0,
  receivedNanos: 0,
  lat: 0,
  lon: 0,
  speed: 0,
  heading: 0,
  accuracy: 0,
  status: 0,
};

/** A varint below 2^49; larger, negative or truncated ones are left to fromBinary. */
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

/** Skips a length-delimited string; returns its start (its end is `pos` after). */
function text(end: number): number {
  const len = varint(end);
  const start = pos;
  const stop = start + len;
  if (stop > end) throw unsupported;
  if (ascii) {
    for (let i = start; i < stop; i++) {
      if (buf[i]! > 0x7f) {
        ascii = false;
        break;
      }
    }
  }
  pos = stop;
  return start;
}

/** Reads a Timestamp into tsSeconds / tsNanos. */
function timestamp(end: number): void {
  const len = varint(end);
  const stop = pos + len;
  if (stop > end) throw unsupported;
  tsSeconds = 0;
  tsNanos = 0;
  let seen = 0;
  while (pos < stop) {
    const tag = buf[pos++]!;
    if (tag === 0x08 && !(seen & 1)) {
      tsSeconds = varint(stop);
      seen |= 1;
    } else if (tag === 0x10 && !(seen & 2)) {
      tsNanos = varint(stop);
      if (tsNanos > 999_999_999) throw unsupported;
      seen |= 2;
    } else throw unsupported;
  }
}

function position(end: number): void {
  const f = fields;
  f.idStart = f.idEnd = f.orderStart = f.orderEnd = f.fleetStart = f.fleetEnd = 0;
  f.seq = f.status = 0;
  f.lat = f.lon = f.speed = f.heading = f.accuracy = 0;
  f.hasRecorded = f.hasReceived = false;
  f.recordedSeconds = f.recordedNanos = f.receivedSeconds = f.receivedNanos = 0;
  ascii = true;
  let seen = 0;
  while (pos < end) {
    const tag = buf[pos++]!;
    const field = tag >> 3;
    if (field < 1 || field > 12 || tag > 0x7f || seen & (1 << field)) throw unsupported;
    seen |= 1 << field;
    switch (tag) {
      case 0x0a:
        f.idStart = text(end);
        f.idEnd = pos;
        break;
      case 0x10:
        f.seq = varint(end);
        if (f.seq > 0xffffffff) throw unsupported;
        break;
      case 0x1a:
        timestamp(end);
        f.hasRecorded = true;
        f.recordedSeconds = tsSeconds;
        f.recordedNanos = tsNanos;
        break;
      case 0x21:
        if (pos + 8 > end) throw unsupported;
        f.lat = view.getFloat64(pos, true);
        pos += 8;
        break;
      case 0x29:
        if (pos + 8 > end) throw unsupported;
        f.lon = view.getFloat64(pos, true);
        pos += 8;
        break;
      case 0x35:
        if (pos + 4 > end) throw unsupported;
        f.speed = view.getFloat32(pos, true);
        pos += 4;
        break;
      case 0x3d:
        if (pos + 4 > end) throw unsupported;
        f.heading = view.getFloat32(pos, true);
        pos += 4;
        break;
      case 0x45:
        if (pos + 4 > end) throw unsupported;
        f.accuracy = view.getFloat32(pos, true);
        pos += 4;
        break;
      case 0x4a:
        f.orderStart = text(end);
        f.orderEnd = pos;
        break;
      case 0x50:
        f.status = varint(end);
        if (f.status > 0x7fffffff) throw unsupported;
        break;
      case 0x5a:
        f.fleetStart = text(end);
        f.fleetEnd = pos;
        break;
      case 0x62:
        timestamp(end);
        f.hasReceived = true;
        f.receivedSeconds = tsSeconds;
        f.receivedNanos = tsNanos;
        break;
      default:
        throw unsupported;
    }
  }
  if (pos !== end) throw unsupported;
  f.ascii = ascii;
}

/**
 * Calls `visit` for each position of a PositionBatch, in order, with the same reused object.
 * Returns false when the message is not one this reader covers; `visit` may have been called for
 * positions before that point, so the caller drops what it made of them and uses `fromBinary`.
 * An error thrown by `visit` goes to the caller. Not re-entrant: `visit` must not read another message.
 */
export function readPositionBatch(data: Uint8Array, visit: (p: PositionFields) => void): boolean {
  buf = data;
  view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  pos = 0;
  fields.bytes = data;
  try {
    while (pos < data.length) {
      if (buf[pos++] !== 0x0a) throw unsupported;
      const len = varint(data.length);
      const end = pos + len;
      if (end > data.length) throw unsupported;
      position(end);
      visit(fields);
    }
    return true;
  } catch (err) {
    if (err instanceof Unsupported) return false;
    throw err;
  } finally {
    buf = new Uint8Array(0);
    fields.bytes = buf;
  }
}
