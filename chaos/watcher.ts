/**
 * A watch that survives its tracker, on the live client (client/live): WatchVehicles on one of
 * several tracker addresses (gRPC); when the stream breaks (the tracker died) the client opens the
 * same watch on the next address, whose snapshot brings each vehicle to its current state before
 * live events go on, and hands on no duplicate and no step back. Per vehicle it keeps the newest
 * seq seen; `regressions` counts the states older than one already seen that the client dropped
 * (the resumed watch would have gone backwards there).
 */
import { createGrpcTransport } from "@connectrpc/connect-node";
import { createLiveClient, type LiveWatch } from "../client/live";

export interface ReconnectingWatcher {
  /** Newest seq seen per vehicle. */
  readonly seen: ReadonlyMap<string, number>;
  /** Times the watch was opened again after a break. */
  readonly reconnects: number;
  /** Snapshots completed (SNAPSHOT_END received). */
  readonly snapshots: number;
  /** Events whose seq was below one already seen for that vehicle (dropped by the client). */
  readonly regressions: number;
  /** Index of the tracker address in use. */
  readonly tracker: number;
  close(): void;
}

export interface WatcherOptions {
  urls: readonly string[];
  token: string;
  vehicleIds: readonly string[];
  /** Ceiling of the first pause before opening the watch again (default 100 ms; jittered, doubling while it fails). */
  retryMs?: number;
}

export function startWatcher({ urls, token, vehicleIds, retryMs = 100 }: WatcherOptions): ReconnectingWatcher {
  const client = createLiveClient({
    baseUrl: urls,
    transport: urls.map((baseUrl) => createGrpcTransport({ baseUrl })),
    token,
    backoff: { initialMs: retryMs, maxMs: 20 * retryMs },
  });
  const seen = new Map<string, number>();
  const watch: LiveWatch = client.watchVehicle(vehicleIds, {
    onState: (v) => seen.set(v.id, Math.max(seen.get(v.id) ?? 0, v.seq)),
  });
  return {
    seen,
    get reconnects() {
      return watch.stats.reconnects;
    },
    get snapshots() {
      return watch.stats.snapshots;
    },
    get regressions() {
      return watch.stats.regressions;
    },
    get tracker() {
      return watch.tracker;
    },
    close: () => watch.close(),
  };
}
