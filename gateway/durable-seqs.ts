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
import { internedText, readPositionBatch, type PositionFields } from "../lib/wire";

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
  #durable = 0;
  /**
   * Highest seq such that every point up to it is durable: accepted here and PubAck'd, or read in
   * the stream without a hole below it. Setting it takes in the held runs it reaches.
   */
  get durable(): number {
    return this.#durable;
  }
  set durable(seq: number) {
    this.#durable = seq;
    if (this.held !== undefined) this.absorb();
  }
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
  /**
   * Seqs read in the stream above `durable + 1` while a seq between is not there (yet), as ascending
   * [first, last, since] triples (since: when the hole below that run was first seen, ms): a gateway that died after its batch with seq 9 failed may have had seq 10's
   * batch stored (batches of a partition are pipelined). Durable, so a re-send is a DUPLICATE, but
   * not counted in `durable` until the hole is filled (the vehicle re-sends 9, here or elsewhere),
   * the vehicle's own next point goes through this gateway, or the hole is older than the window.
   * Until a Resume the hole's seqs are skipped ones, as any gap read in the stream (SEQ_SKIPPED);
   * Resume answers the seq below the hole and opens it (see `DurableSeqs.resume`).
   * Undefined while there is none (almost always).
   */
  held: number[] | undefined;
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
    if (this.accepted > 0 && seq > this.accepted + 1) this.skip(this.accepted + 1, seq - 1);
    this.accepted = seq;
    this.lastSeq = seq;
    this.lastTime = timeMs;
  }

  /** Notes [first, last] as skipped, but for the seqs held (those are in the stream). */
  private skip(first: number, last: number): void {
    const h = this.held;
    let from = first;
    if (h) {
      for (let i = 0; i < h.length && from <= last; i += 3) {
        if (h[i + 1]! < from) continue;
        if (h[i]! > last) break;
        if (h[i]! > from) this.pushGap(from, h[i]! - 1);
        from = h[i + 1]! + 1;
      }
    }
    if (from <= last) this.pushGap(from, last);
  }

  private pushGap(first: number, last: number): void {
    const gaps = (this.gaps ??= []);
    gaps.push(first, last);
    if (gaps.length > 2 * MAX_GAPS) gaps.splice(0, 2);
  }

  /** True when `seq` was read in the stream above a hole (durable, though not yet counted in `durable`). */
  holds(seq: number): boolean {
    const h = this.held;
    if (!h) return false;
    for (let i = 0; i < h.length; i += 3) if (seq >= h[i]! && seq <= h[i + 1]!) return true;
    return false;
  }

  /** Records `seq` (above `durable + 1`) as read in the stream above a hole. */
  hold(seq: number, now: number): void {
    const h = (this.held ??= []);
    let i = 0;
    while (i < h.length && h[i + 1]! < seq - 1) i += 3;
    if (i === h.length || h[i]! > seq + 1) {
      // A new run: the hole below it is the one that was below the next run, or new.
      h.splice(i, 0, seq, seq, i < h.length ? h[i + 2]! : now);
    } else {
      if (seq < h[i]!) h[i] = seq;
      if (seq > h[i + 1]!) h[i + 1] = seq;
      if (i + 3 < h.length && h[i + 3]! === h[i + 1]! + 1) {
        // It joined the next run: the hole between is gone.
        h[i + 1] = h[i + 4]!;
        h.splice(i + 3, 3);
      }
    }
    // Past the bound the lowest hole is taken for a skip, as after the window.
    while (h.length > 3 * MAX_GAPS) this.closeHole();
  }

  /** Holes older than `windowMs` are skips: a gateway that could still fill one would have by now. */
  expire(now: number, windowMs: number): void {
    while (this.held !== undefined && now - this.held[2]! > windowMs) this.closeHole();
  }

  /** Counts the lowest held run in `durable` (the seqs below it were noted as skipped when read). */
  private closeHole(): void {
    this.durable = this.held![1]!;
  }

  /** Takes in the held runs that `durable` now reaches. */
  private absorb(): void {
    const h = this.held!;
    let n = 0;
    while (n < h.length && h[n]! <= this.#durable + 1) {
      if (h[n + 1]! > this.#durable) this.#durable = h[n + 1]!;
      n += 3;
    }
    if (n === 0) return;
    h.splice(0, n);
    if (h.length === 0) this.held = undefined;
    if (this.accepted < this.#durable) this.accepted = this.#durable;
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
  /** Highest seq of a vehicle such that every seq up to it is known durable, 0 when unknown. */
  durableSeq(vehicleId: string): number;
  /**
   * What Resume answers: the durable seq, after holes older than the window (`forgetAfterMs`) are
   * taken for skips. While a hole stays, the vehicle is told the seq below it, and the seqs of the
   * hole are taken again when it sends them (a seq read in the stream above it is a DUPLICATE).
   */
  resume(vehicleId: string, now?: number): number;
  /** Records that `seq` of a vehicle, recorded at `timeMs`, is durable (read in the stream, from another gateway). */
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
    resume(vehicleId, now = Date.now()) {
      const s = states.get(vehicleId);
      if (!s) return 0;
      if (s.held !== undefined) {
        s.expire(now, forgetAfterMs);
        // The vehicle is told to send from durable + 1: the seqs of the holes must be taken now.
        if (s.held !== undefined && s.inFlight === 0) s.accepted = s.durable;
      }
      return s.durable;
    },
    learn(vehicleId, seq, now = Date.now(), timeMs = 0) {
      const s = state(vehicleId);
      s.seen = now;
      if (s.held !== undefined) s.expire(now, forgetAfterMs);
      // Below the first seq read of a vehicle nothing is known: not a hole.
      const first = s.durable === 0 && s.accepted === 0 && s.held === undefined;
      if (seq > s.accepted) s.accept(seq, timeMs);
      else s.filled(seq);
      if (seq <= s.durable) return;
      if (first || seq === s.durable + 1) s.durable = seq;
      else s.hold(seq, now);
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

let learning: DurableSeqs;
let learningNow = 0;
let learnedInBatch = 0;
const learnPosition = (f: PositionFields) => {
  const timeMs = f.hasRecorded ? f.recordedSeconds * 1000 + Math.floor(f.recordedNanos / 1e6) : 0;
  learning.learn(internedText(f.bytes, f.idStart, f.idEnd, f.ascii), f.seq, learningNow, timeMs);
  learnedInBatch++;
};

/**
 * Learns every point of one positions message; returns how many. Read by hand (lib/wire's position
 * reader, ids interned): every gateway reads every point of the stream, so with two gateways the
 * follower's decode is paid twice per point; protobuf-es's `fromBinary` built an object per point
 * and was the largest part of the follower's cost (bench codecs: batch decode 3–4× the hand
 * reader). What the reader does not cover is protobuf-es's to decode, so errors are its own.
 */
export function learnBatch(seqs: DurableSeqs, data: Uint8Array): number {
  learning = seqs;
  learningNow = Date.now();
  learnedInBatch = 0;
  let read = false;
  try {
    read = readPositionBatch(data, learnPosition);
  } catch (err) {
    // Ids that are not UTF-8 (the strict decoder's TypeError): protobuf-es says what it makes of them.
    if (!(err instanceof TypeError)) throw err;
  }
  if (read) return learnedInBatch;
  // The reader gave up part way (points it learned stay learned: learning a point twice is a no-op).
  let count = 0;
  for (const p of fromBinary(PositionBatchSchema, data).positions) {
    const t = p.recordedAt;
    seqs.learn(p.vehicleId, p.seq, learningNow, t ? Number(t.seconds) * 1000 + Math.floor(t.nanos / 1e6) : 0);
    count++;
  }
  return count;
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
          learned += learnBatch(seqs, m.data);
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
