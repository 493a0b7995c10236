/**
 * The durable JetStream pull consumer `tracker`: each message is one PositionBatch, applied to
 * Redis by one script call (newer wins), acked once Redis took it, then published live. Several
 * tracker processes may share the consumer: JetStream spreads the messages, newer-wins keeps the
 * state right whatever the order, and a redelivered batch changes nothing.
 *
 * Messages waiting are grouped into one script call (up to `maxPoints` points, counted as decoded), and calls are
 * pipelined (a few in flight on the one connection, which Redis runs in order). When Redis fails,
 * the group is nak'd with a delay and nothing more is sent until Redis is back; JetStream keeps
 * everything meanwhile, so the tracker catches up by itself.
 */
import { fromBinary } from "@bufbuild/protobuf";
import { AckPolicy, DeliverPolicy, type ConsumerMessages, type JsMsg } from "@nats-io/jetstream";
import { nanos } from "@nats-io/nats-core";
import type Redis from "ioredis";
import { PositionBatchSchema } from "../gen/fleet/v1/position_pb";
import type { Nats } from "../lib/nats";
import { logConsumeStatus } from "../lib/nats/consume-status";
import type { Logger } from "../lib/log";
import { Counter, delayBuckets, Gauge, Histogram, latencyBuckets, type Registry } from "../lib/metrics";
import type { LivePublisher } from "./live";
import { PointBlob } from "./point-blob";
import type { Store } from "./store";

export interface ConsumerOptions {
  nats: Nats;
  redis: Redis;
  store: Store;
  live: LivePublisher;
  stream: string;
  /** Durable name (CONSUMERS.tracker). */
  durable: string;
  /** Messages pulled at once. */
  fetch: number;
  /** A new consumer starts this far back in the stream (older vehicles would be offline anyway). */
  startBackMs: number;
  /** Script calls in flight at once. */
  pipeline?: number;
  /** Points per script call at most (several JetStream messages go in one call). */
  maxPoints?: number;
  registry: Registry;
  log: Logger;
}

export interface PositionsConsumer {
  /** Stops pulling and waits for the batches in flight. */
  stop(): Promise<void>;
}

const ACK_WAIT_MS = 30_000;

