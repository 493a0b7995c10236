/**
 * Where the dashboard's vehicles live: the area watch and its MapState, either in the map worker
 * (web/map-points-worker.ts, the default: the page's main thread gets a summary four times a
 * second and asks for the rest) or on the page's thread (the deck and maplibre renderers kept for
 * bench web's comparison, which draw from MapState's arrays there).
 *
 * Why in the worker (bench web --profile, 100,000 vehicles at 16,700 updates/s): decoding and
 * applying the watch's events was ~55% of the main thread's busy time (its RunMicrotasks tasks,
 * ~9 µs an event), and the copies of the buffers handed to the worker 5 times a second 1.2 MB
 * each. Each ms the main thread is busy is a ms an input event may wait, and on 2 shared cores a
 * busy thread is also the one that loses its core.
 */
import type { VehicleStatus } from "../gen/fleet/v1/position_pb";
import { createLiveClient, type ConnectionState, type LiveClient, type LiveWatch } from "../client/live";
import type { MapFilter, MapState, Box } from "./map-state";

/** What the page shows of the vehicles without asking: the worker's latest summary. */
export interface SourceSummary {
  /** The watch this summary is of (a summary of an older one is dropped). */
  watch: number;
  live: boolean;
  events: number;
  lastEventAtMs: number | undefined;
  shown: number;
  total: number;
  updatesPerSecond: number;
  fleets: string[];
  /** The selected vehicle's position, when it is in view. */
  selected?: { id: string; lon: number; lat: number };
}

/** What the test hooks and the panel read of one vehicle. */
export interface VehicleInfo {
  id: string;
  lat: number;
  lon: number;
  seq: number;
  status: VehicleStatus;
  fleetId: string;
  online: boolean;
}

/** A watch's state change or final error, as the page reacts to it (app.ts). */
export type WatchSignal =
  | { kind: "connection"; state: ConnectionState; error?: { code: string; message: string } }
  | { kind: "error"; error: { code: string; message: string } };

export type SourceQuery =
  | { kind: "vehicle"; id: string }
  | { kind: "ids" }
  | { kind: "shown" }
  | { kind: "pick"; x: number; y: number; maxPx: number }
  | { kind: "screen"; id: string };

/** Messages from the page to the worker about the vehicles (the drawing ones are map-points-worker's). */
export type SourceRequest =
  | { type: "watch"; watch: number; baseUrl: string; token: string; box: Box }
  | { type: "filter"; statuses: number[]; fleets: string[]; offline: boolean }
  | { type: "select"; id: string }
  | { type: "query"; id: number; query: SourceQuery };

/** Messages from the worker to the page. */
export type SourceReply =
  | { type: "summary"; summary: SourceSummary }
  | { type: "signal"; watch: number; signal: WatchSignal }
  | { type: "reply"; id: number; value: unknown };

export interface VehicleSource {
  /** Opens the watch on `box` (closing the one before); `onSignal` hears its connection changes. */
  open(box: Box): void;
  readonly filter: MapFilter;
  setFilter(filter: MapFilter): void;
  /** The vehicle whose position summaries carry (the panel's ring follows it). */
  select(id: string): void;
  /** The latest summary (live, counts, rate, fleets). */
  summary(): SourceSummary;
  /** The selected vehicle's position now, if in view. */
  selectedPosition(id: string): [number, number] | undefined;
  vehicle(id: string): Promise<VehicleInfo | undefined>;
  ids(): Promise<string[]>;
  /** Vehicles shown, after every filter set before. */
  shownCount(): Promise<number>;
  /** The id of the shown vehicle nearest to (x, y) CSS pixels within maxPx. */
  pick(x: number, y: number, maxPx?: number): Promise<string | undefined>;
  screenOf(id: string): Promise<[number, number] | undefined>;
}

/** Only VehicleInfo's fields of a richer vehicle (a MapState entry): what crosses to the page. */
const infoOf = (v: VehicleInfo): VehicleInfo => ({
  id: v.id,
  lat: v.lat,
  lon: v.lon,
  seq: v.seq,
  status: v.status,
  fleetId: v.fleetId,
  online: v.online,
});

const filterMessage = (f: MapFilter): SourceRequest => ({
  type: "filter",
  statuses: [...f.statuses],
  fleets: [...f.fleets],
  offline: f.offline,
});

