/**
 * Protobuf written by hand where protobuf-es's reflective `toBinary` is too slow for a hot path (the
 * gateway's batches, the tracker's watch events). Writes what `toBinary` writes: fields in number
 * order, proto3 defaults left out; each user checks its output against `toBinary` in its tests.
 */
import type { Timestamp } from "@bufbuild/protobuf/wkt";
import { varintSize, writeVarint } from "./varint";

/** A growable output buffer for bytes written by hand (protobuf here; the archiver's Parquet and Thrift too). */
export class ProtoWriter {
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

  /** A Timestamp of whole milliseconds ≥ 0, as `timestampFromMs` makes it: always written, empty when 0. */
  timestampMs(tag: number, ms: number): void {
    const seconds = Math.floor(ms / 1000);
    const nanos = (ms - seconds * 1000) * 1_000_000;
    const size = (seconds !== 0 ? 1 + varintSize(seconds) : 0) + (nanos !== 0 ? 1 + varintSize(nanos) : 0);
    this.ensure(size + 2);
    this.byte(tag);
    this.varint(size);
    if (seconds !== 0) {
      this.byte(0x08);
      this.varint(seconds);
    }
    if (nanos !== 0) {
      this.byte(0x10);
      this.varint(nanos);
    }
  }

  /** A length-delimited field holding what `inner` wrote. */
  message(tag: number, inner: ProtoWriter): void {
    this.ensure(inner.pos + 6);
    this.byte(tag);
    this.varint(inner.pos);
    this.pos += inner.buf.copy(this.buf, this.pos, 0, inner.pos);
  }

  /** A copy of what was written (the buffer is reused). */
  bytes(): Uint8Array {
    return Uint8Array.prototype.slice.call(this.buf, 0, this.pos);
  }
}
