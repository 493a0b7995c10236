/**
 * The Parquet writer comparison of `bun run bench history`: the same rows written by DuckDB's writer
 * (what the archiver uses: zstd, format V2) and by parquetjs-lite (pure JavaScript; it has no zstd,
 * so its best codec here, gzip), then read back by DuckDB. Same columns for both (the scaled integers
 * of lib/storage/archive-duckdb.ts).
 */
import { statSync } from "node:fs";
import { join } from "node:path";
import type { DuckDBConnection } from "@duckdb/node-api";
import { EXPORT_SELECT, sqlString, copyOutToBuffer, type Sql } from "../lib/storage";
import { csvToParquet, dayConditions } from "../archiver/parquet-writer";

export interface WriterFigures {
  rows: number;
  rows_per_s: number;
  bytes_per_point: number;
  duckdb_scan_ms: number;
}

/** Full scan with DuckDB (best of 3): count and averages of every numeric column. */
async function scanMs(conn: DuckDBConnection, file: string): Promise<number> {
  let best = Infinity;
  for (let i = 0; i < 3; i++) {
    const t = performance.now();
    await conn.runAndReadAll(
      `SELECT count(*), count(DISTINCT vehicle_id), min(recorded_at), avg(lat_e7), avg(lon_e7), avg(speed_cm_s), avg(heading_cdeg) FROM read_parquet(${sqlString(file)})`,
    );
    best = Math.min(best, performance.now() - t);
  }
  return best;
}

/**
 * The rows of a day as CSV of the Parquet files' columns, sorted by vehicle and time: the input both
 * writers are given. Returns the rows.
 */
export async function exportSortedDayCsv(sql: Sql, day: string, csvFile: string): Promise<number> {
  const csv = await copyOutToBuffer(
    sql,
    `COPY (SELECT ${EXPORT_SELECT} FROM positions WHERE ${dayConditions(day).join(" AND ")} ORDER BY vehicle_id, recorded_at) TO STDOUT WITH (FORMAT csv)`,
  );
  await Bun.write(csvFile, csv);
  // A row per line: the simulated day's text holds no newline.
  let rows = 0;
  for (let i = csv.indexOf(10); i !== -1; i = csv.indexOf(10, i + 1)) rows++;
  return rows;
}

/** DuckDB: from the same CSV as parquetjs-lite (the archiver gives DuckDB plain Parquet instead, which it reads faster). Timed: the conversion (the export is the same for both). */
export async function duckdbWriter(conn: DuckDBConnection, csv: string, dir: string, rows: number): Promise<WriterFigures> {
  const out = join(dir, "duckdb.parquet");
  const t = performance.now();
  await csvToParquet(conn, csv, out);
  const s = (performance.now() - t) / 1000;
  return { rows, rows_per_s: Math.round(rows / s), bytes_per_point: statSync(out).size / rows, duckdb_scan_ms: await scanMs(conn, out) };
}

/** parquetjs-lite: row by row from the same CSV lines (parsing included, as a real archiver would). */
export async function parquetjsWriter(conn: DuckDBConnection, csv: string, dir: string, rows: number): Promise<WriterFigures> {
  // @ts-expect-error parquetjs-lite ships no types
  const parquet = (await import("parquetjs-lite")).default;
  const c = { compression: "GZIP" };
  const schema = new parquet.ParquetSchema({
    vehicle_id: { type: "UTF8", ...c },
    recorded_at: { type: "TIMESTAMP_MICROS", ...c },
    seq: { type: "INT64", ...c },
    fleet_id: { type: "UTF8", ...c },
    lat_e7: { type: "INT32", ...c },
    lon_e7: { type: "INT32", ...c },
    speed_cm_s: { type: "INT32", ...c },
    heading_cdeg: { type: "INT32", ...c },
    accuracy_cm: { type: "INT32", ...c },
    order_id: { type: "UTF8", ...c },
    status: { type: "INT32", ...c },
    received_at: { type: "TIMESTAMP_MICROS", optional: true, ...c },
  });
  const out = join(dir, "parquetjs.parquet");
  const text = await Bun.file(csv).text();
  const t = performance.now();
  const writer = await parquet.ParquetWriter.openFile(schema, out, { rowGroupSize: 65536 });
  let start = 0;
  for (;;) {
    const nl = text.indexOf("\n", start);
    if (nl < 0) break;
    const f = text.slice(start, nl).split(",");
    start = nl + 1;
    await writer.appendRow({
      vehicle_id: f[0],
      recorded_at: new Date(f[1]!.replace(" ", "T").replace(/\+00$/, "Z")),
      seq: Number(f[2]),
      fleet_id: f[3]!.replaceAll('"', ""),
      lat_e7: Number(f[4]),
      lon_e7: Number(f[5]),
      speed_cm_s: Number(f[6]),
      heading_cdeg: Number(f[7]),
      accuracy_cm: Number(f[8]),
      order_id: f[9]!.replaceAll('"', ""),
      status: Number(f[10]),
      received_at: f[11] ? new Date(f[11].replace(" ", "T").replace(/\+00$/, "Z")) : undefined,
    });
  }
  await writer.close();
  const s = (performance.now() - t) / 1000;
  return { rows, rows_per_s: Math.round(rows / s), bytes_per_point: statSync(out).size / rows, duckdb_scan_ms: await scanMs(conn, out) };
}
