/**
 * Distances on the Earth, for history's rollup and the tracker's areas. One haversine, on the
 * sphere each caller must agree with: history's legs add to those of PostgreSQL's fleet_distance_m
 * (lib/storage/positions-db.ts), the tracker's circles must hold what Redis's GEOSEARCH finds.
 */

/** Earth's mean radius, as PostgreSQL's fleet_distance_m takes it: history's distances. */
export const EARTH_MEAN_RADIUS_M = 6371008.8;

/** The radius Redis GEO takes (GEODIST, GEOSEARCH): the tracker's distances, so that they agree with its searches. */
export const REDIS_EARTH_RADIUS_M = 6372797.560856;

const rad = (deg: number) => (deg * Math.PI) / 180;

/**
 * Great-circle distance in metres between two points in degrees, on a sphere of `radiusM` (the
 * haversine, computed as Redis computes it).
 */
export function distanceM(lat1: number, lon1: number, lat2: number, lon2: number, radiusM: number): number {
  const u = Math.sin((rad(lat2) - rad(lat1)) / 2);
  const v = Math.sin((rad(lon2) - rad(lon1)) / 2);
  return 2 * radiusM * Math.asin(Math.sqrt(u * u + Math.cos(rad(lat1)) * Math.cos(rad(lat2)) * v * v));
}
