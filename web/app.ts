/// <reference lib="dom" />
/**
 * The operator dashboard: the live map of every vehicle the token grants (one WatchArea over
 * Connect that follows the viewport), filters, the count by status, and the vehicle and dispatch
 * panel (web/dashboard-panel.ts). No tiles and no CDN by default (the machine may have no
 * internet): a graticule; WEB_MAP_STYLE names a MapLibre style to draw underneath.
 */
import type { MapViewState } from "@deck.gl/core";
import { VehicleStatus } from "../gen/fleet/v1/position_pb";
import { createLiveClient, type LiveClient } from "../client/live";
import { createDeckRenderer, fitViewState, type MapRenderer, type MapRendererOptions } from "./dashboard-render";
import { createPanel } from "./dashboard-panel";
import { createMapState, OFFLINE_COLOUR, parsePageParams, reachableUrl, STATUS_COLOURS, type Box, type PageParams } from "./map-state";
import { createLocalSource, createWorkerSource, type VehicleSource, type WatchSignal } from "./map-source";
import { nextWatchedArea } from "./map-view";

/** The services `fleet up` started and the operator's map style; replaced by Bun.build's `define` (cli/web.ts). */
declare const FLEET_TRACKER_URL: string;
declare const FLEET_HISTORY_URL: string;
declare const WEB_MAP_STYLE: string;

const STATUS_NAMES: [VehicleStatus, string][] = [
  [VehicleStatus.ACTIVE, "active"],
  [VehicleStatus.IDLE, "idle"],
  [VehicleStatus.ON_DELIVERY, "on delivery"],
  [VehicleStatus.AVAILABLE, "available"],
  [VehicleStatus.UNSPECIFIED, "unspecified"],
];
/** How long the view must rest before the watched area follows it. */
const AREA_DEBOUNCE_MS = 300;

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
const statusLine = $("status");
const errorLine = $("error");

let source: VehicleSource;
let connection = "connecting";
let watchedArea: Box | undefined;

function showError(text: string): void {
  errorLine.textContent = text;
  errorLine.hidden = text === "";
}

const rgb = (c: readonly number[]) => `rgb(${c[0]},${c[1]},${c[2]})`;

let live: LiveClient | undefined;

/**
 * The current watch's connection changed (client/live's watchArea reconnects by itself with a
 * backoff and resumes without duplicates). A refused token stops the page; a refused area (too
 * large, too many vehicles) waits for the next view.
 */
function onWatchSignal(s: WatchSignal): void {
  if (s.kind === "connection") {
    if (s.state === "live") {
      connection = "live";
      showError("");
    } else if (s.state === "reconnecting") {
      connection = "reconnecting";
      showError(s.error?.code === "resource-exhausted" ? `${s.error.message}: zoom in` : (s.error?.message ?? ""));
    }
    return;
  }
  const { error } = s;
  if (error.code === "invalid-argument" || error.code === "resource-exhausted") {
    connection = "waiting for a smaller view";
    showError(`${error.message}: zoom in`);
    return;
  }
  connection = "stopped";
  showError(`${error.message}; not retrying: open the URL fleet up printed, or put a fresh token in #token=…`);
}

/** Opens the watch on the watched area, closing the one before. */
function openWatch(): void {
  connection = "connecting";
  source.open(watchedArea!);
}

let renderer: MapRenderer | undefined;
let areaTimer: ReturnType<typeof setTimeout> | undefined;
let watchChanges = 0;

/** After the view has rested, moves the watch when the view left the watched area's padding (or zoomed far in). */
function viewChanged(): void {
  clearTimeout(areaTimer);
  areaTimer = setTimeout(() => {
    if (!renderer) return;
    const next = nextWatchedArea(watchedArea, renderer.viewBox());
    if (!next) return;
    watchedArea = next;
    watchChanges++;
    openWatch();
  }, AREA_DEBOUNCE_MS);
}

