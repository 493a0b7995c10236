/**
 * One day of positions from PostgreSQL to a Parquet file: COPY … TO STDOUT (CSV, sorted by vehicle
 * and time) into a temporary file, then DuckDB's Parquet writer (zstd). DuckDB's writer was chosen
 * over parquetjs-lite by `bun run bench history` (see the README's figures): it is much faster and
 * its files are smaller and quicker to read.
 */
import type { DuckDBConnection } from "@duckdb/node-api";
import { EXPORT_SELECT, FILE_COLUMNS, sqlString } from "../lib/archive-duckdb";
import type { Sql } from "../lib/pg";
import { DAY_MS, dayOf, dayStartMs } from "../lib/positions-db";

/** Parquet writer options (DuckDB COPY … TO): zstd, format V2 (delta encodings), row groups of ~1M rows. */
export const PARQUET_OPTIONS = "FORMAT parquet, COMPRESSION zstd, PARQUET_VERSION V2, ROW_GROUP_SIZE 1048576";

/**
 * Writes the rows of a day to `csvFile` (the columns of the Parquet files: coordinates, speed,
 * heading and accuracy already scaled to integers), sorted by vehicle and time; `onRows` is called with the
 * running count every ~`every` rows. Resolves with the number of lines: the rows, unless a text field
 * holds a newline (for progress; the Parquet file says how many rows there are).
 */
export async function exportDayCsv(sql: Sql, day: string, csvFile: string, onRows?: (rows: number) => void, every = 250_000, range?: [string | null, string | null]): Promise<number> {
  const from = `${day} 00:00:00+00`;
  const to = `${dayOf(dayStartMs(day) + DAY_MS)} 00:00:00+00`;
  const lit = (v: string) => `'${v.replaceAll("'", "''")}'`;
  const vehicles = [range?.[0] != null ? `vehicle_id >= ${lit(range[0])}` : "", range?.[1] != null ? `vehicle_id < ${lit(range[1])}` : ""].filter(Boolean);
  const where = [`recorded_at >= '${from}'`, `recorded_at < '${to}'`, ...vehicles].join(" AND ");
  const readable = await sql
    .unsafe(`COPY (SELECT ${EXPORT_SELECT} FROM positions WHERE ${where} ORDER BY vehicle_id, recorded_at) TO STDOUT WITH (FORMAT csv)`)
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
  // postgres.js resumes its socket only from the stream's _read; a pause on the last chunks left the
  // connection deaf to the next query's answer (seen under load). Resume it once more.
  (readable as unknown as { _read?: () => void })._read?.();
  await sink.end();
  return rows;
}

/**
 * Exports a day in `parts` vehicle ranges at once (one connection each: PostgreSQL formats CSV on
 * one core per COPY), into files whose concatenation is sorted by vehicle and time. The ranges split
 * the day's vehicles (from the rollup) evenly.
 */
export async function exportDayCsvParts(sql: Sql, day: string, dir: string, parts: number, onRows?: (rows: number) => void): Promise<{ files: string[]; rows: number }> {
  const next = `${dayOf(dayStartMs(day) + DAY_MS)} 00:00:00+00`;
  const vehicles = (
    await sql.unsafe(`SELECT DISTINCT vehicle_id FROM positions_rollup WHERE minute >= '${day} 00:00:00+00' AND minute < '${next}' ORDER BY 1`)
  ).map((r) => r.vehicle_id as string);
  const n = Math.max(1, Math.min(parts, vehicles.length));
  // Bounds from the rollup; the first and last ranges are open, so a vehicle missing from it is still exported.
  const bounds: (string | null)[] = [null];
  for (let i = 1; i < n; i++) bounds.push(vehicles[Math.floor((i * vehicles.length) / n)]!);
  bounds.push(null);
  const counts = new Array<number>(n).fill(0);
  const report = () => onRows?.(counts.reduce((a, b) => a + b, 0));
  const files = bounds.slice(0, -1).map((_, i) => `${dir}/part-${i}.csv`);
  const rows = await Promise.all(
    files.map((file, i) => exportDayCsv(sql, day, file, (r) => ((counts[i] = r), report()), 250_000, [bounds[i]!, bounds[i + 1]!])),
  );
  return { files, rows: rows.reduce((a, b) => a + b, 0) };
}

/** Converts the CSV files of `exportDayCsv` (in order, FILE_COLUMNS) into one zstd Parquet file, keeping the row order. */
export async function csvToParquet(conn: DuckDBConnection, csvFile: string | string[], parquetFile: string): Promise<void> {
  const columns = `{${FILE_COLUMNS.map(([n, t]) => `'${n}': '${t}'`).join(", ")}}`;
  const files = Array.isArray(csvFile) ? `[${csvFile.map(sqlString).join(", ")}]` : sqlString(csvFile);
  await conn.run(
    `COPY (SELECT * FROM read_csv(${files}, header = false, auto_detect = false, columns = ${columns}, quote = '"', escape = '"'))
     TO ${sqlString(parquetFile)} (${PARQUET_OPTIONS})`,
  );
}

/** Rows of a Parquet file, as DuckDB reads them. */
export async function parquetRows(conn: DuckDBConnection, parquetFile: string): Promise<number> {
  const r = await conn.runAndReadAll(`SELECT count(*) FROM read_parquet(${sqlString(parquetFile)})`);
  return Number(r.getRows()[0]![0]);
}
