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
 * The select list that turns exported rows into the columns of the Parquet files. Latitude and
 * longitude are stored as integers of 1e-7 degree (1.1 cm, the resolution GPS receivers report):
 * delta-encoded, a moving vehicle's coordinates take ~2 bytes where doubles took ~5.
 */
export const FILE_SELECT = POSITION_COLUMNS.map(([n]) =>
  n === "lat" || n === "lon" ? `round(${n} * 1e7)::INTEGER AS ${n}_e7` : n,
).join(", ");

/** The select list that turns the Parquet files' columns back into a position's. */
const VIEW_SELECT = POSITION_COLUMNS.map(([n]) => (n === "lat" || n === "lon" ? `${n}_e7 / 1e7 AS ${n}` : n)).join(", ");

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
