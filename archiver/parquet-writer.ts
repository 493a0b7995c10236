/**
 * One day of positions from PostgreSQL to a Parquet file: COPY … TO STDOUT (CSV, sorted by vehicle
 * and time) into a temporary file, then DuckDB's Parquet writer (zstd). DuckDB's writer was chosen
 * over parquetjs-lite by `bun run bench history` (see the README's figures): it is much faster and
 * its files are smaller and quicker to read.
 */
import type { DuckDBConnection } from "@duckdb/node-api";
import { FILE_SELECT, POSITION_COLUMNS, sqlString } from "../lib/archive-duckdb";
import type { Sql } from "../lib/pg";
import { DAY_MS, dayOf, dayStartMs } from "../lib/positions-db";

/** Parquet writer options (DuckDB COPY … TO): zstd, format V2 (delta encodings), row groups of ~1M rows. */
export const PARQUET_OPTIONS = "FORMAT parquet, COMPRESSION zstd, PARQUET_VERSION V2, ROW_GROUP_SIZE 1048576";

/**
 * Writes the rows of a day to `csvFile`, sorted by vehicle and time; `onRows` is called with the
 * running count every ~`every` rows. Resolves with the number of rows.
 */
export async function exportDayCsv(sql: Sql, day: string, csvFile: string, onRows?: (rows: number) => void, every = 250_000): Promise<number> {
  const from = `${day} 00:00:00+00`;
  const to = `${dayOf(dayStartMs(day) + DAY_MS)} 00:00:00+00`;
  const cols = POSITION_COLUMNS.map(([n]) => n).join(", ");
  const readable = await sql
    .unsafe(`COPY (SELECT ${cols} FROM positions WHERE recorded_at >= '${from}' AND recorded_at < '${to}' ORDER BY vehicle_id, recorded_at) TO STDOUT WITH (FORMAT csv)`)
    .readable();
  let rows = 0;
  let next = every;
  // Flowing mode into a buffered file sink, never back-pressured: postgres.js pauses its socket when
  // a COPY stream's buffer fills, and a pause at the very end left the connection stuck (seen with
  // 50,000 rows: the next query on that connection never completed).
  const sink = Bun.file(csvFile).writer({ highWaterMark: 1 << 20 });
  await new Promise<void>((resolve, reject) => {
    readable.on("data", (chunk: Buffer) => {
      for (let i = chunk.indexOf(10); i !== -1; i = chunk.indexOf(10, i + 1)) rows++;
      sink.write(chunk);
      if (rows >= next) {
        onRows?.(rows);
        next = rows + every;
      }
    });
    readable.once("end", () => resolve());
    readable.once("error", reject);
  });
  await sink.end();
  return rows;
}

/** Converts the CSV of `exportDayCsv` into a zstd Parquet file, keeping the row order. */
export async function csvToParquet(conn: DuckDBConnection, csvFile: string, parquetFile: string): Promise<void> {
  const columns = `{${POSITION_COLUMNS.map(([n, t]) => `'${n}': '${t}'`).join(", ")}}`;
  await conn.run(
    `COPY (SELECT ${FILE_SELECT} FROM read_csv(${sqlString(csvFile)}, header = false, auto_detect = false, columns = ${columns}, quote = '"', escape = '"'))
     TO ${sqlString(parquetFile)} (${PARQUET_OPTIONS})`,
  );
}

/** Rows of a Parquet file, as DuckDB reads them. */
export async function parquetRows(conn: DuckDBConnection, parquetFile: string): Promise<number> {
  const r = await conn.runAndReadAll(`SELECT count(*) FROM read_parquet(${sqlString(parquetFile)})`);
  return Number(r.getRows()[0]![0]);
}