/** Reacts to a watch's connection changes and errors, wherever it runs. */
function watchHandlers(signal: (s: WatchSignal) => void) {
  const plain = (e: { code: string; message: string } | undefined) => e && { code: e.code, message: e.message };
  return {
    onConnection: (state: ConnectionState, error?: { code: string; message: string }) =>
      signal({ kind: "connection", state, error: plain(error) }),
    onError: (error: { code: string; message: string }) => signal({ kind: "error", error: plain(error)! }),
  };
}

/** The summary of a MapState. */
function summarize(state: MapState, watch: number, selectedId: string): SourceSummary {
  const v = selectedId ? state.vehicles.get(selectedId) : undefined;
  return {
    watch,
    live: state.live,
    events: state.events,
    lastEventAtMs: state.lastEventAtMs,
    shown: state.shownCount(),
    total: state.vehicles.size,
    updatesPerSecond: state.updatesPerSecond(),
    fleets: [...state.fleets].sort(),
    selected: v && { id: v.id, lon: v.lon, lat: v.lat },
  };
}

/**
 * The worker's side: keeps the watch and `state`, answers queries, posts summaries. `changed` is
 * called after events changed the buffers; `project` maps [lon, lat] to CSS pixels of the view.
 */
export function serveSource(
  state: MapState,
  post: (m: SourceReply) => void,
  changed: () => void,
  project: (lon: number, lat: number) => [number, number],
): (m: SourceRequest) => void {
  let client: LiveClient | undefined;
  let clientKey = "";
  let current: LiveWatch | undefined;
  let watchId = 0;
  let selectedId = "";
  const postSummary = () => post({ type: "summary", summary: summarize(state, watchId, selectedId) });
  setInterval(postSummary, 250);
  // Once a second even without events: offline vehicles pruned.
  setInterval(() => {
    state.prune();
    changed();
  }, 1000);
  return (m) => {
    switch (m.type) {
      case "watch": {
        current?.close();
        state.restart();
        watchId = m.watch;
        const key = `${m.baseUrl} ${m.token}`;
        if (!client || clientKey !== key) {
          client = createLiveClient({ baseUrl: m.baseUrl, token: m.token });
          clientKey = key;
        }
        const id = m.watch;
        const watch = client.watchArea(
          { box: m.box },
          {
            onEvent: (e) => {
              state.applyEvent(e);
              changed();
            },
            ...watchHandlers((signal) => {
              if (current !== watch) return;
              if (signal.kind === "connection" && signal.state === "reconnecting") state.reconnecting();
              post({ type: "signal", watch: id, signal });
              postSummary();
            }),
          },
        );
        current = watch;
        postSummary();
        break;
      }
      case "filter":
        state.setFilter({ statuses: new Set(m.statuses), fleets: new Set(m.fleets), offline: m.offline });
        changed();
        postSummary();
        break;
      case "select":
        selectedId = m.id;
        postSummary();
        break;
      case "query": {
        const q = m.query;
        let value: unknown;
        if (q.kind === "vehicle") {
          const v = state.vehicles.get(q.id);
          value = v && infoOf(v);
        } else if (q.kind === "ids") value = [...state.vehicles.keys()];
        else if (q.kind === "shown") value = state.shownCount();
        else if (q.kind === "screen") {
          const v = state.vehicles.get(q.id);
          value = v && project(v.lon, v.lat);
        } else value = pickNearest(state, q.x, q.y, q.maxPx, project);
        post({ type: "reply", id: m.id, value });
        break;
      }
    }
  };
}

/** The id of the shown vehicle nearest to (x, y) within maxPx pixels, one pass over the slots. */
function pickNearest(
  state: MapState,
  x: number,
  y: number,
  maxPx: number,
  project: (lon: number, lat: number) => [number, number],
): string | undefined {
  let best: string | undefined;
  let bestD = maxPx * maxPx;
  const { positions, colours } = state;
  for (let i = 0; i < state.slotCount; i++) {
    if (colours[4 * i + 3] === 0) continue;
    const [px, py] = project(positions[2 * i]!, positions[2 * i + 1]!);
    if (Math.abs(px - x) > maxPx || Math.abs(py - y) > maxPx) continue;
    const d = (px - x) ** 2 + (py - y) ** 2;
    if (d <= bestD) {
      bestD = d;
      best = state.vehicleAt(i)?.id;
    }
  }
  return best;
}

