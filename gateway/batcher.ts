/**
 * Groups accepted points per partition and publishes each group as one PositionBatch on
 * `fleet.pos.<partition>`: many points per JetStream message is what lets the gateway go past
 * one-message-per-point JetStream (~58k/s on the reference box).
 *
 * Per partition, batches are published pipelined but completed strictly in order, so a vehicle's
 * durable seq only moves contiguously: when a batch fails, its vehicles are marked broken and
 * later batches of theirs (even if stored) do not advance them until nothing of theirs is in flight.
 *
 * One linger timer serves every partition: the batches open when it fires are published together,
 * in one socket write to NATS, and their PubAcks come back together, so the acks of several
 * batches leave in the same turn of the event loop and share the HTTP/2 connections' writes. With
 * a timer per partition each batch cost its own NATS write and its own round of ack writes: at a
 * steady 16,700 points/s (eight points a batch) those writes were most of the gateway's CPU.
 *
 * The window of points accepted but not yet PubAck'd is bounded gateway-wide (`maxInFlight`):
 * handlers check `full` after each point and wait with `whenRoom()`, so a slow JetStream stops the reading
 * and HTTP/2 flow control pushes back to the vehicles.
 */
import { headers as natsHeaders } from "@nats-io/nats-core";
import type { JetStreamClient } from "@nats-io/jetstream";
import type { Position } from "../gen/fleet/v1/position_pb";
import type { Logger } from "../lib/log";
import { Counter, delayBuckets, Gauge, Histogram, type Registry } from "../lib/metrics";
import { UnavailableError } from "../lib/grpc";
import { HEADERS, partitionOf, positionsSubject } from "../lib/nats";
import type { VehicleState } from "./durable-seqs";
import { encodePositionBatch } from "./position-encoder";

/** Who waits for a point: one per call. Methods are called per point; `settled` once per batch. */
export interface AckSink {
  /** The point with this seq is durable (and the vehicle's durable seq moved). */
  durable(seq: number): void;
  /** The point could not be stored (or an earlier one of the vehicle could not). */
  failed(err: Error): void;
  /** A batch holding points of this sink completed: time to send an ack or wake the handler. */
  settled(): void;
  /** Bookkeeping for `settled` deduplication; the batcher owns it. */
  batchMark: number;
}

export interface BatcherOptions {
  js: JetStreamClient;
  /** Number of partitions (FLEET_PARTITIONS). */
  partitions: number;
  /** Subject of a partition; default fleet.pos.<n>. */
  subjectOf?: (partition: number) => string;
  /** ms a batch waits for more points. */
  batchDelay: number;
  batchMaxPoints: number;
  /** Points accepted but not yet durable, gateway-wide. */
  maxInFlight: number;
  /** Batches of one partition being published at once. */
  maxPipeline?: number;
  /** ms to wait for one PubAck. */
  publishTimeoutMs?: number;
  /** Publish attempts per batch (same message id each time, so JetStream dedups a retry). */
  publishAttempts?: number;
  /** Unique per gateway process: header Fleet-Gateway and prefix of message ids. */
  instanceId: string;
  registry: Registry;
  log: Logger;
}

export interface Batcher {
  /** Adds an accepted point. The caller has already bumped nothing: the batcher counts it in flight. */
  add(position: Position, state: VehicleState, sink: AckSink): void;
  /** No room for more points in flight: wait with `whenRoom`. */
  readonly full: boolean;
  /**
   * Calls `wake` once there is room. Waiters are woken in order, one at a time while there is
   * room, so that a stream resumed synchronously takes the room before the next is woken (with
   * thousands of streams waiting, waking all at every completed batch cost more than the points).
   */
  whenRoom(wake: () => void): void;
  /** undefined when there is room for more points, else a promise that resolves when there is. */
  room(): Promise<void> | undefined;
  /** Points accepted and not yet completed. */
  readonly inFlight: number;
  /** Publishes whatever waits and resolves once nothing is in flight (or after `timeoutMs`). */
  drain(timeoutMs: number): Promise<boolean>;
}

class Batch {
  positions: Position[] = [];
  states: VehicleState[] = [];
  sinks: AckSink[] = [];
  done = false;
  error: Error | undefined;
  /** performance.now() when its first point was added. */
  readonly opened = performance.now();
  /** Its linger ended while the partition's pipeline was full: it goes out at the next free slot. */
  due = false;
  constructor(readonly no: number) {}
}

