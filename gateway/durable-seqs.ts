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
import { HEADERS } from "../lib/nats";

/**
 * A point sent again while its first send is still in flight (a vehicle that reconnected before the
 * ack of its broken stream came): answered when the first send settles, as that one is answered.
 * `missing`: no point of that seq was in flight after all (the seq skipped by the vehicle earlier).
 */
export interface Echo {
  readonly seq: number;
  settle(outcome: Error | undefined | "missing"): void;
}

/** Skipped-seq ranges remembered per vehicle; past it the lowest are forgotten (answered DUPLICATE, as before). */
const MAX_GAPS = 16;

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
  /**
   * Seq and recorded time (whole ms) of the last point accepted: the next one may not be in the same
   * millisecond (the tracker keeps one fix per vehicle and millisecond, history one per instant).
   * Only compared while `lastSeq === accepted`.
   */
  lastSeq = 0;
  lastTime = 0;
  /**
   * Seqs below `accepted` that were never accepted (skipped by the vehicle, or refused), as
   * ascending [first, last] pairs: a late point there is not a duplicate, and not stored either.
   * Undefined while there is none (almost always).
   */
  gaps: number[] | undefined;
  /** Last time (ms) this state was used. */
  seen: number;

  constructor(
    readonly vehicleId: string,
    now: number,
  ) {
    this.seen = now;
  }

  /** Records `seq` (above `accepted`) as accepted, recorded at `timeMs`; the seqs it skips become a gap. */
  accept(seq: number, timeMs: number): void {
    const g = this.gaps;
    if (g) {
      // Gaps above `accepted` were noted before a failed batch moved `accepted` back: stale.
      while (g.length > 0 && g[g.length - 1]! > this.accepted) g.length -= 2;
      if (g.length === 0) this.gaps = undefined;
    }
    // From a vehicle never heard of (accepted 0) the seqs below are unknown, not skipped.
    if (this.accepted > 0 && seq > this.accepted + 1) {
      const gaps = (this.gaps ??= []);
      gaps.push(this.accepted + 1, seq - 1);
      if (gaps.length > 2 * MAX_GAPS) gaps.splice(0, 2);
    }
    this.accepted = seq;
    this.lastSeq = seq;
    this.lastTime = timeMs;
  }

  /** True when `seq` (at or below `accepted`) is known never to have been accepted. */
  skipped(seq: number): boolean {
    const g = this.gaps;
    if (!g) return false;
    for (let i = 0; i < g.length; i += 2) if (seq >= g[i]! && seq <= g[i + 1]!) return true;
    return false;
  }

  /** `seq` inside a gap was stored after all (by another gateway): it is no longer skipped. */
  filled(seq: number): void {
    const g = this.gaps;
    if (!g) return;
    for (let i = 0; i < g.length; i += 2) {
      const a = g[i]!;
      const b = g[i + 1]!;
      if (seq < a || seq > b) continue;
      if (a === b) g.splice(i, 2);
      else if (seq === a) g[i] = a + 1;
      else if (seq === b) g[i + 1] = b - 1;
      else g.splice(i + 1, 0, seq - 1, seq + 1);
      break;
    }
    if (g.length === 0) this.gaps = undefined;
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
  /** Records that `seq` of a vehicle, recorded at `timeMs`, is durable (learned from the stream). */
  learn(vehicleId: string, seq: number, now?: number, timeMs?: number): void;
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
    learn(vehicleId, seq, now = Date.now(), timeMs = 0) {
      const s = state(vehicleId);
      if (seq > s.accepted) s.accept(seq, timeMs);
      else s.filled(seq);
      if (seq > s.durable) s.durable = seq;
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
  /**
   * Resolves once every message in the stream when it is called has been read, so that what another
   * gateway made durable before a vehicle moved here is known (within `timeoutMs`: then resolves
   * false, and what is known is answered). One stream-info request serves every caller waiting
   * when it is sent.
   */
  caughtUp(timeoutMs: number): Promise<boolean>;
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
  /** Stream seq of the last message read. */
  let position = 0;
  const waiters: { target: number; resolve: (ok: boolean) => void }[] = [];
  const wakeWaiters = () => {
    for (let i = waiters.length - 1; i >= 0; i--) {
      if (position >= waiters[i]!.target) waiters.splice(i, 1)[0]!.resolve(true);
    }
  };
  // Callers that arrive while a stream-info request is out wait for the next one: the answer must
  // be read after they asked.
  let next: PromiseWithResolvers<number> | undefined;
  let asking = false;
  const ask = () => {
    if (asking || !next) return;
    const batch = next;
    next = undefined;
    asking = true;
    jsm.streams
      .info(stream)
      .then((i) => batch.resolve(i.state.last_seq), batch.reject)
      .finally(() => {
        asking = false;
        ask();
      });
  };
  const streamLastSeq = () => {
    next ??= Promise.withResolvers<number>();
    const p = next.promise;
    ask();
    return p;
  };
  const done = (async () => {
    for await (const m of messages) {
      position = m.seq;
      if (m.headers?.get(HEADERS.gateway) !== instanceId) {
        try {
          const now = Date.now();
          for (const p of fromBinary(PositionBatchSchema, m.data).positions) {
            const t = p.recordedAt;
            seqs.learn(p.vehicleId, p.seq, now, t ? Number(t.seconds) * 1000 + Math.floor(t.nanos / 1e6) : 0);
            learned++;
          }
        } catch (err) {
          log.warn("positions message is not a PositionBatch, skipped", { seq: m.seq, err });
        }
      }
      if (m.seq >= lastSeq || m.info.pending === 0) markReady();
      if (waiters.length > 0) wakeWaiters();
    }
  })().catch((err: unknown) => log.warn("following positions stopped", { err }));
  ready.then(() => log.info("durable seqs rebuilt", { points: learned, vehicles: seqs.size, windowMs }));
  return {
    ready,
    caughtUp(timeoutMs) {
      return new Promise<boolean>((resolve) => {
        const waiter = { target: Number.POSITIVE_INFINITY, resolve: (ok: boolean) => settle(ok) };
        const timer = setTimeout(() => settle(false), timeoutMs);
        const settle = (ok: boolean) => {
          clearTimeout(timer);
          const i = waiters.indexOf(waiter);
          if (i >= 0) waiters.splice(i, 1);
          resolve(ok);
        };
        streamLastSeq().then(
          (target) => {
            waiter.target = target;
            if (position >= target) settle(true);
            else waiters.push(waiter);
          },
          // NATS unreachable: what is known is all there is.
          () => settle(false),
        );
      });
    },
    async stop() {
      messages.stop();
      markReady();
      await done;
    },
  };
}
