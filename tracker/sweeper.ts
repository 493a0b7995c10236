/**
 * Staleness: every `intervalMs`, vehicles not heard from for `staleAfterMs` leave the GEO set and
 * are counted offline (sweep.lua), and their watchers get OFFLINE. With several trackers only the
 * leader's timer sweeps (a Redis lease, lib/leader.ts): the others would walk every bucket again for
 * nothing. Two sweeps at once stay safe (a leader stalled past its lease): the script is atomic per
 * chunk of buckets, so each vehicle goes offline once.
 */
import type { Logger } from "../lib/log";
import { Counter, type Registry } from "../lib/metrics";
import type { LivePublisher } from "./live";
import { LiveKind } from "./state-codec";
import type { Store } from "./store";

export interface SweeperOptions {
  store: Store;
  live: LivePublisher;
  staleAfterMs: number;
  intervalMs: number;
  registry: Registry;
  log: Logger;
  /** The timer sweeps only while this says so (default: always). */
  isLeader?: () => boolean;
}

export interface Sweeper {
  /** Runs one sweep now (also what the timer does); resolves with the vehicles taken offline. */
  sweep(): Promise<number>;
  stop(): Promise<void>;
}

export function startSweeper({ store, live, staleAfterMs, intervalMs, registry, log, isLeader = () => true }: SweeperOptions): Sweeper {
  const offline = new Counter({
    name: "tracker_vehicles_gone_offline_total",
    help: "vehicles the staleness sweep took offline",
    registers: [registry],
  });
  const sweeps = new Counter({
    name: "tracker_sweeps_total",
    help: "staleness sweeps this instance ran (among several trackers only the leader's timer sweeps)",
    registers: [registry],
  });
  let running: Promise<number> | undefined;
  const sweep = () =>
    (running ??= (async () => {
      sweeps.inc();
      try {
        const gone = await store.sweep(Date.now() - staleAfterMs);
        for (const g of gone) live.publish(LiveKind.Offline, g.vehicleId, g.record);
        offline.inc(gone.length);
        if (gone.length > 0) log.info("vehicles went offline", { count: gone.length });
        return gone.length;
      } catch (err) {
        log.warn("staleness sweep failed: next one retries", { err });
        return 0;
      } finally {
        running = undefined;
      }
    })());
  const timer = setInterval(() => {
    if (isLeader()) sweep();
  }, intervalMs);
  return {
    sweep,
    async stop() {
      clearInterval(timer);
      await running;
    },
  };
}
