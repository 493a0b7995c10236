/// <reference lib="dom" />
/**
 * The dashboard's map on WebGL with deck.gl: every vehicle is one instance of a ScatterplotLayer
 * whose attributes are MapState's typed arrays, uploaded as they are when they changed (no object
 * per vehicle, no per-frame allocation). Chosen over MapLibre GL's GeoJSON source by measuring both
 * on this page (bench/README.md, "web"). Pan and zoom are deck's controller (drag, wheel, double
 * click, keyboard); a MapLibre style (WEB_MAP_STYLE) is drawn underneath and follows the camera.
 */
import { Deck, MapView, WebMercatorViewport, type Layer, type MapViewState } from "@deck.gl/core";
import { PathLayer, ScatterplotLayer } from "@deck.gl/layers";
import type { Box, MapState } from "./map-state";
import type { SourceReply } from "./map-source";
import { graticule } from "./map-view";
import type { WorkerMessage } from "./map-points-worker";
import type { MapRenderer, MapRendererOptions, Overlays } from "./map-renderer";

export type { MapRenderer, MapRendererOptions, Overlays } from "./map-renderer";

/** How often the worker gets a fresh copy of the vehicles while events come (a vehicle reports every few seconds). */
const WORKER_DATA_INTERVAL_MS = 200;

/** The view state that shows `box` in a width × height viewport. */
export function fitViewState(box: Box, width: number, height: number): MapViewState {
  const vp = new WebMercatorViewport({ width: Math.max(width, 64), height: Math.max(height, 64) });
  const { longitude, latitude, zoom } = vp.fitBounds(
    [
      [box.minLon, box.minLat],
      [box.maxLon, box.maxLat],
    ],
    { padding: Math.min(40, Math.floor(Math.min(width, height) / 8)) },
  );
  return { longitude, latitude, zoom, pitch: 0, bearing: 0 };
}

