/**
 * What the live client hands an app: plain objects with numbers and milliseconds, converted once
 * from the protobuf messages (which stay reachable through the generated types for whoever wants
 * them).
 */
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { Timestamp } from "@bufbuild/protobuf/wkt";
import type { AreaSchema } from "../../gen/fleet/v1/geo_pb";
import type { Position, VehicleStatus } from "../../gen/fleet/v1/position_pb";
import type { VehicleState } from "../../gen/fleet/v1/tracker_pb";

/** The latest known state of one vehicle. */
export interface LiveVehicle {
  id: string;
  fleetId: string;
  /** The order it serves now ("" when none), within its fleet. */
  orderId: string;
  status: VehicleStatus;
  /** The vehicle's sequence number of this position: it only grows. */
  seq: number;
  lat: number;
  lon: number;
  /** m/s */
  speed: number;
  /** Degrees from north. */
  heading: number;
  /** Metres. */
  accuracy: number;
  /** When the vehicle recorded this position (ms since the epoch; 0 when unknown). */
  recordedAtMs: number;
  /** When the tracker last heard from the vehicle (ms since the epoch; 0 when unknown). */
  lastSeenMs: number;
  /** False once the vehicle was not heard from for the tracker's staleness TTL. */
  online: boolean;
}

/** One point of a track or a replay. */
export interface TrackPoint {
  vehicleId: string;
  seq: number;
  lat: number;
  lon: number;
  speed: number;
  heading: number;
  status: VehicleStatus;
  orderId: string;
  recordedAtMs: number;
}

/** A circle (radius in metres) or a box, in degrees. */
export type LiveArea =
  | { circle: { lat: number; lon: number; radiusM: number } }
  | { box: { minLat: number; minLon: number; maxLat: number; maxLon: number } };

/**
 * What a watch hands on, in order. `snapshot`: a vehicle's state when the watch (re)opened;
 * `snapshotEnd`: the view is complete (`resumed` after a reconnect), live events follow;
 * `enter` / `move` / `exit` / `offline` as the tracker says them. After a reconnect only what changed
 * while away is handed on, and a vehicle that left the view meanwhile gets an `exit`.
 */
export type LiveEvent =
  | {
      kind: "snapshot" | "enter" | "move" | "offline";
      vehicle: LiveVehicle /** updates the tracker dropped for this newer one */;
      coalesced: number;
    }
  | { kind: "exit"; vehicleId: string /** absent when the token no longer grants the vehicle */; vehicle: LiveVehicle | undefined }
  | { kind: "snapshotEnd" /** true after a reconnect */; resumed: boolean };

/** A watch's connection: `live` once its snapshot is complete; `closed` at the end, for good. */
export type ConnectionState = "connecting" | "live" | "reconnecting" | "closed";

export const timestampMs = (t: Timestamp | undefined): number => (t ? Number(t.seconds) * 1000 + Math.floor(t.nanos / 1e6) : 0);

/** A VehicleState message as a LiveVehicle. */
export function vehicleOf(state: VehicleState): LiveVehicle {
  const p = state.position;
  return {
    id: p?.vehicleId ?? "",
    fleetId: p?.fleetId ?? "",
    orderId: state.orderId,
    status: state.status,
    seq: p?.seq ?? 0,
    lat: p?.lat ?? 0,
    lon: p?.lon ?? 0,
    speed: p?.speed ?? 0,
    heading: p?.heading ?? 0,
    accuracy: p?.accuracy ?? 0,
    recordedAtMs: timestampMs(p?.recordedAt),
    lastSeenMs: timestampMs(state.lastSeen),
    online: state.online,
  };
}

/** A Position message as a TrackPoint. */
export function pointOf(p: Position): TrackPoint {
  return {
    vehicleId: p.vehicleId,
    seq: p.seq,
    lat: p.lat,
    lon: p.lon,
    speed: p.speed,
    heading: p.heading,
    status: p.status,
    orderId: p.orderId,
    recordedAtMs: timestampMs(p.recordedAt),
  };
}

/** A LiveArea as the Area message's init shape. */
export function areaMessage(area: LiveArea): MessageInitShape<typeof AreaSchema> {
  if ("circle" in area) return { shape: { case: "circle", value: { ...area.circle } } };
  return { shape: { case: "box", value: { ...area.box } } };
}
