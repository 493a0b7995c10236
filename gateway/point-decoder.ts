/**
 * Decodes UploadRequest and SyncRequest (one field: 1 = Position) by hand, for the native gRPC
 * path: protobuf-es's reflective `fromBinary` (with `create`) was a third of the gateway's CPU per
 * point. It covers what vehicles send: each Position field 1-10 at most once, ASCII ids. Anything
 * else (unknown fields, fleet_id or received_at from the sender, non-ASCII text, repeated fields,
 * large or negative varints, malformed bytes) is handed to `fromBinary`, so the result, or the
 * error, is always protobuf-es's own.
 */
import { fromBinary, type MessageShape } from "@bufbuild/protobuf";
import { endianness } from "node:os";
import type { SyncRequestSchema, UploadRequestSchema } from "../gen/fleet/v1/ingest_pb";
import type { Position } from "../gen/fleet/v1/position_pb";
import type { MessageDecoder } from "../lib/grpc-stream";

type PointRequestSchema = typeof UploadRequestSchema | typeof SyncRequestSchema;

/** Float bits go through this scratch, so no DataView is made per message. */
const scratch = new ArrayBuffer(8);
const scratchBytes = new Uint8Array(scratch);
const scratchF64 = new Float64Array(scratch);
const scratchF32 = new Float32Array(scratch);
const LITTLE_ENDIAN = endianness() === "LE";

const EMPTY = Buffer.alloc(0);

/** Set when the fast decoder meets something it leaves to fromBinary. */
class Unsupported extends Error {}
const unsupported = new Unsupported();

let buf: Buffer = Buffer.alloc(0);

let pos = 0;

/** A varint below 2^49 (seconds, seq, lengths); larger or truncated ones are left to fromBinary. */
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

function fixed(size: 4 | 8, end: number): number {
  if (pos + size > end) throw unsupported;
  for (let i = 0; i < size; i++) scratchBytes[i] = buf[pos + i]!;
  pos += size;
  return size === 8 ? scratchF64[0]! : scratchF32[0]!;
}

function ascii(end: number): string {
  const len = varint(end);
  const stop = pos + len;
  if (stop > end) throw unsupported;
  for (let i = pos; i < stop; i++) if (buf[i]! > 0x7f) throw unsupported;
  const s = buf.toString("latin1", pos, stop);
  pos = stop;
  return s;
}

function timestamp(end: number): { $typeName: "google.protobuf.Timestamp"; seconds: bigint; nanos: number } {
  const len = varint(end);
  const stop = pos + len;
  if (stop > end) throw unsupported;
  let seconds = 0;
  let nanos = 0;
  let seen = 0;
  while (pos < stop) {
    const tag = buf[pos++]!;
    if (tag === 0x08 && !(seen & 1)) {
      seen |= 1;
      seconds = varint(stop);
    } else if (tag === 0x10 && !(seen & 2)) {
      seen |= 2;
      nanos = varint(stop);
      if (nanos > 0x7fffffff) throw unsupported;
    } else {
      throw unsupported;
    }
  }
  if (pos !== stop) throw unsupported;
  return { $typeName: "google.protobuf.Timestamp", seconds: BigInt(seconds), nanos };
}

function position(end: number): Position {
  // Absent message fields are left out, as protobuf-es leaves them.
  const p: Position = {
    $typeName: "fleet.v1.Position",
    vehicleId: "",
    seq: 0,
    lat: 0,
    lon: 0,
    speed: 0,
    heading: 0,
    accuracy: 0,
    orderId: "",
    status: 0,
    fleetId: "",
  };
  let seen = 0;
  while (pos < end) {
    const tag = buf[pos++]!;
    // One-byte tags cover fields 1-15; each field may appear once (else merge rules apply).
    const bit = 1 << (tag >> 3);
    if (tag >= 0x80 || seen & bit) throw unsupported;
    seen |= bit;
    switch (tag) {
      case 0x0a:
        p.vehicleId = ascii(end);
        break;
      case 0x10: {
        const seq = varint(end);
        if (seq > 0xffffffff) throw unsupported;
        p.seq = seq;
        break;
      }
      case 0x1a:
        p.recordedAt = timestamp(end);
        break;
      case 0x21:
        p.lat = fixed(8, end);
        break;
      case 0x29:
        p.lon = fixed(8, end);
        break;
      case 0x35:
        p.speed = fixed(4, end);
        break;
      case 0x3d:
        p.heading = fixed(4, end);
        break;
      case 0x45:
        p.accuracy = fixed(4, end);
        break;
      case 0x4a:
        p.orderId = ascii(end);
        break;
      case 0x50: {
        const status = varint(end);
        if (status > 0x7fffffff) throw unsupported;
        p.status = status;
        break;
      }
      default:
        throw unsupported;
    }
  }
  if (pos !== end) throw unsupported;
  return p;
}

/** A decoder of `schema` (UploadRequest or SyncRequest) for `createNativeGrpc`'s streams. */
export function pointRequestDecoder<S extends PointRequestSchema>(schema: S): MessageDecoder<MessageShape<S>> {
  const typeName = schema.typeName;
  return (bytes, start, end) => {
    if (LITTLE_ENDIAN && end - start > 1 && bytes[start] === 0x0a) {
      buf = bytes;
      pos = start + 1;
      try {
        const len = varint(end);
        if (pos + len === end) return { $typeName: typeName, position: position(end) } as MessageShape<S>;
      } catch (err) {
        if (!(err instanceof Unsupported)) throw err;
      } finally {
        buf = EMPTY;
      }
    }
    return fromBinary(schema, bytes.subarray(start, end)) as MessageShape<S>;
  };
}