/** Creates the map in `container` (which it fills). */
export function createDeckRenderer({
  container,
  state,
  initial,
  mapStyle,
  onViewChange,
  onClick,
  onError,
  vehicles = "worker",
  points = "auto",
}: MapRendererOptions): MapRenderer {
  let viewState = fitViewState(initial, container.clientWidth, container.clientHeight);
  let overlays: Overlays = {};
  let drawnVersion = -1;
  let frames = 0;
  let basemap: { jumpTo(o: unknown): void } | undefined;
  let basemapState: MapRenderer["basemap"] = mapStyle ? "loading" : "none";
  const viewport = () => new WebMercatorViewport({ ...viewState, width: container.clientWidth, height: container.clientHeight });

  const vehiclesLayer = (state: MapState) =>
    new ScatterplotLayer({
      id: "vehicles",
      // Binary attributes: the arrays MapState writes in place; a new `data` object (not new
      // arrays) tells deck to upload them again.
      data: {
        length: state.slotCount,
        attributes: {
          getPosition: { value: state.positions, size: 2 },
          getFillColor: { value: state.colours, size: 4, normalized: true },
        },
      },
      radiusUnits: "pixels",
      getRadius: 3,
      stroked: false,
      // Picking is done in JS on click (pickVehicle): deck's picking pass would redraw 100,000 points per pointer move.
      pickable: false,
      parameters: { depthCompare: "always" },
    });

  const layers = (): Layer[] => {
    const list: Layer[] = [];
    if (!mapStyle) {
      const b = viewport().getBounds();
      list.push(
        new PathLayer({
          id: "graticule",
          data: graticule({ minLon: b[0], minLat: b[1], maxLon: b[2], maxLat: b[3] }),
          getPath: (d: [number, number][]) => d,
          getColor: [200, 200, 200],
          widthUnits: "pixels",
          getWidth: 1,
        }),
      );
    }
    if (overlays.track && overlays.track.length > 1)
      list.push(
        new PathLayer({
          id: "track",
          data: [overlays.track],
          getPath: (d: [number, number][]) => d,
          getColor: [220, 40, 60, 200],
          widthUnits: "pixels",
          getWidth: 3,
        }),
      );
    if (vehicles === "deck" && state) list.push(vehiclesLayer(state));
    const rings = (id: string, points: [number, number][], colour: [number, number, number, number], radius: number, filled = false) =>
      new ScatterplotLayer({
        id,
        data: points,
        getPosition: (d: [number, number]) => d,
        radiusUnits: "pixels",
        getRadius: radius,
        stroked: true,
        filled,
        lineWidthUnits: "pixels",
        getLineWidth: 2,
        getLineColor: colour,
        getFillColor: colour,
      });
    if (overlays.stops?.length)
      list.push(
        rings(
          "stops",
          overlays.stops.map((s) => [s.lon, s.lat]),
          [220, 40, 60, 255],
          6,
        ),
      );
    if (overlays.highlighted?.length) list.push(rings("nearby", overlays.highlighted, [255, 170, 0, 255], 9));
    if (overlays.pickup) list.push(rings("pickup", [overlays.pickup], [0, 0, 0, 255], 5, true));
    if (overlays.selected) list.push(rings("selected", [overlays.selected], [220, 40, 60, 255], 10));
    if (overlays.replay) list.push(rings("replay", [overlays.replay], [220, 40, 60, 255], 7, true));
    return list;
  };

  const canvas = document.createElement("canvas");
  canvas.style.position = "absolute";
  canvas.style.inset = "0";
  canvas.style.width = "100%";
  canvas.style.height = "100%";
  container.append(canvas);

  const worker = vehicles === "worker" ? startPointsWorker(container, canvas, points, onError) : undefined;
  const postView = () =>
    worker?.post({
      type: "view",
      longitude: viewState.longitude,
      latitude: viewState.latitude,
      zoom: viewState.zoom,
      width: container.clientWidth,
      height: container.clientHeight,
    });
  postView();
  new ResizeObserver(() => {
    postView();
    update({ layers: layers() });
  }).observe(container);

  const deck = new Deck({
    canvas,
    views: new MapView({ repeat: false }),
    viewState,
    controller: { dragRotate: false, touchRotate: false, doubleClickZoom: true, keyboard: true },
    // One device pixel per CSS pixel: on a HiDPI screen, 4× the fragments for no more information.
    useDevicePixels: false,
    layers: layers(),
    onViewStateChange: ({ viewState: next }) => {
      viewState = next as MapViewState;
      update({ viewState, layers: layers() });
      postView();
      basemap?.jumpTo({ center: [viewState.longitude, viewState.latitude], zoom: viewState.zoom, bearing: 0, pitch: 0 });
      onViewChange(viewState);
    },
    onClick: (info) => onClick(info.x, info.y),
    onAfterRender: () => {
      frames++;
      loop.drew();
    },
    onError: (e) => onError(`WebGL: ${e.message}`),
  });
  const loop = parkWhenIdle(deck, container);
  /** deck.setProps, and deck's loop woken to draw them. */
  function update(props: Parameters<typeof deck.setProps>[0]): void {
    deck.setProps(props);
    loop.wake();
  }

  // The vehicles are redrawn at most once per animation frame (the worker: per WORKER_DATA_INTERVAL_MS), and only when events changed them.
  let pending = false;
  const invalidate = () => {
    if (pending) return;
    pending = true;
    const send = () => {
      pending = false;
      if (!state || state.version === drawnVersion) return;
      drawnVersion = state.version;
      if (worker) {
        // Copies, handed over (transferred) rather than cloned a second time.
        const positions = state.positions.slice(0, 2 * state.slotCount);
        const colours = state.colours.slice(0, 4 * state.slotCount);
        worker.post({ type: "data", positions, colours, count: state.slotCount }, [positions.buffer, colours.buffer]);
      } else {
        update({ layers: layers() });
      }
    };
    if (worker) setTimeout(send, WORKER_DATA_INTERVAL_MS);
    else requestAnimationFrame(send);
  };

  if (mapStyle) {
    // MapLibre is a chunk of its own, fetched only here: without a style the page needs none of it.
    const holder = document.createElement("div");
    holder.style.position = "absolute";
    holder.style.inset = "0";
    container.prepend(holder);
    canvas.style.pointerEvents = "auto";
    void import("./map-basemap")
      .then(({ createBasemap }) => {
        const map = createBasemap(holder, mapStyle, viewState, (m) => {
          basemapState = "failed";
          onError(m);
        });
        map.once("load", () => {
          basemapState = "loaded";
        });
        basemap = map;
      })
      .catch((e: unknown) => {
        basemapState = "failed";
        onError(`the map style could not be loaded: ${e instanceof Error ? e.message : String(e)}`);
      });
  }

  return {
    invalidate,
    setOverlays(o) {
      overlays = o;
      update({ layers: layers() });
    },
    get viewState() {
      return viewState;
    },
    setViewState(v) {
      viewState = { ...viewState, ...v };
      update({ viewState, layers: layers() });
      postView();
      basemap?.jumpTo({ center: [viewState.longitude, viewState.latitude], zoom: viewState.zoom });
      onViewChange(viewState);
    },
    viewBox() {
      const b = viewport().getBounds();
      return { minLon: b[0], minLat: b[1], maxLon: b[2], maxLat: b[3] };
    },
    pickVehicle(x, y, maxPx = 10) {
      const vp = viewport();
      const [lon, lat] = vp.unproject([x, y]) as [number, number];
      // Search a box of maxPx around the click in degrees first, then measure in pixels: one pass over the arrays.
      const [lon2, lat2] = vp.unproject([x + maxPx, y + maxPx]) as [number, number];
      const dLon = Math.abs(lon2 - lon);
      const dLat = Math.abs(lat2 - lat);
      let best: number | undefined;
      let bestD = maxPx * maxPx;
      if (!state) return undefined;
      const { positions, colours } = state;
      for (let i = 0; i < state.slotCount; i++) {
        if (colours[4 * i + 3] === 0) continue;
        const plon = positions[2 * i]!;
        const plat = positions[2 * i + 1]!;
        if (Math.abs(plon - lon) > dLon || Math.abs(plat - lat) > dLat) continue;
        const [px, py] = vp.project([plon, plat]) as [number, number];
        const d = (px - x) ** 2 + (py - y) ** 2;
        if (d <= bestD) {
          bestD = d;
          best = i;
        }
      }
      return best;
    },
    unproject(x, y) {
      return viewport().unproject([x, y]) as [number, number];
    },
    project(lon, lat) {
      return viewport().project([lon, lat]) as [number, number];
    },
    get frames() {
      return worker ? worker.frames : frames;
    },
    get basemap() {
      return basemapState;
    },
    pointsWorker: worker && {
      post: (m: WorkerMessage) => worker.post(m),
      listen: (fn) => worker.listeners.push(fn),
      drawing: () => ({ drawing: worker.drawing, glRenderer: worker.glRenderer }),
    },
  };
}

