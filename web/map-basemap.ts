/// <reference lib="dom" />
/**
 * MapLibre GL, in a chunk of its own that the dashboard fetches only when it needs it:
 * - createBasemap: the operator's style (WEB_MAP_STYLE) under deck.gl's vehicles, following deck's camera;
 * - createMaplibreRenderer: the whole map in MapLibre, vehicles in a GeoJSON source (?renderer=maplibre),
 *   kept to measure it against deck.gl on this page (bench web --renderer maplibre).
 */
import type { MapViewState } from "@deck.gl/core";
import { Map as MaplibreMap, setWorkerUrl, type GeoJSONSource, type StyleSpecification } from "maplibre-gl";
import type { MapRenderer, MapRendererOptions, Overlays } from "./map-renderer";
import { graticule } from "./map-view";

// cli/web.ts serves MapLibre's worker beside the bundle; its default URL is relative to a file the bundle does not keep.
setWorkerUrl(new URL("/maplibre-gl-worker.mjs", location.href).href);

/** A MapLibre map drawing `style` in `holder`, moved only by jumpTo (deck.gl owns the input). */
export function createBasemap(holder: HTMLElement, style: string, view: MapViewState, onError: (m: string) => void) {
  const map = new MaplibreMap({
    container: holder,
    style,
    center: [view.longitude, view.latitude],
    zoom: view.zoom,
    interactive: false,
    attributionControl: { compact: true },
  });
  map.on("error", (e) => onError(`map style: ${e.error?.message ?? "failed"}`));
  return map;
}

const EMPTY_STYLE: StyleSpecification = {
  version: 8,
  sources: {},
  layers: [{ id: "background", type: "background", paint: { "background-color": "#ffffff" } }],
};

