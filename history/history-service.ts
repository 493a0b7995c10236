/**
 * HistoryService: GetTrack (simplified to a point budget), GetStats (from the per-minute rollup),
 * Replay (server-streaming, original timing scaled). Hot and archived days alike; only what the
 * caller's watch token grants.
 */
import { create } from "@bufbuild/protobuf";
import { timestampDate, timestampFromMs, type Timestamp } from "@bufbuild/protobuf/wkt";
import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import { HistoryService, StatsBucket, type GetStatsResponse, type GetTrackResponse, type ReplayResponse } from "../gen/fleet/v1/history_pb";
import { PositionSchema, type Position } from "../gen/fleet/v1/position_pb";
import type { Area } from "../gen/fleet/v1/geo_pb";
import type { Sql } from "../lib/storage";
import { controlCharAt, controlCharMessage } from "../lib/ids";
import { claimsOf, InvalidRequestError, LimitExceededError } from "../lib/grpc";
import { accessOf, seesWholeVehicle } from "./access";
import { accessCondition, type AreaFilter, type PointFilter, type PositionReader, type StoredPoint } from "./read-positions";
import { createPointSizer, encodingOf, RESPONSE_OVERHEAD_BYTES } from "./response-size";
import { simplifyColumns } from "./simplify";

export interface HistoryLimits {
  /** Longest GetTrack/GetStats range, ms. */
  trackMaxRangeMs: number;
  /** Longest Replay range, ms. */
  replayMaxRangeMs: number;
  /** max_points when the caller sends 0. */
  trackDefaultPoints: number;
  /** Largest max_points accepted. */
  trackMaxPoints: number;
  /** Largest replay area radius (or half-diagonal of a box), metres. */
  maxAreaRadiusM: number;
  /** Largest message the server sends (GATEWAY_MAX_MESSAGE_BYTES: the server's writeMaxBytes). */
  maxResponseBytes: number;
  /** Replays open at once, in total (HISTORY_REPLAYS_MAX). */
  replaysMax: number;
  /** Replays open at once with one token (HISTORY_REPLAYS_PER_TOKEN). */
  replaysPerToken: number;
}

export interface HistoryServiceOptions {
  sql: Sql;
  reader: PositionReader;
  limits: HistoryLimits;
}

const formatDuration = (ms: number) =>
  ms % 86_400_000 === 0 ? `${ms / 86_400_000}d` : ms % 3_600_000 === 0 ? `${ms / 3_600_000}h` : `${Math.round(ms / 1000)}s`;

/** Seconds of 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z: a Timestamp's range (and JSON's). */
const MIN_SECONDS = -62_135_596_800;
const MAX_SECONDS = 253_402_300_799;

/** A Timestamp as µs, or InvalidRequestError when it is not a time (PostgreSQL and Date would fail on it later, as INTERNAL). */
function checkTime(name: string, t: Timestamp): number {
  const seconds = Number(t.seconds);
  if (!(seconds >= MIN_SECONDS && seconds <= MAX_SECONDS) || !(t.nanos >= 0 && t.nanos <= 999_999_999)) {
    throw new InvalidRequestError(
      `${name} (seconds ${t.seconds}, nanos ${t.nanos}) is out of range: send a time from 0001-01-01 to 9999-12-31 with nanos 0..999999999`,
    );
  }
  return seconds * 1e6 + Math.floor(t.nanos / 1000);
}

/** A vehicle id as asked: not empty, no control character (PostgreSQL's text cannot hold U+0000, and none belongs in an id). */
function checkVehicleId(id: string): string {
  if (!id) throw new InvalidRequestError("vehicle_id is required");
  if (controlCharAt(id) >= 0) throw new InvalidRequestError(controlCharMessage("vehicle_id", id));
  return id;
}

/** from/to as µs, checked: both set and times, from < to, within maxMs. */
export function checkRange(from: Timestamp | undefined, to: Timestamp | undefined, maxMs: number): { fromUs: number; toUs: number } {
  if (!from || !to) throw new InvalidRequestError("from and to are required");
  const fromUs = checkTime("from", from);
  const toUs = checkTime("to", to);
  if (!(fromUs < toUs)) {
    throw new InvalidRequestError(`from (${timestampDate(from).toISOString()}) must be before to (${timestampDate(to).toISOString()})`);
  }
  if (toUs - fromUs > maxMs * 1000) {
    throw new InvalidRequestError(
      `range of ${formatDuration(Math.round((toUs - fromUs) / 1000))} is longer than the limit of ${formatDuration(maxMs)}: ask for a shorter range`,
    );
  }
  return { fromUs, toUs };
}