function buildFilters(): void {
  const filters = $("filters");
  const statuses = new Set<VehicleStatus>();
  let fleet = "";
  let offline = true;
  const apply = () => {
    source.setFilter({ statuses: new Set(statuses), fleets: fleet ? new Set([fleet]) : new Set(), offline });
    void refreshCounts();
  };
  const box = (label: string, colour: string, onChange: (on: boolean) => void) => {
    const l = document.createElement("label");
    const c = document.createElement("input");
    c.type = "checkbox";
    c.checked = true;
    c.addEventListener("change", () => onChange(c.checked));
    const dot = document.createElement("i");
    dot.style.background = colour;
    l.append(c, dot, label);
    return l;
  };
  const all = STATUS_NAMES.map(([s]) => s);
  const checked = new Set(all);
  for (const [status, name] of STATUS_NAMES) {
    filters.append(
      box(name, rgb(STATUS_COLOURS[status]!), (on) => {
        if (on) checked.add(status);
        else checked.delete(status);
        statuses.clear();
        // All checked shows everything (also statuses this page does not name).
        if (checked.size < all.length) for (const s of checked) statuses.add(s);
        if (checked.size === 0) statuses.add(-1 as VehicleStatus);
        apply();
      }),
    );
  }
  filters.append(
    box("offline", rgb(OFFLINE_COLOUR), (on) => {
      offline = on;
      apply();
    }),
  );
  const select = document.createElement("select");
  select.id = "fleet-filter";
  select.title = "fleet";
  const fill = () => {
    const known = source.summary().fleets;
    if (select.options.length === known.length + 1) return;
    select.replaceChildren(new Option("all fleets", ""), ...known.map((f) => new Option(f, f, false, f === fleet)));
  };
  select.addEventListener("focus", fill);
  select.addEventListener("change", () => {
    fleet = select.value;
    apply();
  });
  fill();
  filters.append(select);
  setInterval(fill, 5000);
}

let counts = "";
let countsFor = "";
let refreshCounts: () => Promise<void> = async () => {};

function startCounts(client: LiveClient): void {
  refreshCounts = async () => {
    const fleetId = [...source.filter.fleets][0] ?? "";
    try {
      const byStatus = await client.countByStatus({ fleetId });
      const total = [...byStatus.values()].reduce((a, b) => a + b, 0);
      counts = `${fleetId || "all fleets"}: ${total} live (${STATUS_NAMES.filter(([s]) => byStatus.get(s))
        .map(([s, n]) => `${byStatus.get(s)} ${n}`)
        .join(", ")})`;
      countsFor = fleetId;
    } catch (e) {
      counts = `counts: ${e instanceof Error ? e.message : String(e)}`;
    }
    $("counts").textContent = counts;
  };
  void refreshCounts();
  setInterval(() => void refreshCounts(), 5000);
}

function drawStatus(): void {
  const s = source.summary();
  const age = s.lastEventAtMs === undefined ? "–" : `${((Date.now() - s.lastEventAtMs) / 1000).toFixed(1)} s ago`;
  statusLine.textContent =
    `${connection} · ${s.shown} shown of ${s.total} in the watched area · ` +
    `${s.updatesPerSecond.toFixed(0)} updates/s · last update ${age}`;
}