/** The dashboard's map drawn by MapLibre alone: vehicles as a GeoJSON source, set again whenever they changed and the last set is done. */
export function createMaplibreRenderer({
  container,
  state: given,
  initial,
  mapStyle,
  onViewChange,
  onClick,
  onError,
}: MapRendererOptions): MapRenderer {
  if (!given) throw new Error("the maplibre renderer draws the page's own MapState: pass `state`");
  const state = given;
  const holder = document.createElement("div");
  holder.style.position = "absolute";
  holder.style.inset = "0";
  container.append(holder);
  const map = new MaplibreMap({
    container: holder,
    style: mapStyle || EMPTY_STYLE,
    bounds: [initial.minLon, initial.minLat, initial.maxLon, initial.maxLat],
    attributionControl: false,
    dragRotate: false,
    pitchWithRotate: false,
  });
  let frames = 0;
  let overlays: Overlays = {};
  let sentVersion = -1;
  let sending = false;
  let ready = false;
  map.on("error", (e) => onError(`maplibre: ${e.error?.message ?? "failed"}`));
  map.on("render", () => {
    frames++;
  });
  const viewState = (): MapViewState => {
    const c = map.getCenter();
    return { longitude: c.lng, latitude: c.lat, zoom: map.getZoom(), pitch: 0, bearing: 0 };
  };
  map.on("move", () => {
    if (ready) (map.getSource("graticule") as GeoJSONSource).setData(graticuleGeoJson());
    onViewChange(viewState());
  });
  map.on("click", (e) => onClick(e.point.x, e.point.y));
  const box = () => {
    const b = map.getBounds();
    return { minLon: b.getWest(), minLat: b.getSouth(), maxLon: b.getEast(), maxLat: b.getNorth() };
  };
  const graticuleGeoJson = (): GeoJSON.FeatureCollection => ({
    type: "FeatureCollection",
    features: graticule(box()).map((coordinates) => ({ type: "Feature", properties: {}, geometry: { type: "LineString", coordinates } })),
  });
  const colour = (i: number) => {
    const c = state.colours;
    return `rgb(${c[4 * i]},${c[4 * i + 1]},${c[4 * i + 2]})`;
  };
  const vehiclesGeoJson = (): GeoJSON.FeatureCollection => {
    const features: GeoJSON.Feature[] = [];
    const { positions, colours } = state;
    for (let i = 0; i < state.slotCount; i++) {
      if (colours[4 * i + 3] === 0) continue;
      features.push({
        type: "Feature",
        properties: { c: colour(i) },
        geometry: { type: "Point", coordinates: [positions[2 * i]!, positions[2 * i + 1]!] },
      });
    }
    return { type: "FeatureCollection", features };
  };
  const overlaysGeoJson = (): GeoJSON.FeatureCollection => {
    const features: GeoJSON.Feature[] = [];
    if (overlays.track && overlays.track.length > 1)
      features.push({ type: "Feature", properties: {}, geometry: { type: "LineString", coordinates: overlays.track } });
    for (const p of [
      ...(overlays.highlighted ?? []),
      ...(overlays.selected ? [overlays.selected] : []),
      ...(overlays.replay ? [overlays.replay] : []),
    ])
      features.push({ type: "Feature", properties: {}, geometry: { type: "Point", coordinates: p } });
    for (const s of overlays.stops ?? [])
      features.push({ type: "Feature", properties: {}, geometry: { type: "Point", coordinates: [s.lon, s.lat] } });
    return { type: "FeatureCollection", features };
  };
  map.on("load", () => {
    map.addSource("graticule", { type: "geojson", data: graticuleGeoJson() });
    map.addLayer({ id: "graticule", type: "line", source: "graticule", paint: { "line-color": "#c8c8c8", "line-width": 1 } });
    map.addSource("vehicles", { type: "geojson", data: { type: "FeatureCollection", features: [] } });
    map.addLayer({ id: "vehicles", type: "circle", source: "vehicles", paint: { "circle-radius": 3, "circle-color": ["get", "c"] } });
    map.addSource("overlays", { type: "geojson", data: overlaysGeoJson() });
    map.addLayer({ id: "overlay-lines", type: "line", source: "overlays", paint: { "line-color": "#dc283c", "line-width": 3 } });
    map.addLayer({
      id: "overlay-points",
      type: "circle",
      source: "overlays",
      filter: ["==", ["geometry-type"], "Point"],
      paint: { "circle-radius": 8, "circle-opacity": 0, "circle-stroke-color": "#dc283c", "circle-stroke-width": 2 },
    });
    ready = true;
    invalidate();
  });
  // One setData at a time: the next waits until the worker has tiled the last one.
  const invalidate = () => {
    if (!ready || sending || state.version === sentVersion) return;
    sending = true;
    sentVersion = state.version;
    void (map.getSource("vehicles") as GeoJSONSource)
      .setData(vehiclesGeoJson())
      .catch((e: unknown) => onError(`maplibre: ${String(e)}`))
      .finally(() => {
        sending = false;
        if (state.version !== sentVersion) requestAnimationFrame(invalidate);
      });
  };
  return {
    invalidate,
    setOverlays(o) {
      overlays = o;
      if (ready) void (map.getSource("overlays") as GeoJSONSource).setData(overlaysGeoJson());
    },
    get viewState() {
      return viewState();
    },
    setViewState(v) {
      map.jumpTo({ center: [v.longitude ?? map.getCenter().lng, v.latitude ?? map.getCenter().lat], zoom: v.zoom ?? map.getZoom() });
    },
    viewBox: box,
    pickVehicle(x, y, maxPx = 10) {
      let best: number | undefined;
      let bestD = maxPx * maxPx;
      const { positions, colours } = state;
      for (let i = 0; i < state.slotCount; i++) {
        if (colours[4 * i + 3] === 0) continue;
        const p = map.project([positions[2 * i]!, positions[2 * i + 1]!]);
        const d = (p.x - x) ** 2 + (p.y - y) ** 2;
        if (d <= bestD) {
          bestD = d;
          best = i;
        }
      }
      return best;
    },
    unproject(x, y) {
      const l = map.unproject([x, y]);
      return [l.lng, l.lat];
    },
    project(lon, lat) {
      const p = map.project([lon, lat]);
      return [p.x, p.y];
    },
    get frames() {
      return frames;
    },
    basemap: mapStyle ? "loaded" : "none",
  };
}
