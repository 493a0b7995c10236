/**
 * What the live map knows, built only from an area watch's events (client/live's watchArea, which
 * reconnects and resumes): no DOM here, so that the page's event handling is tested against a real
 * tracker (web/test/) and app.ts only draws.
 */
import { VehicleStatus } from "../gen/fleet/v1/position_pb";
import type { LiveEvent, LiveVehicle } from "../client/live";

/** A latitude/longitude rectangle, as the Box of geo.proto. */
export interface Box {
  minLat: number;
  minLon: number;
  maxLat: number;
  maxLon: number;
}

/**
 * The area the simulator drives in: sim/route.ts createCity's default grid (4 × 4 km around
 * 52.52, 13.405, Berlin Mitte) with ~500 m to spare for GPS jitter. web/map-state.test.ts checks it
 * still holds the grid, so the two cannot drift apart unnoticed.
 */
export const DEFAULT_BOX: Readonly<Box> = Object.freeze({ minLat: 52.4975, minLon: 13.368, maxLat: 52.5425, maxLon: 13.442 });

/** Parses "minLat,minLon,maxLat,maxLon"; throws with a message for the page when it is not that. */
export function parseBox(raw: string): Box {
  const parts = raw.split(",").map((s) => Number(s.trim()));
  const [minLat, minLon, maxLat, maxLon] = parts;
  if (parts.length !== 4 || !parts.every(Number.isFinite)) {
    throw new Error(`box "${raw}": expected minLat,minLon,maxLat,maxLon in degrees`);
  }
  if (!(minLat! < maxLat! && minLon! < maxLon!))
    throw new Error(`box "${raw}": min must be below max (a box may not cross the antimeridian)`);
  return { minLat: minLat!, minLon: minLon!, maxLat: maxLat!, maxLon: maxLon! };
}

/**
 * `url` with a wildcard host (a server bound to 0.0.0.0 or ::, as FLEET_HOST=0.0.0.0 makes them)
 * replaced by the host the page was loaded from: browsers refuse to connect to 0.0.0.0.
 */
export function reachableUrl(url: string, pageHostname: string): string {
  const u = new URL(url);
  if (u.hostname !== "0.0.0.0" && u.hostname !== "[::]") return url;
  u.hostname = pageHostname;
  return u.toString().replace(/\/$/, "");
}

export interface PageParams {
  box: Box;
  token: string;
  /** Tracker base URL given by ?tracker=, else undefined (the page uses the one it was built with). */
  tracker: string | undefined;
}

