/**
 * Reads stored positions over a time range from PostgreSQL and, for days the archiver has moved
 * out, from the Parquet archive through DuckDB, merged in time order with duplicates removed: a
 * caller never knows which held them. Only points the caller's access grants are read.
 */
import type { DuckDBConnection } from "@duckdb/node-api";
import { seesWholeVehicle, type Access } from "./access";
import {
  parquetSource,
  sqlString,
  localParquetFiles,
  archivedDaysBetween,
  DAY_MS,
  dayOf,
  dayStartMs,
  binaryCopyRows,
  binaryCopySingleValue,
  copyOutToBuffer,
  PG_EPOCH_US,
  type ArchiveStore,
  type Sql,
} from "../lib/storage";
import { lightPointSql } from "./track-hours";

export interface StoredPoint {
  vehicleId: string;
  fleetId: string;
  orderId: string;
  /** recorded_at in µs since the epoch */
  us: number;
  seq: number;
  lat: number;
  lon: number;
  speed: number;
  heading: number;
  accuracy: number;
  status: number;
  /** received_at in µs, 0 when unknown */
  receivedUs: number;
}

export type AreaFilter =
  | { kind: "box"; minLat: number; minLon: number; maxLat: number; maxLon: number }
  | { kind: "circle"; lat: number; lon: number; radiusM: number };

export interface PointFilter {
  vehicleId?: string;
  area?: AreaFilter;
  access: Access;
}

export interface ArchiveReader {
  store: ArchiveStore;
  cacheDir: string;
  connect(): Promise<DuckDBConnection>;
}

export interface PositionReaderOptions {
  sql: Sql;
  /** Absent: archived days read as empty (no archive configured). */
  archive?: ArchiveReader;
}

/** Bounding box of a circle, for index-friendly prefilters. */
function circleBox(c: { lat: number; lon: number; radiusM: number }) {
  const dLat = c.radiusM / 111_320;
  const dLon = c.radiusM / (111_320 * Math.max(0.01, Math.cos((c.lat * Math.PI) / 180)));
  return { minLat: c.lat - dLat, maxLat: c.lat + dLat, minLon: c.lon - dLon, maxLon: c.lon + dLon };
}

const num = (v: number) => {
  if (!Number.isFinite(v)) throw new Error("not a finite number");
  return String(v);
};

const COLUMNS_PG = `vehicle_id, fleet_id, order_id, (extract(epoch FROM recorded_at) * 1000000)::int8 AS us, seq, lat, lon, speed,
  heading, accuracy, status, coalesce((extract(epoch FROM received_at) * 1000000)::int8, 0) AS rus`;
const COLUMNS_DUCK = `vehicle_id, fleet_id, order_id, epoch_us(recorded_at) AS us, seq, lat, lon, speed, heading, accuracy, status,
  coalesce(epoch_us(received_at), 0) AS rus`;

/** WHERE conditions shared by both SQL dialects (values are literals, escaped). */
function conditions(f: PointFilter, fromUs: number, toUs: number, dialect: "pg" | "duck"): string {
  const ts = (us: number) =>
    dialect === "pg" ? `'${new Date(us / 1000).toISOString()}'::timestamptz` : `make_timestamp(${Math.trunc(us)}::BIGINT)::TIMESTAMPTZ`;
  const out = [`recorded_at >= ${ts(fromUs)}`, `recorded_at < ${ts(toUs)}`];
  if (f.vehicleId !== undefined) out.push(`vehicle_id = ${sqlString(f.vehicleId)}`);
  if (f.area) {
    const b = f.area.kind === "box" ? f.area : circleBox(f.area);
    out.push(`lat BETWEEN ${num(b.minLat)} AND ${num(b.maxLat)}`, `lon BETWEEN ${num(b.minLon)} AND ${num(b.maxLon)}`);
    if (f.area.kind === "circle") {
      const { lat, lon, radiusM } = f.area;
      const rad = (x: string) => `radians(${x})`;
      out.push(
        `2 * 6371008.8 * asin(sqrt(power(sin(${rad(`lat - ${num(lat)}`)} / 2), 2) + cos(${rad(num(lat))}) * cos(${rad("lat")}) * ` +
          `power(sin(${rad(`lon - ${num(lon)}`)} / 2), 2))) <= ${num(radiusM)}`,
      );
    }
  }
  if (!f.access.all) out.push(accessCondition(f.access));
  return out.join(" AND ");
}

