/**
 * The positions schema in PostgreSQL, shared by history (writes, queries) and the archiver (moves
 * closed days to Parquet, drops them): versioned migrations, day partitions, and the archive state
 * of each day. One place, so both services agree on names and on what "a day" is (UTC).
 *
 * Plain PostgreSQL: `positions` is partitioned by range of `recorded_at`, one partition per UTC day
 * (`positions_pYYYYMMDD`), created ahead by the service and on demand for late points; the primary
 * key (vehicle_id, recorded_at) of each partition is also the index of per-vehicle time ranges.
 *
 * TimescaleDB (when the extension is available): `positions` is a hypertable with one-day chunks and
 * compression, and the same queries run against it. NOT TESTED: no TimescaleDB package exists on the
 * build machine; the branch is kept small (see `mode`).
 */
import type { Logger } from "./log";
import { checkSchemaName, lockKey, type Sql, type TransactionSql } from "./pg";

/** plain: declarative day partitions; timescale: hypertable. */
export type StorageMode = "plain" | "timescale";

/** Where a day's positions are (mirrors fleet.v1.PartitionState). */
export type DayState = "writing" | "written" | "archived";

export const DAY_MS = 86_400_000;

/** UTC day of a time in ms: "YYYY-MM-DD". */
export function dayOf(ms: number): string {
  return new Date(ms).toISOString().slice(0, 10);
}

/** Start of a UTC day in ms. */
export function dayStartMs(day: string): number {
  const ms = Date.parse(`${day}T00:00:00Z`);
  if (!/^\d{4}-\d{2}-\d{2}$/.test(day) || Number.isNaN(ms)) throw new Error(`"${day}" is not a day (YYYY-MM-DD)`);
  return ms;
}

/** Name of a day's partition: positions_pYYYYMMDD. */
export function partitionName(day: string): string {
  dayStartMs(day);
  return `positions_p${day.replaceAll("-", "")}`;
}

/** Day of a partition name, or undefined for another table. */
export function dayOfPartition(name: string): string | undefined {
  const m = /^positions_p(\d{4})(\d{2})(\d{2})$/.exec(name);
  return m ? `${m[1]}-${m[2]}-${m[3]}` : undefined;
}

interface Migration {
  version: number;
  name: string;
  up(tx: TransactionSql, mode: StorageMode): Promise<void>;
}

