/**
 * The positions schema in PostgreSQL, shared by history (writes, queries) and the archiver (moves
 * closed days to Parquet, drops them): versioned migrations, day partitions, and the archive state
 * of each day. One place, so both services agree on names and on what "a day" is (UTC).
 *
 * Plain PostgreSQL: `positions` is partitioned by range of `recorded_at`, one partition per UTC day
 * (`positions_pYYYYMMDD`), created ahead by the service and on demand for late points; the primary
 * key (vehicle_id, recorded_at) of each partition is also the index of per-vehicle time ranges.
 *
 * TimescaleDB (when the extension is usable, see `chooseStorage`): `positions` is a hypertable with
 * one-day chunks and compression, and the same queries run against it. Sessions see only the
 * service's schema (lib/storage/pg.ts), so every TimescaleDB function is called qualified with the schema
 * the extension lives in (pg_extension.extnamespace). No TimescaleDB package exists on the build
 * machine: that branch is tested where the extension is installed and preloaded.
 */
import type { Logger } from "../log";
import { checkSchemaName, lockKey, type Sql, type TransactionSql } from "./pg";

/** plain: declarative day partitions; timescale: hypertable. */
export type StorageMode = "plain" | "timescale";

/**
 * Timescale mode: chunks whose range ended this long ago are compressed (the policy's compress_after;
 * `fleet compress` and `history_uncompressed_chunks` read the policy, this when it is gone).
 */
export const COMPRESS_AFTER = "2 days";

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
  up(tx: TransactionSql, mode: StorageMode, ctx: MigrationContext): Promise<void>;
}

interface MigrationContext {
  /** The service's schema, unquoted (checkSchemaName). */
  schema: string;
  /** TimescaleDB's schema, quoted as an identifier; set in timescale mode. */
  extensionSchema?: string;
}

