/**
 * TrackerService: GetVehicle, Nearby, CountByStatus, SetStatus (unary) and WatchVehicles,
 * WatchArea (server streams). Every answer and every event passes the token's grant (authz.ts).
 */
import { create, type Message } from "@bufbuild/protobuf";
import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import type { NatsConnection } from "@nats-io/nats-core";
import { VehicleStatus } from "../gen/fleet/v1/position_pb";
import {
  CountByStatusResponseSchema,
  GetVehicleResponseSchema,
  SetStatusResponseSchema,
  StatusCountSchema,
  TrackerService,
  type VehicleEvent,
  type WatchAreaResponse,
  type WatchVehiclesRequest,
  type WatchVehiclesResponse,
} from "../gen/fleet/v1/tracker_pb";
import { parseOrderGrant, type WatchClaims } from "../lib/auth";
import { distanceM, REDIS_EARTH_RADIUS_M } from "../lib/geo";
import {
  connectionKey,
  nativeServerStream,
  nativeUnaryMethods,
  InvalidRequestError,
  LimitExceededError,
  NotFoundError,
  PermissionError,
  ShuttingDownError,
  UnavailableError,
  type MessageEncoder,
  type NativeMethod,
} from "../lib/grpc";
import { controlCharAt, controlCharMessage } from "../lib/ids";
import type { Logger } from "../lib/log";
import { Counter, Gauge, Histogram, delayBuckets, type Registry } from "../lib/metrics";
import { liveOrderSubject, liveVehicleWildcard } from "../lib/nats";
import { regionSubjects, toRegion } from "./area";
import { canSee, canSeeView, grantsById, watchClaims } from "./authz";
import { createLiveHub } from "./live-hub";
import type { LivePublisher } from "./live";
import { decodeState, LiveKind, toVehicleState, viewOfRecord, type StoredState } from "./state-codec";
import type { Store } from "./store";
import type { LiveView } from "./state-codec";
import { Watch, type WatchScope } from "./watch";
import { encodeNearbyResponse, encodeWatchResponse, nearbyResponse, type NearbyResult } from "./watch-encoder";

export interface TrackerLimits {
  maxRadiusM: number;
  nearbyDefault: number;
  nearbyMax: number;
  watchMaxVehicles: number;
  watchMaxPending: number;
  watchMaxLagMs: number;
  /** A watch idle this long sends a message with no events (TRACKER_WATCH_HEARTBEAT; 0: never). */
  watchHeartbeatMs?: number;
  /** Candidates one Nearby or area snapshot may read in Redis (TRACKER_SCAN_MAX). */
  scanMax: number;
  /** Watches one token may hold open at once (TRACKER_WATCHES_PER_TOKEN). */
  watchesPerToken: number;
  /** Watches one client connection may hold open at once (TRACKER_WATCHES_PER_CONNECTION). */
  watchesPerConnection: number;
}

export interface TrackerServiceOptions {
  store: Store;
  nc: NatsConnection;
  live: LivePublisher;
  limits: TrackerLimits;
  registry: Registry;
  log: Logger;
}

export interface TrackerHandlers {
  service: ServiceImpl<typeof TrackerService>;
  /** Every method for `serve({ nativeMethods })`: the same handlers, without connect's per-call and per-message pipeline on gRPC. */
  nativeMethods: NativeMethod[];
  /** Hands a live message this process published to its own watches (see LiveHub.deliver). */
  deliverLocal(subject: string, data: Uint8Array): void;
  /** Ends every open watch (shutdown). */
  closeWatches(): void;
  /** Stops the lag check timer. */
  close(): void;
}