const EARTH_M_PER_DEG = 111_320;

/** Checks an Area and turns it into a filter. */
export function checkArea(area: Area | undefined, maxRadiusM: number): AreaFilter {
  const shape = area?.shape;
  if (!shape || shape.case === undefined) throw new InvalidRequestError("area needs a circle or a box");
  if (shape.case === "circle") {
    const { lat, lon, radiusM } = shape.value;
    if (!Number.isFinite(lat) || !Number.isFinite(lon) || Math.abs(lat) > 90 || Math.abs(lon) > 180)
      throw new InvalidRequestError("circle centre must have lat -90..90 and lon -180..180");
    if (!(radiusM > 0) || radiusM > maxRadiusM) throw new InvalidRequestError(`circle radius_m must be above 0 and at most ${maxRadiusM}`);
    return { kind: "circle", lat, lon, radiusM };
  }
  const { minLat, minLon, maxLat, maxLon } = shape.value;
  const finite = [minLat, minLon, maxLat, maxLon].every(Number.isFinite);
  if (
    !finite ||
    minLat >= maxLat ||
    minLon >= maxLon ||
    Math.abs(minLat) > 90 ||
    Math.abs(maxLat) > 90 ||
    Math.abs(minLon) > 180 ||
    Math.abs(maxLon) > 180
  ) {
    throw new InvalidRequestError(
      "box needs min_lat < max_lat and min_lon < max_lon within -90..90 / -180..180 (it must not cross the antimeridian)",
    );
  }
  const halfDiag =
    (Math.hypot(maxLat - minLat, (maxLon - minLon) * Math.cos((((minLat + maxLat) / 2) * Math.PI) / 180)) * EARTH_M_PER_DEG) / 2;
  if (halfDiag > maxRadiusM) throw new InvalidRequestError(`box is too large: its half-diagonal must be at most ${maxRadiusM} m`);
  return { kind: "box", minLat, minLon, maxLat, maxLon };
}

/** A stored point as a Position message. */
export function toPosition(p: StoredPoint): Position {
  return create(PositionSchema, {
    vehicleId: p.vehicleId,
    seq: p.seq,
    recordedAt: timestampFromMicros(p.us),
    lat: p.lat,
    lon: p.lon,
    speed: p.speed,
    heading: p.heading,
    accuracy: p.accuracy,
    orderId: p.orderId,
    status: p.status,
    fleetId: p.fleetId,
    receivedAt: p.receivedUs ? timestampFromMicros(p.receivedUs) : undefined,
  });
}

function timestampFromMicros(us: number): Timestamp {
  const ts = timestampFromMs(Math.floor(us / 1000));
  ts.nanos += (us % 1000) * 1000;
  return ts;
}

const BUCKET_UNIT: Record<StatsBucket, string> = {
  [StatsBucket.UNSPECIFIED]: "hour",
  [StatsBucket.MINUTE]: "minute",
  [StatsBucket.HOUR]: "hour",
  [StatsBucket.DAY]: "day",
};

const sleep = (ms: number, signal: AbortSignal) =>
  new Promise<void>((resolve) => {
    if (signal.aborted) return resolve();
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal.removeEventListener("abort", done);
      resolve();
    }
    signal.addEventListener("abort", done, { once: true });
  });

/**
 * Places for open Replays, in total and per token: a Replay lasts as long as its range divided by
 * its speed, and each reads pages for all that time. A token is its bearer string (watch tokens
 * carry no other identity); a call without one was refused before it came here.
 */
function createReplaySlots(max: number, perToken: number) {
  let open = 0;
  const byToken = new Map<string, number>();
  return {
    /** Takes a place or throws LimitExceededError naming the limit; returns its release (idempotent). */
    take(token: string): () => void {
      const mine = byToken.get(token) ?? 0;
      if (mine >= perToken) {
        throw new LimitExceededError(
          `this token has ${mine} replays open, the limit (HISTORY_REPLAYS_PER_TOKEN) is ${perToken}: end one, or wait for one to finish, and retry`,
        );
      }
      if (open >= max)
        throw new LimitExceededError(`history has ${open} replays open, the limit (HISTORY_REPLAYS_MAX) is ${max}: retry later`);
      open++;
      byToken.set(token, mine + 1);
      let released = false;
      return () => {
        if (released) return;
        released = true;
        open--;
        const n = byToken.get(token)! - 1;
        if (n === 0) byToken.delete(token);
        else byToken.set(token, n);
      };
    },
  };
}