class Partition {
  current: Batch | undefined;
  /** Batches handed to JetStream, oldest first. */
  queue: Batch[] = [];
  publishing = 0;
  /** Batches closed but not yet started because the pipeline is full. */
  waiting: Batch[] = [];
  constructor(
    readonly index: number,
    readonly subject: string,
  ) {}
}

let markCounter = 0;

/** Answers the re-sends of `seq` as the point itself was answered; once nothing is in flight, the rest were never sent before. */
function settleEchoes(state: VehicleState, seq: number, failure: Error | undefined): void {
  const echoes = state.echoes!;
  const rest: typeof echoes = [];
  for (const e of echoes) {
    if (e.seq === seq) e.settle(failure);
    else rest.push(e);
  }
  if (state.inFlight === 0) {
    for (const e of rest) e.settle("missing");
    state.echoes = undefined;
  } else state.echoes = rest.length > 0 ? rest : undefined;
}

/** Creates the batcher. */
export function createBatcher({
  js,
  partitions: partitionCount,
  subjectOf = positionsSubject,
  batchDelay,
  batchMaxPoints,
  maxInFlight,
  maxPipeline = 4,
  publishTimeoutMs = 2000,
  publishAttempts = 3,
  instanceId,
  registry,
  log,
}: BatcherOptions): Batcher {
  const parts = Array.from({ length: partitionCount }, (_, i) => new Partition(i, subjectOf(i)));
  let batchNo = 0;
  let inFlight = 0;
  /** FIFO of whenRoom waiters from `waitHead` on (a head index: shift() is O(n) on 10,000 of them). */
  let waiters: ((() => void) | undefined)[] = [];
  let waitHead = 0;
  let idleWaiters: (() => void)[] = [];
  /** Partitions that opened a batch since the linger timer was set. */
  let lingering: Partition[] = [];
  let timer: ReturnType<typeof setTimeout> | undefined;

  const batches = new Counter({
    name: "gateway_batches_published_total",
    help: "JetStream messages published",
    labelNames: ["result"],
    registers: [registry],
  });
  const batchSize = new Histogram({
    name: "gateway_batch_points",
    help: "points per JetStream message",
    buckets: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000],
    registers: [registry],
  });
  const publishLatency = new Histogram({
    name: "gateway_publish_seconds",
    help: "time from publish to PubAck of one batch",
    buckets: delayBuckets,
    registers: [registry],
  });
  const ackWait = new Histogram({
    name: "gateway_ack_wait_seconds",
    help: "per batch, from its first point being taken to the acks of its points being written: the longest any point waited in the gateway (linger, publish, PubAck)",
    buckets: delayBuckets,
    registers: [registry],
  });
  new Gauge({
    name: "gateway_in_flight_points",
    help: "points accepted and not yet durable",
    registers: [registry],
    collect() {
      this.set(inFlight);
    },
  });

  const flushLingering = () => {
    timer = undefined;
    const parts = lingering;
    lingering = [];
    for (const part of parts) flush(part);
  };

  /**
   * Closes the partition's open batch and publishes it, or, while its pipeline is full, leaves it
   * open to take more points until a PubAck frees a slot (`finish` starts it then): under load
   * the batches grow with JetStream's latency instead of queueing as many small ones. Each message
   * costs JetStream (and at R3 each replica) about the same whatever its size, so fewer, fuller
   * messages are what a replicated stream needs most. A full batch (`batchMaxPoints`), or `force`,
   * closes it anyway.
   */
  const flush = (part: Partition, force = false) => {
    const batch = part.current;
    if (!batch) return;
    if (part.publishing < maxPipeline) {
      part.current = undefined;
      start(part, batch);
    } else if (force || batch.positions.length >= batchMaxPoints) {
      part.current = undefined;
      part.waiting.push(batch);
    } else batch.due = true;
  };

  const start = (part: Partition, batch: Batch) => {
    part.queue.push(batch);
    part.publishing++;
    publish(part, batch).then(
      () => finish(part, batch, undefined),
      (err: Error) => finish(part, batch, err),
    );
  };

  const publish = async (part: Partition, batch: Batch) => {
    const data = encodePositionBatch(batch.positions);
    const h = natsHeaders();
    h.set(HEADERS.gateway, instanceId);
    h.set(HEADERS.count, String(batch.positions.length));
    const msgID = `${instanceId}.${part.index}.${batch.no}`;
    const started = performance.now();
    let lastErr: unknown;
    for (let attempt = 1; attempt <= publishAttempts; attempt++) {
      try {
        await js.publish(part.subject, data, { msgID, headers: h, timeout: publishTimeoutMs, retries: 1 });
        publishLatency.observe((performance.now() - started) / 1000);
        batchSize.observe(batch.positions.length);
        batches.inc({ result: "ok" });
        return;
      } catch (err) {
        lastErr = err;
        log.warn("publish failed", { subject: part.subject, msgID, attempt, err });
        if (attempt < publishAttempts) await Bun.sleep(Math.min(1000, 50 * 2 ** attempt));
      }
    }
    batches.inc({ result: "failed" });
    throw new UnavailableError("positions store unavailable, retry with backoff", { cause: lastErr });
  };

  const finish = (part: Partition, batch: Batch, err: Error | undefined) => {
    batch.done = true;
    batch.error = err;
    part.publishing--;
    const next = part.waiting.shift();
    if (next) start(part, next);
    else if (part.current?.due) flush(part);
    while (part.queue.length > 0 && part.queue[0]!.done) complete(part.queue.shift()!);
  };

  const complete = (batch: Batch) => {
    const { positions, states, sinks, error } = batch;
    const mark = ++markCounter;
    const touched: AckSink[] = [];
    for (let i = 0; i < positions.length; i++) {
      const state = states[i]!;
      const sink = sinks[i]!;
      const seq = positions[i]!.seq;
      state.inFlight--;
      let failure: Error | undefined;
      if (error) {
        state.broken = true;
        failure = error;
        sink.failed(error);
      } else if (state.broken) {
        failure = new UnavailableError("an earlier point of this vehicle could not be stored: resume and resend");
        sink.failed(failure);
      } else {
        if (seq > state.durable) state.durable = seq;
        sink.durable(seq);
      }
      if (state.echoes !== undefined) settleEchoes(state, seq, failure);
      if (state.broken) {
        // Re-sent points must be taken again: forget what was only in flight.
        state.accepted = state.durable;
        if (state.inFlight === 0) state.broken = false;
      }
      if (sink.batchMark !== mark) {
        sink.batchMark = mark;
        touched.push(sink);
      }
    }
    inFlight -= positions.length;
    for (const sink of touched) sink.settled();
    ackWait.observe((performance.now() - batch.opened) / 1000);
    while (waitHead < waiters.length && inFlight < maxInFlight) {
      const wake = waiters[waitHead]!;
      waiters[waitHead++] = undefined;
      wake();
    }
    if (waitHead === waiters.length) {
      waiters = [];
      waitHead = 0;
    } else if (waitHead > 1024 && waitHead * 2 > waiters.length) {
      waiters = waiters.slice(waitHead);
      waitHead = 0;
    }
    if (inFlight === 0 && idleWaiters.length > 0) {
      const ws = idleWaiters;
      idleWaiters = [];
      for (const w of ws) w();
    }
  };

  return {
    add(position, state, sink) {
      const part = parts[partitionOf(position.vehicleId, partitionCount)]!;
      let batch = part.current;
      if (!batch) {
        batch = part.current = new Batch(++batchNo);
        // A batch opened while the timer runs waits less than batchDelay, never more.
        lingering.push(part);
        timer ??= setTimeout(flushLingering, batchDelay);
      }
      batch.positions.push(position);
      batch.states.push(state);
      batch.sinks.push(sink);
      state.inFlight++;
      inFlight++;
      if (batch.positions.length >= batchMaxPoints) flush(part);
    },
    get full() {
      return inFlight >= maxInFlight;
    },
    whenRoom(wake) {
      if (inFlight < maxInFlight) wake();
      else waiters.push(wake);
    },
    room() {
      if (inFlight < maxInFlight) return undefined;
      return new Promise<void>((resolve) => waiters.push(resolve));
    },
    get inFlight() {
      return inFlight;
    },
    async drain(timeoutMs) {
      clearTimeout(timer);
      timer = undefined;
      lingering = [];
      for (const part of parts) flush(part, true);
      if (inFlight === 0) return true;
      return new Promise<boolean>((resolve) => {
        const timer = setTimeout(() => resolve(false), timeoutMs);
        idleWaiters.push(() => {
          clearTimeout(timer);
          resolve(true);
        });
      });
    },
  };
}