/** The rows an access sees, as an SQL condition both dialects take (values are literals, escaped). */
export function accessCondition(a: Access): string {
  if (a.all) return "true";
  const list = (xs: string[]) => xs.map(sqlString).join(", ");
  const any: string[] = [];
  if (a.vehicles.length) any.push(`vehicle_id IN (${list(a.vehicles)})`);
  if (a.fleets.length) any.push(`fleet_id IN (${list(a.fleets)})`);
  // An order is one fleet's: the pair, never the order id alone.
  for (const g of a.orders) any.push(`(fleet_id = ${sqlString(g.fleetId)} AND order_id = ${sqlString(g.orderId)})`);
  return any.length ? `(${any.join(" OR ")})` : "false";
}

const toPoint = (r: Record<string, unknown> | unknown[]): StoredPoint => {
  const v = Array.isArray(r) ? r : Object.values(r);
  return {
    vehicleId: v[0] as string,
    fleetId: (v[1] as string) ?? "",
    orderId: (v[2] as string) ?? "",
    us: Number(v[3]),
    seq: Number(v[4]),
    lat: Number(v[5]),
    lon: Number(v[6]),
    speed: Number(v[7]),
    heading: Number(v[8]),
    accuracy: Number(v[9]),
    status: Number(v[10]),
    receivedUs: Number(v[11] ?? 0),
  };
};

const byTime = (a: StoredPoint, b: StoredPoint) => a.us - b.us || (a.vehicleId < b.vehicleId ? -1 : a.vehicleId > b.vehicleId ? 1 : 0);

/** Merges two time-ordered lists, dropping a point whose (vehicle, time) came already. */
function mergeUnique(a: StoredPoint[], b: StoredPoint[]): StoredPoint[] {
  if (b.length === 0) return a;
  if (a.length === 0) return b;
  const all = a.concat(b).sort(byTime);
  const out: StoredPoint[] = [];
  for (const p of all) {
    const last = out[out.length - 1];
    if (last && last.us === p.us && last.vehicleId === p.vehicleId) continue;
    out.push(p);
  }
  return out;
}

/**
 * The few columns simplification needs, for every point of a track, as columns (index i = the i-th
 * point in time): a vehicle-day is 86,400 points, and as many objects cost more than reading them.
 */
export interface LightTrack {
  readonly length: number;
  /** recorded_at, µs since the epoch */
  readonly us: Float64Array;
  readonly lat: Float64Array;
  readonly lon: Float64Array;
  readonly speed: Float32Array;
  readonly heading: Float32Array;
  /** The full point where it came from the archive; undefined for PostgreSQL (fetched once kept). */
  readonly full: (StoredPoint | undefined)[];
}

function lightTrack(n: number): LightTrack {
  return {
    length: n,
    us: new Float64Array(n),
    lat: new Float64Array(n),
    lon: new Float64Array(n),
    speed: new Float32Array(n),
    heading: new Float32Array(n),
    full: [],
  };
}

/** Bytes of one packed light point: timestamptz_send, float8send ×2, float4send ×2 (big-endian). */
const LIGHT_BYTES = 32;

/** Rows of one Replay page. */
const PAGE_ROWS = 1000;
/** The first time window a Replay page looks into, µs (doubled while pages come back short). */
const PAGE_WINDOW_US = 60e6;

/** A time in µs as a PostgreSQL timestamptz literal, to the microsecond. */
function pgTimestamp(us: number): string {
  const ms = Math.floor(us / 1000);
  return `'${new Date(ms).toISOString().replace("Z", "")}${String(us - ms * 1000).padStart(3, "0")}Z'::timestamptz`;
}

/** Time slices a long GetTrack range is read in, at once. */
const TRACK_SLICES = 4;

