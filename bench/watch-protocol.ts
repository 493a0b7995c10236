/** Messages between `bench watch` and its watcher children (JSON over IPC). */
import type { HistogramJSON } from "./histogram";

/** One watcher: some vehicles, or a circle (with, for the Redis way, the vehicles inside it). */
export type WatchSpec = { kind: "vehicles"; ids: string[] } | { kind: "area"; lat: number; lon: number; radiusM: number; ids: string[] };

export type WatchCommand =
  | {
      type: "init";
      /** "grpc": TrackerService watches; "redis": one connection per watcher, SUBSCRIBE to each vehicle's channel. */
      mode: "grpc" | "redis";
      url: string;
      token: string;
      /** Channel of a vehicle is `${channelPrefix}${id}` (redis mode). */
      channelPrefix: string;
      connections: number;
      watches: WatchSpec[];
    }
  | { type: "record" }
  | { type: "report" }
  | { type: "close" };

export type WatchEvent =
  | { type: "hello" }
  | { type: "ready"; open: number; failed: number; lastError: string }
  /** messages: gRPC messages received while recording (0 for Redis, one update each). */
  | { type: "report"; histogram: HistogramJSON; events: number; messages: number; errors: number; lastError: string }
  | { type: "closed" }
  | { type: "failed"; message: string };