const MIGRATIONS: Migration[] = [
  {
    version: 1,
    name: "positions, rollup, archive state",
    async up(tx, mode, { schema, extensionSchema: ts }) {
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
        if (!ts) throw new Error("timescale mode without the extension's schema");
        // Qualified: the session's search_path is the service's schema only, and the extension's
        // functions (by_range too) live in its own.
        await tx.unsafe(`
          CREATE TABLE positions (${columns});
          SELECT ${ts}.create_hypertable('${schema}.positions', ${ts}.by_range('recorded_at', interval '1 day'));
          ALTER TABLE positions SET (timescaledb.compress, timescaledb.compress_segmentby = 'vehicle_id',
                                     timescaledb.compress_orderby = 'recorded_at');
          SELECT ${ts}.add_compression_policy('${schema}.positions', compress_after => interval '${COMPRESS_AFTER}');
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

/** HISTORY_TIMESCALE: auto uses TimescaleDB when it is usable, on requires it, off never uses it. */
export type TimescaleSetting = "auto" | "on" | "off";

/** What the server says about TimescaleDB, as `timescaleFacts` reads it in one query. */
export interface TimescaleFacts {
  /** pg_available_extensions lists it: its files are installed for this server. */
  installed: boolean;
  /** shared_preload_libraries, or null when this role may not read it. */
  preloadLibraries: string | null;
  /** The loader's own setting (timescaledb.disable_load) exists in this session: the loader is preloaded. */
  loaderLoaded: boolean;
  /** Schema of the created extension (pg_extension.extnamespace) as a quoted identifier; null when not created. */
  extensionSchema: string | null;
}

/** The storage mode a schema gets, and why (logged at start). */
export interface StorageChoice {
  mode: StorageMode;
  /** CREATE EXTENSION is needed first (timescale mode, extension not created yet). */
  createExtension: boolean;
  reason: string;
}

/** Where the extension is created when no one created it: its own schema, never a service's (a test drops those with CASCADE). */
export const TIMESCALE_SCHEMA = "timescaledb";

/** TimescaleDB is wanted (or already holds the schema) but cannot be used. */
export class TimescaleUnavailableError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "TimescaleUnavailableError";
  }
}

const PRELOAD_HOW =
  "add it to shared_preload_libraries (ALTER SYSTEM SET shared_preload_libraries = 'timescaledb', or postgresql.conf) and restart PostgreSQL";

/** True when a shared_preload_libraries value names TimescaleDB's loader ("timescaledb", quoted or as $libdir/timescaledb[.so]). */
export function preloadsTimescale(libraries: string | null): boolean {
  if (!libraries) return false;
  return libraries
    .split(",")
    .map((l) => l.trim().replace(/^"(.*)"$/, "$1"))
    .some((l) => /(^|\/)timescaledb(\.so)?$/.test(l));
}

/**
 * The storage mode from HISTORY_TIMESCALE, what the server has, and the mode the schema's first
 * migration recorded (a schema never changes mode). Usable TimescaleDB: preloaded, and installed or
 * already created. Merely installed is not usable: CREATE EXTENSION without the preload is a FATAL
 * that drops the connection. Throws TimescaleUnavailableError saying what is missing and how to fix it.
 */
export function chooseStorage(setting: TimescaleSetting, facts: TimescaleFacts, recorded?: StorageMode, schema = "public"): StorageChoice {
  const preloaded = facts.loaderLoaded || preloadsTimescale(facts.preloadLibraries);
  const created = facts.extensionSchema !== null;
  if (created && !preloaded) {
    // Its event triggers call into the library on any DDL, plain mode's too: nothing works until it is preloaded.
    throw new TimescaleUnavailableError(
      `timescaledb is created in this database but not preloaded: ${PRELOAD_HOW}, or DROP EXTENSION timescaledb`,
    );
  }
  if (recorded === "timescale") {
    if (setting === "off") {
      throw new TimescaleUnavailableError(
        `HISTORY_TIMESCALE=off but schema ${schema} holds a TimescaleDB hypertable: set HISTORY_TIMESCALE=auto (or on), or use a new HISTORY_DB_SCHEMA`,
      );
    }
    if (!created)
      throw new TimescaleUnavailableError(
        `schema ${schema} was made for TimescaleDB but the extension is not created: CREATE EXTENSION timescaledb`,
      );
    return {
      mode: "timescale",
      createExtension: false,
      reason: `schema ${schema} holds a hypertable (extension in ${facts.extensionSchema})`,
    };
  }
  if (recorded === "plain") {
    if (setting === "on") {
      throw new TimescaleUnavailableError(
        `HISTORY_TIMESCALE=on but schema ${schema} already holds plain day partitions: use a new HISTORY_DB_SCHEMA for TimescaleDB, or set HISTORY_TIMESCALE=auto`,
      );
    }
    return { mode: "plain", createExtension: false, reason: `schema ${schema} holds plain day partitions` };
  }
  if (setting === "off") return { mode: "plain", createExtension: false, reason: "HISTORY_TIMESCALE=off" };
  if (created)
    return { mode: "timescale", createExtension: false, reason: `timescaledb is created (in ${facts.extensionSchema}) and preloaded` };
  if (facts.installed && preloaded)
    return {
      mode: "timescale",
      createExtension: true,
      reason: `timescaledb is installed and preloaded: created in schema ${TIMESCALE_SCHEMA}`,
    };
  const missing = facts.installed
    ? `timescaledb is installed but not preloaded`
    : `timescaledb is not installed for this PostgreSQL server`;
  if (setting === "on") {
    const how = facts.installed
      ? PRELOAD_HOW
      : "install TimescaleDB for this PostgreSQL version (2.28.3 is the last for PostgreSQL 15) and preload it";
    throw new TimescaleUnavailableError(`HISTORY_TIMESCALE=on but ${missing}: ${how}, or set HISTORY_TIMESCALE=auto or off`);
  }
  return { mode: "plain", createExtension: false, reason: missing };
}

/** Reads what chooseStorage needs, in one query that any role may run. */
export async function timescaleFacts(sql: Sql | TransactionSql): Promise<TimescaleFacts> {
  // pg_settings hides shared_preload_libraries from roles without pg_read_all_settings (SHOW would
  // fail): then the loader's setting, defined in every backend of a server that preloads it, tells.
  const [r] = await sql`
    SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb') AS installed,
           (SELECT setting FROM pg_settings WHERE name = 'shared_preload_libraries') AS preload_libraries,
           current_setting('timescaledb.disable_load', true) IS NOT NULL AS loader_loaded,
           (SELECT quote_ident(n.nspname) FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
            WHERE e.extname = 'timescaledb') AS extension_schema`;
  return {
    installed: r!.installed as boolean,
    preloadLibraries: (r!.preload_libraries as string | null) ?? null,
    loaderLoaded: r!.loader_loaded as boolean,
    extensionSchema: (r!.extension_schema as string | null) ?? null,
  };
}

/** TimescaleDB's schema as a quoted identifier, to qualify its functions with; undefined when the extension is not created. */
export async function timescaleSchema(sql: Sql | TransactionSql): Promise<string | undefined> {
  const [r] = await sql`
    SELECT quote_ident(n.nspname) AS schema FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
    WHERE e.extname = 'timescaledb'`;
  return (r?.schema as string | undefined) ?? undefined;
}

export interface MigrateOptions {
  schema?: string;
  log: Logger;
  /** HISTORY_TIMESCALE (default auto). */
  timescale?: TimescaleSetting;
}

/**
 * Applies the migrations not yet applied, in order, under an advisory lock, so that several
 * processes starting at once apply each exactly once. Logs the storage mode and why; returns it.
 * Throws TimescaleUnavailableError when HISTORY_TIMESCALE asks for what the server cannot give.
 */
export async function migrate(sql: Sql, { schema = "public", log, timescale = "auto" }: MigrateOptions): Promise<StorageMode> {
  checkSchemaName(schema);
  return sql.begin(async (tx) => {
    await tx`SELECT pg_advisory_xact_lock(${lockKey(`fleet-migrate:${schema}`).toString()}::bigint)`;
    await tx.unsafe(`CREATE SCHEMA IF NOT EXISTS ${schema}`);
    await tx.unsafe(`CREATE TABLE IF NOT EXISTS ${schema}.schema_migrations (
      version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`);
    const applied = new Set((await tx`SELECT version FROM schema_migrations`).map((r) => Number(r.version)));
    let recorded: StorageMode | undefined;
    if (applied.size > 0) {
      const [row] = await tx`SELECT value FROM history_meta WHERE key = 'mode'`;
      recorded = (row?.value as StorageMode) ?? "plain";
    }
    const choice = chooseStorage(timescale, await timescaleFacts(tx), recorded, schema);
    if (choice.createExtension) {
      // Services of other schemas may create it at the same moment: one at a time, then IF NOT EXISTS sees it.
      await tx`SELECT pg_advisory_xact_lock(${lockKey("fleet-timescaledb-extension").toString()}::bigint)`;
      await tx.unsafe(`CREATE SCHEMA IF NOT EXISTS ${TIMESCALE_SCHEMA}`);
      await tx.unsafe(`CREATE EXTENSION IF NOT EXISTS timescaledb WITH SCHEMA ${TIMESCALE_SCHEMA}`);
    }
    const mode = choice.mode;
    const extensionSchema = mode === "timescale" ? await timescaleSchema(tx) : undefined;
    log.info("storage mode", { schema, mode, reason: choice.reason, timescale, ...(extensionSchema ? { extensionSchema } : {}) });
    for (const m of MIGRATIONS) {
      if (applied.has(m.version)) continue;
      await m.up(tx, mode, { schema, extensionSchema });
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
  return rows
    .map((r) => dayOfPartition(r.name as string))
    .filter((d): d is string => d !== undefined)
    .sort();
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