const bearerOf = (header: string | null) => /^\s*bearer\s+(\S+)\s*$/i.exec(header ?? "")?.[1] ?? "";

/** Points due within this many ms of each other (after scaling) go out in one message. */
const REPLAY_COALESCE_MS = 20;
/** Points of one Replay message at most (a message is also kept under the message limit in bytes). */
export const REPLAY_MESSAGE_POINTS = 1000;

/**
 * The track simplified further until it fits `maxBytes` as `size` measures it: the caller's budget
 * is what it wants at most, the message limit is what it can be sent (10,000 points are ~0.9 MB in
 * binary, ~2.2 MB in JSON, against 256 KiB). First and last points, stops and turns are kept first,
 * as in the first simplification.
 */
function fitTrack(points: StoredPoint[], maxBytes: number, size: (p: StoredPoint) => number): StoredPoint[] {
  let bytes = points.reduce((n, p) => n + size(p), 0);
  while (bytes > maxBytes && points.length > 2) {
    const budget = Math.max(2, Math.min(points.length - 1, Math.floor(points.length * (maxBytes / bytes) * 0.99)));
    const kept = simplifyColumns(
      {
        length: points.length,
        lat: points.map((p) => p.lat),
        lon: points.map((p) => p.lon),
        speed: points.map((p) => p.speed),
        heading: points.map((p) => p.heading),
      },
      budget,
    );
    points = kept.map((i) => points[i]!);
    bytes = points.reduce((n, p) => n + size(p), 0);
  }
  return points;
}

const statsResponse = (rows: readonly Record<string, unknown>[]): GetStatsResponse =>
  create(HistoryService.method.getStats.output, {
    rows: rows.map((r) => ({
      bucketStart: timestampFromMs(Number(r.bucket)),
      points: BigInt(r.points as string),
      distanceM: Number(r.distance),
      maxSpeed: Number(r.max_speed),
      meanSpeed: Number(r.mean_speed),
    })),
  });

