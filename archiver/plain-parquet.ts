/**
 * A minimal Parquet writer for the archiver's intermediate files: flat columns, one row group, one
 * uncompressed PLAIN data page per column. DuckDB reads such a file without parsing anything and
 * sorts it into the archive's real Parquet file (zstd, delta encodings), which DuckDB writes itself.
 * This writer exists because the other ways to feed DuckDB from JavaScript cost more (measured on
 * 1M rows: CSV, PostgreSQL printing and DuckDB parsing it, ~2 s of CPU; DuckDB's appender fed
 * JavaScript values, 2.4 s; parquetjs-lite, 23–41k rows/s).
 *
 * Format: https://github.com/apache/parquet-format (parquet.thrift), metadata in Thrift's compact
 * protocol. Only what these files need is written: no statistics, no dictionary, no compression.
 */

import { ProtoWriter, writeVarint } from "../lib/wire";

/** Physical types (parquet.thrift `Type`). */
export enum ParquetType {
  INT32 = 1,
  INT64 = 2,
  DOUBLE = 5,
  BYTE_ARRAY = 6,
}

/** What a column holds, beyond its physical type. */
export type ParquetLogical = "string" | "int16" | "timestamp_us_utc" | "none";

export interface PlainColumn {
  name: string;
  type: ParquetType;
  logical: ParquetLogical;
  /** PLAIN-encoded values of the rows that are not null (BYTE_ARRAY: u32 LE length, then the bytes). */
  values: Buffer;
  /** Set for a nullable column: 1 per row that has a value, 0 for null. */
  defined?: Uint8Array;
}

// Thrift compact protocol types.
const T_TRUE = 1;
const T_FALSE = 2;
const T_BYTE = 3;
const T_I32 = 5;
const T_I64 = 6;
const T_BINARY = 8;
const T_LIST = 9;
const T_STRUCT = 12;

/** Thrift compact protocol, written forward into the project's growable buffer (its varints are protobuf's). */
class ThriftWriter {
  private readonly out = new ProtoWriter();
  private last: number[] = [0];

  private put(b: number): void {
    this.out.ensure(1);
    this.out.byte(b);
  }

  private uvarint(v: number): void {
    this.out.ensure(10);
    this.out.varint(v);
  }

  private utf8(s: string): void {
    const n = Buffer.byteLength(s, "utf8");
    this.uvarint(n);
    this.out.ensure(n);
    this.out.pos += this.out.buf.write(s, this.out.pos, "utf8");
  }

  /** Zigzag varint of an integer below 2^52 in magnitude. */
  private zigzag(v: number): void {
    this.uvarint(v >= 0 ? v * 2 : -v * 2 - 1);
  }

  private header(id: number, type: number): void {
    const depth = this.last.length - 1;
    const delta = id - this.last[depth]!;
    if (delta > 0 && delta <= 15) this.put((delta << 4) | type);
    else {
      this.put(type);
      this.zigzag(id);
    }
    this.last[depth] = id;
  }

  i32(id: number, v: number): this {
    this.header(id, T_I32);
    this.zigzag(v);
    return this;
  }

  i64(id: number, v: number): this {
    this.header(id, T_I64);
    this.zigzag(v);
    return this;
  }

  byteField(id: number, v: number): this {
    this.header(id, T_BYTE);
    this.put(v & 0xff);
    return this;
  }

  bool(id: number, v: boolean): this {
    this.header(id, v ? T_TRUE : T_FALSE);
    return this;
  }

  string(id: number, s: string): this {
    this.header(id, T_BINARY);
    this.utf8(s);
    return this;
  }

  struct(id: number, body: (w: this) => void): this {
    this.header(id, T_STRUCT);
    this.begin();
    body(this);
    this.end();
    return this;
  }

  /** A list of structs. */
  structs<T>(id: number, items: readonly T[], body: (w: this, item: T) => void): this {
    this.listHeader(id, items.length, T_STRUCT);
    for (const item of items) {
      this.begin();
      body(this, item);
      this.end();
    }
    return this;
  }

  i32s(id: number, items: readonly number[]): this {
    this.listHeader(id, items.length, T_I32);
    for (const v of items) this.zigzag(v);
    return this;
  }

  strings(id: number, items: readonly string[]): this {
    this.listHeader(id, items.length, T_BINARY);
    for (const s of items) this.utf8(s);
    return this;
  }

  private listHeader(id: number, size: number, elem: number): void {
    this.header(id, T_LIST);
    if (size < 15) this.put((size << 4) | elem);
    else {
      this.put(0xf0 | elem);
      this.uvarint(size);
    }
  }

  /** Starts a struct written by the caller (the top-level one). */
  begin(): void {
    this.last.push(0);
  }

  end(): void {
    this.put(0);
    this.last.pop();
  }

  /** What was written, as a view of the buffer. */
  view(): Buffer {
    return this.out.buf.subarray(0, this.out.pos);
  }
}

