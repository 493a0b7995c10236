/**
 * The dashboard's viewport and the area it watches: when a moved or zoomed view needs a new
 * WatchArea, and how large that area is. No DOM: the rules are tested on their own.
 */
import type { Box } from "./map-state";

/** The view grown by `pad` times its width and height on every side (latitudes kept in ±85°, longitudes in ±180°). */
export function padBox(view: Box, pad: number): Box {
  const dLat = (view.maxLat - view.minLat) * pad;
  const dLon = (view.maxLon - view.minLon) * pad;
  return {
    minLat: Math.max(-85, view.minLat - dLat),
    minLon: Math.max(-180, view.minLon - dLon),
    maxLat: Math.min(85, view.maxLat + dLat),
    maxLon: Math.min(180, view.maxLon + dLon),
  };
}

/** Whether `inner` lies wholly inside `outer`. */
export function boxContains(outer: Box, inner: Box): boolean {
  return inner.minLat >= outer.minLat && inner.maxLat <= outer.maxLat && inner.minLon >= outer.minLon && inner.maxLon <= outer.maxLon;
}

/** Great-circle distance in metres. */
export function distanceM(lat1: number, lon1: number, lat2: number, lon2: number): number {
  const rad = Math.PI / 180;
  const a =
    Math.sin(((lat2 - lat1) * rad) / 2) ** 2 + Math.cos(lat1 * rad) * Math.cos(lat2 * rad) * Math.sin(((lon2 - lon1) * rad) / 2) ** 2;
  return 2 * 6_371_008.8 * Math.asin(Math.min(1, Math.sqrt(a)));
}

/** Half the diagonal of a box in metres: how the tracker sizes an area (TRACKER_MAX_RADIUS_M). */
export function halfDiagonalM(box: Box): number {
  return distanceM(box.minLat, box.minLon, box.maxLat, box.maxLon) / 2;
}

/** `box` shrunk around its centre until its half-diagonal is at most `maxM`; the box itself when it already is. */
export function limitBox(box: Box, maxM: number): Box {
  const half = halfDiagonalM(box);
  if (half <= maxM) return box;
  const k = maxM / half;
  const cLat = (box.minLat + box.maxLat) / 2;
  const cLon = (box.minLon + box.maxLon) / 2;
  const hLat = ((box.maxLat - box.minLat) / 2) * k;
  const hLon = ((box.maxLon - box.minLon) / 2) * k;
  return { minLat: cLat - hLat, minLon: cLon - hLon, maxLat: cLat + hLat, maxLon: cLon + hLon };
}

const span = (b: Box) => (b.maxLat - b.minLat) * (b.maxLon - b.minLon);

export interface WatchAreaRuleOptions {
  /** The watched area is the view grown by this much of its size on every side. */
  pad?: number;
  /** A watched area more than this many times the view's size is narrowed (the user zoomed in a lot). */
  maxOversize?: number;
  /** The tracker's TRACKER_MAX_RADIUS_M, with a margin: larger areas are refused. */
  maxHalfDiagonalM?: number;
}

/**
 * The area to watch for `view` when the one watched (`watched`) no longer fits it, else undefined:
 * a pan inside the padding or a small zoom keeps the watch (hysteresis: no re-subscription per
 * mouse move); a pan past the padding, a zoom out, or a zoom in far enough that most of the
 * watched vehicles are off screen asks for a new one.
 */
export function nextWatchedArea(
  watched: Box | undefined,
  view: Box,
  { pad = 0.5, maxOversize = 9, maxHalfDiagonalM = 150_000 }: WatchAreaRuleOptions = {},
): Box | undefined {
  const wanted = limitBox(padBox(view, pad), maxHalfDiagonalM);
  if (!watched) return wanted;
  const fits = boxContains(watched, limitBox(view, maxHalfDiagonalM));
  const oversized = span(watched) > maxOversize * Math.max(span(view), 1e-12) && span(wanted) < span(watched);
  return fits && !oversized ? undefined : wanted;
}

/** Grid lines at a round step that gives about `target` lines across `min`..`max` degrees. */
export function gridSteps(min: number, max: number, target = 6): number[] {
  const raw = (max - min) / target;
  const pow = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * pow).find((s) => s >= raw) ?? 10 * pow;
  const out: number[] = [];
  for (let v = Math.ceil(min / step) * step; v <= max + 1e-12; v += step) out.push(Number(v.toFixed(10)));
  return out;
}

/** Graticule lines covering `view` (paths of [lon, lat] pairs), for a basemap that needs no tiles. */
export function graticule(view: Box): [number, number][][] {
  const lines: [number, number][][] = [];
  const lat0 = Math.max(-85, view.minLat);
  const lat1 = Math.min(85, view.maxLat);
  const lon0 = Math.max(-180, view.minLon);
  const lon1 = Math.min(180, view.maxLon);
  for (const lat of gridSteps(lat0, lat1))
    lines.push([
      [lon0, lat],
      [lon1, lat],
    ]);
  for (const lon of gridSteps(lon0, lon1))
    lines.push([
      [lon, lat0],
      [lon, lat1],
    ]);
  return lines;
}
