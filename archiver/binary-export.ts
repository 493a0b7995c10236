/**
 * One page range of a day from PostgreSQL to a plain intermediate Parquet file: COPY … TO STDOUT
 * in binary, each row's fields copied as they come into the columns of the archive's files
 * (FILE_COLUMNS: coordinates, speed, heading and accuracy scaled to integers here), then written
 * by plain-parquet.ts. No text is printed or parsed on either side: PostgreSQL sends its values'
 * own bytes, and DuckDB reads the file's without conversion before it sorts and compresses them.
 */
import { binaryCopyHeaderEnd, PG_EPOCH_US, type Sql } from "../lib/storage";
import { ProtoWriter } from "../lib/wire";
import { ParquetType, plainParquet, type PlainColumn } from "./plain-parquet";

/** The columns read, in the order of FILE_COLUMNS (ExportColumns.row reads their fields in it). */
const SELECT = "vehicle_id, recorded_at, seq, fleet_id, lat, lon, speed, heading, accuracy, order_id, status, received_at";
const FIELDS = 12;

/** A big-endian i32 (the binary COPY format's field lengths). */
const i32 = (b: Buffer, o: number): number => (b[o]! << 24) | (b[o + 1]! << 16) | (b[o + 2]! << 8) | b[o + 3]!;

/** round() as PostgreSQL does it for float8 (rint: halves to even), so both exports scale alike. */
const roundInt = (x: number): number => {
  const r = Math.round(x);
  return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r;
};

/** Typed arrays are in the host's byte order, Parquet's values little-endian: the two must agree. */
const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

// Big-endian floats read through the bytes of a scratch value (a Buffer read per field cost more).
const f64 = new Float64Array(1);
const f64Bytes = new Uint8Array(f64.buffer);
const f32 = new Float32Array(1);
const f32Bytes = new Uint8Array(f32.buffer);

const grow = <T extends Int32Array | Uint8Array>(a: T, size: number): T => {
  const next = new (a.constructor as new (n: number) => T)(size);
  next.set(a);
  return next;
};

/** Rows of one export, as columns: fixed-width ones in typed arrays, text as PLAIN byte arrays. */
class ExportColumns {
  rows = 0;
  private capacity = 1 << 16;
  // Text as PLAIN byte arrays (u32 LE length, then the bytes).
  readonly vehicle = new ProtoWriter();
  readonly fleet = new ProtoWriter();
  readonly order = new ProtoWriter();
  /** µs since 1970 as (low, high) i32 pairs, i.e. little-endian i64. */
  private recorded = new Int32Array(2 * this.capacity);
  /** The big-endian bytes of PostgreSQL's int8, reversed. */
  private seq = new Uint8Array(8 * this.capacity);
  private lat = new Int32Array(this.capacity);
  private lon = new Int32Array(this.capacity);
  private speed = new Int32Array(this.capacity);
  private heading = new Int32Array(this.capacity);
  private accuracy = new Int32Array(this.capacity);
  private status = new Int32Array(this.capacity);
  /** received_at of the rows that have one, as recorded. */
  private received = new Int32Array(2 * this.capacity);
  private receivedCount = 0;
  private defined = new Uint8Array(this.capacity);

  constructor() {
    if (!LITTLE_ENDIAN) throw new Error("the archiver's export needs a little-endian machine");
  }

  private growAll(): void {
    const c = (this.capacity *= 2);
    this.recorded = grow(this.recorded, 2 * c);
    this.seq = grow(this.seq, 8 * c);
    this.lat = grow(this.lat, c);
    this.lon = grow(this.lon, c);
    this.speed = grow(this.speed, c);
    this.heading = grow(this.heading, c);
    this.accuracy = grow(this.accuracy, c);
    this.status = grow(this.status, c);
    this.received = grow(this.received, 2 * c);
    this.defined = grow(this.defined, c);
  }

