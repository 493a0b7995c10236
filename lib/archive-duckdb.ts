/**
 * DuckDB over the Parquet archive (@duckdb/node-api): the columns of an archived position, the
 * `positions` view that `fleet query`, history's replay of archived days and the archiver's
 * read-back all use, and small helpers to run SQL.
 */
import { DuckDBInstance, type DuckDBConnection } from "@duckdb/node-api";

/** Columns of the Parquet files, in order, with their DuckDB types. */
export const PARQUET_COLUMNS: readonly [string, string][] = [
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

/** SQL string literal. */
export function sqlString(s: string): string {
  return `'${s.replaceAll("'", "''")}'`;
}

/** `read_parquet([...])` over files, with the Hive `day` column; an empty typed relation when there are none. */
export function parquetSource(files: readonly string[]): string {
  if (files.length === 0) {
    const cols = PARQUET_COLUMNS.map(([n, t]) => `NULL::${t} AS ${n}`).join(", ");
    return `(SELECT ${cols}, NULL::DATE AS day WHERE false)`;
  }
  return `read_parquet([${files.map(sqlString).join(", ")}], hive_partitioning = true, hive_types = {'day': DATE})`;
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