const COUNTED = [VehicleStatus.ACTIVE, VehicleStatus.IDLE, VehicleStatus.ON_DELIVERY, VehicleStatus.AVAILABLE, VehicleStatus.OFFLINE];
const SETTABLE = new Set([VehicleStatus.ACTIVE, VehicleStatus.IDLE, VehicleStatus.ON_DELIVERY, VehicleStatus.AVAILABLE]);
const MAX_ID = 128;
/** Responses written out rather than through protobuf-es's `create`, one per message sent; TypeScript checks every field is there. */
const vehiclesResponse = (events: VehicleEvent[]): WatchVehiclesResponse => ({ $typeName: "fleet.v1.WatchVehiclesResponse", events });
const areaResponse = (events: VehicleEvent[]): WatchAreaResponse => ({ $typeName: "fleet.v1.WatchAreaResponse", events });
/**
 * A watch waits (and its updates coalesce to the latest per vehicle) once this much is written and
 * not yet taken by its client: ~60 updates. With the 64 KiB of other streams, a busy area watch
 * held seconds of stale positions in the socket when its client fell behind.
 */
const WATCH_WRITE_HIGH_WATER = 8 * 1024;
const watchOutput = { encode: encodeWatchResponse, writeHighWaterBytes: WATCH_WRITE_HIGH_WATER };

/** Runs a store call; a Redis failure becomes UNAVAILABLE (retry), not INTERNAL. */
async function fromStore<T>(what: string, call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (cause) {
    throw new UnavailableError(`live state store unavailable (${what}): retry with backoff`, { cause });
  }
}

function checkId(what: string, id: string): void {
  if (id.length === 0) throw new InvalidRequestError(`${what} is empty`);
  if (id.length > MAX_ID) throw new InvalidRequestError(`${what} must have at most ${MAX_ID} characters`);
  if (controlCharAt(id) >= 0) throw new InvalidRequestError(controlCharMessage(what, id));
}

function statusFilter(statuses: readonly VehicleStatus[]): (s: VehicleStatus) => boolean {
  for (const s of statuses) {
    if (!(s in VehicleStatus) || s === VehicleStatus.UNSPECIFIED) throw new InvalidRequestError(`statuses: ${s} is not a status`);
  }
  if (statuses.length === 0) return () => true;
  const wanted = new Set(statuses);
  return (s) => wanted.has(s);
}

/** The statuses as nearby.lua's mask (bit s for status s; 0: any). */
function statusMask(statuses: readonly VehicleStatus[]): number {
  statusFilter(statuses);
  return statuses.reduce((m, s) => m | (1 << s), 0);
}

