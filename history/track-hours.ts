/**
 * Packed track hours: GetTrack's light columns (time, lat, lon, speed, heading; 32 bytes a point,
 * as read-positions.ts unpacks them) of one vehicle and hour in one `track_hours` row, made once the
 * hour has closed. A vehicle-day is then 24 rows for PostgreSQL to read instead of 86,400.
 *
 * - An hour closes `delayMs` after it ended. The packer's cursor (`history_meta` packed_until)
 *   packs every vehicle of each closed hour once, in order.
 * - A row that arrives for an hour that had closed (a late point) makes the writer mark that
 *   vehicle's hour in `track_dirty` (write-positions.ts), and the packer packs it again.
 * - The packer waits `marginMs` longer than the writer's delay, so a writer transaction that saw the
 *   hour open has committed before the hour is packed (transactions last far less).
 * - Whatever happens, a reader uses a pack only when its point count equals the rollup's for that
 *   hour (kept in the writer's transactions); otherwise it reads the rows themselves.
 *
 * One packer at a time per schema (an advisory lock); a run packs what is due and stops.
 */
import type { Logger } from "../lib/log";
import { Counter, type Registry } from "../lib/metrics";
import { lockKey, hotDays, type Sql, type StorageMode } from "../lib/storage";

const HOUR_MS = 3_600_000;

/**
 * One packed point of a positions row (columns prefixed with `t.` when given): timestamptz_send,
 * float8send ×2, float4send ×2 (big-endian), as read-positions.ts reads it.
 */
export const lightPointSql = (t = "") =>
  `timestamptz_send(${t}recorded_at) || float8send(${t}lat) || float8send(${t}lon) || float4send(${t}speed) || float4send(${t}heading)`;

const UPSERT = `ON CONFLICT (vehicle_id, hour) DO UPDATE SET points = excluded.points, light = excluded.light`;

export interface TrackPackerOptions {
  sql: Sql;
  mode: StorageMode;
  schema: string;
  /** An hour is packed this long after it ended (the writer's delay for late points, plus the margin). */
  delayMs: number;
  marginMs?: number;
  log: Logger;
  registry?: Registry;
}

export interface TrackPacker {
  /**
   * Packs what is due at `nowMs` (default: PostgreSQL's clock, which the writer's marks use too);
   * resolves with the vehicle-hours packed (0 when another process holds the lock).
   */
  run(nowMs?: number): Promise<number>;
}

export function createTrackPacker({ sql, mode, schema, delayMs, marginMs = 60_000, log, registry }: TrackPackerOptions): TrackPacker {
  const lock = lockKey(`fleet-pack:${schema}`).toString();
  const packed =
    registry && new Counter({ name: "history_track_hours_packed_total", help: "vehicle-hours packed for GetTrack", registers: [registry] });
  const runs =
    registry &&
    new Counter({
      name: "history_track_pack_runs_total",
      help: "runs of the track packer in this instance (only the leader among history instances runs it)",
      registers: [registry],
    });

  /** Packs every vehicle of one hour and moves the cursor past it, in one snapshot. */
  const packHour = async (hourMs: number): Promise<number> => {
    const hour = new Date(hourMs).toISOString();
    return sql.begin("isolation level repeatable read", async (tx) => {
      await tx`DELETE FROM track_dirty WHERE hour = ${hour}::timestamptz`;
      const r = await tx.unsafe(
        `INSERT INTO track_hours (vehicle_id, hour, points, light)
         SELECT vehicle_id, $1::timestamptz, count(*), string_agg(${lightPointSql()}, ''::bytea ORDER BY recorded_at)
         FROM positions WHERE recorded_at >= $1::timestamptz AND recorded_at < $1::timestamptz + interval '1 hour'
         GROUP BY vehicle_id ${UPSERT}`,
        [hour],
      );
      await tx`INSERT INTO history_meta (key, value) VALUES ('packed_until', ${new Date(hourMs + HOUR_MS).toISOString()})
               ON CONFLICT (key) DO UPDATE SET value = excluded.value`;
      return r.count;
    });
  };

  /** Packs again up to `limit` marked vehicle-hours of closed hours; resolves with how many. */
  const packDirty = async (beforeMs: number, limit: number): Promise<number> =>
    sql.begin("isolation level repeatable read", async (tx) => {
      const due = await tx`
        DELETE FROM track_dirty WHERE (vehicle_id, hour) IN (
          SELECT vehicle_id, hour FROM track_dirty WHERE hour < ${new Date(beforeMs).toISOString()}::timestamptz ORDER BY hour LIMIT ${limit})
        RETURNING vehicle_id, hour`;
      if (due.length === 0) return 0;
      await tx.unsafe(
        `INSERT INTO track_hours (vehicle_id, hour, points, light)
         SELECT d.vehicle_id, d.hour, count(*), string_agg(${lightPointSql("p.")}, ''::bytea ORDER BY p.recorded_at)
         FROM unnest($1::text[], $2::timestamptz[]) AS d(vehicle_id, hour)
         JOIN positions p ON p.vehicle_id = d.vehicle_id AND p.recorded_at >= d.hour AND p.recorded_at < d.hour + interval '1 hour'
         GROUP BY d.vehicle_id, d.hour ${UPSERT}`,
        [due.map((d) => d.vehicle_id as string), due.map((d) => (d.hour as Date).toISOString())],
      );
      return due.length;
    });

  return {
    async run(nowMs) {
      runs?.inc();
      const conn = await sql.reserve();
      try {
        const [got] = await conn`SELECT pg_try_advisory_lock(${lock}::bigint) AS ok`;
        if (!got?.ok) return 0;
        try {
          nowMs ??= Number((await sql`SELECT (extract(epoch FROM now()) * 1000)::float8 AS ms`)[0]!.ms);
          // Hours that ended before this are due (the hour boundary at or before now - delay - margin).
          const dueBefore = Math.floor((nowMs - delayMs - marginMs) / HOUR_MS) * HOUR_MS;
          const [meta] = await sql`SELECT value FROM history_meta WHERE key = 'packed_until'`;
          let next = meta ? Date.parse(meta.value as string) : NaN;
          if (!Number.isFinite(next)) {
            const days = await hotDays(sql, mode);
            next = days.length ? Date.parse(`${days[0]}T00:00:00Z`) : dueBefore;
          }
          let total = 0;
          const started = performance.now();
          for (; next < dueBefore; next += HOUR_MS) {
            total += await packHour(next);
            if (performance.now() - started > 10_000 && (next / HOUR_MS) % 24 === 23)
              log.info("packing track hours", { upTo: new Date(next + HOUR_MS).toISOString(), vehicleHours: total });
          }
          for (let n; (n = await packDirty(dueBefore, 1000)) > 0; ) total += n;
          packed?.inc(total);
          if (total > 0) log.debug("track hours packed", { vehicleHours: total, until: new Date(dueBefore).toISOString() });
          return total;
        } finally {
          await conn`SELECT pg_advisory_unlock(${lock}::bigint)`.catch(() => {});
        }
      } finally {
        conn.release();
      }
    },
  };
}
