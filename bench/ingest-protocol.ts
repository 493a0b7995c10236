/** Messages between `bench ingest` and its load generator children (JSON over IPC). */
import type { TokenKeys } from "../lib/auth";
import type { HistogramJSON } from "./histogram";

export interface WorkerCounters {
  /** Points written. */
  sent: number;
  /** Points covered by a durable_seq in an ack. */
  acked: number;
  /** Points named in an ack's rejected list. */
  rejected: number;
  /** Streams that ended with an error or a non-OK grpc-status. */
  streamErrors: number;
  /** Streams that got their first ack and are still open. */
  open: number;
}

export type WorkerCommand =
  | { type: "init"; url: string; keys: TokenKeys; connections: number; prefix: string; first: number; count: number }
  | { type: "open"; batch: number; timeoutMs: number }
  | { type: "steady"; rate: number; warmupMs: number; durationMs: number }
  | { type: "blast"; window: number; warmupMs: number; durationMs: number }
  | { type: "settle"; timeoutMs: number }
  | { type: "close"; timeoutMs: number };

/** Turns of a 1 ms timer that came more than 5, 10, 20 ms after the one before, and the longest gap (ms). */
export interface TimerGaps {
  over5: number;
  over10: number;
  over20: number;
  maxMs: number;
}

export type WorkerEvent =
  | { type: "hello" }
  | { type: "ready" }
  | { type: "progress"; counters: WorkerCounters; at: number }
  | { type: "opened"; open: number; failed: number; ms: number; lastError: string }
  | { type: "blasted"; acked: number; seconds: number; counters: WorkerCounters; rejectReasons: [number, number][]; lastError: string }
  | {
      type: "steadied";
      acked: number;
      sent: number;
      seconds: number;
      /** Points sent in the measured window and not acked 200 ms after it (counted in the histogram with their age). */
      unacked: number;
      /**
       * The worker's own event loop in the measured window: turns of its 1 ms send timer that came
       * more than 5, 10, 20 ms after the one before, and the longest gap (ms). Acks it read late
       * count in its latency too.
       */
      gaps: TimerGaps;
      histogram: HistogramJSON;
      counters: WorkerCounters;
      rejectReasons: [number, number][];
      lastError: string;
    }
  | { type: "settled"; behind: number; counters: WorkerCounters }
  | { type: "closed"; counters: WorkerCounters }
  | { type: "failed"; message: string };
