/**
 * Encodes a PositionBatch by hand, for the batcher: protobuf-es's reflective `toBinary` was a
 * fifth of the gateway's CPU per point. It writes the same bytes as `toBinary` (field order,
 * proto3 defaults left out), checked in position-encoder.test.ts. A position it does not cover
 * (unknown fields, a negative time or a large one) is encoded by `toBinary` itself.
 */
import { toBinary } from "@bufbuild/protobuf";
import type { Timestamp } from "@bufbuild/protobuf/wkt";
import { PositionSchema, type Position } from "../gen/fleet/v1/position_pb";
import { varintSize, writeVarint } from "../lib/varint";

/** A growable output buffer, reused from batch to batch. */
class Writer {
  buf = Buffer.allocUnsafe(64 * 1024);
  pos = 0;

  ensure(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    const next = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.pos + n));
    this.buf.copy(next, 0, 0, this.pos);
    this.buf = next;
  }

  byte(b: number): void {
    this.buf[this.pos++] = b;
  }

  /** A varint of a non-negative integer below 2^53. */
  varint(v: number): void {
    this.pos = writeVarint(this.buf, this.pos, v);
  }

  /** int32 as protobuf writes it: negative values sign-extended to ten bytes. */
  int32(v: number): void {
    if (v >= 0) return this.varint(v);
    let x = v;
    for (let i = 0; i < 9; i++) {
      this.buf[this.pos++] = (x & 0x7f) | 0x80;
      x >>= 7;
    }
    this.buf[this.pos++] = 1;
  }

  string(tag: number, s: string): void {
    if (s === "") return;
    const n = Buffer.byteLength(s, "utf8");
    this.ensure(n + 11);
    this.byte(tag);
    this.varint(n);
    this.pos += this.buf.write(s, this.pos, "utf8");
  }

  /** proto3 leaves out 0 but writes -0, as protobuf-es does. */
  double(tag: number, v: number): void {
    if (v === 0 && 1 / v > 0) return;
    this.byte(tag);
    this.buf.writeDoubleLE(v, this.pos);
    this.pos += 8;
  }

  float(tag: number, v: number): void {
    if (v === 0 && 1 / v > 0) return;
    this.byte(tag);
    this.buf.writeFloatLE(v, this.pos);
    this.pos += 4;
  }

  /** Returns false, having written nothing, for what it leaves to toBinary (negative or huge seconds, unknown fields). */
  timestamp(tag: number, t: Timestamp): boolean {
    const seconds = Number(t.seconds);
    if (!(seconds >= 0 && seconds <= Number.MAX_SAFE_INTEGER) || (t.$unknown !== undefined && t.$unknown.length > 0)) return false;
    const size = (seconds !== 0 ? 1 + varintSize(seconds) : 0) + (t.nanos !== 0 ? 1 + (t.nanos < 0 ? 10 : varintSize(t.nanos)) : 0);
    this.byte(tag);
    this.varint(size);
    if (seconds !== 0) {
      this.byte(0x08);
      this.varint(seconds);
    }
    if (t.nanos !== 0) {
      this.byte(0x10);
      this.int32(t.nanos);
    }
    return true;
  }
}


const out = new Writer();
const one = new Writer();

/** Writes `p`; false when it is one for toBinary (then what was written is to be dropped). */
function writePosition(w: Writer, p: Position): boolean {
  if (p.$unknown !== undefined && p.$unknown.length > 0) return false;
  w.string(0x0a, p.vehicleId);
  // Fixed-size fields: tags, two timestamps and a varint each, well under this.
  w.ensure(128);
  if (p.seq !== 0) {
    w.byte(0x10);
    w.varint(p.seq);
  }
  if (p.recordedAt && !w.timestamp(0x1a, p.recordedAt)) return false;
  w.double(0x21, p.lat);
  w.double(0x29, p.lon);
  w.float(0x35, p.speed);
  w.float(0x3d, p.heading);
  w.float(0x45, p.accuracy);
  w.string(0x4a, p.orderId);
  w.ensure(64);
  if (p.status !== 0) {
    w.byte(0x50);
    w.int32(p.status);
  }
  w.string(0x5a, p.fleetId);
  w.ensure(64);
  if (p.receivedAt && !w.timestamp(0x62, p.receivedAt)) return false;
  return true;
}

/** The bytes of `PositionBatch { positions }`, as `toBinary(PositionBatchSchema, …)` writes them. */
export function encodePositionBatch(positions: readonly Position[]): Uint8Array {
  out.pos = 0;
  for (const p of positions) {
    one.pos = 0;
    if (writePosition(one, p)) {
      out.ensure(one.pos + 6);
      out.byte(0x0a);
      out.varint(one.pos);
      out.pos += one.buf.copy(out.buf, out.pos, 0, one.pos);
    } else {
      const body = toBinary(PositionSchema, p);
      out.ensure(body.length + 6);
      out.byte(0x0a);
      out.varint(body.length);
      out.buf.set(body, out.pos);
      out.pos += body.length;
    }
  }
  // A copy: the writer's buffer is reused for the next batch while this one is being published.
  return Uint8Array.prototype.slice.call(out.buf, 0, out.pos);
}