  /** Reads one row (field count, then each field's i32 length and bytes) at `o`; returns the offset after it. */
  row(b: Buffer, o: number): number {
    if (((b[o]! << 8) | b[o + 1]!) !== FIELDS) throw new Error(`binary COPY row has ${b.readInt16BE(o)} fields, expected ${FIELDS}`);
    if (this.rows === this.capacity) this.growAll();
    const r = this.rows;
    o += 2;
    o = text(this.vehicle, b, o);
    if (i32(b, o) !== 8) throw new Error("recorded_at is null or not a timestamptz");
    usSince1970(b, o + 4, this.recorded, 2 * r);
    o += 12;
    if (i32(b, o) !== 8) throw new Error("seq is not a bigint");
    const seq = this.seq;
    for (let i = 0, at = 8 * r; i < 8; i++) seq[at + i] = b[o + 11 - i]!;
    o += 12;
    o = text(this.fleet, b, o);
    this.lat[r] = roundInt(float8(b, o) * 1e7);
    this.lon[r] = roundInt(float8(b, o + 12) * 1e7);
    o += 24;
    this.speed[r] = roundInt(float4(b, o) * 100);
    this.heading[r] = roundInt(float4(b, o + 8) * 100);
    this.accuracy[r] = roundInt(float4(b, o + 16) * 100);
    o += 24;
    o = text(this.order, b, o);
    if (i32(b, o) !== 2) throw new Error("status is not a smallint");
    this.status[r] = ((b[o + 4]! << 24) >> 16) | b[o + 5]!; // sign-extended i16 (INT_16 in the file)
    o += 6;
    const len = i32(b, o);
    if (len === 8) {
      this.defined[r] = 1;
      usSince1970(b, o + 4, this.received, 2 * this.receivedCount++);
      o += 12;
    } else if (len === -1) {
      this.defined[r] = 0;
      o += 4;
    } else throw new Error("received_at is not a timestamptz");
    this.rows++;
    return o;
  }

  columns(): PlainColumn[] {
    const n = this.rows;
    const bytes = (a: Int32Array | Uint8Array, count: number) => Buffer.from(a.buffer, a.byteOffset, count * a.BYTES_PER_ELEMENT);
    const ints = (name: string, a: Int32Array, logical: PlainColumn["logical"] = "none"): PlainColumn => ({
      name,
      type: ParquetType.INT32,
      logical,
      values: bytes(a, n),
    });
    const text = (name: string, v: ProtoWriter): PlainColumn => ({
      name,
      type: ParquetType.BYTE_ARRAY,
      logical: "string",
      values: v.buf.subarray(0, v.pos),
    });
    return [
      text("vehicle_id", this.vehicle),
      { name: "recorded_at", type: ParquetType.INT64, logical: "timestamp_us_utc", values: bytes(this.recorded, 2 * n) },
      { name: "seq", type: ParquetType.INT64, logical: "none", values: bytes(this.seq, 8 * n) },
      text("fleet_id", this.fleet),
      ints("lat_e7", this.lat),
      ints("lon_e7", this.lon),
      ints("speed_cm_s", this.speed),
      ints("heading_cdeg", this.heading),
      ints("accuracy_cm", this.accuracy),
      text("order_id", this.order),
      ints("status", this.status, "int16"),
      {
        name: "received_at",
        type: ParquetType.INT64,
        logical: "timestamp_us_utc",
        values: bytes(this.received, 2 * this.receivedCount),
        defined: this.defined.subarray(0, n),
      },
    ];
  }
}

/** A text field at `o` appended to `v` as a PLAIN byte array; returns the offset after it. */
function text(v: ProtoWriter, b: Buffer, o: number): number {
  const len = i32(b, o);
  if (len < 0) throw new Error("a text column of the positions table is null");
  v.ensure(4 + len);
  const out = v.buf;
  let at = v.pos;
  out[at] = len & 0xff;
  out[at + 1] = (len >>> 8) & 0xff;
  out[at + 2] = (len >>> 16) & 0xff;
  out[at + 3] = len >>> 24;
  at += 4;
  o += 4;
  // Ids are short: a loop costs less than a native copy call.
  if (len <= 64) for (let i = 0; i < len; i++) out[at + i] = b[o + i]!;
  else b.copy(out, at, o, o + len);
  v.pos = at + len;
  return o + len;
}

/** PostgreSQL's int8 µs since 2000 at `o`, as (low, high) i32 of µs since 1970 at `at`. */
function usSince1970(b: Buffer, o: number, out: Int32Array, at: number): void {
  // As numbers: exact for timestamps within ±285 years of 1970 (|µs| < 2^53).
  const us = i32(b, o) * 0x1_0000_0000 + (i32(b, o + 4) >>> 0) + PG_EPOCH_US;
  const hi = Math.floor(us / 0x1_0000_0000);
  out[at] = us - hi * 0x1_0000_0000; // wraps to the i32 of the same bits
  out[at + 1] = hi;
}

