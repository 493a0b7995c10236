/**
 * A vehicle's track as the dashboard draws it: the path and its stops, from GetTrack's points.
 * No DOM: tested on its own.
 */
import { distanceM } from "./map-view";

export interface TrackPoint {
  lat: number;
  lon: number;
  /** recorded_at, ms since the epoch. */
  atMs: number;
}

export interface Stop {
  lat: number;
  lon: number;
  fromMs: number;
  toMs: number;
}

export interface StopOptions {
  /** Points within this distance of a stop's first point belong to it (GPS wanders while parked). */
  radiusM?: number;
  /** A pause shorter than this is not a stop (a traffic light). */
  minDurationMs?: number;
}

/**
 * Stops along a track in time order: runs of points that stay within `radiusM` of the run's first
 * point for at least `minDurationMs`. GetTrack keeps the first and last point of a stop when it
 * simplifies, so a stop survives the point budget.
 */
export function findStops(points: readonly TrackPoint[], { radiusM = 30, minDurationMs = 120_000 }: StopOptions = {}): Stop[] {
  const stops: Stop[] = [];
  let i = 0;
  while (i < points.length) {
    const first = points[i]!;
    let j = i + 1;
    while (j < points.length && distanceM(first.lat, first.lon, points[j]!.lat, points[j]!.lon) <= radiusM) j++;
    const last = points[j - 1]!;
    if (last.atMs - first.atMs >= minDurationMs) {
      stops.push({ lat: first.lat, lon: first.lon, fromMs: first.atMs, toMs: last.atMs });
      i = j;
    } else {
      i++;
    }
  }
  return stops;
}

/** The [from, to) of a named range ending now, or of one UTC day ("2026-12-06"), for GetTrack and Replay. */
export function trackRange(choice: string, nowMs = Date.now()): { fromMs: number; toMs: number } {
  const minutes = /^(\d+)m$/.exec(choice);
  if (minutes) return { fromMs: nowMs - Number(minutes[1]) * 60_000, toMs: nowMs };
  const hours = /^(\d+)h$/.exec(choice);
  if (hours) return { fromMs: nowMs - Number(hours[1]) * 3_600_000, toMs: nowMs };
  const day = /^\d{4}-\d{2}-\d{2}$/.exec(choice);
  if (day) {
    const fromMs = Date.parse(`${choice}T00:00:00Z`);
    if (Number.isFinite(fromMs)) return { fromMs, toMs: fromMs + 86_400_000 };
  }
  throw new Error(`range "${choice}": expected 15m, 2h or a day as 2026-12-06`);
}