export function createHistoryService({ sql, reader, limits }: HistoryServiceOptions): ServiceImpl<typeof HistoryService> {
  const replaySlots = createReplaySlots(limits.replaysMax, limits.replaysPerToken);
  return {
    async getTrack(req, ctx: HandlerContext): Promise<GetTrackResponse> {
      const access = accessOf(claimsOf(ctx));
      checkVehicleId(req.vehicleId);
      const { fromUs, toUs } = checkRange(req.from, req.to, limits.trackMaxRangeMs);
      if (req.maxPoints > limits.trackMaxPoints) throw new InvalidRequestError(`max_points must be at most ${limits.trackMaxPoints}`);
      const budget = req.maxPoints || limits.trackDefaultPoints;
      const { points, total } = await reader.track({ vehicleId: req.vehicleId, access }, fromUs, toUs, (light) =>
        simplifyColumns(light, budget),
      );
      const size = createPointSizer(encodingOf(ctx.requestHeader.get("content-type")));
      const fitting = fitTrack(points, limits.maxResponseBytes - RESPONSE_OVERHEAD_BYTES, size);
      return create(HistoryService.method.getTrack.output, { points: fitting.map(toPosition), totalPoints: BigInt(total) });
    },

    async getStats(req, ctx): Promise<GetStatsResponse> {
      const access = accessOf(claimsOf(ctx));
      checkVehicleId(req.vehicleId);
      const { fromUs, toUs } = checkRange(req.from, req.to, limits.trackMaxRangeMs);
      const unit = BUCKET_UNIT[req.bucket];
      if (!unit) throw new InvalidRequestError(`bucket ${req.bucket} is unknown`);
      const from = new Date(fromUs / 1000).toISOString();
      const to = new Date(toUs / 1000).toISOString();
      if (!seesWholeVehicle(access, req.vehicleId)) {
        // The rollup has neither fleets nor orders: a fleet or order grant gets the statistics of
        // the points it sees only (the time the vehicle was in that fleet or served that order),
        // from the rows; a leg counts when both its ends are seen.
        const rows = await sql`
          SELECT (extract(epoch FROM date_trunc(${unit}, recorded_at)) * 1000)::int8 AS bucket, count(*)::int8 AS points,
                 coalesce(sum(leg), 0) AS distance, max(speed) AS max_speed, avg(speed) AS mean_speed
          FROM (SELECT recorded_at, speed, seen,
                       CASE WHEN lag(seen) OVER w THEN fleet_distance_m(lag(lat) OVER w, lag(lon) OVER w, lat, lon) END AS leg
                FROM (SELECT recorded_at, lat, lon, speed, ${sql.unsafe(accessCondition(access))} AS seen FROM positions
                      WHERE vehicle_id = ${req.vehicleId} AND recorded_at >= ${from}::timestamptz AND recorded_at < ${to}::timestamptz) p
                WINDOW w AS (ORDER BY recorded_at)) t
          WHERE seen
          GROUP BY 1 ORDER BY 1`;
        return statsResponse(rows);
      }
      const rows = await sql`
        SELECT (extract(epoch FROM date_trunc(${unit}, minute)) * 1000)::int8 AS bucket, sum(points)::int8 AS points,
               sum(distance_m) AS distance, max(max_speed) AS max_speed, sum(sum_speed) / sum(points) AS mean_speed
        FROM positions_rollup
        WHERE vehicle_id = ${req.vehicleId} AND minute >= ${from}::timestamptz AND minute < ${to}::timestamptz
        GROUP BY 1 ORDER BY 1`;
      return statsResponse(rows);
    },

    async *replay(req, ctx): AsyncGenerator<ReplayResponse> {
      const access = accessOf(claimsOf(ctx));
      if (!(req.speed > 0) || !Number.isFinite(req.speed))
        throw new InvalidRequestError(`speed must be above 0 (10 plays ten times faster), got ${req.speed}`);
      const { fromUs, toUs } = checkRange(req.from, req.to, limits.replayMaxRangeMs);
      let filter: PointFilter;
      if (req.target.case === "vehicleId") {
        checkVehicleId(req.target.value);
        filter = { vehicleId: req.target.value, access };
      } else if (req.target.case === "area") {
        filter = { area: checkArea(req.target.value, limits.maxAreaRadiusM), access };
      } else {
        throw new InvalidRequestError("replay needs a vehicle_id or an area");
      }
      const signal = ctx.signal;
      const release = replaySlots.take(bearerOf(ctx.requestHeader.get("authorization")));
      signal.addEventListener("abort", release, { once: true });
      try {
        yield* paced(filter, fromUs, toUs, req.speed, createPointSizer(encodingOf(ctx.requestHeader.get("content-type"))), signal);
      } finally {
        release();
        signal.removeEventListener("abort", release);
      }
    },
  };

  /**
   * The points of [fromUs, toUs) at their recorded pace divided by `speed`; those due together go in
   * one message of at most REPLAY_MESSAGE_POINTS points and the message limit in bytes (as `size`
   * measures them), the rest of them in the next messages, at once.
   */
  async function* paced(
    filter: PointFilter,
    fromUs: number,
    toUs: number,
    speed: number,
    size: (p: StoredPoint) => number,
    signal: AbortSignal,
  ): AsyncGenerator<ReplayResponse> {
    const maxBytes = limits.maxResponseBytes - RESPONSE_OVERHEAD_BYTES;
    let startUs: number | undefined;
    const wallStart = performance.now();
    let batch: Position[] = [];
    let batchBytes = 0;
    let batchDue = 0;
    for await (const chunk of reader.stream(filter, fromUs, toUs, signal)) {
      for (const p of chunk) {
        startUs ??= p.us;
        const due = (p.us - startUs) / 1000 / speed;
        const bytes = size(p);
        if (
          batch.length > 0 &&
          (due - batchDue > REPLAY_COALESCE_MS || batch.length >= REPLAY_MESSAGE_POINTS || batchBytes + bytes > maxBytes)
        ) {
          const wait = batchDue - (performance.now() - wallStart);
          if (wait > 0) await sleep(wait, signal);
          if (signal.aborted) return;
          yield create(HistoryService.method.replay.output, { positions: batch });
          batch = [];
          batchBytes = 0;
        }
        if (batch.length === 0) batchDue = due;
        batch.push(toPosition(p));
        batchBytes += bytes;
      }
    }
    if (batch.length > 0 && !signal.aborted) {
      const wait = batchDue - (performance.now() - wallStart);
      if (wait > 0) await sleep(wait, signal);
      if (!signal.aborted) yield create(HistoryService.method.replay.output, { positions: batch });
    }
  }
}
