/**
 * The hypertable's chunks in Timescale mode (lib/storage/positions-db.ts), as operators and ListPartitions
 * need them: each day's row estimate from its chunks' statistics, the chunks older than the
 * compression delay that are still not compressed, and compressing one by hand.
 *
 * Why by hand: on PostgreSQL 15.20 every TimescaleDB background job fails with `cannot drop portal
 * "" while it is being set up` (TimescaleDB 2.28.3), the compression policy included, while the
 * same call made in a session works. `history_uncompressed_chunks` shows the backlog and
 * `fleet compress` clears it.
 *
 * Sessions see only the service's schema (lib/storage/pg.ts): the extension's functions are called
 * qualified with its schema (`timescaleSchema`, a quoted identifier). Its information views are in
 * `timescaledb_information` whatever schema the extension was created in. SQL shapes as in
 * TimescaleDB 2.27/2.28: `approximate_row_count(regclass)` (a compressed chunk counts its batches
 * times their estimated size), `compress_chunk(regclass, if_not_compressed)`, the `chunks` view's
 * `is_compressed` and `range_end`, the policy's `compress_after` in `jobs.config`.
 */
import type { Sql, TransactionSql } from "./pg";
import { COMPRESS_AFTER } from "./positions-db";

/** A chunk of `positions` older than the compression delay and not compressed. */
export interface UncompressedChunk {
  /** schema.name, each quoted as needed: what `compress_chunk` and psql take. */
  name: string;
  schema: string;
  table: string;
  rangeStart: Date;
  rangeEnd: Date;
}

export interface UncompressedChunks {
  /** Chunks whose range ended before this are due for compression. */
  cutoff: Date;
  /** The delay used (the policy's compress_after, or --older-than), as PostgreSQL prints it. */
  delay: string;
  chunks: UncompressedChunk[];
}

/**
 * Row estimate of each day's chunks (no parameters). A chunk dropped while this runs counts 0
 * (to_regclass is null, approximate_row_count is strict) instead of failing the call.
 */
export function dayRowsSql(extensionSchema: string): string {
  return `SELECT to_char(c.range_start AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS day,
       coalesce(sum(${extensionSchema}.approximate_row_count(to_regclass(format('%I.%I', c.chunk_schema, c.chunk_name)))), 0)::int8 AS n
  FROM timescaledb_information.chunks c
  WHERE c.hypertable_schema = current_schema() AND c.hypertable_name = 'positions'
  GROUP BY 1`;
}

/**
 * Chunks of `positions` whose range ended more than the delay ago and that are not compressed,
 * oldest first. $1: the delay (interval text), or null for the compression policy's compress_after
 * (COMPRESS_AFTER when the policy is gone). Always one row at least: with no chunk, its chunk
 * columns are null and the row still carries the cutoff and the delay.
 */
export function uncompressedChunksSql(): string {
  return `WITH delay AS (
    SELECT coalesce($1::interval,
             (SELECT (j.config->>'compress_after')::interval FROM timescaledb_information.jobs j
              WHERE j.proc_name = 'policy_compression' AND j.hypertable_schema = current_schema() AND j.hypertable_name = 'positions'
              ORDER BY j.job_id LIMIT 1),
             interval '${COMPRESS_AFTER}') AS d)
  SELECT delay.d::text AS delay, now() - delay.d AS cutoff,
         c.chunk_schema, c.chunk_name, quote_ident(c.chunk_schema) || '.' || quote_ident(c.chunk_name) AS name, c.range_start, c.range_end
  FROM delay LEFT JOIN timescaledb_information.chunks c
    ON c.hypertable_schema = current_schema() AND c.hypertable_name = 'positions'
   AND NOT c.is_compressed AND c.range_end <= now() - delay.d
  ORDER BY c.range_start`;
}

/**
 * Compresses one chunk ($1 schema, $2 table); returns its name, or null when it no longer exists
 * (dropped by the archiver meanwhile). if_not_compressed: one compressed meanwhile is a notice, not an error.
 */
export function compressChunkSql(extensionSchema: string): string {
  return `SELECT CASE WHEN to_regclass(format('%I.%I', $1::text, $2::text)) IS NULL THEN NULL
              ELSE ${extensionSchema}.compress_chunk(format('%I.%I', $1::text, $2::text)::regclass, if_not_compressed => true)::text END AS chunk`;
}

/** Each day's estimated rows in PostgreSQL, from its chunks' statistics (0 before the first ANALYZE, as plain partitions). */
export async function timescaleDayRows(sql: Sql | TransactionSql, extensionSchema: string): Promise<Map<string, number>> {
  const rows = await sql.unsafe(dayRowsSql(extensionSchema));
  return new Map(rows.map((r) => [r.day as string, Number(r.n)]));
}

/** The chunks due for compression; `delayMs` overrides the policy's delay. */
export async function uncompressedChunks(sql: Sql | TransactionSql, delayMs?: number): Promise<UncompressedChunks> {
  const rows = await sql.unsafe(uncompressedChunksSql(), [delayMs === undefined ? null : `${Math.round(delayMs)} milliseconds`]);
  const first = rows[0]!;
  return {
    cutoff: first.cutoff as Date,
    delay: first.delay as string,
    chunks: rows
      .filter((r) => r.chunk_name !== null)
      .map((r) => ({
        name: r.name as string,
        schema: r.chunk_schema as string,
        table: r.chunk_name as string,
        rangeStart: r.range_start as Date,
        rangeEnd: r.range_end as Date,
      })),
  };
}

/** Compresses a chunk in a transaction of its own; false when it was gone. */
export async function compressChunk(
  sql: Sql | TransactionSql,
  extensionSchema: string,
  chunk: Pick<UncompressedChunk, "schema" | "table">,
): Promise<boolean> {
  const [r] = await sql.unsafe(compressChunkSql(extensionSchema), [chunk.schema, chunk.table]);
  return r?.chunk != null;
}
