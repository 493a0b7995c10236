/**
 * DuckDB over the Parquet archive (@duckdb/node-api): the columns of an archived position, the
 * `positions` view that `fleet query`, history's replay of archived days and the archiver's
 * read-back all use, and small helpers to run SQL.
 */
import { DuckDBInstance, type DuckDBConnection } from "@duckdb/node-api";

/** Columns of a position as PostgreSQL exports it (and as the `positions` view shows it), with DuckDB types. */
export const POSITION_COLUMNS: readonly [string, string][] = [
  ["vehicle_id", "VARCHAR"],
  ["recorded_at", "TIMESTAMPTZ"],
  ["seq", "BIGINT"],
  ["fleet_id", "VARCHAR"],
  ["lat", "DOUBLE"],
  ["lon", "DOUBLE"],
  ["speed", "FLOAT"],
  ["heading", "FLOAT"],
  ["accuracy", "FLOAT"],
  ["order_id", "VARCHAR"],
  ["status", "SMALLINT"],
  ["received_at", "TIMESTAMPTZ"],
];

/**
 * Columns stored as integers at the resolution GPS receivers report, with their scale: coordinates
 * in 1e-7 degree (1.1 cm), speed in cm/s, heading in 0.01°, accuracy in cm. Delta-encoded integers
 * take 1–2.5 bytes where the raw floats' noisy mantissas took 3–5 each (measured on simulated fixes:
 * 13.4 → ~8 bytes per point in all).
 */
export const SCALED: Readonly<Record<string, [file: string, scale: number, type: string]>> = {
  lat: ["lat_e7", 1e7, "DOUBLE"],
  lon: ["lon_e7", 1e7, "DOUBLE"],
  speed: ["speed_cm_s", 100, "FLOAT"],
  heading: ["heading_cdeg", 100, "FLOAT"],
  accuracy: ["accuracy_cm", 100, "FLOAT"],
};

/** The select list that turns exported rows into the columns of the Parquet files. */
export const FILE_SELECT = POSITION_COLUMNS.map(([n]) => {
  const s = SCALED[n];
  return s ? `round(${n} * ${s[1]})::INTEGER AS ${s[0]}` : n;
}).join(", ");

/** Columns of the Parquet files (the archiver's export writes them), with DuckDB types. */
export const FILE_COLUMNS: readonly [string, string][] = POSITION_COLUMNS.map(([n, t]) => (SCALED[n] ? [SCALED[n][0], "INTEGER"] : [n, t]));

/**
 * The same scaling in PostgreSQL's SQL (the archiver's binary export scales as this does), for CSV
 * of the files' columns (the bench's Parquet writer comparison) and for tests.
 */
export const EXPORT_SELECT = POSITION_COLUMNS.map(([n]) => {
  const s = SCALED[n];
  return s ? `round(${n}::float8 * ${s[1]})::int4 AS ${s[0]}` : n;
}).join(", ");

/** Text columns that are never NULL in PostgreSQL. */
const EMPTY_AS_NULL_BEFORE = new Set(["fleet_id", "order_id"]);

/** The select list that turns the Parquet files' columns back into a position's. */
const VIEW_SELECT = POSITION_COLUMNS.map(([n]) => {
  const s = SCALED[n];
  if (s) return `(${s[0]} / ${s[1]})::${s[2]} AS ${n}`;
  // Files written before the binary export (CSV read by DuckDB) hold NULL where PostgreSQL had ''.
  return EMPTY_AS_NULL_BEFORE.has(n) ? `coalesce(${n}, '') AS ${n}` : n;
}).join(", ");

/** SQL string literal. */
export function sqlString(s: string): string {
  return `'${s.replaceAll("'", "''")}'`;
}

/** The archive's files as positions (lat/lon in degrees) with the Hive `day` column; an empty typed relation when there are none. */
export function parquetSource(files: readonly string[]): string {
  if (files.length === 0) {
    const cols = POSITION_COLUMNS.map(([n, t]) => `NULL::${t} AS ${n}`).join(", ");
    return `(SELECT ${cols}, NULL::DATE AS day WHERE false)`;
  }
  return `(SELECT ${VIEW_SELECT}, day FROM read_parquet([${files.map(sqlString).join(", ")}], hive_partitioning = true, hive_types = {'day': DATE}))`;
}

/** Creates (or replaces) the `positions` view over the files. */
export function positionsViewSql(files: readonly string[]): string {
  return `CREATE OR REPLACE VIEW positions AS SELECT * FROM ${parquetSource(files)}`;
}

/** An in-memory DuckDB in UTC. */
export async function openDuckDb(): Promise<{ instance: DuckDBInstance; connect(): Promise<DuckDBConnection>; close(): void }> {
  const instance = await DuckDBInstance.create(":memory:");
  const connect = async () => {
    const c = await instance.connect();
    await c.run("SET TimeZone = 'UTC'");
    return c;
  };
  return {
    instance,
    connect,
    close() {
      instance.closeSync();
    },
  };
}
