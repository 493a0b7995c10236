/**
 * The rollup's sums of a batch's new points, per vehicle and minute (points, distance, speeds), which
 * the writer adds to `positions_rollup` (write-positions.ts, in the transaction of the COPY).
 */
import { distanceM, EARTH_MEAN_RADIUS_M } from "../lib/geo";

/** A point reduced to what the rollup needs. */
export interface RollupPoint {
  vehicleId: string;
  us: number;
  lat: number;
  lon: number;
  speed: number;
}

/**
 * Rollup rows of new points (per vehicle and minute) and each vehicle's first point, whose leg from
 * the stored predecessor SQL adds. Takes one array per vehicle, in time order (PreparedRows.byVehicle).
 */
export function rollupOf(byVehicle: readonly (readonly RollupPoint[])[]) {
  const rows = {
    vehicle: [] as string[],
    minuteUs: [] as number[],
    points: [] as number[],
    distance: [] as number[],
    maxSpeed: [] as number[],
    sumSpeed: [] as number[],
  };
  const firsts = { vehicle: [] as string[], us: [] as number[], lat: [] as number[], lon: [] as number[] };
  for (const list of byVehicle) {
    if (list.length === 0) continue;
    const f = list[0]!;
    const vehicle = f.vehicleId;
    firsts.vehicle.push(vehicle);
    firsts.us.push(f.us);
    firsts.lat.push(f.lat);
    firsts.lon.push(f.lon);
    let minute = -1;
    for (let i = 0; i < list.length; i++) {
      const p = list[i]!;
      const m = Math.floor(p.us / 60_000_000) * 60_000_000;
      if (m !== minute) {
        minute = m;
        rows.vehicle.push(vehicle);
        rows.minuteUs.push(m);
        rows.points.push(0);
        rows.distance.push(0);
        rows.maxSpeed.push(p.speed);
        rows.sumSpeed.push(0);
      }
      const k = rows.points.length - 1;
      rows.points[k]!++;
      rows.sumSpeed[k]! += p.speed;
      if (p.speed > rows.maxSpeed[k]!) rows.maxSpeed[k] = p.speed;
      if (i > 0) rows.distance[k]! += distanceM(list[i - 1]!.lat, list[i - 1]!.lon, p.lat, p.lon, EARTH_MEAN_RADIUS_M);
    }
  }
  return { rows, firsts };
}