/** The page's side of a worker that keeps the vehicles. */
export function createWorkerSource({
  post,
  listen,
  baseUrl,
  token,
  onSignal,
}: {
  post: (m: SourceRequest) => void;
  listen: (fn: (m: SourceReply) => void) => void;
  baseUrl: string;
  token: string;
  onSignal: (s: WatchSignal) => void;
}): VehicleSource {
  let watch = 0;
  let filter: MapFilter = { statuses: new Set(), fleets: new Set(), offline: true };
  let last: SourceSummary = {
    watch: 0,
    live: false,
    events: 0,
    lastEventAtMs: undefined,
    shown: 0,
    total: 0,
    updatesPerSecond: 0,
    fleets: [],
  };
  let nextQuery = 0;
  const waiting = new Map<number, (v: unknown) => void>();
  listen((m) => {
    if (m.type === "summary") {
      if (m.summary.watch === watch) last = m.summary;
    } else if (m.type === "signal") {
      if (m.watch === watch) onSignal(m.signal);
    } else {
      waiting.get(m.id)?.(m.value);
      waiting.delete(m.id);
    }
  });
  const ask = <T>(query: SourceQuery) =>
    new Promise<T>((resolve) => {
      const id = ++nextQuery;
      waiting.set(id, resolve as (v: unknown) => void);
      post({ type: "query", id, query });
    });
  return {
    open(box) {
      watch++;
      last = { ...last, watch, live: false };
      post({ type: "watch", watch, baseUrl, token, box });
    },
    get filter() {
      return filter;
    },
    setFilter(f) {
      filter = f;
      post(filterMessage(f));
    },
    select(id) {
      post({ type: "select", id });
    },
    summary: () => last,
    selectedPosition: (id) => (last.selected?.id === id ? [last.selected.lon, last.selected.lat] : undefined),
    vehicle: (id) => ask({ kind: "vehicle", id }),
    ids: () => ask({ kind: "ids" }),
    shownCount: () => ask({ kind: "shown" }),
    pick: (x, y, maxPx = 10) => ask({ kind: "pick", x, y, maxPx }),
    screenOf: (id) => ask({ kind: "screen", id }),
  };
}

/** The page's own watch and MapState (the deck and maplibre renderers draw from `state` on this thread). */
export function createLocalSource({
  state,
  baseUrl,
  token,
  onSignal,
  changed,
  pickSlot,
  project,
}: {
  state: MapState;
  baseUrl: string;
  token: string;
  onSignal: (s: WatchSignal) => void;
  /** Events changed the buffers: redraw. */
  changed: () => void;
  pickSlot: (x: number, y: number, maxPx?: number) => number | undefined;
  project: (lon: number, lat: number) => [number, number];
}): VehicleSource {
  const client = createLiveClient({ baseUrl, token });
  let current: LiveWatch | undefined;
  let watch = 0;
  setInterval(() => {
    state.prune();
    changed();
  }, 1000);
  return {
    open(box) {
      current?.close();
      state.restart();
      watch++;
      const w = client.watchArea(
        { box },
        {
          onEvent: (e) => {
            state.applyEvent(e);
            changed();
          },
          ...watchHandlers((signal) => {
            if (current !== w) return;
            if (signal.kind === "connection" && signal.state === "reconnecting") state.reconnecting();
            onSignal(signal);
          }),
        },
      );
      current = w;
    },
    get filter() {
      return state.filter;
    },
    setFilter(f) {
      state.setFilter(f);
      changed();
    },
    select() {},
    summary: () => summarize(state, watch, ""),
    selectedPosition(id) {
      const v = state.vehicles.get(id);
      return v && [v.lon, v.lat];
    },
    vehicle: async (id) => {
      const v = state.vehicles.get(id);
      return v && infoOf(v);
    },
    ids: async () => [...state.vehicles.keys()],
    shownCount: async () => state.shownCount(),
    pick: async (x, y, maxPx) => {
      const slot = pickSlot(x, y, maxPx);
      return slot === undefined ? undefined : state.vehicleAt(slot)?.id;
    },
    screenOf: async (id) => {
      const v = state.vehicles.get(id);
      return v && project(v.lon, v.lat);
    },
  };
}