/** Reads the page's URL: ?box= and ?tracker= from the query, the token from the fragment (#token=…). */
export function parsePageParams(search: string, hash: string): PageParams {
  const query = new URLSearchParams(search);
  const fragment = new URLSearchParams(hash.replace(/^#/, ""));
  const box = query.get("box");
  return { box: box ? parseBox(box) : { ...DEFAULT_BOX }, token: fragment.get("token") ?? "", tracker: query.get("tracker") ?? undefined };
}

export interface TrailPoint {
  lat: number;
  lon: number;
}

export interface VehicleView {
  id: string;
  fleetId: string;
  orderId: string;
  status: VehicleStatus;
  /** The vehicle's sequence number of its newest position. */
  seq: number;
  lat: number;
  lon: number;
  speed: number;
  /** When the vehicle recorded its newest position (ms since the epoch; 0 when unknown). */
  recordedAtMs: number;
  /** Its newest positions, oldest first, the current one last. */
  trail: TrailPoint[];
  /** False once an OFFLINE event came: drawn grey until it comes back or is pruned. */
  online: boolean;
  /** When this page last changed the vehicle (ms, the page's clock). */
  updatedAtMs: number;
  /** Its index in the render buffers (MapState.positions, colours). */
  slot: number;
}

export interface MapStateOptions {
  /** Positions kept per vehicle for its trail, the current one included. */
  trailLength?: number;
  /** How long a vehicle reported OFFLINE stays on the map (grey) before it is dropped. */
  offlineKeepMs?: number;
  /** Window of the updates-per-second figure. */
  rateWindowMs?: number;
  /** RGBA of a vehicle shown (a filter hides the rest); default: STATUS_COLOURS, OFFLINE_COLOUR. */
  colourOf?: (v: VehicleView) => readonly [number, number, number, number];
}

/** Colours of the statuses (RGBA), shared by the map and its legend. */
export const STATUS_COLOURS: Readonly<Record<number, readonly [number, number, number, number]>> = Object.freeze({
  [VehicleStatus.ACTIVE]: [31, 119, 180, 255],
  [VehicleStatus.IDLE]: [255, 127, 14, 255],
  [VehicleStatus.ON_DELIVERY]: [44, 160, 44, 255],
  [VehicleStatus.AVAILABLE]: [148, 103, 189, 255],
  [VehicleStatus.UNSPECIFIED]: [23, 190, 207, 255],
});
export const OFFLINE_COLOUR = Object.freeze([176, 176, 176, 255] as const);

/** Which vehicles the map shows: empty sets show all. */
export interface MapFilter {
  statuses: ReadonlySet<VehicleStatus>;
  fleets: ReadonlySet<string>;
  /** Show vehicles reported OFFLINE (grey). */
  offline: boolean;
}

export const SHOW_ALL: MapFilter = Object.freeze({ statuses: new Set<VehicleStatus>(), fleets: new Set<string>(), offline: true });

/** Whether `filter` lets `v` through. */
export function passes(filter: MapFilter, v: VehicleView): boolean {
  if (!v.online && !filter.offline) return false;
  if (filter.statuses.size > 0 && !filter.statuses.has(v.status)) return false;
  return filter.fleets.size === 0 || filter.fleets.has(v.fleetId);
}

export interface MapState {
  readonly vehicles: ReadonlyMap<string, VehicleView>;
  /** True once the current watch's snapshot ended: the map is complete, live events follow. */
  readonly live: boolean;
  /** Events applied since the page started (snapshot included). */
  readonly events: number;
  /** Updates the tracker dropped in favour of newer ones (the sum of `coalesced`). */
  readonly coalesced: number;
  /** When the last event came (ms, the page's clock); undefined before the first. */
  readonly lastEventAtMs: number | undefined;
  /** A watch on a new area starts: its snapshot restates the area, and its end drops what it did not name. */
  restart(): void;
  /** The watch is reconnecting: not live until its resumed snapshot ends (the client hands on only what changed). */
  reconnecting(): void;
  /** Applies events in order. */
  apply(events: readonly LiveEvent[], nowMs?: number): void;
  /** Applies one event. */
  applyEvent(event: LiveEvent, nowMs?: number): void;
  /** Drops vehicles that have been offline for longer than offlineKeepMs. */
  prune(nowMs?: number): void;
  /** Live events (plus the updates coalesced into them) per second over the last rateWindowMs. */
  updatesPerSecond(nowMs?: number): number;
  /** Vehicles shown as online. */
  onlineCount(): number;
  /**
   * Render buffers, one slot per vehicle (a removed vehicle's slot is reused): longitude and
   * latitude at [2i, 2i+1], RGBA at [4i..4i+3] (alpha 0: empty or filtered out). Written in place
   * as events come, so a WebGL layer uploads them as they are, with no per-frame allocation;
   * replaced by larger arrays when they fill up.
   */
  readonly positions: Float32Array;
  readonly colours: Uint8Array;
  /** Slots in use or freed so far: the length to draw. */
  readonly slotCount: number;
  /** The vehicle in a slot, or undefined for a free one. */
  vehicleAt(slot: number): VehicleView | undefined;
  /** Grows with every change to the buffers: the renderer uploads them only when it moved. */
  readonly version: number;
  /** Vehicles shown (passing the filter). */
  shownCount(): number;
  /** Fleets seen, for the filter's choices. */
  readonly fleets: ReadonlySet<string>;
  readonly filter: MapFilter;
  /** Shows only what `filter` lets through (recolours every slot once). */
  setFilter(filter: MapFilter): void;
}

/** Width of one bucket of the updates/s count: one entry per bucket, not per event (16,700 a second). */
const RATE_BUCKET_MS = 100;

/** Creates the map state of one page. */
export function createMapState({
  trailLength = 8,
  offlineKeepMs = 60_000,
  rateWindowMs = 5_000,
  colourOf = (v) => (v.online ? (STATUS_COLOURS[v.status] ?? STATUS_COLOURS[VehicleStatus.UNSPECIFIED]!) : OFFLINE_COLOUR),
}: MapStateOptions = {}): MapState {
  const vehicles = new Map<string, VehicleView>();
  /**
   * The vehicles shown offline: prune (once a second on the page) reads only these, not all
   * 100,000 (a full pass took ~3 ms of the page's main thread a second in bench web's profile).
   */
  const offline = new Set<VehicleView>();
  const fleets = new Set<string>();
  let filter: MapFilter = SHOW_ALL;
  let positions = new Float32Array(2 * 1024);
  let colours = new Uint8Array(4 * 1024);
  const bySlot: (VehicleView | undefined)[] = [];
  const freeSlots: number[] = [];
  let slotCount = 0;
  let version = 0;
  let shown = 0;

  const takeSlot = (): number => {
    const reused = freeSlots.pop();
    if (reused !== undefined) return reused;
    if (slotCount * 2 >= positions.length) {
      const grownPositions = new Float32Array(positions.length * 2);
      grownPositions.set(positions);
      positions = grownPositions;
      const grownColours = new Uint8Array(colours.length * 2);
      grownColours.set(colours);
      colours = grownColours;
    }
    return slotCount++;
  };
  /** Writes v's position and colour into its slot; keeps the count of vehicles shown. */
  const paint = (v: VehicleView): void => {
    const wasShown = colours[4 * v.slot + 3] !== 0;
    positions[2 * v.slot] = v.lon;
    positions[2 * v.slot + 1] = v.lat;
    const show = passes(filter, v);
    const c = show ? colourOf(v) : ([0, 0, 0, 0] as const);
    colours.set(c, 4 * v.slot);
    shown += Number(show) - Number(wasShown);
    version++;
  };
  const remove = (id: string): void => {
    const v = vehicles.get(id);
    if (!v) return;
    vehicles.delete(id);
    offline.delete(v);
    if (colours[4 * v.slot + 3] !== 0) shown--;
    colours.fill(0, 4 * v.slot, 4 * v.slot + 4);
    bySlot[v.slot] = undefined;
    freeSlots.push(v.slot);
    version++;
  };
  // Vehicles the current stream's snapshot has not named yet (after a reconnect).
  let unconfirmed = new Set<string>();
  let live = false;
  let events = 0;
  let coalesced = 0;
  let lastEventAtMs: number | undefined;
  const rate: { at: number; n: number }[] = [];

  const upsert = (p: LiveVehicle, online: boolean, now: number): void => {
    let v = vehicles.get(p.id);
    if (!v) {
      v = {
        id: p.id,
        fleetId: "",
        orderId: "",
        status: VehicleStatus.UNSPECIFIED,
        seq: 0,
        lat: p.lat,
        lon: p.lon,
        speed: 0,
        recordedAtMs: 0,
        trail: [],
        online: true,
        updatedAtMs: now,
        slot: takeSlot(),
      };
      vehicles.set(p.id, v);
      bySlot[v.slot] = v;
    }
    const last = v.trail.at(-1);
    // A status change or a restated snapshot repeats the position: not a step of the trail.
    if (trailLength > 0 && (!last || last.lat !== p.lat || last.lon !== p.lon)) {
      v.trail.push({ lat: p.lat, lon: p.lon });
      if (v.trail.length > trailLength) v.trail.splice(0, v.trail.length - trailLength);
    }
    v.fleetId = p.fleetId;
    v.orderId = p.orderId;
    v.status = p.status;
    v.seq = p.seq;
    v.lat = p.lat;
    v.lon = p.lon;
    v.speed = p.speed;
    v.recordedAtMs = p.recordedAtMs;
    v.online = online;
    if (online) offline.delete(v);
    else offline.add(v);
    v.updatedAtMs = now;
    if (v.fleetId !== "") fleets.add(v.fleetId);
    paint(v);
  };
  const count = (n: number, now: number) => {
    const bucket = now - (now % RATE_BUCKET_MS);
    const last = rate.at(-1);
    if (last && last.at === bucket) last.n += n;
    else rate.push({ at: bucket, n });
  };

  const applyEvent = (e: LiveEvent, now = Date.now()): void => {
    events++;
    lastEventAtMs = now;
    switch (e.kind) {
      case "snapshot":
        unconfirmed.delete(e.vehicle.id);
        upsert(e.vehicle, e.vehicle.online, now);
        break;
      case "snapshotEnd":
        // What the area held before a new area's watch and holds no longer. (A resumed watch names
        // only what changed and says exit for what left: restart() was not called for it.)
        for (const gone of unconfirmed) remove(gone);
        unconfirmed.clear();
        live = true;
        break;
      case "enter":
      case "move":
        coalesced += e.coalesced;
        count(1 + e.coalesced, now);
        upsert(e.vehicle, e.vehicle.online, now);
        break;
      case "offline":
        coalesced += e.coalesced;
        count(1 + e.coalesced, now);
        upsert(e.vehicle, false, now);
        break;
      case "exit":
        count(1, now);
        remove(e.vehicleId);
        break;
    }
  };

  return {
    vehicles,
    get live() {
      return live;
    },
    get events() {
      return events;
    },
    get coalesced() {
      return coalesced;
    },
    get lastEventAtMs() {
      return lastEventAtMs;
    },
    restart() {
      live = false;
      unconfirmed = new Set(vehicles.keys());
    },
    reconnecting() {
      live = false;
    },
    apply(batch, now = Date.now()) {
      for (const e of batch) applyEvent(e, now);
    },
    applyEvent,
    prune(now = Date.now()) {
      for (const v of offline) if (now - v.updatedAtMs > offlineKeepMs) remove(v.id);
    },
    updatesPerSecond(now = Date.now()) {
      while (rate.length > 0 && rate[0]!.at <= now - rateWindowMs) rate.shift();
      return rate.reduce((sum, r) => sum + r.n, 0) / (rateWindowMs / 1000);
    },
    onlineCount() {
      return vehicles.size - offline.size;
    },
    get positions() {
      return positions;
    },
    get colours() {
      return colours;
    },
    get slotCount() {
      return slotCount;
    },
    vehicleAt: (slot) => bySlot[slot],
    get version() {
      return version;
    },
    shownCount: () => shown,
    fleets,
    get filter() {
      return filter;
    },
    setFilter(next) {
      filter = next;
      for (const v of vehicles.values()) paint(v);
    },
  };
}