export interface PositionReader {
  /**
   * One vehicle's points in [from, to), reduced by `keep` (indexes of the points to keep, given the
   * light points). Whole hours that history/track-hours.ts packed (and the rollup confirms) come
   * from their packs; for the rest PostgreSQL sends the light columns packed in one bytea per time
   * slice through a binary COPY (text output of 86,400 rows was most of a vehicle-day's time, and a
   * bytea in a text result travels as hex); then the full rows of the kept points only.
   */
  track(
    f: PointFilter & { vehicleId: string },
    fromUs: number,
    toUs: number,
    keep: (track: LightTrack) => number[],
  ): Promise<{ points: StoredPoint[]; total: number }>;
  /** Every visible point in [from, to), time order, one day at a time; hot days in pages, one query each (no connection held between them). */
  stream(filter: PointFilter, fromUs: number, toUs: number, signal?: AbortSignal): AsyncGenerator<StoredPoint[]>;
}

/** The track's points sorted by time (a stable sort: equal times keep their order). */
function inTimeOrder(t: LightTrack): LightTrack {
  const order = Array.from({ length: t.length }, (_, i) => i).sort((a, b) => t.us[a]! - t.us[b]! || a - b);
  const out = lightTrack(t.length);
  order.forEach((from, i) => {
    out.us[i] = t.us[from]!;
    out.lat[i] = t.lat[from]!;
    out.lon[i] = t.lon[from]!;
    out.speed[i] = t.speed[from]!;
    out.heading[i] = t.heading[from]!;
    out.full[i] = t.full[from];
  });
  return out;
}

const HOUR_US = 3600e6;

/**
 * The packed light columns of the whole hours of [fromUs, toUs) that track_hours holds for the
 * vehicle and whose point count is the rollup's for that hour (the writer keeps the rollup in the
 * transaction of its rows, so a pack that missed a row counts one less): hour start (µs) → bytes.
 * A pack that does not match is marked for the packer to make again.
 */
async function packedHours(sql: Sql, vehicleId: string, fromUs: number, toUs: number): Promise<Map<number, Buffer>> {
  const a = Math.ceil(fromUs / HOUR_US) * HOUR_US;
  const b = Math.floor(toUs / HOUR_US) * HOUR_US;
  const out = new Map<number, Buffer>();
  if (b <= a) return out;
  const ts = (us: number) => `'${new Date(us / 1000).toISOString()}'::timestamptz`;
  const v = sqlString(vehicleId);
  const buf = await copyOutToBuffer(
    sql,
    `COPY (SELECT (extract(epoch FROM t.hour) * 1000000)::int8, t.points = coalesce(r.points, 0), t.light FROM track_hours t
       LEFT JOIN (SELECT date_trunc('hour', minute) AS hour, sum(points) AS points FROM positions_rollup
                  WHERE vehicle_id = ${v} AND minute >= ${ts(a)} AND minute < ${ts(b)} GROUP BY 1) r ON r.hour = t.hour
       WHERE t.vehicle_id = ${v} AND t.hour >= ${ts(a)} AND t.hour < ${ts(b)}) TO STDOUT (FORMAT binary)`,
  );
  const stale: number[] = [];
  for (const [hour, matches, light] of binaryCopyRows(buf)) {
    const hourUs = Number(hour!.readBigInt64BE(0));
    if (matches![0] !== 1) stale.push(hourUs);
    else out.set(hourUs, light!);
  }
  if (stale.length > 0) {
    // Points that came without the writer marking their hour (a clock far off, a row written by hand): pack it again.
    const hours = stale.map((us) => new Date(us / 1000).toISOString());
    sql`INSERT INTO track_dirty (vehicle_id, hour) SELECT ${vehicleId}, unnest(${hours}::timestamptz[]) ON CONFLICT DO NOTHING`.catch(
      () => {},
    );
  }
  return out;
}

/** [fromUs, toUs) without the packed hours, as ranges in time order. */
function unpackedRanges(fromUs: number, toUs: number, packs: ReadonlyMap<number, Buffer>): [number, number][] {
  const out: [number, number][] = [];
  let start = fromUs;
  for (const h of [...packs.keys()].sort((x, y) => x - y)) {
    if (h > start) out.push([start, h]);
    start = h + HOUR_US;
  }
  if (start < toUs) out.push([start, toUs]);
  return out;
}

