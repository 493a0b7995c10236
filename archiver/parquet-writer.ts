/**
 * One day of positions from PostgreSQL to a Parquet file: COPY … TO STDOUT (CSV) into temporary
 * files, then DuckDB sorts them by vehicle and time into its Parquet writer (zstd). DuckDB's writer was chosen
 * over parquetjs-lite by `bun run bench history` (see the README's figures): it is much faster and
 * its files are smaller and quicker to read.
 */
import type { DuckDBConnection } from "@duckdb/node-api";
import { EXPORT_SELECT, FILE_COLUMNS, sqlString } from "../lib/archive-duckdb";
import type { Sql } from "../lib/pg";
import { DAY_MS, dayOf, dayStartMs, partitionName, type StorageMode } from "../lib/positions-db";

/** Parquet writer options (DuckDB COPY … TO): zstd, format V2 (delta encodings), row groups of ~1M rows. */
export const PARQUET_OPTIONS = "FORMAT parquet, COMPRESSION zstd, PARQUET_VERSION V2, ROW_GROUP_SIZE 1048576";

/** Bytes of CSV gathered before each write to the export's file. */
const EXPORT_CHUNK_BYTES = 1 << 20;

/**
 * Writes rows of a day to `csvFile` (the columns of the Parquet files: coordinates, speed, heading
 * and accuracy already scaled to integers), in the order PostgreSQL reads them, or sorted by vehicle
 * and time with `sorted`; `where` narrows them further (a page range). `onRows` is called with the
 * running count every ~`every` rows. Resolves with the number of rows PostgreSQL sent (for progress;
 * the Parquet file says how many rows there are).
 */
export async function exportDayCsv(
  sql: Sql,
  day: string,
  csvFile: string,
  { onRows, every = 250_000, where, sorted = false, from = "positions" }: { onRows?: (rows: number) => void; every?: number; where?: string; sorted?: boolean; from?: string } = {},
): Promise<number> {
  const start = `${day} 00:00:00+00`;
  const end = `${dayOf(dayStartMs(day) + DAY_MS)} 00:00:00+00`;
  const conditions = [`recorded_at >= '${start}'`, `recorded_at < '${end}'`, ...(where ? [where] : [])].join(" AND ");
  const readable = await sql
    .unsafe(`COPY (SELECT ${EXPORT_SELECT} FROM ${from} WHERE ${conditions}${sorted ? " ORDER BY vehicle_id, recorded_at" : ""}) TO STDOUT WITH (FORMAT csv)`)
    .readable();
  let rows = 0;
  let next = every;
  // Flowing mode into a buffered file sink, never back-pressured: postgres.js pauses its socket when
  // a COPY stream's buffer fills, and a pause at the very end left the connection stuck (seen with
  // 50,000 rows: the next query on that connection never completed).
  const sink = Bun.file(csvFile).writer({ highWaterMark: 1 << 20 });
  // PostgreSQL sends a CopyData message per row: they are gathered here and written a megabyte at a
  // time, since a sink write per row was most of the archiver's own CPU in the export (measured on
  // 1M rows in two parts: 0.94–1.43 s of CPU against 0.73 s).
  let out = Buffer.allocUnsafe(EXPORT_CHUNK_BYTES);
  let filled = 0;
  const flush = () => {
    if (filled === 0) return;
    sink.write(out.subarray(0, filled));
    out = Buffer.allocUnsafe(EXPORT_CHUNK_BYTES);
    filled = 0;
  };
  await new Promise<void>((resolve, reject) => {
    readable.on("data", (chunk: Buffer) => {
      // PostgreSQL sends each row in a CopyData message of its own, ending in a newline.
      if (chunk[chunk.length - 1] === 10) rows++;
      if (filled + chunk.length > out.length) {
        flush();
        if (chunk.length > out.length) {
          sink.write(chunk);
          return;
        }
      }
      filled += chunk.copy(out, filled);
      if (rows >= next) {
        onRows?.(rows);
        next = rows + every;
      }
    });
    readable.once("end", () => resolve());
    readable.once("error", reject);
  });
  flush();
  // postgres.js resumes its socket only from the stream's _read; a pause on the last chunks left the
  // connection deaf to the next query's answer (seen under load). Resume it once more.
  (readable as unknown as { _read?: () => void })._read?.();
  await sink.end();
  return rows;
}

/**
 * Exports a day in `parts` page ranges of its partition at once (one connection each: PostgreSQL
 * formats CSV on one core per COPY), in the order the pages hold the rows; csvToParquet sorts them.
 * Sorting there, not in PostgreSQL, halved the export (measured on 1M rows: 1.4–1.8 s in vehicle
 * ranges through the primary key against 0.8–0.9 s in page ranges, DuckDB's sort 0.3–0.4 s):
 * a scan in key order visits the heap at random, and DuckDB sorts on both cores.
 * A TimescaleDB day is exported in one part (its chunk is not a partition of that name).
 */
export async function exportDayCsvParts(
  sql: Sql,
  mode: StorageMode,
  day: string,
  dir: string,
  parts: number,
  onRows?: (rows: number) => void,
): Promise<{ files: string[]; rows: number }> {
  let pages = 0;
  if (mode === "plain" && parts > 1) {
    const [r] = await sql.unsafe(`SELECT (pg_relation_size('${partitionName(day)}') / current_setting('block_size')::int)::int8 AS pages`);
    pages = Number(r!.pages);
  }
  const n = Math.max(1, Math.min(parts, pages));
  // Page bounds; the first range starts at page 0 and the last is open, so rows on pages added since are still exported.
  const bound = (i: number) => `'(${Math.floor((pages * i) / n)},0)'::tid`;
  const ranges = Array.from({ length: n }, (_, i) => (n === 1 ? undefined : [i > 0 ? `ctid >= ${bound(i)}` : "", i < n - 1 ? `ctid < ${bound(i + 1)}` : ""].filter(Boolean).join(" AND ")));
  const from = n === 1 ? "positions" : partitionName(day);
  const counts = new Array<number>(n).fill(0);
  const report = () => onRows?.(counts.reduce((a, b) => a + b, 0));
  const files = ranges.map((_, i) => `${dir}/part-${i}.csv`);
  const rows = await Promise.all(
    files.map((file, i) => exportDayCsv(sql, day, file, { from, where: ranges[i], onRows: (r) => ((counts[i] = r), report()) })),
  );
  return { files, rows: rows.reduce((a, b) => a + b, 0) };
}

/** Converts the CSV files of `exportDayCsv` (FILE_COLUMNS) into one zstd Parquet file sorted by vehicle and time. */
export async function csvToParquet(conn: DuckDBConnection, csvFile: string | string[], parquetFile: string): Promise<void> {
  const columns = `{${FILE_COLUMNS.map(([n, t]) => `'${n}': '${t}'`).join(", ")}}`;
  const files = Array.isArray(csvFile) ? `[${csvFile.map(sqlString).join(", ")}]` : sqlString(csvFile);
  await conn.run(
    `COPY (SELECT * FROM read_csv(${files}, header = false, auto_detect = false, columns = ${columns}, quote = '"', escape = '"') ORDER BY vehicle_id, recorded_at)
     TO ${sqlString(parquetFile)} (${PARQUET_OPTIONS})`,
  );
}

/** Rows of a Parquet file, as DuckDB reads them. */
export async function parquetRows(conn: DuckDBConnection, parquetFile: string): Promise<number> {
  const r = await conn.runAndReadAll(`SELECT count(*) FROM read_parquet(${sqlString(parquetFile)})`);
  return Number(r.getRows()[0]![0]);
}
