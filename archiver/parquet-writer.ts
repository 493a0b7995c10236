/**
 * One day of positions from PostgreSQL to a Parquet file: COPY … TO STDOUT (binary) into plain
 * intermediate Parquet files (binary-export.ts), then DuckDB sorts them by vehicle and time into its
 * Parquet writer (zstd). DuckDB's writer was chosen over parquetjs-lite by `bun run bench history`
 * (see the README's figures): it is much faster and its files are smaller and quicker to read. The
 * binary export replaced a CSV one (PostgreSQL printing text, DuckDB parsing it): 1M rows went from
 * export to sorted file in 2.8 s against 3.6 s (median of 5, alternating, on a probe).
 */
import type { DuckDBConnection } from "@duckdb/node-api";
import { FILE_COLUMNS, sqlString, DAY_MS, dayOf, dayStartMs, partitionName, type Sql, type StorageMode } from "../lib/storage";
import { exportPlainParquet } from "./binary-export";

/** Parquet writer options (DuckDB COPY … TO): zstd, format V2 (delta encodings), row groups of ~1M rows. */
export const PARQUET_OPTIONS = "FORMAT parquet, COMPRESSION zstd, PARQUET_VERSION V2, ROW_GROUP_SIZE 1048576";

/** The rows of a UTC day (SQL conditions). */
export const dayConditions = (day: string): string[] => [
  `recorded_at >= '${day} 00:00:00+00'`,
  `recorded_at < '${dayOf(dayStartMs(day) + DAY_MS)} 00:00:00+00'`,
];

/**
 * Exports a day in `parts` page ranges of its partition at once (one connection each), in the order
 * the pages hold the rows, as plain Parquet files (binary-export.ts); plainToParquet sorts them.
 * Sorting there, not in PostgreSQL, halved the export (measured on 1M rows: 1.4–1.8 s in vehicle
 * ranges through the primary key against 0.8–0.9 s in page ranges, DuckDB's sort 0.3–0.4 s):
 * a scan in key order visits the heap at random, and DuckDB sorts on both cores.
 * A TimescaleDB day is exported in one part (its chunk is not a partition of that name).
 */
export async function exportDayParts(
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
  const ranges = Array.from({ length: n }, (_, i) =>
    n === 1 ? [] : [i > 0 ? `ctid >= ${bound(i)}` : "", i < n - 1 ? `ctid < ${bound(i + 1)}` : ""].filter(Boolean),
  );
  const from = n === 1 ? "positions" : partitionName(day);
  const counts = new Array<number>(n).fill(0);
  const report = () => onRows?.(counts.reduce((a, b) => a + b, 0));
  const files = ranges.map((_, i) => `${dir}/part-${i}.plain.parquet`);
  const rows = await Promise.all(
    files.map((file, i) =>
      exportPlainParquet(sql, from, [...dayConditions(day), ...ranges[i]!].join(" AND "), file, {
        onRows: (r) => ((counts[i] = r), report()),
      }),
    ),
  );
  return { files, rows: rows.reduce((a, b) => a + b, 0) };
}

/** The archive's Parquet file, sorted by vehicle and time, from the plain files of `exportDayParts`. */
export async function plainToParquet(conn: DuckDBConnection, files: readonly string[], parquetFile: string): Promise<void> {
  await conn.run(
    `COPY (SELECT * FROM read_parquet([${files.map(sqlString).join(", ")}]) ORDER BY vehicle_id, recorded_at) TO ${sqlString(parquetFile)} (${PARQUET_OPTIONS})`,
  );
}

/**
 * Converts CSV files of FILE_COLUMNS (the bench's writer comparison, test fixtures) into one zstd
 * Parquet file sorted by vehicle and time, as the archive's files are.
 */
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
