/**
 * The tracker's Redis: every read and write of live state goes through here.
 *
 * Keys (under TRACKER_REDIS_PREFIX):
 * - `geo`: GEO set of online vehicles (member = vehicle id).
 * - `geo:<fleet>`: GEO set of the fleet's online vehicles, kept by the same scripts as `geo` (a
 *   vehicle that changes fleet leaves the old one's): a fleet token's search reads its fleets'
 *   vehicles, not every fleet's in the circle.
 * - `st:<bucket>`: the latest state of the vehicles of one bucket (hash: vehicle id -> record of
 *   state-codec.ts). 4096 buckets keep each hash small enough for Redis's compact listpack
 *   encoding: ~60 bytes a vehicle instead of ~100+ for a hash per vehicle (see README).
 * - `counts`: vehicles per status (`s<status>`) and per status and fleet (`s<status>|<fleet>`),
 *   offline ones under OFFLINE; kept by the same scripts that change a status, so always in step.
 * - `fleet-orders`: `<fleet>/<order>` (lib/auth.ts orderGrant) -> vehicle id serving it. Order ids are
 *   unique within a fleet only; the key changed name when it became per fleet, so that an index of
 *   bare order ids left by an older tracker is never read as one.
 *
 * Writes are Lua scripts (one round trip, atomic): newer-wins.lua per group of JetStream batches,
 * set-status.lua, sweep.lua; nearby.lua reads a search with its records in one round trip.
 */
import type Redis from "ioredis";
import { BUCKETS, bucketOf } from "./bucket";
import type { PointBlob } from "./point-blob";
import { FIXED_BYTES, LiveKind } from "./state-codec";

/** GEOSEARCH refuses latitudes past this (Web Mercator). */
const GEO_MAX_LAT = 85.05112878;
/** A point heard from longer ago than this is "old" for the sweep's bounds (newer-wins.lua, sweep.lua). */
const OLD_POINT_MS = 60_000;

const script = (name: string) => Bun.file(new URL(`./${name}`, import.meta.url)).text();
const [newerWinsLua, setStatusLua, sweepLua, nearbyLua] = await Promise.all([
  script("newer-wins.lua"),
  script("set-status.lua"),
  script("sweep.lua"),
  script("nearby.lua"),
]);

type Arg = string | number | Buffer;
interface Scripts {
  fleetNewerWinsBuffer(
    geo: string,
    counts: string,
    orders: string,
    seenBounds: string,
    ...args: Arg[]
  ): Promise<(Buffer | number | null)[]>;
  fleetNearbyBuffer(geo: string, ...args: Arg[]): Promise<(Buffer | number)[]>;
  fleetSetStatusBuffer(geo: string, counts: string, orders: string, ...args: Arg[]): Promise<[Buffer, Buffer] | null>;
  fleetSweepBuffer(geo: string, counts: string, seenBounds: string, ...args: Arg[]): Promise<Buffer[]>;
}

/** What a vehicle was before a change: where (for a cell change) and the order (of its fleet) it served. */
export interface Before {
  lat: number;
  lon: number;
  fleetId: string;
  orderId: string;
}

/** A point Redis took (it was newer than what it held). */
export interface Applied {
  vehicleId: string;
  /** Its live event (state-codec.ts's encodeLive of LiveKind.Point), ready to publish. */
  event: Buffer;
  /** The new record (a view into `event`). */
  record: Buffer;
  /** The vehicle's record before; undefined when it is new. */
  before?: Buffer;
}

export interface StoreOptions {
  redis: Redis;
  /** Key prefix, e.g. "fleet:". */
  prefix: string;
  /** Channel prefix for the Redis Pub/Sub comparison ("" = off). */
  pubsubPrefix?: string;
}

export interface Store {
  readonly keys: { geo: string; fleetGeoPrefix: string; counts: string; orders: string; bucketPrefix: string; seenBounds: string };
  /** Applies a batch with newer-wins (one script call); returns the points that were taken, in order. */
  applyBatch(points: PointBlob, nowMs: number): Promise<Applied[]>;
  /** Records of these vehicles (absent when unknown). */
  getMany(ids: readonly string[]): Promise<Map<string, Buffer>>;
  /**
   * Online vehicles within `radiusM` of a point whose status is in `statusMask` (bit s for status s;
   * 0: any), of `fleet` (searched in that fleet's GEO set) or of any fleet (undefined: the set of
   * all), nearest first, at most `wanted`, with their records, reading at most about `budget`
   * candidates (nearby.lua). `state`: "all" (every match is there), "more" (stopped at `wanted`),
   * "budget" (stopped at the budget with fewer).
   */
  nearby(
    lat: number,
    lon: number,
    radiusM: number,
    wanted: number,
    statusMask: number,
    fleet: string | undefined,
    budget: number,
  ): Promise<{ state: NearbyState; hits: NearbyHit[] }>;
  /** The counts hash fields asked for (missing ones are 0). */
  counts(fields: readonly string[]): Promise<number[]>;
  /** The vehicle serving an order, named as a grant (`fleet/order`, lib/auth.ts orderGrant), if any. */
  orderVehicle(grant: string): Promise<string | undefined>;
  /** The vehicles serving these orders (grants), in one round trip. */
  orderVehicles(grants: readonly string[]): Promise<string[]>;
  /** Sets status and order; undefined for an unknown vehicle. */
  setStatus(vehicleId: string, status: number, orderId: string): Promise<{ record: Buffer; before: Before } | undefined>;
  /** Takes vehicles last seen before `cutoffMs` offline, `bucketsPerCall` buckets per script call. */
  sweep(cutoffMs: number, bucketsPerCall?: number): Promise<{ vehicleId: string; record: Buffer }[]>;
}