export function createPositionReader({ sql, archive }: PositionReaderOptions): PositionReader {
  const fromArchive = async (days: string[], f: PointFilter, fromUs: number, toUs: number): Promise<StoredPoint[]> => {
    if (!archive || days.length === 0) return [];
    const files = await localParquetFiles(archive.store, archive.cacheDir, days);
    if (files.length === 0) return [];
    const conn = await archive.connect();
    try {
      const reader = await conn.runAndReadAll(
        `SELECT ${COLUMNS_DUCK} FROM ${parquetSource(files)} WHERE ${conditions(f, fromUs, toUs, "duck")} ORDER BY recorded_at, vehicle_id`,
      );
      return reader.getRows().map(toPoint);
    } finally {
      conn.closeSync();
    }
  };

  const fromPostgres = async (f: PointFilter, fromUs: number, toUs: number): Promise<StoredPoint[]> => {
    const rows = await sql
      .unsafe(`SELECT ${COLUMNS_PG} FROM positions WHERE ${conditions(f, fromUs, toUs, "pg")} ORDER BY recorded_at, vehicle_id`)
      .values();
    return rows.map(toPoint);
  };

  return {
    async track(f, fromUs, toUs, keep) {
      // Whole hours packed by history/track-hours.ts, when the caller sees every point of the
      // vehicle; archived days are the archive's.
      const [archived, packed] = await Promise.all([
        archivedDaysBetween(sql, fromUs / 1000, toUs / 1000),
        seesWholeVehicle(f.access, f.vehicleId) ? packedHours(sql, f.vehicleId, fromUs, toUs) : new Map<number, Buffer>(),
      ]);
      const packs = new Map([...packed].filter(([hourUs]) => !archived.includes(dayOf(hourUs / 1000))));
      // The rest is read from the rows: long stretches in slices at once (packing is PostgreSQL's
      // work, one core per query).
      const pieces: [number, number][] = [];
      for (const [a, b] of unpackedRanges(fromUs, toUs, packs)) {
        const n = Math.max(1, Math.min(TRACK_SLICES, Math.ceil((b - a) / (6 * 3600e6))));
        for (let i = 0; i < n; i++) pieces.push([Math.round(a + ((b - a) * i) / n), Math.round(a + ((b - a) * (i + 1)) / n)]);
      }
      // Packed in a sorted subquery rather than with string_agg(… ORDER BY): PostgreSQL 15 sorts an
      // aggregate's input again even when the index gives it in order (86,400 rows spilled to a
      // temporary file). The order is checked below, so nothing rests on the subquery's.
      const [read, cold] = await Promise.all([
        Promise.all(
          pieces.map(([a, b]) =>
            copyOutToBuffer(
              sql,
              `COPY (SELECT string_agg(p, ''::bytea) FROM (
                 SELECT ${lightPointSql()} AS p
                 FROM positions WHERE ${conditions(f, a, b, "pg")} ORDER BY recorded_at) s) TO STDOUT (FORMAT binary)`,
            ).then((buf) => [a, binaryCopySingleValue(buf)] as const),
          ),
        ),
        fromArchive(archived, f, fromUs, toUs),
      ]);
      const inOrder = [...read, ...packs].sort((x, y) => x[0] - y[0]).map(([, b]) => b);
      const hotN = inOrder.reduce((n, b) => n + (b ? b.byteLength / LIGHT_BYTES : 0), 0);
      let all = lightTrack(hotN);
      let sorted = true;
      let k = 0;
      for (const b of inOrder) {
        if (!b) continue;
        const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
        for (let o = 0; o + LIGHT_BYTES <= b.byteLength; o += LIGHT_BYTES, k++) {
          // Two halves rather than getBigInt64: no BigInt made per point (exact below 2^53 µs).
          all.us[k] = dv.getInt32(o) * 4294967296 + dv.getUint32(o + 4) + PG_EPOCH_US;
          all.lat[k] = dv.getFloat64(o + 8);
          all.lon[k] = dv.getFloat64(o + 16);
          all.speed[k] = dv.getFloat32(o + 24);
          all.heading[k] = dv.getFloat32(o + 28);
          if (k > 0 && all.us[k]! < all.us[k - 1]!) sorted = false;
        }
      }
      if (cold.length) {
        const seen = new Set(all.us);
        const extra = cold.filter((p) => !seen.has(p.us));
        const merged = lightTrack(hotN + extra.length);
        merged.us.set(all.us);
        merged.lat.set(all.lat);
        merged.lon.set(all.lon);
        merged.speed.set(all.speed);
        merged.heading.set(all.heading);
        extra.forEach((p, j) => {
          const i = hotN + j;
          merged.us[i] = p.us;
          merged.lat[i] = p.lat;
          merged.lon[i] = p.lon;
          merged.speed[i] = p.speed;
          merged.heading[i] = p.heading;
          merged.full[i] = p;
        });
        all = merged;
        sorted = false;
      }
      if (!sorted) all = inTimeOrder(all);
      const kept = keep(all);
      const iso = (us: number) => `${new Date(Math.floor(us / 1000)).toISOString().replace("Z", "") + String(us % 1000).padStart(3, "0")}Z`;
      const wanted = kept.filter((i) => !all.full[i]).map((i) => iso(all.us[i]!));
      // The kept points' full rows, in slices at once: each is an index probe (~8 µs), a query per core.
      const full = new Map<number, StoredPoint>();
      const per = Math.max(1, Math.ceil(wanted.length / TRACK_SLICES));
      const chunks = Array.from({ length: Math.ceil(wanted.length / per) }, (_, i) => wanted.slice(i * per, (i + 1) * per));
      const results = await Promise.all(
        chunks.map((times) =>
          // The times as a literal (ISO strings, nothing to escape): a parameter would cost a Describe round trip first.
          sql
            .unsafe(
              `SELECT ${COLUMNS_PG} FROM positions WHERE ${conditions(f, fromUs, toUs, "pg")} AND recorded_at = ANY('{${times.join(",")}}'::timestamptz[])`,
            )
            .values(),
        ),
      );
      for (const rows of results) {
        for (const r of rows) {
          const p = toPoint(r);
          full.set(p.us, p);
        }
      }
      const points = kept.map((i) => all.full[i] ?? full.get(all.us[i]!)).filter((p): p is StoredPoint => p !== undefined);
      return { points, total: all.length };
    },
    async *stream(f, fromUs, toUs, signal) {
      const archived = new Set(await archivedDaysBetween(sql, fromUs / 1000, toUs / 1000));
      for (let dayStart = dayStartMs(dayOf(fromUs / 1000)) * 1000; dayStart < toUs; dayStart += DAY_MS * 1000) {
        if (signal?.aborted) return;
        const a = Math.max(fromUs, dayStart);
        const b = Math.min(toUs, dayStart + DAY_MS * 1000);
        const day = dayOf(dayStart / 1000);
        if (archived.has(day)) {
          const [hot, cold] = await Promise.all([fromPostgres(f, a, b), fromArchive([day], f, a, b)]);
          const all = mergeUnique(hot, cold);
          for (let i = 0; i < all.length; i += 1000) yield all.slice(i, i + 1000);
          continue;
        }
        // Pages, one query each, rather than a cursor: a Replay paces its points over minutes or
        // hours, and a cursor would hold a connection for all of it (eight slow replays once took
        // every connection, and the writer's with them). A page is the next PAGE_ROWS rows after
        // the last one sent (by recorded_at, vehicle_id: the key is unique), looked for in a time
        // window so that an area's page reads a bounded stretch of the day (its index is the
        // BRIN on recorded_at); the window grows while pages come back short.
        let start = a;
        let after: StoredPoint | undefined;
        let windowUs = PAGE_WINDOW_US;
        while (start < b) {
          if (signal?.aborted) return;
          const end = Math.min(b, start + windowUs);
          const key = after ? ` AND (recorded_at, vehicle_id) > (${pgTimestamp(after.us)}, ${sqlString(after.vehicleId)})` : "";
          const rows = (
            await sql
              .unsafe(
                `SELECT ${COLUMNS_PG} FROM positions WHERE ${conditions(f, start, end, "pg")}${key} ORDER BY recorded_at, vehicle_id LIMIT ${PAGE_ROWS}`,
              )
              .values()
          ).map(toPoint);
          if (rows.length === PAGE_ROWS) {
            after = rows[rows.length - 1]!;
            start = after.us;
          } else {
            after = undefined;
            start = end;
            if (rows.length < PAGE_ROWS / 4) windowUs *= 2;
          }
          if (signal?.aborted) return;
          if (rows.length > 0) yield rows;
        }
      }
    },
  };
}
