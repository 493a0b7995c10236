/**
 * The argument of newer-wins.lua, built straight from JetStream messages: per point u16 id length,
 * u16 record length, u8 length + the bucket in decimal, the id (UTF-8), the point packed as state-codec.ts's record with
 * rev 0 (all little-endian), then its longitude and latitude for GEOADD as decimal text (u8 length
 * each; the latitude clamped to what GEOADD takes). Text made here spares Redis formatting the
 * script's numbers for GEOADD (printf was a tenth of its CPU) and parsing 17 digits back. The hand reader (lib/wire/position-reader.ts) writes each point into one
 * growing buffer, with no Position object, string or Buffer per point: protobuf-es's `fromBinary`
 * and the objects around it were most of the consumer's CPU. Messages the reader does not cover (or
 * with text that is not ASCII) go through `fromBinary` and `packPoint`, which give the same bytes.
 */
import type { Position } from "../gen/fleet/v1/position_pb";
import { readPositionBatch, type PositionFields } from "../lib/wire";
import { BUCKETS, bucketOf, bucketOfBytes } from "./bucket";
import { FIXED_BYTES, packPoint } from "./state-codec";

/** Longest fleet and order ids a record keeps, in characters (as packPoint cuts them). */
const FLEET_MAX = 64;
const ORDER_MAX = 128;
const OFFLINE = 5;
/** GEOADD refuses latitudes past this (Web Mercator); records keep the exact one. */
const MAX_LAT_TEXT = "85.05112878";
const MAX_LAT_E7 = 850511287.8;

// The bucket as text: the script makes its key by concatenation instead of printf.
const BUCKET_DIGITS = Array.from({ length: BUCKETS }, (_, i) => String(i));
/** u16 id length, u16 record length, u8 length and the bucket's digits. */
const headSize = (bucket: number) => 5 + BUCKET_DIGITS[bucket]!.length;

const clampU16 = (v: number) => (Number.isFinite(v) ? Math.max(0, Math.min(65535, Math.round(v))) : 0);

/** Points gathered for one script call. */
export class PointBlob {
  /** The bytes; valid up to `size`. */
  buf: Buffer;
  size = 0;
  /** Points so far. */
  count = 0;
  /** Per point: where its id and its record start in `buf`, and their lengths. */
  idAt: number[] = [];
  idLen: number[] = [];
  recLen: number[] = [];
  private nowMs = 0;
  private readonly visit = (f: PositionFields) => this.addFields(f);

  constructor(capacity = 64 * 1024) {
    this.buf = Buffer.allocUnsafe(capacity);
  }

  /** Empties it for the next call (the buffer is kept). */
  reset(): void {
    this.truncate(0, 0);
  }

  /** Where point `i`'s record starts. */
  recAt(i: number): number {
    return this.idAt[i]! + this.idLen[i]!;
  }

  /** The id of point `i`. */
  id(i: number): string {
    return this.buf.toString("utf8", this.idAt[i]!, this.idAt[i]! + this.idLen[i]!);
  }

  /**
   * Adds the points of one PositionBatch message. Throws protobuf-es's error for bytes that are
   * not one, and a RangeError for a point the record cannot hold (a coordinate past ±214°); the
   * blob is then as it was before the call.
   */
  addMessage(data: Uint8Array, nowMs: number, decode: (data: Uint8Array) => readonly Position[]): number {
    const size = this.size;
    const count = this.count;
    this.nowMs = nowMs;
    try {
      let read = false;
      try {
        read = readPositionBatch(data, this.visit);
      } catch (err) {
        if (!(err instanceof NotAscii)) throw err;
      }
      if (read) return this.count - count;
      this.truncate(size, count);
      for (const p of decode(data)) this.addPosition(p, nowMs);
      return this.count - count;
    } catch (err) {
      this.truncate(size, count);
      throw err;
    }
  }

  /** Adds a decoded position (the fallback; also tests). */
  addPosition(p: Position, nowMs: number): void {
    const id = Buffer.from(p.vehicleId, "utf8");
    const record = packPoint(p, nowMs);
    const bucket = bucketOf(p.vehicleId);
    const at = this.reserve(headSize(bucket) + id.length + record.length);
    const idAt = this.head(at, id.length, bucket, record.length);
    id.copy(this.buf, idAt);
    record.copy(this.buf, idAt + id.length);
    this.geo(idAt + id.length);
  }

  /** The GEOADD text of the record at `r` (just written, the last thing in the blob). */
  private geo(r: number) {
    const lonE7 = this.buf.readInt32LE(r + 28);
    const latE7 = this.buf.readInt32LE(r + 24);
    // Worst case "-214.7483648" twice, with their length bytes.
    let at = this.reserve(26);
    at = writeE7(this.buf, at, lonE7);
    at =
      latE7 > MAX_LAT_E7
        ? writeText(this.buf, at, MAX_LAT_TEXT)
        : latE7 < -MAX_LAT_E7
          ? writeText(this.buf, at, `-${MAX_LAT_TEXT}`)
          : writeE7(this.buf, at, latE7);
    this.size = at;
  }