const MIGRATIONS: Migration[] = [
  {
    version: 1,
    name: "positions, rollup, archive state",
    async up(tx, mode) {
      await tx.unsafe(`
        -- Great-circle distance in metres; inlined by the planner.
        CREATE OR REPLACE FUNCTION fleet_distance_m(lat1 float8, lon1 float8, lat2 float8, lon2 float8)
        RETURNS float8 LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
          SELECT 2 * 6371008.8 * asin(sqrt(
            power(sin(radians(lat2 - lat1) / 2), 2) +
            cos(radians(lat1)) * cos(radians(lat2)) * power(sin(radians(lon2 - lon1) / 2), 2)))
        $$;
        CREATE TABLE history_meta (key text PRIMARY KEY, value text NOT NULL);
        -- Per vehicle and minute, kept by the writer in the transaction of the insert, counting only
        -- rows that were new (so redelivered batches count nothing twice).
        CREATE TABLE positions_rollup (
          vehicle_id text NOT NULL,
          minute timestamptz NOT NULL,
          points integer NOT NULL,
          distance_m float8 NOT NULL,
          max_speed real NOT NULL,
          sum_speed float8 NOT NULL,
          PRIMARY KEY (vehicle_id, minute)
        );
        -- One row per day that the archiver has started on; generation numbers the archive cycles of
        -- a day (a day re-opened by late points is archived again as part-<generation+1>).
        CREATE TABLE archive_days (
          day date PRIMARY KEY,
          state text NOT NULL CHECK (state IN ('writing', 'written', 'archived')),
          generation integer NOT NULL DEFAULT 0,
          rows bigint NOT NULL DEFAULT 0,
          bytes bigint NOT NULL DEFAULT 0,
          location text NOT NULL DEFAULT '',
          updated_at timestamptz NOT NULL DEFAULT now()
        );
      `);
      const columns = `
          vehicle_id text NOT NULL,
          recorded_at timestamptz NOT NULL,
          seq bigint NOT NULL,
          fleet_id text NOT NULL DEFAULT '',
          lat float8 NOT NULL,
          lon float8 NOT NULL,
          speed real NOT NULL,
          heading real NOT NULL,
          accuracy real NOT NULL,
          order_id text NOT NULL DEFAULT '',
          status smallint NOT NULL DEFAULT 0,
          received_at timestamptz,
          PRIMARY KEY (vehicle_id, recorded_at)`;
      if (mode === "timescale") {
        await tx.unsafe(`
          CREATE TABLE positions (${columns});
          SELECT create_hypertable('positions', 'recorded_at', chunk_time_interval => interval '1 day');
          ALTER TABLE positions SET (timescaledb.compress, timescaledb.compress_segmentby = 'vehicle_id',
                                     timescaledb.compress_orderby = 'recorded_at');
          SELECT add_compression_policy('positions', interval '2 days');
        `);
      } else {
        await tx.unsafe(`CREATE TABLE positions (${columns}) PARTITION BY RANGE (recorded_at);`);
      }
      await tx`INSERT INTO history_meta (key, value) VALUES ('mode', ${mode})`;
    },
  },
  {
    version: 2,
    name: "packed track hours",
    async up(tx, mode) {
      await tx.unsafe(`
        -- GetTrack's light columns of one vehicle and hour, packed once the hour has closed (see
        -- history/track-hours.ts): a vehicle-day is 24 rows to read instead of 86,400.
        CREATE TABLE track_hours (
          vehicle_id text NOT NULL,
          hour timestamptz NOT NULL,
          points integer NOT NULL,
          light bytea NOT NULL,
          PRIMARY KEY (vehicle_id, hour)
        );
        -- Packed already, and compressing packed floats gains little: read as stored.
        ALTER TABLE track_hours ALTER COLUMN light SET STORAGE EXTERNAL;
        -- Hours of a vehicle that received points after they had closed (late points), to pack again.
        CREATE TABLE track_dirty (
          vehicle_id text NOT NULL,
          hour timestamptz NOT NULL,
          PRIMARY KEY (vehicle_id, hour)
        );
      `);
      // Packing reads one hour of every vehicle: a block range index finds it in a day that arrives in time order.
      if (mode === "plain") await tx.unsafe(`CREATE INDEX positions_recorded_at_brin ON positions USING brin (recorded_at)`);
    },
  },
  {
    version: 3,
    name: "parked rows",
    async up(tx) {
      await tx.unsafe(`
        -- Points PostgreSQL refused with a data exception (SQLSTATE class 22), kept as they came
        -- (JSON, as bytes: text could not hold what made them fail) with the error, so that they
        -- hold up nothing behind them and are not lost either (history/consumer.ts).
        CREATE TABLE positions_parked (
          id bigserial PRIMARY KEY,
          parked_at timestamptz NOT NULL DEFAULT now(),
          point bytea NOT NULL,
          error text NOT NULL
        );
      `);
    },
  },
];

export interface MigrateOptions {
  schema?: string;
  log: Logger;
  /** Use TimescaleDB when its extension is available (default true). */
  timescale?: boolean;
}

/**
 * Applies the migrations not yet applied, in order, under an advisory lock, so that several
 * processes starting at once apply each exactly once. Returns the storage mode.
 */
export async function migrate(sql: Sql, { schema = "public", log, timescale = true }: MigrateOptions): Promise<StorageMode> {
  checkSchemaName(schema);
  return sql.begin(async (tx) => {
    await tx`SELECT pg_advisory_xact_lock(${lockKey(`fleet-migrate:${schema}`).toString()}::bigint)`;
    await tx.unsafe(`CREATE SCHEMA IF NOT EXISTS ${schema}`);
    await tx.unsafe(`CREATE TABLE IF NOT EXISTS ${schema}.schema_migrations (
      version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`);
    const applied = new Set((await tx`SELECT version FROM schema_migrations`).map((r) => Number(r.version)));
    let mode: StorageMode = "plain";
    if (applied.size > 0) {
      const [row] = await tx`SELECT value FROM history_meta WHERE key = 'mode'`;
      mode = (row?.value as StorageMode) ?? "plain";
    } else if (timescale) {
      const [ext] = await tx`SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'`;
      if (ext) {
        await tx`CREATE EXTENSION IF NOT EXISTS timescaledb`;
        mode = "timescale";
      }
    }
    for (const m of MIGRATIONS) {
      if (applied.has(m.version)) continue;
      await m.up(tx, mode);
      await tx`INSERT INTO schema_migrations (version, name) VALUES (${m.version}, ${m.name})`;
      log.info("migration applied", { schema, version: m.version, name: m.name, mode });
    }
    return mode;
  });
}

