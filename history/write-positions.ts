/**
 * One transaction per group of batches. The usual case, every row new: the rows are COPYed straight
 * into `positions` in a savepoint, and the rollup sums come from the writer. PostgreSQL refuses
 * such a COPY whole when any row is there already (a redelivery, a re-sent point); the savepoint is
 * rolled back and the rows take the staging path: COPY into a temporary staging table, then an
 * insert that ignores existing rows on (vehicle_id, recorded_at) and feeds the rollup exactly the
 * rows it inserted. Whatever JetStream redelivers, a row is in `positions` once and counted once in
 * the rollup. (Before, the usual case also went through the staging table, with a plain insert:
 * PostgreSQL did about twice a COPY's work per row. A postgres.js without the install's patch never
 * reports a failed COPY, so there every batch takes the staging path.) Inserts of concurrent
 * writers (in one process or several) run in parallel; their rollup steps take turns (see ROLLUP).
 *
 * Distance: each new point adds its distance from the vehicle's previous point, found among the new
 * rows of the same statement (lag) or, for the first new point of a vehicle, among the rows already
 * stored (the last one within an hour before it). A point arriving out of order between two stored
 * points adds its own leg but does not shorten the leg it splits; the rollup's distance is then a
 * little high (documented in history/README.md).
 */
import {
  DAY_MS,
  dayOf,
  ensureDayPartitions,
  hotDays,
  copyFailuresReported,
  copyFrom,
  lockKey,
  type StorageMode,
  type Sql,
  type TransactionSql,
} from "../lib/storage";
import { deadlinePool } from "../lib/storage/pg";
import { POSITION_COLUMNS, positionsCopy, STAGING_COLUMNS, stagingText } from "./copy-rows";
import { rollupOf } from "./rollup";
import { prepareRows, type PreparedRows, type Row } from "./row";

const STAGING = `
  CREATE TEMP TABLE IF NOT EXISTS history_staging (
    vehicle_id text, recorded_us bigint, seq bigint, fleet_id text, lat float8, lon float8,
    speed real, heading real, accuracy real, order_id text, status smallint, received_us bigint
  ) ON COMMIT DELETE ROWS;
  CREATE TEMP TABLE IF NOT EXISTS history_new (
    vehicle_id text, recorded_at timestamptz, lat float8, lon float8, speed real
  ) ON COMMIT DELETE ROWS`;

const EPOCH = "timestamptz '1970-01-01 00:00:00+00'";

const SELECT_STAGING = `
    SELECT vehicle_id, ${EPOCH} + recorded_us * interval '1 microsecond', seq, fleet_id, lat, lon, speed, heading, accuracy,
      order_id, status, ${EPOCH} + received_us * interval '1 microsecond'
    FROM history_staging
    ORDER BY vehicle_id COLLATE "C", recorded_us`;

/**
 * Inserts what is new, in key order (concurrent writers take row locks in the same order; byte
 * order, as prepareRows sorts the straight COPY's rows, whatever the database's collation), and
 * keeps the new rows aside.
 */
const INSERT = `
  WITH ins AS (
    INSERT INTO positions (${POSITION_COLUMNS}) ${SELECT_STAGING}
    ON CONFLICT DO NOTHING
    RETURNING vehicle_id, recorded_at, lat, lon, speed
  )
  INSERT INTO history_new SELECT * FROM ins`;

/**
 * Adds the new rows to the rollup. Runs after an advisory lock that rollups of all writers take in
 * turn, so this statement's snapshot holds every batch committed before: the leg from a vehicle's
 * last stored point to its first new one is found even when the two came in concurrent transactions.
 */
/**
 * Marks the hours of new rows that had closed already (late points: the hour ended more than the
 * packing delay ago) for track-hours.ts to pack again. Rows of an hour still open need nothing:
 * the hour is packed once it closes (HISTORY_TRACK_PACK_DELAY after it ended).
 */
const markDirty = (rows: string, time: string, delaySeconds: number) => `
  dirty AS (
    INSERT INTO track_dirty (vehicle_id, hour)
    SELECT DISTINCT vehicle_id, date_trunc('hour', ${time}) FROM ${rows}
    WHERE ${time} < date_trunc('hour', now() - ${Math.round(delaySeconds)} * interval '1 second')
    ON CONFLICT DO NOTHING
  )`;