  private truncate(size: number, count: number) {
    this.size = size;
    this.count = count;
    this.idAt.length = this.idLen.length = this.recLen.length = count;
  }

  private reserve(n: number): number {
    const at = this.size;
    if (at + n > this.buf.length) {
      const grown = Buffer.allocUnsafe(Math.max(this.buf.length * 2, at + n));
      this.buf.copy(grown, 0, 0, at);
      this.buf = grown;
    }
    this.size = at + n;
    return at;
  }

  /** Writes the head at `at`; returns where the id goes. */
  private head(at: number, idLen: number, bucket: number, recLen: number): number {
    const b = this.buf;
    b[at] = idLen & 0xff;
    b[at + 1] = idLen >> 8;
    b[at + 2] = recLen & 0xff;
    b[at + 3] = recLen >> 8;
    const digits = BUCKET_DIGITS[bucket]!;
    b[at + 4] = digits.length;
    for (let i = 0; i < digits.length; i++) b[at + 5 + i] = digits.charCodeAt(i);
    const idAt = at + 5 + digits.length;
    this.idAt.push(idAt);
    this.idLen.push(idLen);
    this.recLen.push(recLen);
    this.count++;
    return idAt;
  }

  /** packPoint's bytes, from the message's bytes. */
  private addFields(f: PositionFields) {
    if (!f.ascii) throw notAscii;
    const src = f.bytes;
    const idLen = f.idEnd - f.idStart;
    // ASCII: characters are bytes, so packPoint's cut by characters is a cut by bytes.
    const fleetLen = Math.min(f.fleetEnd - f.fleetStart, FLEET_MAX);
    const orderLen = Math.min(f.orderEnd - f.orderStart, ORDER_MAX);
    const recLen = FIXED_BYTES + fleetLen + orderLen;
    const bucket = bucketOfBytes(src, f.idStart, f.idEnd);
    const at = this.reserve(headSize(bucket) + idLen + recLen);
    const b = this.buf;
    const idAt = this.head(at, idLen, bucket, recLen);
    const r = idAt + idLen;
    copy(src, f.idStart, idLen, b, idAt);
    b.writeUInt32LE(0, r);
    b.writeUInt32LE(f.seq, r + 4);
    b.writeDoubleLE(f.hasRecorded ? f.recordedSeconds * 1000 + Math.floor(f.recordedNanos / 1e6) : 0, r + 8);
    const received = f.hasReceived ? f.receivedSeconds * 1000 + Math.floor(f.receivedNanos / 1e6) : this.nowMs;
    b.writeDoubleLE(Math.min(received, this.nowMs), r + 16);
    b.writeInt32LE(Math.round(f.lat * 1e7), r + 24);
    b.writeInt32LE(Math.round(f.lon * 1e7), r + 28);
    b.writeUInt16LE(clampU16(f.speed * 100), r + 32);
    b.writeUInt16LE(clampU16(f.heading * 100), r + 34);
    b.writeUInt16LE(clampU16(f.accuracy * 10), r + 36);
    b[r + 38] = f.status === OFFLINE ? 0 : f.status & 0xff;
    b[r + 39] = 1;
    b[r + 40] = fleetLen;
    copy(src, f.fleetStart, fleetLen, b, r + FIXED_BYTES);
    copy(src, f.orderStart, orderLen, b, r + FIXED_BYTES + fleetLen);
    this.geo(r);
  }
}

/**
 * u8 length and `e7` / 1e7 in decimal, with all seven digits after the point: exactly that quotient,
 * so Redis's strtod gives the same double as the division would (both are the correctly rounded
 * value). Written as digits: String() of a double was a tenth of the tracker's CPU.
 */
function writeE7(b: Buffer, at: number, e7: number): number {
  const start = at++;
  if (e7 < 0) {
    b[at++] = 0x2d;
    e7 = -e7;
  }
  const whole = Math.floor(e7 / 1e7);
  let frac = e7 - whole * 1e7;
  if (whole >= 100) b[at++] = 0x30 + Math.floor(whole / 100);
  if (whole >= 10) b[at++] = 0x30 + (Math.floor(whole / 10) % 10);
  b[at++] = 0x30 + (whole % 10);
  b[at++] = 0x2e;
  for (let d = 1e6; d >= 1; d /= 10) {
    const q = Math.floor(frac / d);
    b[at++] = 0x30 + q;
    frac -= q * d;
  }
  b[start] = at - start - 1;
  return at;
}

function writeText(b: Buffer, at: number, s: string): number {
  b[at] = s.length;
  for (let i = 0; i < s.length; i++) b[at + 1 + i] = s.charCodeAt(i);
  return at + 1 + s.length;
}

// Ids are a few bytes: a loop costs less than a subarray and a set each.
function copy(src: Uint8Array, from: number, len: number, dst: Uint8Array, to: number) {
  for (let i = 0; i < len; i++) dst[to + i] = src[from + i]!;
}

class NotAscii extends Error {}
const notAscii = new NotAscii();
