/// <reference lib="dom" />
/**
 * The dashboard's side panel: the clicked vehicle (GetVehicle), its track over a range (GetTrack)
 * with its stops, its Replay (play, pause, speed; an archived day replays the same way: history
 * reads Parquet for it), and dispatch: Nearby around a clicked point, an order's driver, SetStatus
 * with a dispatcher's token.
 */
import { LiveError, VehicleStatus, type LiveClient, type LiveVehicle } from "../client/live";
import type { MapRenderer, Overlays } from "./dashboard-render";
import type { VehicleSource } from "./map-source";
import { findStops, trackRange, type Stop, type TrackPoint } from "./map-track";

export interface PanelOptions {
  /** The vehicles in view (in the map worker, or on this thread). */
  source: VehicleSource;
  renderer: MapRenderer;
  /** The page's client (its watch token; history when `hasHistory`). */
  live: LiveClient;
  /** False when no history service runs: tracks and replays are off. */
  hasHistory: boolean;
  /** A client with another token: SetStatus takes a dispatcher's. */
  clientWithToken: (token: string) => LiveClient;
  /** A dispatcher's token from #dispatch=…; the panel's field overrides it. */
  dispatchToken: string;
  onError: (message: string) => void;
}

/** Metres around a clicked point that Nearby searches. */
const NEARBY_RADIUS_M = 5000;
const NEARBY_LIMIT = 10;

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
const statusName = (s: VehicleStatus) => (VehicleStatus[s] ?? String(s)).toLowerCase().replace("_", " ");
/** A failed call in words: client/live's errors say what happened and what to do. */
const message = (e: unknown) => (e instanceof LiveError ? e.message : e instanceof Error ? e.message : String(e));