export type NearbyState = "all" | "more" | "budget";
const NEARBY_STATES: NearbyState[] = ["all", "more", "budget"];

/** A vehicle found by `nearby`, nearest first (the distance is the caller's to compute: `distanceM`). */
export interface NearbyHit {
  id: string;
  record: Buffer;
}

/** Whether the packed point at `r` of `b` names the fleet of the record `before`. */
function sameFleet(b: Buffer, r: number, before: Buffer): boolean {
  const fl = b[r + 40]!;
  return fl === before[40]! && b.compare(before, FIXED_BYTES, FIXED_BYTES + fl, r + FIXED_BYTES, r + FIXED_BYTES + fl) === 0;
}

/** Creates the store and registers its scripts on the connection (EVALSHA, EVAL on NOSCRIPT). */
export function createStore({ redis, prefix, pubsubPrefix = "" }: StoreOptions): Store {
  const keys = {
    geo: `${prefix}geo`,
    fleetGeoPrefix: `${prefix}geo:`,
    counts: `${prefix}counts`,
    orders: `${prefix}fleet-orders`,
    bucketPrefix: `${prefix}st:`,
    seenBounds: `${prefix}seen`,
  };
  // Names of their own: ioredis defines commands as methods of the client (a "setStatus" replaced its internal one).
  redis.defineCommand("fleetNewerWins", { lua: newerWinsLua, numberOfKeys: 4 });
  redis.defineCommand("fleetSetStatus", { lua: setStatusLua, numberOfKeys: 3 });
  redis.defineCommand("fleetSweep", { lua: sweepLua, numberOfKeys: 3 });
  redis.defineCommand("fleetNearby", { lua: nearbyLua, numberOfKeys: 1 });
  const scripts = redis as unknown as Scripts;

  return {
    keys,
    async applyBatch(points, nowMs) {
      if (points.count === 0) return [];
      const reply = await scripts.fleetNewerWinsBuffer(
        keys.geo,
        keys.counts,
        keys.orders,
        keys.seenBounds,
        keys.bucketPrefix,
        pubsubPrefix,
        points.buf.subarray(0, points.size),
        nowMs - OLD_POINT_MS,
        keys.fleetGeoPrefix,
      );
      if (reply.length !== points.count) throw new Error(`newer-wins answered ${reply.length} values for ${points.count} points`);
      // The script answers what each vehicle was before; the new records are made here, as the
      // script made them (newer-wins.lua's newRecord), each inside its live event, all in one buffer.
      const b = points.buf;
      let total = 0;
      for (let i = 0; i < reply.length; i++) {
        const before = reply[i];
        if (typeof before === "number") continue;
        const r = points.recAt(i);
        let orderLen = points.recLen[i]! - FIXED_BYTES - b[r + 40]!;
        if (orderLen === 0 && before && sameFleet(b, r, before)) orderLen = before.length - FIXED_BYTES - before[40]!;
        total += 3 + points.idLen[i]! + FIXED_BYTES + b[r + 40]! + orderLen;
      }
      const events = Buffer.allocUnsafe(total);
      const out: Applied[] = [];
      let at = 0;
      for (let i = 0; i < reply.length; i++) {
        const value = reply[i];
        if (typeof value === "number") continue;
        const before = value ?? undefined;
        const idAt = points.idAt[i]!;
        const idLen = points.idLen[i]!;
        const r = idAt + idLen;
        const fl = b[r + 40]!;
        const start = at;
        events[at] = LiveKind.Point;
        events.writeUInt16LE(idLen, at + 1);
        b.copy(events, at + 3, idAt, r);
        const rec = at + 3 + idLen;
        events.writeUInt32LE(before ? (before.readUInt32LE(0) + 1) >>> 0 : 1, rec);
        b.copy(events, rec + 4, r + 4, r + 38);
        events[rec + 38] = b[r + 38] !== 0 ? b[r + 38]! : before ? before[38]! : 1;
        events[rec + 39] = 1;
        events[rec + 40] = fl;
        const pointEnd = r + points.recLen[i]!;
        at = rec + FIXED_BYTES;
        // An empty order keeps the stored one while the fleet stays (newer-wins.lua's newRecord).
        if (pointEnd > r + FIXED_BYTES + fl || !before || !sameFleet(b, r, before)) at += b.copy(events, at, r + FIXED_BYTES, pointEnd);
        else {
          at += b.copy(events, at, r + FIXED_BYTES, r + FIXED_BYTES + fl);
          at += before.copy(events, at, FIXED_BYTES + before[40]!);
        }
        const event = events.subarray(start, at);
        out.push({ vehicleId: b.toString("utf8", idAt, r), event, record: event.subarray(3 + idLen), before });
      }
      return out;
    },
    async getMany(ids) {
      const byBucket = new Map<number, string[]>();
      for (const id of new Set(ids)) {
        const b = bucketOf(id);
        let list = byBucket.get(b);
        if (!list) byBucket.set(b, (list = []));
        list.push(id);
      }
      const out = new Map<string, Buffer>();
      if (byBucket.size === 0) return out;
      const pipe = redis.pipeline();
      const order: string[][] = [];
      for (const [b, list] of byBucket) {
        pipe.hmgetBuffer(keys.bucketPrefix + b, ...list);
        order.push(list);
      }
      const results = (await pipe.exec()) ?? [];
      results.forEach(([err, values], i) => {
        if (err) throw err;
        const list = order[i]!;
        (values as (Buffer | null)[]).forEach((v, j) => {
          if (v) out.set(list[j]!, v);
        });
      });
      return out;
    },
    async nearby(lat, lon, radiusM, wanted, statusMask, fleet, budget) {
      const clat = Math.max(-GEO_MAX_LAT, Math.min(GEO_MAX_LAT, lat));
      // The fleet's own set; the records are still checked for the fleet, as a tracker of an older
      // version running beside this one moves a vehicle to another fleet without leaving this set.
      const geo = fleet === undefined ? keys.geo : keys.fleetGeoPrefix + fleet;
      const only = fleet === undefined ? [] : [fleet];
      const reply = await scripts.fleetNearbyBuffer(
        geo,
        keys.bucketPrefix,
        lon,
        clat,
        radiusM,
        Math.max(1, wanted),
        statusMask,
        budget,
        ...only,
      );
      const hits: NearbyHit[] = [];
      for (let i = 1; i + 1 < reply.length; i += 2)
        hits.push({ id: (reply[i] as Buffer).toString("utf8"), record: reply[i + 1] as Buffer });
      return { state: NEARBY_STATES[Number(reply[0])] ?? "all", hits };
    },
    async counts(fields) {
      if (fields.length === 0) return [];
      const values = await redis.hmget(keys.counts, ...fields);
      return values.map((v) => Math.max(0, Number(v ?? 0)));
    },
    async orderVehicle(grant) {
      return (await redis.hget(keys.orders, grant)) ?? undefined;
    },
    async orderVehicles(grants) {
      if (grants.length === 0) return [];
      return (await redis.hmget(keys.orders, ...grants)).filter((v): v is string => v !== null);
    },
    async setStatus(vehicleId, status, orderId) {
      const reply = await scripts.fleetSetStatusBuffer(
        keys.geo,
        keys.counts,
        keys.orders,
        keys.bucketPrefix + bucketOf(vehicleId),
        vehicleId,
        status,
        orderId,
      );
      if (!reply) return undefined;
      const [record, previous] = reply;
      const fl = previous.readUInt8(40);
      return {
        record,
        before: {
          lat: previous.readInt32LE(24) / 1e7,
          lon: previous.readInt32LE(28) / 1e7,
          fleetId: previous.toString("utf8", FIXED_BYTES, FIXED_BYTES + fl),
          orderId: previous.toString("utf8", FIXED_BYTES + fl),
        },
      };
    },
    async sweep(cutoffMs, bucketsPerCall = 32) {
      const out: { vehicleId: string; record: Buffer }[] = [];
      for (let from = 0; from < BUCKETS; from += bucketsPerCall) {
        const reply = await scripts.fleetSweepBuffer(
          keys.geo,
          keys.counts,
          keys.seenBounds,
          keys.bucketPrefix,
          from,
          Math.min(BUCKETS, from + bucketsPerCall),
          cutoffMs,
          Date.now(),
          keys.fleetGeoPrefix,
        );
        for (let i = 0; i < reply.length; i += 2) out.push({ vehicleId: reply[i]!.toString("utf8"), record: reply[i + 1]! });
      }
      return out;
    },
  };
}