/** A float8 field (its length checked) at `o`. */
function float8(b: Buffer, o: number): number {
  if (i32(b, o) !== 8) throw new Error("a float8 column is null or of another type");
  for (let i = 0; i < 8; i++) f64Bytes[i] = b[o + 11 - i]!;
  return f64[0]!;
}

/** A float4 field (its length checked) at `o`, widened to float8 as PostgreSQL's `::float8` does. */
function float4(b: Buffer, o: number): number {
  if (i32(b, o) !== 4) throw new Error("a float4 column is null or of another type");
  for (let i = 0; i < 4; i++) f32Bytes[i] = b[o + 7 - i]!;
  return f32[0]!;
}

/**
 * Reads a binary COPY stream of the export's columns, chunk by chunk. PostgreSQL sends the header
 * with the first row, then a CopyData message per row and one for the trailer (-1); the stream is
 * still read as bytes, so a row split over chunks is carried to the next one.
 */
export class PositionCopyReader {
  readonly columns = new ExportColumns();
  /** The trailer was read. */
  ended = false;
  private carry: Buffer | undefined;
  private started = false;

  get rows(): number {
    return this.columns.rows;
  }

  /** Bytes read but not yet part of a whole row (the stream must end with none). */
  get pending(): number {
    return this.carry?.length ?? 0;
  }

  push(chunk: Buffer): void {
    if (this.ended) throw new Error("binary COPY stream continues after its trailer");
    const b = this.carry ? Buffer.concat([this.carry, chunk]) : chunk;
    this.carry = undefined;
    let o = 0;
    if (!this.started) {
      const start = binaryCopyHeaderEnd(b);
      if (start === undefined) {
        this.carry = b;
        return;
      }
      o = start;
      this.started = true;
    }
    while (o + 2 <= b.length) {
      if (b.readInt16BE(o) === -1) {
        this.ended = true;
        if (o + 2 < b.length) throw new Error("binary COPY stream continues after its trailer");
        return;
      }
      if (rowEnd(b, o) < 0) break;
      o = this.columns.row(b, o);
    }
    if (o < b.length) this.carry = b.subarray(o);
  }
}

/**
 * Writes the rows of `from` matching `conditions` to `file` as plain Parquet (the columns of the
 * archive's files). `onRows` is called with the running count every ~`every` rows. Resolves with
 * the number of rows.
 */
export async function exportPlainParquet(
  sql: Sql,
  from: string,
  conditions: string,
  file: string,
  { onRows, every = 250_000 }: { onRows?: (rows: number) => void; every?: number } = {},
): Promise<number> {
  const readable = await sql.unsafe(`COPY (SELECT ${SELECT} FROM ${from} WHERE ${conditions}) TO STDOUT WITH (FORMAT binary)`).readable();
  const reader = new PositionCopyReader();
  let next = every;
  let failure: Error | undefined;
  // Flowing mode, never back-pressured: postgres.js pauses its socket when a COPY stream's buffer
  // fills, and a pause at the very end left the connection stuck (the next query never completed).
  await new Promise<void>((resolve, reject) => {
    readable.on("data", (chunk: Buffer) => {
      if (failure) return;
      try {
        reader.push(chunk);
      } catch (err) {
        // Keep reading to the end (the connection must finish the COPY), then fail.
        failure = err as Error;
      }
      if (reader.rows >= next) {
        onRows?.(reader.rows);
        next = reader.rows + every;
      }
    });
    readable.once("end", () => resolve());
    readable.once("error", reject);
  });
  // postgres.js resumes its socket only from the stream's _read; a pause on the last chunks left the
  // connection deaf to the next query's answer (seen under load). Resume it once more.
  (readable as unknown as { _read?: () => void })._read?.();
  if (failure) throw failure;
  if (!reader.ended || reader.pending > 0) throw new Error("binary COPY stream ended early");
  const sink = Bun.file(file).writer();
  for (const part of plainParquet(reader.columns.columns(), reader.rows)) sink.write(part);
  await sink.end();
  return reader.rows;
}

/** Where the row at `o` ends, or -1 when `b` does not hold all of it. */
function rowEnd(b: Buffer, o: number): number {
  const count = b.readInt16BE(o);
  o += 2;
  for (let i = 0; i < count; i++) {
    if (o + 4 > b.length) return -1;
    const len = i32(b, o);
    o += 4 + Math.max(len, 0);
  }
  return o <= b.length ? o : -1;
}