const MAGIC = Buffer.from("PAR1", "latin1");
const PLAIN = 0;
const RLE = 3;

/**
 * Definition levels of a nullable column (max level 1) in the RLE/bit-packing hybrid, as runs
 * of equal values, after their u32 LE byte length (data page v1).
 */
function definitionLevels(defined: Uint8Array): Buffer {
  const runs: number[] = [];
  let i = 0;
  while (i < defined.length) {
    const v = defined[i]!;
    let j = i + 1;
    while (j < defined.length && defined[j] === v) j++;
    runs.push(j - i, v);
    i = j;
  }
  const out = Buffer.allocUnsafe(4 + runs.length * 6);
  let pos = 4;
  for (let r = 0; r < runs.length; r += 2) {
    pos = writeVarint(out, pos, runs[r]! * 2); // RLE run: count << 1, then the value in one byte (bit width 1)
    out[pos++] = runs[r + 1]!;
  }
  out.writeUInt32LE(pos - 4, 0);
  return out.subarray(0, pos);
}

function schemaElement(w: ThriftWriter, c: PlainColumn): void {
  w.i32(1, c.type);
  w.i32(3, c.defined ? 1 : 0); // OPTIONAL : REQUIRED
  w.string(4, c.name);
  if (c.logical === "string") {
    w.i32(6, 0); // converted type UTF8
    w.struct(10, (l) => l.struct(1, () => {})); // logical type STRING
  } else if (c.logical === "int16") {
    w.i32(6, 16); // INT_16
    w.struct(10, (l) => l.struct(10, (t) => t.byteField(1, 16).bool(2, true))); // INTEGER(16, signed)
  } else if (c.logical === "timestamp_us_utc") {
    w.i32(6, 10); // TIMESTAMP_MICROS
    w.struct(10, (l) => l.struct(8, (t) => t.bool(1, true).struct(2, (u) => u.struct(2, () => {})))); // TIMESTAMP(UTC, MICROS)
  }
}

/**
 * Writes `columns` (each holding `rows` rows) as one Parquet file: the chunks to write, in order.
 * Pages are limited by Parquet's i32 sizes: a column of more than 2 GiB is refused.
 */
export function plainParquet(columns: readonly PlainColumn[], rows: number): Buffer[] {
  const parts: Buffer[] = [MAGIC];
  let offset = MAGIC.length;
  const chunks: { column: PlainColumn; offset: number; size: number; values: number }[] = [];
  for (const c of columns) {
    const levels = c.defined ? definitionLevels(c.defined) : undefined;
    if (c.defined && c.defined.length !== rows)
      throw new Error(`column ${c.name} has ${c.defined.length} definition levels for ${rows} rows`);
    const pageSize = (levels?.length ?? 0) + c.values.length;
    if (pageSize > 0x7fffffff) throw new Error(`column ${c.name} is too large for one Parquet page (${pageSize} bytes)`);
    const header = new ThriftWriter();
    header.begin();
    header
      .i32(1, 0) // DATA_PAGE
      .i32(2, pageSize)
      .i32(3, pageSize)
      .struct(5, (d) => d.i32(1, rows).i32(2, PLAIN).i32(3, RLE).i32(4, RLE));
    header.end();
    const h = header.view();
    chunks.push({ column: c, offset, size: h.length + pageSize, values: rows });
    parts.push(Buffer.from(h));
    if (levels) parts.push(levels);
    parts.push(c.values);
    offset += h.length + pageSize;
  }
  const meta = new ThriftWriter();
  meta.begin();
  meta.i32(1, 1); // version
  meta.structs(2, [undefined, ...columns], (w, c) => {
    if (!c) {
      w.string(4, "schema");
      w.i32(5, columns.length);
      return;
    }
    schemaElement(w, c);
  });
  meta.i64(3, rows);
  meta.structs(4, [chunks], (w, list) => {
    w.structs(1, list, (cc, k) => {
      cc.i64(2, k.offset);
      cc.struct(3, (m) => {
        m.i32(1, k.column.type)
          .i32s(2, k.column.defined ? [PLAIN, RLE] : [PLAIN])
          .strings(3, [k.column.name])
          .i32(4, 0) // UNCOMPRESSED
          .i64(5, k.values)
          .i64(6, k.size)
          .i64(7, k.size)
          .i64(9, k.offset);
      });
    });
    w.i64(
      2,
      list.reduce((a, k) => a + k.size, 0),
    );
    w.i64(3, rows);
  });
  meta.string(6, "fleet archiver (plain intermediate)");
  meta.end();
  const m = meta.view();
  const tail = Buffer.allocUnsafe(8);
  tail.writeUInt32LE(m.length, 0);
  MAGIC.copy(tail, 4);
  parts.push(Buffer.from(m), tail);
  return parts;
}
