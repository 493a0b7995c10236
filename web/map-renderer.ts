/**
 * What the dashboard's map offers the page, whoever draws it (dashboard-render.ts with deck.gl,
 * map-basemap.ts under an operator's MapLibre style): its own file, so that the renderer that loads
 * the basemap on demand and the basemap do not import each other.
 */
import type { MapViewState } from "@deck.gl/core";
import type { Box, MapState } from "./map-state";
import type { WorkerMessage } from "./map-points-worker";
import type { SourceReply } from "./map-source";

export interface Overlays {
  /** A track to draw: [lon, lat] pairs. */
  track?: [number, number][];
  stops?: { lon: number; lat: number }[];
  /** The replayed vehicle's position. */
  replay?: [number, number];
  /** Vehicles highlighted (Nearby's answer), nearest first. */
  highlighted?: [number, number][];
  /** The selected vehicle. */
  selected?: [number, number];
  /** Where the dispatcher clicked for Nearby. */
  pickup?: [number, number];
}

export interface MapRenderer {
  /** Redraws the vehicles on the next frame if the state's buffers changed. */
  invalidate(): void;
  setOverlays(o: Overlays): void;
  readonly viewState: MapViewState;
  setViewState(v: Partial<MapViewState>): void;
  /** The box the view shows now. */
  viewBox(): Box;
  /** The slot of the shown vehicle nearest to (x, y) in CSS pixels within `maxPx`, or undefined. */
  pickVehicle(x: number, y: number, maxPx?: number): number | undefined;
  /** [lon, lat] under (x, y). */
  unproject(x: number, y: number): [number, number];
  /** The CSS pixel of [lon, lat] in the container. */
  project(lon: number, lat: number): [number, number];
  /** Frames drawn since the start. */
  readonly frames: number;
  /** The operator's style (WEB_MAP_STYLE): "none" without one, then "loading", "loaded" or "failed". */
  readonly basemap: "none" | "loading" | "loaded" | "failed";
  /** The map worker that draws the vehicles (the "worker" vehicles): it can also keep them (web/map-source.ts). */
  readonly pointsWorker?: {
    post(m: WorkerMessage): void;
    listen(fn: (m: SourceReply) => void): void;
    /** What the worker draws with ("2d" or "webgl2"; "" until it said) and the WebGL renderer it saw. */
    drawing(): { drawing: string; glRenderer: string };
  };
}

export interface MapRendererOptions {
  container: HTMLElement;
  /**
   * The vehicles to draw from this thread's MapState; absent when the map worker keeps them
   * itself (the default page: web/map-source.ts).
   */
  state?: MapState;
  /** The box to show first. */
  initial: Box;
  /** A MapLibre style URL to draw underneath; "" for the graticule. */
  mapStyle: string;
  onViewChange: (v: MapViewState) => void;
  onClick: (x: number, y: number) => void;
  onError: (message: string) => void;
  /**
   * Who draws the vehicles: "worker" (default), squares on an OffscreenCanvas in
   * map-points-worker.ts; "deck", a ScatterplotLayer on the page's thread (kept for bench web's comparison).
   */
  vehicles?: "worker" | "deck";
  /**
   * The worker's canvas: "auto" (default: WebGL2 points when WebGL runs on a GPU, 2D squares when it
   * runs in software), "2d" (rasterised in the worker) or "webgl2" (GL points).
   */
  points?: "2d" | "webgl2" | "auto";
}