async function main(): Promise<void> {
  let p: PageParams;
  try {
    p = parsePageParams(location.search, location.hash);
  } catch (e) {
    showError(e instanceof Error ? e.message : String(e));
    return;
  }
  if (!p.token) {
    showError("no token: open the URL fleet up printed, or add #token=<watch token> (fleet token watch --all)");
    return;
  }
  const query = new URLSearchParams(location.search);
  const trackerUrl = p.tracker ?? reachableUrl(FLEET_TRACKER_URL, location.hostname);
  const historyRaw = query.get("history") ?? FLEET_HISTORY_URL;
  const historyUrl = historyRaw ? reachableUrl(historyRaw, location.hostname) : "";
  const container = $("map");
  // ?renderer=maplibre and ?renderer=deck draw the vehicles on this thread, from its own MapState;
  // the dashboard's worker keeps them itself (web/map-source.ts).
  const rendererName = query.get("renderer");
  const pageState = rendererName === "maplibre" || rendererName === "deck" ? createMapState({ trailLength: 0 }) : undefined;
  const options: MapRendererOptions = {
    container,
    state: pageState,
    initial: p.box,
    mapStyle: query.get("style") ?? WEB_MAP_STYLE,
    onViewChange: () => viewChanged(),
    onClick: (x, y) => panel.clicked(x, y),
    onError: showError,
    vehicles: query.get("renderer") === "deck" ? "deck" : "worker",
    points: query.get("points") === "webgl" ? "webgl2" : query.get("points") === "2d" ? "2d" : "auto",
  };
  // ?renderer=maplibre: the same page on MapLibre alone; ?renderer=deck: vehicles drawn by deck.gl on
  // this thread (both kept for bench web's comparison); the worker draws WebGL2 points where WebGL
  // runs on a GPU and 2D squares where it runs in software; ?points=webgl or ?points=2d forces one.
  renderer =
    query.get("renderer") === "maplibre" ? (await import("./map-basemap")).createMaplibreRenderer(options) : createDeckRenderer(options);
  const r = renderer;
  const zoomBy = (d: number) => r.setViewState({ zoom: Math.max(0, Math.min(20, r.viewState.zoom + d)) });
  $("zoom-in").addEventListener("click", () => zoomBy(1));
  $("zoom-out").addEventListener("click", () => zoomBy(-1));
  $("zoom-fit").addEventListener("click", () => r.setViewState(fitViewState(p.box, container.clientWidth, container.clientHeight)));

  const historyFor = historyUrl ? { historyUrl } : {};
  live = createLiveClient({ baseUrl: trackerUrl, ...historyFor, token: p.token });
  const worker = r.pointsWorker;
  source =
    worker && !pageState
      ? createWorkerSource({ post: worker.post, listen: worker.listen, baseUrl: trackerUrl, token: p.token, onSignal: onWatchSignal })
      : createLocalSource({
          state: pageState ?? createMapState({ trailLength: 0 }),
          baseUrl: trackerUrl,
          token: p.token,
          onSignal: onWatchSignal,
          changed: () => r.invalidate(),
          pickSlot: (x, y, maxPx) => r.pickVehicle(x, y, maxPx),
          project: (lon, lat) => r.project(lon, lat),
        });
  const fragment = new URLSearchParams(location.hash.replace(/^#/, ""));
  const panel = createPanel({
    source,
    renderer: r,
    live,
    hasHistory: historyUrl !== "",
    clientWithToken: (token) => createLiveClient({ baseUrl: trackerUrl, token }),
    dispatchToken: fragment.get("dispatch") ?? "",
    onError: showError,
  });

  buildFilters();
  startCounts(live);
  watchedArea = nextWatchedArea(undefined, r.viewBox());
  // Once a second even without events: the status line's "last update … ago".
  setInterval(drawStatus, 1000);
  drawStatus();
  window.addEventListener("hashchange", () => location.reload());

  // Hooks for the browser tests and the bench: what the page shows, without reading pixels.
  (window as unknown as { __fleet: unknown }).__fleet = {
    // Asked of the worker that keeps the vehicles: promises (page.evaluate waits for them), answered
    // after every change the page asked for before.
    vehicleCount: () => source.shownCount(),
    vehicleIds: () => source.ids(),
    vehicle: (id: string) => source.vehicle(id),
    watchedArea: () => watchedArea && { ...watchedArea },
    watchChanges: () => watchChanges,
    connection: () => connection,
    error: () => (errorLine.hidden ? "" : errorLine.textContent),
    live: () => source.summary().live,
    events: () => source.summary().events,
    updateRate: () => source.summary().updatesPerSecond,
    frames: () => r.frames,
    drawing: () => r.pointsWorker?.drawing() ?? { drawing: "deck", glRenderer: "" },
    basemap: () => r.basemap,
    viewState: (): MapViewState => r.viewState,
    viewBox: () => r.viewBox(),
    counts: () => ({ text: counts, fleet: countsFor }),
    /** CSS pixel of a vehicle in the map's container, to click it. */
    screenOf: (id: string) => source.screenOf(id),
    panel: () => panel.snapshot(),
  };
  openWatch();
}

void main();
