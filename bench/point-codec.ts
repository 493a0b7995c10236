/**
 * Hand-written protobuf encoding of one `fleet.v1.Position`, and of the gRPC frame of one
 * `SyncRequest`, for load generators: per point only seq and time change, so the vehicle id
 * and the coordinates are encoded once per vehicle and the rest is a few byte writes. It is
 * checked against protobuf-es in `point-codec.test.ts`.
 */
import { varintSize, writeVarint } from "../lib/wire";

/** What stays the same for every point of one vehicle, pre-encoded. */
export interface VehicleTemplate {
  /** Field 1 (vehicle_id), tag and length included. */
  readonly head: Uint8Array;
  /** Fields 4–8 (lat, lon, speed, heading, accuracy), tags included. */
  readonly tail: Uint8Array;
}

const encoder = new TextEncoder();

/** Pre-encodes what one vehicle's points share. */
export function vehicleTemplate(vehicleId: string, lat: number, lon: number, speed = 12.5, heading = 90, accuracy = 5): VehicleTemplate {
  const id = encoder.encode(vehicleId);
  if (id.length > 127) throw new Error("vehicle id too long for the bench codec");
  const head = new Uint8Array(2 + id.length);
  head[0] = 0x0a;
  head[1] = id.length;
  head.set(id, 2);
  const tail = new Uint8Array(9 + 9 + 5 + 5 + 5);
  const view = new DataView(tail.buffer);
  tail[0] = 0x21; // 4: double
  view.setFloat64(1, lat, true);
  tail[9] = 0x29; // 5: double
  view.setFloat64(10, lon, true);
  tail[18] = 0x35; // 6: float
  view.setFloat32(19, speed, true);
  tail[23] = 0x3d; // 7: float
  view.setFloat32(24, heading, true);
  tail[28] = 0x45; // 8: float
  view.setFloat32(29, accuracy, true);
  return { head, tail };
}

/** Size of the encoded Position of `t` with this seq and time. */
export function positionSize(t: VehicleTemplate, seq: number, seconds: number, nanos: number): number {
  const ts = 1 + varintSize(seconds) + (nanos > 0 ? 1 + varintSize(nanos) : 0);
  return t.head.length + 1 + varintSize(seq) + 1 + 1 + ts + t.tail.length;
}

/** Writes the Position at `at` in `buf`; returns the offset after it. */
export function writePosition(buf: Uint8Array, at: number, t: VehicleTemplate, seq: number, seconds: number, nanos: number): number {
  buf.set(t.head, at);
  at += t.head.length;
  buf[at++] = 0x10; // 2: seq
  at = writeVarint(buf, at, seq);
  buf[at++] = 0x1a; // 3: recorded_at
  buf[at++] = 1 + varintSize(seconds) + (nanos > 0 ? 1 + varintSize(nanos) : 0);
  buf[at++] = 0x08;
  at = writeVarint(buf, at, seconds);
  if (nanos > 0) {
    buf[at++] = 0x10;
    at = writeVarint(buf, at, nanos);
  }
  buf.set(t.tail, at);
  return at + t.tail.length;
}

/** Encodes one Position (for JetStream and MQTT payloads). */
export function encodePosition(t: VehicleTemplate, seq: number, timeMs: number): Uint8Array {
  const seconds = Math.floor(timeMs / 1000);
  const nanos = Math.round(timeMs - seconds * 1000) * 1_000_000;
  const buf = new Uint8Array(positionSize(t, seq, seconds, nanos));
  writePosition(buf, 0, t, seq, seconds, nanos);
  return buf;
}

/** Size of one gRPC frame carrying a SyncRequest (or UploadRequest: same shape) with this point. */
export function syncFrameSize(t: VehicleTemplate, seq: number, seconds: number, nanos: number): number {
  const pos = positionSize(t, seq, seconds, nanos);
  return 5 + 1 + varintSize(pos) + pos;
}

/**
 * Writes one gRPC length-prefixed frame (uncompressed) of a SyncRequest{position} at `at`;
 * returns the offset after it.
 */
export function writeSyncFrame(buf: Uint8Array, at: number, t: VehicleTemplate, seq: number, timeMs: number): number {
  const seconds = Math.floor(timeMs / 1000);
  const nanos = Math.round(timeMs - seconds * 1000) * 1_000_000;
  const pos = positionSize(t, seq, seconds, nanos);
  const msg = 1 + varintSize(pos) + pos;
  buf[at] = 0;
  buf[at + 1] = msg >>> 24;
  buf[at + 2] = (msg >>> 16) & 0xff;
  buf[at + 3] = (msg >>> 8) & 0xff;
  buf[at + 4] = msg & 0xff;
  at += 5;
  buf[at++] = 0x0a; // SyncRequest.position
  at = writeVarint(buf, at, pos);
  return writePosition(buf, at, t, seq, seconds, nanos);
}

/** Upper bound of one frame's size, for sizing write buffers. */
export function maxSyncFrameSize(t: VehicleTemplate): number {
  return 5 + 2 + t.head.length + 6 + 2 + 1 + 5 + 1 + 5 + t.tail.length;
}

/**
 * Where the load generator's vehicle `index` stands: spread over a city-sized box (Paris,
 * 48.8..49.0 N, 2.25..2.45 E) so that the coordinates look real. `bench watch` uses it to know
 * which vehicles an area holds.
 */
export function simPosition(index: number): [lat: number, lon: number] {
  return [48.8 + ((index * 7919) % 1000) / 5000, 2.25 + ((index * 104729) % 1000) / 5000];
}

let at = 0;
/** The varint at `at` (moved past it), or -1 past 32 bits or the end. */
function varint32(b: Uint8Array, end: number): number {
  let v = 0;
  for (let shift = 0; shift < 35 && at < end; shift += 7) {
    const byte = b[at++]!;
    v += (byte & 0x7f) * 2 ** shift;
    if (byte < 0x80) return v <= 0xffff_ffff ? v : -1;
  }
  return -1;
}

/**
 * `ack.durable_seq` of the `SyncResponse` at `b[start, end)` when it refuses nothing, read by hand
 * (the load generator reads one ack per point at a steady load, and protobuf-es's objects for each
 * made its garbage collector stall the clock it measures with); undefined for anything else
 * (rejections, unknown fields), which the caller decodes with protobuf-es.
 */
export function syncAckDurableSeq(b: Uint8Array, start: number, end: number): number | undefined {
  if (start === end) return 0;
  if (b[start] !== 0x0a) return undefined;
  at = start + 1;
  const len = varint32(b, end);
  if (len < 0 || at + len !== end) return undefined;
  let durable = 0;
  while (at < end) {
    const tag = b[at++];
    if (tag === 0x0a) {
      const n = varint32(b, end); // vehicle_id: skipped
      if (n < 0 || at + n > end) return undefined;
      at += n;
    } else if (tag === 0x10) {
      durable = varint32(b, end);
      if (durable < 0) return undefined;
    } else if (tag === 0x18) {
      if (varint32(b, end) < 0) return undefined;
    } else return undefined;
  }
  return durable;
}