export async function startConsumer({
  nats,
  redis,
  store,
  live,
  stream,
  durable,
  fetch,
  startBackMs,
  pipeline = 4,
  maxPoints = 2000,
  registry,
  log,
}: ConsumerOptions): Promise<PositionsConsumer> {
  const batches = new Counter({
    name: "tracker_batches_total",
    help: "JetStream messages handled, by result",
    labelNames: ["result"],
    registers: [registry],
  });
  const pointsCounter = new Counter({
    name: "tracker_points_total",
    help: "points handled, by result (applied, or older/duplicate)",
    labelNames: ["result"],
    registers: [registry],
  });
  const batchSize = new Histogram({
    name: "tracker_batch_points",
    help: "points per JetStream message",
    buckets: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000],
    registers: [registry],
  });
  const redisLatency = new Histogram({
    name: "tracker_redis_batch_seconds",
    help: "time of one newer-wins script call (one batch)",
    buckets: latencyBuckets,
    registers: [registry],
  });
  const applyDelay = new Histogram({
    name: "tracker_apply_delay_seconds",
    help: "from the gateway receiving a point to Redis having taken it, for the first point of each script call: how far the live state runs behind",
    buckets: delayBuckets,
    registers: [registry],
  });
  const lag = new Gauge({
    name: "tracker_consumer_pending",
    help: "messages of the stream the tracker consumer has not yet received (num_pending)",
    registers: [registry],
  });
  const ackPending = new Gauge({
    name: "tracker_consumer_ack_pending",
    help: "messages received and not yet acked",
    registers: [registry],
  });

  try {
    await nats.jsm.consumers.info(stream, durable);
  } catch {
    try {
      await nats.jsm.consumers.add(stream, {
        durable_name: durable,
        ack_policy: AckPolicy.Explicit,
        // No num_replicas: the server keeps a durable at its stream's replicas (FLEET_STREAM_REPLICAS) and scales it with the stream.
        ack_wait: nanos(ACK_WAIT_MS),
        max_ack_pending: 10_000,
        deliver_policy: DeliverPolicy.StartTime,
        opt_start_time: new Date(Date.now() - startBackMs).toISOString(),
      });
      log.info("consumer created", { stream, durable });
    } catch (err) {
      // Another tracker created it first.
      if (!/already (in use|exists)/i.test(String((err as Error)?.message))) throw err;
    }
  }
  const consumer = await nats.js.consumers.get(stream, durable);
  // expires 5 s (nats.js: 30 s): a pull lost with a consumer leader that moved is pulled again in ~5-10 s, not 30-60 s (see history/consumer.ts).
  const messages: ConsumerMessages = await consumer.consume({ max_messages: fetch, expires: 5_000 });
  const status = logConsumeStatus(messages, log, { durable });

  // num_pending as the server sees it, when idle too (the messages carry it while busy).
  const lagTimer = setInterval(() => {
    nats.jsm.consumers.info(stream, durable).then(
      (info) => {
        lag.set(info.num_pending);
        ackPending.set(info.num_ack_pending);
      },
      () => {},
    );
  }, 5000);

  const decode = (data: Uint8Array) => fromBinary(PositionBatchSchema, data).positions;
  // One blob per call in flight, reused: they grow to the size of a call once.
  const spare: PointBlob[] = [];

  /**
   * Takes waiting messages into one blob, up to `maxPoints` points (at least one message): at
   * 16,700 points/s the gateway's messages are small (a few ms of one partition), and a round trip
   * each left the tracker behind. Points keep their stream order inside the call.
   */
  const take = (): { blob: PointBlob; taken: JsMsg[] } => {
    const blob = spare.pop() ?? new PointBlob();
    blob.reset();
    const taken: JsMsg[] = [];
    const nowMs = Date.now();
    while (queue.length > 0 && (taken.length === 0 || blob.count < maxPoints)) {
      const m = queue.shift()!;
      try {
        batchSize.observe(blob.addMessage(m.data, nowMs, decode));
        taken.push(m);
      } catch (err) {
        // Retrying cannot fix bytes that do not parse, or a point no record can hold: drop it, loudly.
        log.error("undecodable positions message dropped", { subject: m.subject, seq: m.seq, err });
        batches.inc({ result: "undecodable" });
        m.term();
      }
    }
    return { blob, taken };
  };

  const handle = async (blob: PointBlob, taken: JsMsg[]) => {
    if (taken.length === 0) return;
    const started = performance.now();
    try {
      const applied = await store.applyBatch(blob, Date.now());
      redisLatency.observe((performance.now() - started) / 1000);
      // The record's last-seen time is when the gateway received the point (state-codec.ts).
      if (applied.length > 0) applyDelay.observe(Math.max(0, Date.now() - applied[0]!.record.readDoubleLE(16)) / 1000);
      for (const m of taken) m.ack();
      batches.inc({ result: "ok" }, taken.length);
      pointsCounter.inc({ result: "applied" }, applied.length);
      if (applied.length < blob.count) pointsCounter.inc({ result: "older" }, blob.count - applied.length);
      lag.set(taken.at(-1)!.info.pending);
      for (const a of applied) live.publishEvent(a.vehicleId, a.event, a.record, a.before);
    } catch (err) {
      batches.inc({ result: "redis_failed" }, taken.length);
      log.warn("redis did not take a batch: retrying once it is back", { messages: taken.length, err });
      for (const m of taken) m.nak(1000);
    }
  };

  let stopping = false;
  const queue: JsMsg[] = [];
  let inFlight = 0;
  let idle: (() => void) | undefined;
  let roomWaiter: (() => void) | undefined;
  const kick = () => {
    while (!stopping && inFlight < pipeline && queue.length > 0 && redis.status === "ready") {
      const { blob, taken } = take();
      inFlight++;
      void handle(blob, taken).finally(() => {
        spare.push(blob);
        inFlight--;
        if (inFlight === 0) idle?.();
        kick();
      });
    }
    if (queue.length < fetch) {
      const w = roomWaiter;
      roomWaiter = undefined;
      w?.();
    }
  };
  // Redis back after an outage: what waited goes now.
  redis.on("ready", kick);
  const loop = (async () => {
    for await (const m of messages) {
      status.delivered();
      if (stopping) {
        m.nak();
        continue;
      }
      queue.push(m);
      kick();
      // Bounded: pull no further than `fetch` messages ahead of what Redis took.
      if (queue.length >= fetch) await new Promise<void>((resolve) => (roomWaiter = resolve));
    }
  })().then(
    // nats.js ends the iterator without an error when the connection closes: say so, or the tracker goes quiet.
    () => {
      if (!stopping) log.error("consumer stopped: the positions iterator ended");
    },
    (err) => log.error("consumer stopped", { err }),
  );

  return {
    async stop() {
      stopping = true;
      clearInterval(lagTimer);
      redis.off("ready", kick);
      roomWaiter?.();
      await messages.close().catch(() => {});
      await loop;
      for (const m of queue.splice(0)) m.nak();
      if (inFlight > 0) await new Promise<void>((resolve) => (idle = resolve));
    },
  };
}
