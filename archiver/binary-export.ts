/**
 * One page range of a day from PostgreSQL to a plain intermediate Parquet file: COPY … TO STDOUT
 * in binary, each row's fields copied as they come into the columns of the archive's files
 * (FILE_COLUMNS: coordinates, speed, heading and accuracy scaled to integers here), then written
 * by plain-parquet.ts. No text is printed or parsed on either side: PostgreSQL sends its values'
 * own bytes, and DuckDB reads the file's without conversion before it sorts and compresses them.
 */
import type { Sql } from "../lib/pg";
import { ParquetType, plainParquet, type PlainColumn } from "./plain-parquet";

/** PostgreSQL's timestamps count µs from 2000-01-01; the files' from 1970-01-01. */
const PG_EPOCH_US = 946_684_800_000_000;

/** The columns read, in the order of FILE_COLUMNS, each with how its binary field is stored. */
const SELECT = "vehicle_id, recorded_at, seq, fleet_id, lat, lon, speed, heading, accuracy, order_id, status, received_at";
const FIELDS = 12;

/** A growable buffer of PLAIN-encoded values. */
class Values {
  buf: Buffer;
  pos = 0;
  constructor(bytes: number) {
    this.buf = Buffer.allocUnsafe(bytes);
  }
  ensure(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    const next = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.pos + n));
    this.buf.copy(next, 0, 0, this.pos);
    this.buf = next;
  }
  bytes(): Buffer {
    return this.buf.subarray(0, this.pos);
  }
}

/** A big-endian i32 (the binary COPY format's field lengths). */
const i32 = (b: Buffer, o: number): number => (b[o]! << 24) | (b[o + 1]! << 16) | (b[o + 2]! << 8) | b[o + 3]!;

/** round() as PostgreSQL does it for float8 (rint: halves to even), so both exports scale alike. */
const roundInt = (x: number): number => {
  const r = Math.round(x);
  return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r;
};

/** Rows of one export, as columns. */
class ExportColumns {
  rows = 0;
  readonly vehicle = new Values(1 << 20);
  readonly recorded = new Values(1 << 20);
  readonly seq = new Values(1 << 20);
  readonly fleet = new Values(1 << 20);
  readonly lat = new Values(1 << 19);
  readonly lon = new Values(1 << 19);
  readonly speed = new Values(1 << 19);
  readonly heading = new Values(1 << 19);
  readonly accuracy = new Values(1 << 19);
  readonly order = new Values(1 << 19);
  readonly status = new Values(1 << 19);
  readonly received = new Values(1 << 20);
  defined = new Uint8Array(1 << 16);

  /** Reads one row (field count, then each field's i32 length and bytes) at `o`; returns the offset after it. */
  row(b: Buffer, o: number): number {
    const count = b.readInt16BE(o);
    if (count !== FIELDS) throw new Error(`binary COPY row has ${count} fields, expected ${FIELDS}`);
    o += 2;
    o = this.text(this.vehicle, b, o);
    o = this.timestamp(this.recorded, b, o, true);
    o = this.int8(this.seq, b, o);
    o = this.text(this.fleet, b, o);
    o = this.scaled(this.lat, b, o, 8, 1e7);
    o = this.scaled(this.lon, b, o, 8, 1e7);
    o = this.scaled(this.speed, b, o, 4, 100);
    o = this.scaled(this.heading, b, o, 4, 100);
    o = this.scaled(this.accuracy, b, o, 4, 100);
    o = this.text(this.order, b, o);
    // smallint, as INT32 (the file's INT_16 logical type says SMALLINT).
    if (i32(b, o) !== 2) throw new Error("status is not a smallint");
    this.status.ensure(4);
    this.status.pos = this.status.buf.writeInt32LE(b.readInt16BE(o + 4), this.status.pos);
    o += 6;
    o = this.timestamp(this.received, b, o, false);
    this.rows++;
    return o;
  }

  private text(v: Values, b: Buffer, o: number): number {
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

  private int8(v: Values, b: Buffer, o: number): number {
    if (i32(b, o) !== 8) throw new Error("seq is not a bigint");
    v.ensure(8);
    const out = v.buf;
    const at = v.pos;
    for (let i = 0; i < 8; i++) out[at + i] = b[o + 11 - i]!;
    v.pos += 8;
    return o + 12;
  }

  private timestamp(v: Values, b: Buffer, o: number, required: boolean): number {
    const len = i32(b, o);
    if (len < 0) {
      if (required) throw new Error("recorded_at is null");
      this.define(0);
      return o + 4;
    }
    if (len !== 8) throw new Error("not a timestamptz");
    if (!required) this.define(1);
    v.ensure(8);
    // In two halves, as numbers: exact for timestamps within ±285 years of 1970 (|µs| < 2^53).
    const us = i32(b, o + 4) * 0x1_0000_0000 + (i32(b, o + 8) >>> 0) + PG_EPOCH_US;
    const hi = Math.floor(us / 0x1_0000_0000);
    v.buf.writeUInt32LE(us - hi * 0x1_0000_0000, v.pos);
    v.buf.writeInt32LE(hi, v.pos + 4);
    v.pos += 8;
    return o + 12;
  }

  private scaled(v: Values, b: Buffer, o: number, size: 4 | 8, scale: number): number {
    if (i32(b, o) !== size) throw new Error("a coordinate column is null or of another type");
    const x = size === 8 ? b.readDoubleBE(o + 4) : b.readFloatBE(o + 4);
    v.ensure(4);
    v.pos = v.buf.writeInt32LE(roundInt(x * scale), v.pos);
    return o + 4 + size;
  }

  private define(d: number): void {
    if (this.rows >= this.defined.length) {
      const next = new Uint8Array(this.defined.length * 2);
      next.set(this.defined);
      this.defined = next;
    }
    this.defined[this.rows] = d;
  }

  columns(): PlainColumn[] {
    const c = (name: string, type: ParquetType, logical: PlainColumn["logical"], v: Values): PlainColumn => ({ name, type, logical, values: v.bytes() });
    return [
      c("vehicle_id", ParquetType.BYTE_ARRAY, "string", this.vehicle),
      c("recorded_at", ParquetType.INT64, "timestamp_us_utc", this.recorded),
      c("seq", ParquetType.INT64, "none", this.seq),
      c("fleet_id", ParquetType.BYTE_ARRAY, "string", this.fleet),
      c("lat_e7", ParquetType.INT32, "none", this.lat),
      c("lon_e7", ParquetType.INT32, "none", this.lon),
      c("speed_cm_s", ParquetType.INT32, "none", this.speed),
      c("heading_cdeg", ParquetType.INT32, "none", this.heading),
      c("accuracy_cm", ParquetType.INT32, "none", this.accuracy),
      c("order_id", ParquetType.BYTE_ARRAY, "string", this.order),
      c("status", ParquetType.INT32, "int16", this.status),
      { ...c("received_at", ParquetType.INT64, "timestamp_us_utc", this.received), defined: this.defined.subarray(0, this.rows) },
    ];
  }
}

const SIGNATURE = Buffer.from("PGCOPY\n\xff\r\n\0", "latin1");

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
      if (b.length >= 11 && !b.subarray(0, 11).equals(SIGNATURE)) throw new Error("not a binary COPY stream");
      if (b.length < 19 || b.length < 19 + b.readInt32BE(15)) {
        this.carry = b;
        return;
      }
      o = 19 + b.readInt32BE(15);
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
    o += 4 + (len > 0 ? len : 0);
  }
  return o <= b.length ? o : -1;
}
