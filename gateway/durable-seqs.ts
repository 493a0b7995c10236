/**
 * Per-vehicle memory of how far its points are durable: the base of dedup (a seq at or below it is a
 * DUPLICATE) and of Resume. Bounded: vehicles not heard from for `forgetAfterMs` (the duplicate
 * window by default) are forgotten, oldest first past `maxVehicles`.
 *
 * `followPositions` rebuilds the memory at start by reading the stream back over the duplicate
 * window and then tails it, so that a gateway learns what other instances made durable (its own
 * messages are skipped by the Fleet-Gateway header, without decoding).
 */
import { fromBinary } from "@bufbuild/protobuf";
import { DeliverPolicy, type JetStreamClient, type JetStreamManager } from "@nats-io/jetstream";
import { PositionBatchSchema } from "../gen/fleet/v1/position_pb";
import type { Logger } from "../lib/log";
import { HEADERS } from "../lib/subjects";

/**
 * A point sent again while its first send is still in flight (a vehicle that reconnected before the
 * ack of its broken stream came): answered when the first send settles, as that one is answered.
 * `missing`: no point of that seq was in flight after all (the seq skipped by the vehicle earlier).
 */
export interface Echo {
  readonly seq: number;
  settle(outcome: Error | undefined | "missing"): void;
}

/** What the gateway knows of one vehicle. Mutable on purpose: touched once per point. */
export class VehicleState {
  /** Highest seq such that every point the gateway accepted up to it is durable. */
  durable = 0;
  /** Highest seq accepted (durable or in flight); a new point must be above it. */
  accepted = 0;
  /** Points accepted and not yet durable or failed. */
  inFlight = 0;
  /** An earlier batch failed: later points must not make the vehicle look durable past the gap. */
  broken = false;
  /** Re-sent points waiting for their first send (rare: set only then). */
  echoes: Echo[] | undefined;
  /** Last time (ms) this state was used. */
  seen: number;

  constructor(
    readonly vehicleId: string,
    now: number,
  ) {
    this.seen = now;
  }
}

export interface DurableSeqsOptions {
  /** Vehicles idle this long are forgotten (ms); the duplicate window is the natural choice. */
  forgetAfterMs: number;
  /** Hard cap on remembered vehicles. */
  maxVehicles?: number;
}

export interface DurableSeqs {
  /** The state of a vehicle, created when unknown. */
  state(vehicleId: string): VehicleState;
  /** Highest durable seq known for a vehicle, 0 when unknown. */
  durableSeq(vehicleId: string): number;
  /** Records that `seq` of a vehicle is durable (learned from the stream). */
  learn(vehicleId: string, seq: number, now?: number): void;
  /** Forgets idle vehicles with nothing in flight. */
  prune(now?: number): void;
  readonly size: number;
}

/** Creates the per-vehicle durable-seq memory. */
export function createDurableSeqs({ forgetAfterMs, maxVehicles = 2_000_000 }: DurableSeqsOptions): DurableSeqs {
  const states = new Map<string, VehicleState>();
  const state = (vehicleId: string) => {
    let s = states.get(vehicleId);
    if (!s) {
      s = new VehicleState(vehicleId, Date.now());
      states.set(vehicleId, s);
    }
    return s;
  };
  return {
    state,
    durableSeq: (vehicleId) => states.get(vehicleId)?.durable ?? 0,
    learn(vehicleId, seq, now = Date.now()) {
      const s = state(vehicleId);
      if (seq > s.durable) s.durable = seq;
      if (seq > s.accepted) s.accepted = seq;
      s.seen = now;
    },
    prune(now = Date.now()) {
      for (const [id, s] of states) {
        if (s.inFlight === 0 && now - s.seen > forgetAfterMs) states.delete(id);
      }
      if (states.size > maxVehicles) {
        // Map iteration is insertion order: roughly oldest first.
        let excess = states.size - maxVehicles;
        for (const [id, s] of states) {
          if (excess <= 0) break;
          if (s.inFlight === 0) {
            states.delete(id);
            excess--;
          }
        }
      }
    },
    get size() {
      return states.size;
    },
  };
}

export interface FollowOptions {
  js: JetStreamClient;
  jsm: JetStreamManager;
  stream: string;
  /** This gateway's id: its own messages are skipped. */
  instanceId: string;
  /** How far back to read at start, ms. */
  windowMs: number;
  seqs: DurableSeqs;
  log: Logger;
}

export interface Follower {
  /** Resolves once the backlog of the window was read (or at once when there is none). */
  readonly ready: Promise<void>;
  stop(): Promise<void>;
}

/**
 * Reads the stream from now - window with an ordered consumer and keeps tailing it: every point
 * found is durable, so `learn` it. Survives NATS restarts (ordered consumers recreate themselves).
 */
export async function followPositions({ js, jsm, stream, instanceId, windowMs, seqs, log }: FollowOptions): Promise<Follower> {
  const start = new Date(Date.now() - windowMs);
  const info = await jsm.streams.info(stream);
  const lastSeq = info.state.last_seq;
  const backlog = info.state.messages > 0 && new Date(info.state.last_ts).getTime() >= start.getTime();
  const consumer = await js.consumers.get(stream, {
    deliver_policy: DeliverPolicy.StartTime,
    opt_start_time: start.toISOString(),
  });
  const messages = await consumer.consume({ max_messages: 256 });
  let markReady!: () => void;
  const ready = new Promise<void>((resolve) => (markReady = resolve));
  if (!backlog) markReady();
  let learned = 0;
  const done = (async () => {
    for await (const m of messages) {
      if (m.headers?.get(HEADERS.gateway) !== instanceId) {
        try {
          const now = Date.now();
          for (const p of fromBinary(PositionBatchSchema, m.data).positions) {
            seqs.learn(p.vehicleId, p.seq, now);
            learned++;
          }
        } catch (err) {
          log.warn("positions message is not a PositionBatch, skipped", { seq: m.seq, err });
        }
      }
      if (m.seq >= lastSeq || m.info.pending === 0) markReady();
    }
  })().catch((err: unknown) => log.warn("following positions stopped", { err }));
  ready.then(() => log.info("durable seqs rebuilt", { points: learned, vehicles: seqs.size, windowMs }));
  return {
    ready,
    async stop() {
      messages.stop();
      markReady();
      await done;
    },
  };
}