/** Animation-loop requests with nothing drawn before deck's loop is held (half a second at 60 frames/s). */
const IDLE_FRAMES = 30;

/**
 * deck.gl's animation loop asks the browser for a frame 60 times a second even when nothing on its
 * canvas changes: with the vehicles in the worker, that was 83% of the page's main-thread time
 * (bench web --profile: 604 main frames in 10 s). Its requests go through its loop's
 * animationFrameProvider: after IDLE_FRAMES requests with nothing drawn, the next one is held
 * until something may change what deck draws (new props, input on the map). Without that provider
 * (another deck.gl version) the loop runs as before.
 */
function parkWhenIdle(deck: object, input: HTMLElement): { wake(): void; drew(): void } {
  const PARKED = -1;
  let idle = 0;
  let parked: FrameRequestCallback | undefined;
  const loop = (deck as unknown as { animationLoop?: { props?: Record<string, unknown> } }).animationLoop;
  if (loop?.props && "animationFrameProvider" in loop.props)
    loop.props.animationFrameProvider = {
      requestAnimationFrame(cb: FrameRequestCallback): number {
        if (idle++ < IDLE_FRAMES) return requestAnimationFrame(cb);
        parked = cb;
        return PARKED;
      },
      cancelAnimationFrame(id: number): void {
        if (id === PARKED) parked = undefined;
        else cancelAnimationFrame(id);
      },
    };
  const wake = () => {
    idle = 0;
    const cb = parked;
    parked = undefined;
    if (cb) requestAnimationFrame(cb);
  };
  // Input deck's controller turns into a view change or a transition it plays over the next frames.
  for (const type of ["pointerdown", "pointerup", "wheel", "keydown", "dblclick"])
    input.addEventListener(type, wake, { capture: true, passive: true });
  return {
    wake,
    drew: () => {
      idle = 0;
    },
  };
}

/** Starts map-points-worker.js on a canvas of its own under deck's (which draws the graticule and overlays over the vehicles). */
function startPointsWorker(
  container: HTMLElement,
  above: HTMLCanvasElement,
  context: "2d" | "webgl2" | "auto",
  onError: (m: string) => void,
) {
  const canvas = document.createElement("canvas");
  canvas.style.position = "absolute";
  canvas.style.inset = "0";
  canvas.style.width = "100%";
  canvas.style.height = "100%";
  canvas.style.pointerEvents = "none";
  container.insertBefore(canvas, above);
  const offscreen = canvas.transferControlToOffscreen();
  const worker = new Worker(new URL("/map-points-worker.js", location.href), { type: "module" });
  const handle = {
    frames: 0,
    /** What the worker draws with, once it said ("2d" or "webgl2"), and the WebGL renderer it saw. */
    drawing: "",
    glRenderer: "",
    post: (m: WorkerMessage, transfer: Transferable[] = []) => worker.postMessage(m, transfer),
    /** Who hears the worker's answers about the vehicles it keeps (web/map-source.ts). */
    listeners: [] as ((m: SourceReply) => void)[],
  };
  worker.onmessage = (e: MessageEvent<{ frames?: number; error?: string; drawing?: string; glRenderer?: string } | SourceReply>) => {
    const m = e.data;
    if ("type" in m) {
      for (const fn of handle.listeners) fn(m);
      return;
    }
    if (m.error) onError(`vehicles: ${m.error}`);
    if (m.frames !== undefined) handle.frames = m.frames;
    if (m.drawing !== undefined) {
      handle.drawing = m.drawing;
      handle.glRenderer = m.glRenderer ?? "";
    }
  };
  worker.onerror = (e) => onError(`vehicles: ${e.message}`);
  handle.post({ type: "init", canvas: offscreen, context }, [offscreen]);
  return handle;
}
