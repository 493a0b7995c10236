/**
 * A watch that survives its tracker: WatchVehicles on one of several tracker addresses; when the
 * stream breaks (the tracker died) it opens the same watch on the next address, whose snapshot
 * brings each vehicle to its current state before live events go on. Per vehicle it keeps the
 * newest seq seen and counts regressions (a state older than one already seen: the resumed watch
 * would have left a gap that went backwards).
 */
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { EventKind, TrackerService } from "../gen/fleet/v1/tracker_pb";

export interface ReconnectingWatcher {
  /** Newest seq seen per vehicle. */
  readonly seen: ReadonlyMap<string, number>;
  /** Times the watch was opened again after a break. */
  readonly reconnects: number;
  /** Snapshots completed (SNAPSHOT_END received). */
  readonly snapshots: number;
  /** Events whose seq was below one already seen for that vehicle. */
  readonly regressions: number;
  /** Index of the tracker address in use. */
  readonly tracker: number;
  close(): void;
}

export interface WatcherOptions {
  urls: readonly string[];
  token: string;
  vehicleIds: readonly string[];
  /** Pause before opening the watch again (default 100 ms). */
  retryMs?: number;
}

export function startWatcher({ urls, token, vehicleIds, retryMs = 100 }: WatcherOptions): ReconnectingWatcher {
  const clients = urls.map((baseUrl) => createClient(TrackerService, createGrpcTransport({ baseUrl })));
  const seen = new Map<string, number>();
  const state = { reconnects: 0, snapshots: 0, regressions: 0, tracker: 0 };
  const abort = new AbortController();
  (async () => {
    for (let opened = 0; !abort.signal.aborted; opened++) {
      if (opened > 0) {
        state.reconnects++;
        await Bun.sleep(retryMs);
      }
      try {
        const stream = clients[state.tracker]!.watchVehicles(
          { vehicleIds: [...vehicleIds] },
          { headers: { authorization: `Bearer ${token}` }, signal: abort.signal },
        );
        for await (const res of stream) {
          for (const e of res.events) {
            if (e.kind === EventKind.SNAPSHOT_END) {
              state.snapshots++;
              continue;
            }
            const p = e.vehicle?.position;
            if (!p) continue;
            const before = seen.get(p.vehicleId) ?? 0;
            if (p.seq < before) state.regressions++;
            else seen.set(p.vehicleId, p.seq);
          }
        }
      } catch {
        // broken: the next address
      }
      state.tracker = (state.tracker + 1) % clients.length;
    }
  })();
  return {
    seen,
    get reconnects() {
      return state.reconnects;
    },
    get snapshots() {
      return state.snapshots;
    },
    get regressions() {
      return state.regressions;
    },
    get tracker() {
      return state.tracker;
    },
    close: () => abort.abort(),
  };
}