const rollup = (delaySeconds: number) => `
  WITH ${markDirty("history_new", "recorded_at", delaySeconds)}, seg AS (
    SELECT vehicle_id, recorded_at, lat, lon, speed,
           lag(lat) OVER w AS plat, lag(lon) OVER w AS plon, lag(recorded_at) OVER w AS pat
    FROM history_new WINDOW w AS (PARTITION BY vehicle_id ORDER BY recorded_at)
  ), dist AS (
    SELECT s.vehicle_id, s.recorded_at, s.speed,
      COALESCE(CASE WHEN s.pat IS NOT NULL THEN fleet_distance_m(s.plat, s.plon, s.lat, s.lon)
        ELSE (SELECT fleet_distance_m(p.lat, p.lon, s.lat, s.lon) FROM positions p
              WHERE p.vehicle_id = s.vehicle_id AND p.recorded_at < s.recorded_at
                AND p.recorded_at >= s.recorded_at - interval '1 hour'
              ORDER BY p.recorded_at DESC LIMIT 1) END, 0) AS d
    FROM seg s
  )
  INSERT INTO positions_rollup AS r (vehicle_id, minute, points, distance_m, max_speed, sum_speed)
  SELECT vehicle_id, date_trunc('minute', recorded_at), count(*), sum(d), max(speed), sum(speed)
  FROM dist GROUP BY 1, 2 ORDER BY 1, 2
  ON CONFLICT (vehicle_id, minute) DO UPDATE SET
    points = r.points + excluded.points,
    distance_m = r.distance_m + excluded.distance_m,
    max_speed = greatest(r.max_speed, excluded.max_speed),
    sum_speed = r.sum_speed + excluded.sum_speed`;

/**
 * Rollup of a batch whose rows were all new (the fast path): the per-minute sums come from the
 * writer, the leg from each vehicle's stored predecessor to its first new point from here.
 */
const rollupArrays = (delaySeconds: number) => `
  WITH f AS (
    SELECT * FROM unnest($1::text[], $2::int8[], $3::float8[], $4::float8[]) AS f(vehicle_id, us, lat, lon)
  ), legs AS (
    SELECT f.vehicle_id, (f.us / 60000000) * 60000000 AS minute_us,
      (SELECT fleet_distance_m(p.lat, p.lon, f.lat, f.lon) FROM positions p
       WHERE p.vehicle_id = f.vehicle_id AND p.recorded_at < ${EPOCH} + f.us * interval '1 microsecond'
         AND p.recorded_at >= ${EPOCH} + f.us * interval '1 microsecond' - interval '1 hour'
       ORDER BY p.recorded_at DESC LIMIT 1) AS d
    FROM f
  ), a AS (
    SELECT * FROM unnest($5::text[], $6::int8[], $7::int4[], $8::float8[], $9::float4[], $10::float8[])
      AS a(vehicle_id, minute_us, points, distance_m, max_speed, sum_speed)
  ), ${markDirty("a", `${EPOCH} + a.minute_us * interval '1 microsecond'`, delaySeconds)}
  INSERT INTO positions_rollup AS r (vehicle_id, minute, points, distance_m, max_speed, sum_speed)
  SELECT a.vehicle_id, ${EPOCH} + a.minute_us * interval '1 microsecond', a.points, a.distance_m + coalesce(l.d, 0), a.max_speed, a.sum_speed
  FROM a LEFT JOIN legs l ON l.vehicle_id = a.vehicle_id AND l.minute_us = a.minute_us
  ORDER BY 1, 2
  ON CONFLICT (vehicle_id, minute) DO UPDATE SET
    points = r.points + excluded.points,
    distance_m = r.distance_m + excluded.distance_m,
    max_speed = greatest(r.max_speed, excluded.max_speed),
    sum_speed = r.sum_speed + excluded.sum_speed`;

export interface PositionWriterOptions {
  /** Opens the writer's pool: at the start, and again after work that missed the deadline. */
  connect: () => Sql;
  /**
   * ms one write (its transaction and the partitions it creates), park or ensureAhead may take;
   * past it the call rejects with a PgDeadlineError (transient) and the writer's connections are
   * closed and opened anew, so that a hung connection cannot stall history (0: no deadline).
   */
  deadlineMs?: number;
  mode: StorageMode;
  schema?: string;
  /** Rows of an hour that ended longer ago than this are late: the hour is marked to pack again (ms). */
  packDelayMs?: number;
}

export interface WriteResult {
  /** Rows offered (after skipping points without a time). */
  rows: number;
  /** Rows that were new. */
  inserted: number;
}

export interface PositionWriter {
  /** Writes the positions in one transaction; resolves after COMMIT. */
  write(rows: readonly Row[]): Promise<WriteResult>;
  /** Creates partitions for today and the next `ahead` days. */
  ensureAhead(ahead: number, now?: number): Promise<string[]>;
  /** Keeps a row PostgreSQL refused in positions_parked, with why (as JSON bytes: text could not hold every row). */
  park(row: Row, err: Error): Promise<void>;
  /** Ends the writer's connections. */
  close(options?: { timeout?: number }): Promise<void>;
}

