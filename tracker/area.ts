/**
 * Areas of queries and watches: validation (with reasons a caller can act on), containment, the
 * circle Redis searches to find candidates, and the live subjects that cover an area.
 */
import type { Area } from "../gen/fleet/v1/geo_pb";
import { distanceM, REDIS_EARTH_RADIUS_M } from "../lib/geo";
import { geohashCover } from "../lib/geohash";
import { InvalidRequestError } from "../lib/grpc";
import { liveCellWildcard } from "../lib/nats";

const rad = (deg: number) => (deg * Math.PI) / 180;

export interface Bounds {
  minLat: number;
  minLon: number;
  maxLat: number;
  maxLon: number;
}

/** A validated area. */
export interface Region {
  kind: "circle" | "box";
  /** Centre (of the circle, or of the box). */
  lat: number;
  lon: number;
  /** Radius of the circle, or the box's largest distance from its centre: what Redis searches. */
  radiusM: number;
  /** Bounding box. */
  bounds: Bounds;
  /** The part of a circle's bounding box across the antimeridian, if it crosses it. */
  wrap?: Bounds;
  contains(lat: number, lon: number): boolean;
}

const finite = (...v: number[]) => v.every(Number.isFinite);
const latOk = (v: number) => v >= -90 && v <= 90;
const lonOk = (v: number) => v >= -180 && v <= 180;

/** Validates an area; throws InvalidRequestError saying what to change. */
export function toRegion(area: Area | undefined, maxRadiusM: number): Region {
  const shape = area?.shape;
  if (!shape || shape.case === undefined) throw new InvalidRequestError("area is missing: give a circle or a box");
  if (shape.case === "circle") {
    const { lat, lon, radiusM } = shape.value;
    if (!finite(lat, lon) || !latOk(lat) || !lonOk(lon)) {
      throw new InvalidRequestError(`circle centre lat ${lat}, lon ${lon}: need finite lat -90..90 and lon -180..180`);
    }
    if (!Number.isFinite(radiusM) || radiusM <= 0) throw new InvalidRequestError(`circle radius_m ${radiusM}: must be above 0`);
    if (radiusM > maxRadiusM) throw new InvalidRequestError(`circle radius_m ${radiusM}: must be at most ${maxRadiusM} m`);
    const dLat = (radiusM / REDIS_EARTH_RADIUS_M) * (180 / Math.PI);
    const cosLat = Math.cos(rad(Math.min(89.9, Math.abs(lat) + dLat)));
    const dLon = Math.min(180, dLat / Math.max(cosLat, 1e-6));
    const bounds = {
      minLat: Math.max(-90, lat - dLat),
      maxLat: Math.min(90, lat + dLat),
      minLon: Math.max(-180, lon - dLon),
      maxLon: Math.min(180, lon + dLon),
    };
    // A circle across the antimeridian also covers longitudes on the other side of ±180.
    let wrap: Bounds | undefined;
    if (dLon < 180 && lon - dLon < -180) wrap = { minLat: bounds.minLat, maxLat: bounds.maxLat, minLon: lon - dLon + 360, maxLon: 180 };
    if (dLon < 180 && lon + dLon > 180) wrap = { minLat: bounds.minLat, maxLat: bounds.maxLat, minLon: -180, maxLon: lon + dLon - 360 };
    const haversine = (la: number, lo: number) => distanceM(lat, lon, la, lo, REDIS_EARTH_RADIUS_M) <= radiusM;
    // An area watch is handed every vehicle of the cells around it, most of them outside the
    // circle: the bounding box turns those away before the trigonometry. Only where the box is
    // exact (away from the poles and the antimeridian), with a centimetre to spare.
    const boxed = Math.abs(lat) + dLat < 89.9 && lon - dLon > -180 && lon + dLon < 180;
    const m = 1e-7;
    const [minLat, maxLat, minLon, maxLon] = [bounds.minLat - m, bounds.maxLat + m, bounds.minLon - m, bounds.maxLon + m];
    return {
      kind: "circle",
      lat,
      lon,
      radiusM,
      bounds,
      wrap,
      contains: boxed ? (la, lo) => la >= minLat && la <= maxLat && lo >= minLon && lo <= maxLon && haversine(la, lo) : haversine,
    };
  }
  const { minLat, minLon, maxLat, maxLon } = shape.value;
  if (!finite(minLat, minLon, maxLat, maxLon) || !latOk(minLat) || !latOk(maxLat) || !lonOk(minLon) || !lonOk(maxLon)) {
    throw new InvalidRequestError(`box corners (${minLat}, ${minLon}) (${maxLat}, ${maxLon}): need finite lat -90..90 and lon -180..180`);
  }
  if (minLat >= maxLat || minLon >= maxLon) {
    throw new InvalidRequestError(
      `box corners (${minLat}, ${minLon}) (${maxLat}, ${maxLon}) are inverted or empty: min_lat < max_lat and min_lon < max_lon (a box may not cross the antimeridian)`,
    );
  }
  const lat = (minLat + maxLat) / 2;
  const lon = (minLon + maxLon) / 2;
  // The farthest corner is on the side nearer the equator (longitude degrees are longer there).
  const edgeLat = Math.abs(minLat) < Math.abs(maxLat) ? minLat : maxLat;
  const radiusM = Math.max(
    distanceM(lat, lon, edgeLat, minLon, REDIS_EARTH_RADIUS_M),
    distanceM(lat, lon, edgeLat, maxLon, REDIS_EARTH_RADIUS_M),
    distanceM(lat, lon, maxLat, lon, REDIS_EARTH_RADIUS_M),
    distanceM(lat, lon, minLat, lon, REDIS_EARTH_RADIUS_M),
  );
  if (radiusM > maxRadiusM) {
    throw new InvalidRequestError(`box is too large: its corners are ${Math.round(radiusM)} m from its centre, at most ${maxRadiusM} m`);
  }
  return {
    kind: "box",
    lat,
    lon,
    radiusM,
    bounds: { minLat, minLon, maxLat, maxLon },
    contains: (la, lo) => la >= minLat && la <= maxLat && lo >= minLon && lo <= maxLon,
  };
}

/** Most subscriptions one area watch takes before it uses coarser cells: 64 fine ones, 256 of ~156 km. */
const MAX_CELLS: [precision: number, max: number][] = [
  [6, 64],
  [5, 64],
  [3, 256],
];

/**
 * Live subjects that carry every update inside a region: the finest cells (6, 5, then 3 geohash
 * characters) of which at most 64 (256 of the coarsest) cover it, both sides of the antimeridian.
 * The watch filters exactly anyway. Never `live.>` (every event on earth): an area near a pole spans
 * every longitude, and one that needs more cells than that is refused with the reason.
 */
export function regionSubjects(region: Region): string[] {
  const boxes = region.wrap ? [region.bounds, region.wrap] : [region.bounds];
  for (const [precision, max] of MAX_CELLS) {
    const cells = new Set<string>();
    let fits = true;
    for (const box of boxes) {
      const part = geohashCover(box, precision, max);
      if (!part) {
        fits = false;
        break;
      }
      for (const c of part) cells.add(c);
    }
    if (fits && cells.size <= max) return [...cells].map(liveCellWildcard);
  }
  throw new InvalidRequestError(
    `area around lat ${region.lat}, lon ${region.lon} spans more than ${MAX_CELLS.at(-1)![1]} cells of ~156 km (it reaches too near a pole, where it covers every longitude): a watch there would take every event on earth; make it smaller or keep it away from the pole`,
  );
}