export function createPanel({ source, renderer, live, hasHistory, clientWithToken, dispatchToken, onError }: PanelOptions) {
  const history = hasHistory;
  let selected: LiveVehicle | undefined;
  let selectedId = "";
  /** Selections made so far: tells a test's click from the selection a case before it left. */
  let selections = 0;
  let track: TrackPoint[] = [];
  let totalPoints = 0;
  let stops: Stop[] = [];
  let nearby: { id: string; distanceM: number; lon: number; lat: number }[] = [];
  let pickup: [number, number] | undefined;
  let picking = false;
  let dispatchInfo = "";
  const replay = {
    playing: false,
    positions: 0,
    cursorMs: 0,
    toMs: 0,
    at: undefined as [number, number] | undefined,
    abort: undefined as AbortController | undefined,
  };

  const draw = () => {
    const at = source.selectedPosition(selectedId);
    const o: Overlays = {
      track: track.map((p) => [p.lon, p.lat]),
      stops,
      highlighted: nearby.map((n) => [n.lon, n.lat]),
      pickup,
      selected: at ?? (selected ? [selected.lon, selected.lat] : undefined),
      replay: replay.at,
    };
    renderer.setOverlays(o);
  };

  const details = () => {
    const dl = $("vehicle-details");
    const p = selected;
    if (!p) {
      dl.replaceChildren();
      return;
    }
    const rows: [string, string][] = [
      ["vehicle", p.id],
      ["fleet", p.fleetId || "–"],
      ["status", statusName(p.status)],
      ["order", p.orderId || "–"],
      ["online", p.online ? "yes" : "no (offline)"],
      ["position", `${p.lat.toFixed(5)}, ${p.lon.toFixed(5)}`],
      ["speed", `${p.speed.toFixed(1)} m/s`],
      ["seq", String(p.seq)],
      ["recorded", p.recordedAtMs ? new Date(p.recordedAtMs).toISOString() : "–"],
      ["last seen", p.lastSeenMs ? new Date(p.lastSeenMs).toISOString() : "–"],
    ];
    dl.replaceChildren(
      ...rows.flatMap(([k, v]) => {
        const dt = document.createElement("dt");
        dt.textContent = k;
        const dd = document.createElement("dd");
        dd.textContent = v;
        return [dt, dd];
      }),
    );
  };

  const range = () => {
    const choice = $<HTMLSelectElement>("track-range").value;
    return trackRange(choice === "day" ? $<HTMLInputElement>("track-day").value : choice);
  };

  async function select(id: string): Promise<void> {
    stopReplay();
    selectedId = id;
    selections++;
    source.select(id);
    track = [];
    stops = [];
    replay.cursorMs = 0;
    replay.at = undefined;
    $("track-info").textContent = "";
    $("replay-info").textContent = "";
    $("vehicle-hint").textContent = `loading ${id}…`;
    try {
      const vehicle = await live.getVehicle(id);
      if (selectedId !== id) return;
      selected = vehicle;
      $("vehicle-hint").textContent = "";
    } catch (e) {
      selected = undefined;
      $("vehicle-hint").textContent = `${id}: ${message(e)}`;
    }
    details();
    for (const b of ["track-show", "replay-play"]) $<HTMLButtonElement>(b).disabled = !history || !selected;
    $<HTMLButtonElement>("set-status-go").disabled = !selected;
    if (!history) $("track-info").textContent = "no history service: tracks and replays are off";
    draw();
    if (history && selected) await showTrack();
  }

  async function showTrack(): Promise<void> {
    if (!history || !selectedId) return;
    let r: { fromMs: number; toMs: number };
    try {
      r = range();
    } catch (e) {
      $("track-info").textContent = e instanceof Error ? e.message : String(e);
      return;
    }
    const id = selectedId;
    $("track-info").textContent = "loading the track…";
    try {
      const res = await live.track(id, { from: r.fromMs, to: r.toMs, maxPoints: 2000 });
      if (selectedId !== id) return;
      track = res.points.map((p) => ({ lat: p.lat, lon: p.lon, atMs: p.recordedAtMs }));
      totalPoints = Number(res.totalPoints);
      stops = findStops(track);
      $("track-info").textContent = `${track.length} points drawn of ${totalPoints}, ${stops.length} stop${stops.length === 1 ? "" : "s"}`;
    } catch (e) {
      $("track-info").textContent = `track: ${message(e)}`;
    }
    draw();
  }

  function stopReplay(): void {
    replay.abort?.abort();
    replay.abort = undefined;
    replay.playing = false;
    $<HTMLButtonElement>("replay-pause").disabled = true;
  }

  /** Plays from the cursor (the range's start at first, where it paused after) to the range's end. */
  async function play(): Promise<void> {
    if (!history || !selectedId) return;
    stopReplay();
    let r: { fromMs: number; toMs: number };
    try {
      r = range();
    } catch (e) {
      $("replay-info").textContent = e instanceof Error ? e.message : String(e);
      return;
    }
    if (replay.cursorMs < r.fromMs || replay.cursorMs >= r.toMs || replay.toMs !== r.toMs) {
      replay.cursorMs = r.fromMs;
      replay.positions = 0;
    }
    replay.toMs = r.toMs;
    const speed = Number($<HTMLSelectElement>("replay-speed").value);
    const abort = new AbortController();
    replay.abort = abort;
    replay.playing = true;
    $<HTMLButtonElement>("replay-pause").disabled = false;
    $("replay-info").textContent = `playing at ${speed}×…`;
    try {
      const stream = live.replay({ vehicleId: selectedId }, { from: replay.cursorMs, to: r.toMs, speed, signal: abort.signal });
      for await (const batch of stream) {
        const last = batch.at(-1);
        if (!last) continue;
        replay.positions += batch.length;
        // Resuming after a pause starts just after the last point shown.
        replay.cursorMs = (last.recordedAtMs || replay.cursorMs) + 1;
        replay.at = [last.lon, last.lat];
        $("replay-info").textContent =
          `${speed}× · ${new Date(replay.cursorMs - 1).toISOString().replace("T", " ").slice(0, 19)} · ${replay.positions} points`;
        draw();
      }
      if (!abort.signal.aborted) {
        $("replay-info").textContent = `replay done: ${replay.positions} points`;
        replay.cursorMs = 0;
      }
    } catch (e) {
      if (!abort.signal.aborted) $("replay-info").textContent = `replay: ${message(e)}`;
    } finally {
      if (replay.abort === abort) stopReplay();
    }
  }

  async function findNearby(lon: number, lat: number): Promise<void> {
    pickup = [lon, lat];
    const status = $<HTMLSelectElement>("nearby-status").value;
    const list = $("nearby-list");
    list.replaceChildren();
    try {
      const found = await live.nearby(
        { circle: { lat, lon, radiusM: NEARBY_RADIUS_M } },
        { statuses: status ? [Number(status) as VehicleStatus] : [], limit: NEARBY_LIMIT },
      );
      nearby = found.map((n) => ({ id: n.vehicle.id, distanceM: n.distanceM, lon: n.vehicle.lon, lat: n.vehicle.lat }));
      list.replaceChildren(
        ...found.map((n) => {
          const li = document.createElement("li");
          const id = n.vehicle.id;
          li.textContent = `${id} · ${Math.round(n.distanceM)} m · ${statusName(n.vehicle.status)}`;
          li.addEventListener("click", () => void select(id));
          return li;
        }),
      );
      if (nearby.length === 0) list.textContent = `none within ${NEARBY_RADIUS_M / 1000} km`;
    } catch (e) {
      nearby = [];
      list.textContent = `nearby: ${message(e)}`;
    }
    draw();
  }

  /** The vehicle serving an order: the first state of a watch on it (WatchVehicles by order), then the watch is closed. */
  async function findOrder(): Promise<void> {
    const orderId = $<HTMLInputElement>("order-id").value.trim();
    if (!orderId) return;
    dispatchInfo = `looking for ${orderId}…`;
    $("dispatch-info").textContent = dispatchInfo;
    const found = await new Promise<LiveVehicle | string>((resolve) => {
      const timer = setTimeout(() => finish("no vehicle serves it"), 5000);
      const watch = live.watchOrder(orderId, {
        onEvent: (e) => {
          if (e.kind === "snapshot" || e.kind === "enter" || e.kind === "move") finish(e.vehicle);
          else if (e.kind === "snapshotEnd") finish("no vehicle serves it");
        },
        onError: (err) => finish(message(err)),
      });
      function finish(v: LiveVehicle | string) {
        clearTimeout(timer);
        watch.close();
        resolve(v);
      }
    });
    if (typeof found === "string") {
      dispatchInfo = `order ${orderId}: ${found}`;
    } else {
      dispatchInfo = `order ${orderId}: ${found.id}`;
      renderer.setViewState({ longitude: found.lon, latitude: found.lat, zoom: Math.max(renderer.viewState.zoom, 15) });
      void select(found.id);
    }
    $("dispatch-info").textContent = dispatchInfo;
  }

  async function setStatus(): Promise<void> {
    if (!selectedId) return;
    const dispatcher = $<HTMLInputElement>("dispatch-token").value.trim() || dispatchToken;
    const status = Number($<HTMLSelectElement>("set-status").value) as VehicleStatus;
    const orderId = status === VehicleStatus.ON_DELIVERY ? $<HTMLInputElement>("set-order").value.trim() : "";
    try {
      selected = await (dispatcher ? clientWithToken(dispatcher) : live).setStatus(selectedId, status, { orderId });
      dispatchInfo = `${selectedId} is ${statusName(status)}${orderId ? ` for ${orderId}` : ""}`;
      details();
    } catch (e) {
      dispatchInfo =
        e instanceof LiveError && e.code === "permission-denied"
          ? `${message(e)} (a dispatcher's token is needed: fleet token watch --fleet F --dispatch, in the field below)`
          : message(e);
    }
    $("dispatch-info").textContent = dispatchInfo;
  }

  $("track-range").addEventListener("change", () => {
    $("track-day").hidden = $<HTMLSelectElement>("track-range").value !== "day";
  });
  $("track-show").addEventListener("click", () => void showTrack());
  $("replay-play").addEventListener("click", () => void play());
  $("replay-pause").addEventListener("click", () => {
    stopReplay();
    $("replay-info").textContent = `paused · ${replay.positions} points`;
  });
  $("replay-speed").addEventListener("change", () => {
    if (replay.playing) void play();
  });
  $("nearby-pick").addEventListener("click", () => {
    picking = !picking;
    $("map").classList.toggle("picking", picking);
    $("nearby-list").textContent = picking ? "click the pickup point on the map" : "";
  });
  $("order-find").addEventListener("click", () => void findOrder());
  $("set-status-go").addEventListener("click", () => void setStatus());
  // The selected vehicle's ring follows it as it moves.
  setInterval(() => {
    if (selectedId && source.selectedPosition(selectedId)) draw();
  }, 1000);

  return {
    /** A click on the map at (x, y): Nearby's pickup point while picking, else the vehicle there, if any. */
    clicked(x: number, y: number): void {
      if (picking) {
        picking = false;
        $("map").classList.remove("picking");
        const [lon, lat] = renderer.unproject(x, y);
        void findNearby(lon, lat);
        return;
      }
      void source.pick(x, y).then((id) => {
        if (id) void select(id);
      });
    },
    select,
    findNearby,
    snapshot() {
      return {
        selectedId,
        selections,
        vehicle: selected && {
          id: selected.id,
          status: selected.status,
          orderId: selected.orderId,
          online: selected.online,
          fleetId: selected.fleetId,
        },
        trackPoints: track.length,
        totalPoints,
        stops: stops.length,
        replay: { playing: replay.playing, positions: replay.positions, cursorMs: replay.cursorMs, at: replay.at },
        nearby: nearby.map(({ id, distanceM }) => ({ id, distanceM })),
        dispatchInfo,
      };
    },
    onError,
  };
}