/** Creates the writer. Day partitions for the rows' days are created on demand (known days are cached). */
export function createPositionWriter({
  connect,
  deadlineMs = 0,
  mode,
  schema = "public",
  packDelayMs = 300_000,
}: PositionWriterOptions): PositionWriter {
  const pool = deadlinePool(connect, deadlineMs);
  const ROLLUP = rollup(packDelayMs / 1000);
  const ROLLUP_ARRAYS = rollupArrays(packDelayMs / 1000);
  const known = new Set<number>();
  const rollupLock = lockKey(`fleet-rollup:${schema}`).toString();
  let loaded = false;

  const ensureDays = async (sql: Sql, days: Set<number>) => {
    if (mode === "timescale") return;
    if (!loaded) {
      for (const d of await hotDays(sql, mode)) known.add(Math.floor(Date.parse(`${d}T00:00:00Z`) / DAY_MS));
      loaded = true;
    }
    const missing = [...days].filter((d) => !known.has(d));
    if (missing.length === 0) return;
    await ensureDayPartitions(
      sql,
      mode,
      missing.map((d) => dayOf(d * DAY_MS)),
      schema,
    );
    for (const d of missing) known.add(d);
  };

  /** Staging path: insert ignoring existing rows, rollup of exactly the new ones. */
  const stagingPath = async (tx: TransactionSql, batch: PreparedRows): Promise<number> => {
    await tx.unsafe(STAGING);
    await copyFrom(tx, `COPY history_staging (${STAGING_COLUMNS}) FROM STDIN`, stagingText(batch.rows));
    const r = await tx.unsafe(INSERT);
    const inserted = r.count;
    if (inserted > 0) {
      await tx`SELECT pg_advisory_xact_lock(${rollupLock})`;
      await tx.unsafe(ROLLUP);
    }
    return inserted;
  };

  return {
    async write(input) {
      const batch = prepareRows(input);
      const rows = batch.rows.length;
      if (rows === 0) return { rows: 0, inserted: 0 };
      return pool.run(`a write of ${rows} rows`, (sql) => writeBatch(sql, batch));
    },
    park(row, err) {
      const point = Buffer.from(JSON.stringify(row), "utf8");
      const error = `${(err as { code?: string }).code ?? err.name}: ${err.message}`.replaceAll("\u0000", "\uFFFD");
      return pool.run("parking a point", async (sql) => {
        await sql`INSERT INTO positions_parked (point, error) VALUES (${point}, ${error})`;
      });
    },
    ensureAhead(ahead, now = Date.now()) {
      const today = Math.floor(now / DAY_MS);
      const days: number[] = [];
      for (let i = 0; i <= ahead; i++) days.push(today + i);
      return pool.run("creating partitions ahead", async (sql) => {
        const created = await ensureDayPartitions(
          sql,
          mode,
          days.map((d) => dayOf(d * DAY_MS)),
          schema,
        );
        for (const d of days) known.add(d);
        return created;
      });
    },
    close: (options) => pool.end(options),
  };

  /** One batch in one transaction. */
  async function writeBatch(sql: Sql, batch: PreparedRows): Promise<WriteResult> {
    const rows = batch.rows.length;
    await ensureDays(sql, batch.days);
    try {
      const inserted = await sql.begin(async (tx) => {
        if (!copyFailuresReported) return stagingPath(tx, batch);
        // The usual path: COPY straight in. A row already there fails it whole (unique
        // violation); the savepoint takes us to the staging path.
        try {
          await tx.savepoint((sp) =>
            copyFrom(sp, `COPY positions (${POSITION_COLUMNS}) FROM STDIN WITH (FORMAT binary)`, positionsCopy(batch.rows)),
          );
        } catch (err) {
          if ((err as { code?: string }).code !== "23505") throw err;
          return stagingPath(tx, batch);
        }
        const { rows: r, firsts } = rollupOf(batch.byVehicle);
        await tx`SELECT pg_advisory_xact_lock(${rollupLock})`;
        await tx.unsafe(ROLLUP_ARRAYS, [
          firsts.vehicle,
          firsts.us,
          firsts.lat,
          firsts.lon,
          r.vehicle,
          r.minuteUs,
          r.points,
          r.distance,
          r.maxSpeed,
          r.sumSpeed,
        ]);
        return rows;
      });
      return { rows, inserted };
    } catch (err) {
      // A partition dropped by the archiver (or by hand) since we cached it: look again next time.
      if ((err as { code?: string }).code === "23514") {
        known.clear();
        loaded = false;
      }
      throw err;
    }
  }
}