/** Creates the day partitions from `fromDay` to `toDay` (inclusive) that do not exist. No-op for TimescaleDB. */
export async function ensureDayPartitions(sql: Sql, mode: StorageMode, days: Iterable<string>, schema = "public"): Promise<string[]> {
  if (mode === "timescale") return [];
  const wanted = [...new Set(days)].sort();
  if (wanted.length === 0) return [];
  return sql.begin(async (tx) => {
    // Two processes creating the same partition would fail one of them; take turns.
    await tx`SELECT pg_advisory_xact_lock(${lockKey(`fleet-partitions:${schema}`).toString()}::bigint)`;
    const existing = new Set(await hotDaysTx(tx));
    const created: string[] = [];
    for (const day of wanted) {
      if (existing.has(day)) continue;
      const next = dayOf(dayStartMs(day) + DAY_MS);
      await tx.unsafe(
        `CREATE TABLE IF NOT EXISTS ${partitionName(day)} PARTITION OF positions FOR VALUES FROM ('${day} 00:00:00+00') TO ('${next} 00:00:00+00')`,
      );
      created.push(day);
    }
    return created;
  });
}

async function hotDaysTx(sql: Sql | TransactionSql): Promise<string[]> {
  const rows = await sql`
    SELECT c.relname AS name FROM pg_inherits i
    JOIN pg_class c ON c.oid = i.inhrelid
    JOIN pg_class p ON p.oid = i.inhparent
    WHERE p.relname = 'positions' AND p.relnamespace = current_schema()::regnamespace`;
  return rows.map((r) => dayOfPartition(r.name as string)).filter((d): d is string => d !== undefined).sort();
}

/** Days held in PostgreSQL (partitions, or hypertable chunks), oldest first. */
export async function hotDays(sql: Sql, mode: StorageMode): Promise<string[]> {
  if (mode === "timescale") {
    const rows = await sql`
      SELECT DISTINCT to_char(range_start AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS day
      FROM timescaledb_information.chunks
      WHERE hypertable_name = 'positions' AND hypertable_schema = current_schema()
      ORDER BY 1`;
    return rows.map((r) => r.day as string);
  }
  return hotDaysTx(sql);
}

/** The storage mode recorded by the migrations. */
export async function storageMode(sql: Sql): Promise<StorageMode> {
  const [row] = await sql`SELECT value FROM history_meta WHERE key = 'mode'`;
  return (row?.value as StorageMode) ?? "plain";
}

export interface ArchiveDay {
  day: string;
  state: DayState;
  generation: number;
  rows: number;
  bytes: number;
  location: string;
}

/** Archive state of every day the archiver has touched, oldest first. */
export async function archiveDays(sql: Sql | TransactionSql): Promise<ArchiveDay[]> {
  const rows = await sql`
    SELECT to_char(day, 'YYYY-MM-DD') AS day, state, generation, rows, bytes, location
    FROM archive_days ORDER BY day`;
  return rows.map((r) => ({
    day: r.day as string,
    state: r.state as DayState,
    generation: Number(r.generation),
    rows: Number(r.rows),
    bytes: Number(r.bytes),
    location: r.location as string,
  }));
}

/** Days whose positions (some or all) are in the archive, i.e. at least one generation was dropped. */
export async function archivedDaysBetween(sql: Sql, fromMs: number, toMs: number): Promise<string[]> {
  const rows = await sql`
    SELECT to_char(day, 'YYYY-MM-DD') AS day FROM archive_days
    WHERE (state = 'archived' OR generation > 0)
      AND day >= ${dayOf(fromMs)}::date AND day <= ${dayOf(Math.max(fromMs, toMs - 1))}::date
    ORDER BY day`;
  return rows.map((r) => r.day as string);
}
