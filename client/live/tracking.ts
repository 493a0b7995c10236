/**
 * A vehicle followed as a small store, for any UI: the latest state, its trail, whether it is
 * online, the connection and the last error, with subscribe/getState (the shape React's
 * useSyncExternalStore, Svelte stores or a plain callback take). What a `useVehicleTracking(vehicleId,
 * token)` hook gives, with no framework.
 */
import type { LiveError } from "./errors";
import type { LiveClient, LiveWatch } from "./live-client";
import type { ConnectionState, LiveEvent, LiveVehicle } from "./types";

export interface TrailPoint {
  lat: number;
  lon: number;
  recordedAtMs: number;
}

/** What a tracked vehicle looks like now; a new object after every change (compare by identity). */
export interface TrackedVehicle {
  /** Its latest state; undefined until the snapshot named it (an order no vehicle serves yet). */
  vehicle: LiveVehicle | undefined;
  /** Its newest positions, oldest first, the current one last. */
  trail: readonly TrailPoint[];
  /** False when the tracker said OFFLINE (or before any state). */
  online: boolean;
  connection: ConnectionState;
  /** Why it is reconnecting, or the error that ended it; undefined while all is well. */
  error: LiveError | undefined;
}

export interface Tracking {
  getState(): TrackedVehicle;
  /** Calls `listener` after every change; returns the function that unsubscribes it. */
  subscribe(listener: (state: TrackedVehicle) => void): () => void;
  /** Stops watching (the connection becomes `closed`). */
  close(): void;
  /** The watch underneath (stats, tracker in use). */
  readonly watch: LiveWatch;
}

export interface TrackingOptions {
  signal?: AbortSignal;
  /** Positions kept in the trail (default 100). */
  trailLength?: number;
  minIntervalMs?: number;
}

function createTracking(
  open: (handlers: {
    signal: AbortSignal;
    onEvent(e: LiveEvent): void;
    onConnection(s: ConnectionState, e?: LiveError): void;
  }) => LiveWatch,
  { signal, trailLength = 100 }: TrackingOptions,
): Tracking {
  const abort = new AbortController();
  if (signal) signal.addEventListener("abort", () => abort.abort(), { once: true });
  const listeners = new Set<(s: TrackedVehicle) => void>();
  let state: TrackedVehicle = { vehicle: undefined, trail: [], online: false, connection: "connecting", error: undefined };
  const set = (next: Partial<TrackedVehicle>) => {
    state = { ...state, ...next };
    for (const l of listeners) l(state);
  };
  const watch = open({
    signal: abort.signal,
    onConnection(connection, error) {
      // Live again: a passing error is over. Closed: keep the error that ended it.
      set({ connection, error: connection === "live" ? undefined : (error ?? state.error) });
    },
    onEvent(e) {
      if (e.kind === "snapshotEnd") return;
      if (e.kind === "exit") {
        // An order watch's vehicle no longer serves it (and no other does yet), or the token lost it.
        if (state.vehicle?.id === e.vehicleId) set({ vehicle: undefined, trail: [], online: false });
        return;
      }
      const v = e.vehicle;
      // Another vehicle took the order over: its trail starts anew.
      let trail = state.vehicle && state.vehicle.id !== v.id ? [] : state.trail;
      const last = trail.at(-1);
      if (!last || last.lat !== v.lat || last.lon !== v.lon) {
        trail = [...trail, { lat: v.lat, lon: v.lon, recordedAtMs: v.recordedAtMs }];
        if (trail.length > trailLength) trail = trail.slice(trail.length - trailLength);
      }
      set({ vehicle: v, trail, online: v.online });
    },
  });
  return {
    getState: () => state,
    subscribe(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    close: () => abort.abort(),
    watch,
  };
}

/** Follows one vehicle: `trackVehicle(client, "truck-9").subscribe((s) => draw(s.vehicle, s.trail))`. */
export function trackVehicle(client: LiveClient, vehicleId: string, options: TrackingOptions = {}): Tracking {
  return createTracking((h) => client.watchVehicle(vehicleId, { ...h, minIntervalMs: options.minIntervalMs }), options);
}

/** Follows the vehicle serving an order (`fleet/order`), whichever it is: a customer's view. */
export function trackOrder(client: LiveClient, orderId: string, options: TrackingOptions = {}): Tracking {
  return createTracking((h) => client.watchOrder(orderId, { ...h, minIntervalMs: options.minIntervalMs }), options);
}
