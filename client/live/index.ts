/**
 * The live client of the fleet platform, for browsers (Connect-Web) and Bun or Node: watches that
 * survive a tracker's death without a duplicate or a step back, the tracker's queries, history's
 * tracks and replays, typed errors, and a framework-free store that follows one vehicle or order.
 * See README.md beside this file.
 */
export { VehicleStatus } from "../../gen/fleet/v1/position_pb";
export { LiveError, type LiveErrorCode } from "./errors";
export {
  createLiveClient,
  type AreaWatchOptions,
  type CallOpts,
  type LiveClient,
  type LiveClientOptions,
  type LiveWatch,
  type NearbyOptions,
  type ReplayOptions,
  type TrackOptions,
  type WatchHandlers,
  type WatchOptions,
  type WatchStats,
} from "./live-client";
export { trackOrder, trackVehicle, type TrackedVehicle, type Tracking, type TrackingOptions, type TrailPoint } from "./tracking";
export type { ConnectionState, LiveArea, LiveEvent, LiveVehicle, TrackPoint } from "./types";