export function createTrackerService({ store, nc, live, limits, registry, log }: TrackerServiceOptions): TrackerHandlers {
  const openWatches = new Gauge({
    name: "tracker_watches_open",
    help: "watches open now, by kind",
    labelNames: ["kind"],
    registers: [registry],
  });
  const eventsSent = new Counter({
    name: "tracker_watch_events_sent_total",
    help: "events sent to watchers",
    labelNames: ["kind"],
    registers: [registry],
  });
  const coalesced = new Counter({
    name: "tracker_watch_events_coalesced_total",
    help: "updates replaced by a newer one before a slow watcher took them",
    labelNames: ["kind"],
    registers: [registry],
  });
  const tooSlow = new Counter({
    name: "tracker_watches_too_slow_total",
    help: "watches ended because their client fell behind past a bound",
    labelNames: ["kind"],
    registers: [registry],
  });
  const watches = new Set<Watch>();
  const liveDelay = new Histogram({
    name: "tracker_live_delay_seconds",
    help: "from the gateway receiving a point (its last-seen time) to this process receiving its live event, one message in 16: how far the pipeline up to the watches runs behind",
    buckets: delayBuckets,
    registers: [registry],
  });
  // One message in 16 is timed: an observe() per message was 6% of a busy watch server's CPU.
  let liveMessages = 0;
  const hub = createLiveHub(nc, log, (view) => {
    // Status changes and the sweep carry the vehicle's last point's time, not news of their own.
    if ((++liveMessages & 15) === 0 && view.kind === LiveKind.Point) liveDelay.observe(Math.max(0, Date.now() - view.lastSeenMs) / 1000);
  });
  new Gauge({
    name: "tracker_live_subscriptions",
    help: "NATS live subjects this process subscribes to (shared by its watches)",
    registers: [registry],
    collect() {
      this.set(hub.size);
    },
  });
  // At least 100 ms: the check below runs every heartbeat when that is shorter than a second, and a
  // 1 ms setting would have it run every millisecond for nothing a client needs.
  const heartbeatMs = limits.watchHeartbeatMs ? Math.max(100, limits.watchHeartbeatMs) : 0;
  // A heartbeat goes at the last check before the silence would pass heartbeatMs, and the checks
  // come at least that often: sent at the first check past it, it came up to a check late (a 10 s
  // heartbeat 11 s after a message, a 500 ms one every second).
  const checkEveryMs = heartbeatMs > 0 ? Math.min(1000, heartbeatMs) : 1000;
  const lagTimer = setInterval(() => {
    const now = Date.now();
    for (const w of watches) {
      w.checkLag(now);
      if (heartbeatMs > 0) w.heartbeat(now, heartbeatMs - checkEveryMs);
    }
  }, checkEveryMs);

  const decodeAll = (records: Map<string, Buffer>) => {
    const out = new Map<string, StoredState>();
    for (const [id, r] of records) out.set(id, decodeState(r));
    return out;
  };

  /** Checks that the token may see this vehicle; the state is undefined when the tracker never saw it. */
  const authorize = (claims: WatchClaims, id: string, state: StoredState | undefined) => {
    if (state ? canSee(claims, id, state.fleetId, state.orderId) : grantsById(claims, id)) return;
    throw new PermissionError(`token does not grant vehicle "${id}"`);
  };

  /**
   * Records of the vehicles a token grants one by one (by id, or by the order they serve). A token
   * that grants no fleet sees only these: a query reads them, not every vehicle of its circle, so
   * its cost follows the grant (a one-vehicle token over 40,000 vehicles in a 200 km circle read all
   * 40,000 in one script, ~0.5 s of Redis).
   */
  const grantedRecords = async (claims: WatchClaims): Promise<Map<string, Buffer>> => {
    const ids = new Set(claims.vehicles);
    for (const v of await fromStore("orders", () => store.orderVehicles(claims.orders))) ids.add(v);
    return fromStore("get", () => store.getMany([...ids]));
  };
  /** Whether a query reads the token's grant rather than searching the circle. */
  const byGrant = (claims: WatchClaims) => !claims.all && claims.fleets.length === 0;
  /**
   * The GEO sets a search reads (store.nearby's fleet): the set of all for a token that sees all,
   * else each of its fleets' own, so that a fleet of 20 vehicles among 40,000 of other fleets reads
   * its 20, not the 40,000 (which went past TRACKER_SCAN_MAX).
   */
  const searchSets = (claims: WatchClaims): (string | undefined)[] => (claims.all ? [undefined] : [...new Set(claims.fleets)]);
  const tooMany = (what: string) =>
    new LimitExceededError(
      `${what} would read more than ${limits.scanMax} vehicles in the area (TRACKER_SCAN_MAX): narrow the area, the statuses or the limit`,
    );

  /**
   * Open watches per token: at most limits.watchesPerToken each. Keyed by the token itself, not the
   * header (`bearer  T` and `Bearer T` are one token), which the auth interceptor verified already.
   * And per client connection (its HTTP/2 session or HTTP/1.1 socket, connectionKey): at most
   * limits.watchesPerConnection, whatever tokens it carries, so one client cannot hold a process's
   * watches by opening them under many tokens. A WeakMap: a connection gone is forgotten with it.
   */
  const watchesOf = new Map<string, number>();
  const watchesOn = new WeakMap<object, number>();
  const holdWatch = (ctx: HandlerContext): (() => void) => {
    const key = (ctx.requestHeader.get("authorization") ?? "").trim().replace(/^bearer\s+/i, "");
    const open = watchesOf.get(key) ?? 0;
    if (open >= limits.watchesPerToken) {
      throw new LimitExceededError(
        `this token has ${open} watches open, the most it may (TRACKER_WATCHES_PER_TOKEN ${limits.watchesPerToken}): close one first`,
      );
    }
    const connection = ctx.values.get(connectionKey);
    const onConnection = connection ? (watchesOn.get(connection) ?? 0) : 0;
    if (onConnection >= limits.watchesPerConnection) {
      throw new LimitExceededError(
        `this connection has ${onConnection} watches open, the most it may (TRACKER_WATCHES_PER_CONNECTION ${limits.watchesPerConnection}): close one first, or open another connection`,
      );
    }
    watchesOf.set(key, open + 1);
    if (connection) watchesOn.set(connection, onConnection + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const n = (watchesOf.get(key) ?? 1) - 1;
      if (n <= 0) watchesOf.delete(key);
      else watchesOf.set(key, n);
      if (connection) watchesOn.set(connection, Math.max(0, (watchesOn.get(connection) ?? 1) - 1));
    };
  };

  // Children per kind: a labelled inc() looks its series up by the label values every time.
  const coalescedOf = { vehicles: coalesced.labels("vehicles"), area: coalesced.labels("area") };
  const sentOf = { vehicles: eventsSent.labels("vehicles"), area: eventsSent.labels("area") };
  const watchOptions = (kind: "vehicles" | "area", claims: WatchClaims, minIntervalMs: number, ctx: HandlerContext) => ({
    hub,
    visible: (view: LiveView) => canSeeView(claims, view),
    minIntervalMs,
    maxPending: limits.watchMaxPending,
    maxLagMs: limits.watchMaxLagMs,
    signal: ctx.signal,
    log,
    onCoalesced: () => coalescedOf[kind].inc(),
    onSent: (n: number) => sentOf[kind].inc(n),
    onTooSlow: () => tooSlow.inc({ kind }),
    onOpen: (watch: Watch) => {
      watches.add(watch);
      openWatches.inc({ kind });
    },
    onClose: (watch: Watch) => {
      watches.delete(watch);
      openWatches.dec({ kind });
    },
  });

  const service: ServiceImpl<typeof TrackerService> = {
    async getVehicle(req, ctx) {
      const claims = watchClaims(ctx);
      checkId("vehicle_id", req.vehicleId);
      const record = (await fromStore("get", () => store.getMany([req.vehicleId]))).get(req.vehicleId);
      const state = record ? decodeState(record) : undefined;
      authorize(claims, req.vehicleId, state);
      if (!state) throw new NotFoundError(`vehicle "${req.vehicleId}" not found: the tracker never saw it`);
      return create(GetVehicleResponseSchema, { vehicle: toVehicleState(req.vehicleId, state) });
    },

    async nearby(req, ctx) {
      const claims = watchClaims(ctx);
      const region = toRegion(req.area, limits.maxRadiusM);
      if (req.limit > limits.nearbyMax) throw new InvalidRequestError(`limit ${req.limit} is past the maximum of ${limits.nearbyMax}`);
      const limit = req.limit || limits.nearbyDefault;
      const mask = statusMask(req.statuses);
      let hits: NearbyResult[] = [];
      const seen = new Set<string>();
      const take = (id: string, record: Buffer) => {
        const s = decodeState(record);
        if (seen.has(id) || !s.online || (mask !== 0 && (mask & (1 << s.status)) === 0)) return;
        if (!region.contains(s.lat, s.lon) || !canSee(claims, id, s.fleetId, s.orderId)) return;
        seen.add(id);
        hits.push({ vehicleId: id, state: s, distanceM: distanceM(region.lat, region.lon, s.lat, s.lon, REDIS_EARTH_RADIUS_M) });
      };
      if (!byGrant(claims)) {
        // Redis filters status and online in each searched set (searchSets), reading at most
        // TRACKER_SCAN_MAX candidates per set; a box's corners are filtered here, asking for more
        // when that left too few.
        const sets = searchSets(claims);
        let wanted = region.kind === "circle" ? limit : limit * 2;
        for (;;) {
          const found = await Promise.all(
            sets.map((fleet) =>
              fromStore("nearby", () => store.nearby(region.lat, region.lon, region.radiusM + 1, wanted, mask, fleet, limits.scanMax)),
            ),
          );
          hits = [];
          seen.clear();
          // Up to this distance every match of every set is here: a set that stopped early has
          // none nearer than the farthest it returned.
          let sure = Infinity;
          for (const f of found) {
            for (const { id, record } of f.hits) take(id, record);
            if (f.state === "all") continue;
            const last = f.hits.at(-1);
            const s = last && decodeState(last.record);
            sure = Math.min(sure, s ? distanceM(region.lat, region.lon, s.lat, s.lon, REDIS_EARTH_RADIUS_M) : 0);
          }
          if (sure === Infinity || hits.filter((h) => h.distanceM <= sure).length >= limit) break;
          if (found.some((f) => f.state === "budget") || wanted >= limits.scanMax) throw tooMany("nearby");
          wanted = Math.min(limits.scanMax, wanted * 4);
        }
      }
      // Vehicles granted one by one (all of a token without fleets, or besides its fleets).
      if (!claims.all && claims.vehicles.length + claims.orders.length > 0) {
        for (const [id, record] of await grantedRecords(claims)) take(id, record);
      }
      hits.sort((a, b) => a.distanceM - b.distanceM);
      // Its messages are made only if the Connect or gRPC-Web path reads them (watch-encoder.ts).
      return nearbyResponse(hits.slice(0, limit));
    },

    async countByStatus(req, ctx) {
      const claims = watchClaims(ctx);
      const fleet = req.fleetId;
      const totals = new Map<VehicleStatus, number>(COUNTED.map((s) => [s, 0]));
      const addCounts = async (suffix: string) => {
        const values = await fromStore("counts", () => store.counts(COUNTED.map((s) => `s${s}${suffix}`)));
        COUNTED.forEach((s, i) => {
          totals.set(s, totals.get(s)! + values[i]!);
        });
      };
      const fleetGranted = (f: string) => claims.all || claims.fleets.includes(f);
      if (fleet ? fleetGranted(fleet) : claims.all) {
        await addCounts(fleet ? `|${fleet}` : "");
      } else {
        const fleets = fleet ? [] : [...new Set(claims.fleets)];
        for (const f of fleets) await addCounts(`|${f}`);
        // Vehicles granted one by one (by id, or by the order they serve), unless a counted fleet holds them.
        const ids = new Set(claims.vehicles);
        for (const o of claims.orders) {
          const v = await fromStore("orders", () => store.orderVehicle(o));
          if (v) ids.add(v);
        }
        const states = decodeAll(await fromStore("get", () => store.getMany([...ids])));
        for (const [id, s] of states) {
          if (fleets.includes(s.fleetId) || (fleet && s.fleetId !== fleet) || !canSee(claims, id, s.fleetId, s.orderId)) continue;
          const st = s.online ? s.status : VehicleStatus.OFFLINE;
          totals.set(st, (totals.get(st) ?? 0) + 1);
        }
      }
      return create(CountByStatusResponseSchema, {
        counts: COUNTED.map((status) => create(StatusCountSchema, { status, count: BigInt(totals.get(status)!) })),
      });
    },

    async setStatus(req, ctx) {
      const claims = watchClaims(ctx);
      if (!claims.dispatch)
        throw new PermissionError("token may not change status: mint a dispatcher token (`fleet token watch --dispatch`)");
      checkId("vehicle_id", req.vehicleId);
      if (!SETTABLE.has(req.status)) {
        throw new InvalidRequestError(
          `status ${VehicleStatus[req.status] ?? req.status} cannot be set: use ACTIVE, IDLE, ON_DELIVERY or AVAILABLE`,
        );
      }
      if (req.orderId.length > MAX_ID) throw new InvalidRequestError(`order_id must have at most ${MAX_ID} characters`);
      if (controlCharAt(req.orderId) >= 0) throw new InvalidRequestError(controlCharMessage("order_id", req.orderId));
      if (req.status === VehicleStatus.ON_DELIVERY && req.orderId === "")
        throw new InvalidRequestError("ON_DELIVERY needs the order_id the vehicle serves");
      const record = (await fromStore("get", () => store.getMany([req.vehicleId]))).get(req.vehicleId);
      const state = record ? decodeState(record) : undefined;
      authorize(claims, req.vehicleId, state);
      if (!state) throw new NotFoundError(`vehicle "${req.vehicleId}" not found: the tracker never saw it`);
      const changed = await fromStore("set status", () => store.setStatus(req.vehicleId, req.status, req.orderId));
      if (!changed) throw new NotFoundError(`vehicle "${req.vehicleId}" not found: the tracker never saw it`);
      live.publish(LiveKind.Status, req.vehicleId, changed.record, changed.before);
      return create(SetStatusResponseSchema, { vehicle: toVehicleState(req.vehicleId, decodeState(changed.record)) });
    },

    async *watchVehicles(req, ctx) {
      const claims = watchClaims(ctx);
      const release = holdWatch(ctx);
      try {
        yield* watchVehiclesOf(claims, req, ctx);
      } finally {
        release();
      }
    },

    async *watchArea(req, ctx) {
      const claims = watchClaims(ctx);
      const region = toRegion(req.area, limits.maxRadiusM);
      const subjects = regionSubjects(region);
      const wanted = statusFilter(req.statuses);
      const release = holdWatch(ctx);
      try {
        const watch = new Watch({
          ...watchOptions("area", claims, req.minIntervalMs, ctx),
          subjects,
          scope: { keepOffline: false, inView: (view) => wanted(view.status) && region.contains(view.lat, view.lon) },
          snapshot: async () => {
            if (byGrant(claims)) {
              const records = await grantedRecords(claims);
              return [...records].map(([id, record]) => viewOfRecord(id, record));
            }
            // Everything in the circle the token's fleets hold, up to the scan bound per set.
            const found = await Promise.all(
              searchSets(claims).map((fleet) =>
                fromStore("search", () =>
                  store.nearby(region.lat, region.lon, region.radiusM + 1, limits.scanMax, 0, fleet, limits.scanMax),
                ),
              ),
            );
            if (found.some((f) => f.state !== "all")) throw tooMany("the area's snapshot");
            const views = found.flatMap((f) => f.hits.map((h) => viewOfRecord(h.id, h.record)));
            if (!claims.all && claims.vehicles.length + claims.orders.length > 0) {
              const have = new Set(views.map((v) => v.vehicleId));
              for (const [id, record] of await grantedRecords(claims)) if (!have.has(id)) views.push(viewOfRecord(id, record));
            }
            return views;
          },
        });
        yield* watch.events(areaResponse);
      } finally {
        release();
      }
    },
  };

  async function* watchVehiclesOf(
    claims: WatchClaims,
    req: WatchVehiclesRequest,
    ctx: HandlerContext,
  ): AsyncGenerator<WatchVehiclesResponse> {
    {
      const ids = [...new Set(req.vehicleIds)];
      const orderId = req.orderId;
      if (ids.length === 0 && orderId === "") throw new InvalidRequestError("name vehicle_ids or an order_id to watch");
      if (ids.length > 0 && orderId !== "") throw new InvalidRequestError("give vehicle_ids or an order_id, not both");
      if (ids.length > limits.watchMaxVehicles)
        throw new InvalidRequestError(`${ids.length} vehicle_ids: at most ${limits.watchMaxVehicles} per watch`);
      for (const id of ids) checkId("vehicle_id", id);
      // An order is named with its fleet, as a token grants it: order ids are unique within a fleet only.
      const order = orderId ? parseOrderGrant(orderId) : undefined;
      if (orderId) {
        if (controlCharAt(orderId) >= 0) throw new InvalidRequestError(controlCharMessage("order_id", orderId));
        if (!order)
          throw new InvalidRequestError(
            `order_id "${orderId}" names no fleet: write it fleet/order, as the token grants it (order ids are unique within a fleet only)`,
          );
        checkId("order_id's fleet", order.fleetId);
        checkId("order_id's order", order.orderId);
      }
      const base = watchOptions("vehicles", claims, req.minIntervalMs, ctx);

      let watch: Watch;
      if (order) {
        const { fleetId, orderId: bare } = order;
        const first = await fromStore("orders", () => store.orderVehicle(orderId));
        const firstState = first ? (await fromStore("get", () => store.getMany([first]))).get(first) : undefined;
        const decoded = firstState ? decodeState(firstState) : undefined;
        if (
          !claims.all &&
          !claims.fleets.includes(fleetId) &&
          !claims.orders.includes(orderId) &&
          !(first && decoded && canSee(claims, first, decoded.fleetId, decoded.orderId))
        ) {
          throw new PermissionError(`token does not grant order "${orderId}"`);
        }
        const serves = (view: LiveView) => view.state.orderId === bare && view.state.fleetId === fleetId;
        let current: string | undefined;
        const scope: WatchScope = {
          keepOffline: true,
          inView: serves,
          onEvent: (view, w) => {
            // The order moved to another vehicle (of its fleet): follow it.
            if (view.vehicleId !== current && serves(view)) {
              if (current) w.unsubscribe(liveVehicleWildcard(current));
              current = view.vehicleId;
              w.subscribe(liveVehicleWildcard(current));
            }
          },
        };
        watch = new Watch({
          ...base,
          subjects: [liveOrderSubject(fleetId, bare)],
          scope,
          snapshot: async () => {
            const id = await fromStore("orders", () => store.orderVehicle(orderId));
            if (!id) return [];
            if (current === undefined) {
              current = id;
              watch.subscribe(liveVehicleWildcard(id));
            }
            const r = (await fromStore("get", () => store.getMany([id]))).get(id);
            return r ? [viewOfRecord(id, r)] : [];
          },
        });
      } else {
        const states = decodeAll(await fromStore("get", () => store.getMany(ids)));
        for (const id of ids) authorize(claims, id, states.get(id));
        const watched = new Set(ids);
        watch = new Watch({
          ...base,
          subjects: ids.map(liveVehicleWildcard),
          scope: { keepOffline: true, inView: (view) => watched.has(view.vehicleId) },
          snapshot: async () => {
            const records = await fromStore("get", () => store.getMany(ids));
            return ids.filter((id) => records.has(id)).map((id) => viewOfRecord(id, records.get(id)!));
          },
        });
      }
      yield* watch.events(vehiclesResponse);
    }
  }

  return {
    service,
    nativeMethods: [
      ...nativeUnaryMethods(TrackerService, service, { nearby: encodeNearbyResponse as MessageEncoder<Message> }),
      nativeServerStream(TrackerService.method.watchVehicles, (req, ctx) => service.watchVehicles!(req, ctx), watchOutput),
      nativeServerStream(TrackerService.method.watchArea, (req, ctx) => service.watchArea!(req, ctx), watchOutput),
    ],
    deliverLocal: (subject, data) => hub.deliver(subject, data),
    closeWatches() {
      for (const w of watches) w.fail(new ShuttingDownError("tracker is shutting down: watch again (another instance will answer)"));
    },
    close() {
      clearInterval(lagTimer);
      for (const w of watches) w.close();
    },
  };
}
