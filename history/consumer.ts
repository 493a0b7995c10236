/**
 * The durable pull consumer `history` on the positions stream: takes messages as they come, writes
 * what has gathered in one transaction (so a busy stream gets large transactions and a quiet one
 * low latency), and acks only after COMMIT. Several processes may share the consumer.
 *
 * PostgreSQL away: the same messages are retried with backoff until it is back (JetStream is told
 * they are still being worked on, so it does not redeliver them elsewhere meanwhile); a process that
 * dies leaves them unacked and JetStream redelivers them after ack_wait. Either way, the insert
 * ignores rows already stored, so nothing is lost or doubled.
 */
import { nanos } from "@nats-io/nats-core";
import { AckPolicy, DeliverPolicy, type ConsumerMessages, type JsMsg } from "@nats-io/jetstream";
import { CONSUMERS, partitionOf, POSITIONS_STREAM, type Nats } from "../lib/nats";
import { logConsumeStatus } from "../lib/nats/consume-status";
import type { Logger } from "../lib/log";
import { Counter, Gauge, Histogram, latencyBuckets, type Registry } from "../lib/metrics";
import { isDataException, isTransientPgError } from "../lib/storage";
import { PgDeadlineError } from "../lib/storage/pg";
import { decodeBatchRows } from "./batch-decoder";
import type { Row } from "./row";
import type { PositionWriter } from "./write-positions";

export interface HistoryConsumerOptions {
  nats: Nats;
  writer: PositionWriter;
  registry: Registry;
  log: Logger;
  stream?: string;
  durable?: string;
  /** Rows per transaction at most (a message is never split). */
  maxRows?: number;
  /** Write transactions in flight at once (PostgreSQL works on each with its own core); each takes the subjects n mod writers. */
  writers?: number;
  /**
   * ms a write waits, from its oldest queued message's arrival, for more rows while fewer than
   * maxRows are queued (HISTORY_BATCH_DELAY; 0: none). A transaction costs PostgreSQL and this
   * process a fixed part (BEGIN, savepoint, COPY, rollup, COMMIT: ~7 round trips) besides its rows:
   * written as they came, a quiet stream's transactions held ~40 rows (bench platform, 3,333
   * points/s) and that fixed part was most of both processes' CPU.
   */
  batchDelayMs?: number;
  /** Messages JetStream may have handed out unacked (the bound on memory when PostgreSQL is away). */
  maxAckPending?: number;
  /** ms before an unacked message is redelivered. */
  ackWaitMs?: number;
  /** The writer's deadline (HISTORY_WRITE_TIMEOUT), as logged when a write misses it. */
  writeDeadlineMs?: number;
}

export interface HistoryConsumer {
  /** Stops taking messages, finishes the transaction in progress, acks it. */
  stop(): Promise<void>;
  /** True while the last write succeeded (or nothing was written yet). */
  healthy(): boolean;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Creates (if missing) the durable consumer and starts consuming. */
export async function startHistoryConsumer({
  nats,
  writer,
  registry,
  log,
  stream = POSITIONS_STREAM,
  durable = CONSUMERS.history,
  maxRows = 20_000,
  writers = 2,
  batchDelayMs = 0,
  maxAckPending = 2000,
  ackWaitMs = 30_000,
  writeDeadlineMs,
}: HistoryConsumerOptions): Promise<HistoryConsumer> {
  const rowsWritten = new Counter({ name: "history_rows_written_total", help: "rows inserted into positions", registers: [registry] });
  const rowsDuplicate = new Counter({
    name: "history_rows_duplicate_total",
    help: "rows received again (redelivery, re-sent points) and ignored",
    registers: [registry],
  });
  const commitSeconds = new Histogram({
    name: "history_batch_commit_seconds",
    help: "time of one write transaction (COPY, insert, rollup, COMMIT)",
    buckets: latencyBuckets,
    registers: [registry],
  });
  const batchRows = new Histogram({
    name: "history_batch_rows",
    help: "rows per write transaction",
    buckets: [1, 10, 100, 1000, 5000, 10000, 20000, 50000],
    registers: [registry],
  });
  const writeErrors = new Counter({
    name: "history_write_errors_total",
    help: "failed write transactions, by kind (transient ones are retried)",
    labelNames: ["kind"],
    registers: [registry],
  });
  const writeTimeouts = new Counter({
    name: "history_write_timeouts_total",
    help: "writes given up after HISTORY_WRITE_TIMEOUT (PostgreSQL or its driver never answered): the writer's connections were closed and the batch retried",
    registers: [registry],
  });
  const rowsParked = new Counter({
    name: "history_rows_parked_total",
    help: "points PostgreSQL refused with a data exception, kept in positions_parked instead",
    registers: [registry],
  });
  const badMessages = new Counter({
    name: "history_bad_messages_total",
    help: "messages that are not a PositionBatch (terminated, logged)",
    registers: [registry],
  });
  let lag = 0;
  new Gauge({
    name: "history_consumer_lag_messages",
    help: "messages of the stream not yet delivered to history (num_pending seen on the last message)",
    registers: [registry],
    collect() {
      this.set(lag);
    },
  });
  let lastDelivered = 0;
  new Gauge({
    name: "history_consumer_lag_seconds",
    help: "age of the newest message taken, at the time it was taken",
    registers: [registry],
    collect() {
      this.set(lastDelivered);
    },
  });

  await ensureConsumer(nats, stream, durable, maxAckPending, ackWaitMs);
  const consumer = await nats.js.consumers.get(stream, durable);
  // expires 5 s (nats.js: 30 s): a pull lost with a consumer leader that moved (a node killed, paused
  // or cut off) is noticed by its missed heartbeats (half of expires, twice) and pulled again in
  // ~5-10 s instead of 30-60 s, during which this writer would sit idle (chaos/: partition).
  const messages: ConsumerMessages = await consumer.consume({ max_messages: Math.min(256, maxAckPending), expires: 5_000 });
  const status = logConsumeStatus(messages, log, { durable });

  // One queue per writer, and a subject always goes to the same writer: one vehicle's batches are
  // written in stream order within a process (its rollup legs depend on the previous batch).
  const n = Math.max(1, writers);
  const queues: { msg: JsMsg; positions: Row[]; at: number }[][] = Array.from({ length: n }, () => []);
  const queuedRows: number[] = new Array(n).fill(0);
  const waiting: ((() => void) | undefined)[] = new Array(n).fill(undefined);
  /** The timer of a writer waiting for more rows (batchDelayMs), while it waits. */
  const lingering: (ReturnType<typeof setTimeout> | undefined)[] = new Array(n).fill(undefined);
  const wake = (i: number) => {
    const w = waiting[i];
    waiting[i] = undefined;
    w?.();
  };
  const writerOf = (subject: string) => {
    const last = subject.slice(subject.lastIndexOf(".") + 1);
    const k = /^\d+$/.test(last) ? Number(last) : partitionOf(subject, 1 << 30);
    return k % n;
  };
  let stopping = false;
  let healthy = true;

  const reader = (async () => {
    for await (const msg of messages) {
      status.delivered();
      let positions: Row[];
      try {
        positions = decodeBatchRows(msg.data);
      } catch (err) {
        badMessages.inc();
        log.error("not a PositionBatch: terminated", { subject: msg.subject, seq: msg.seq, err });
        msg.term();
        continue;
      }
      lag = msg.info.pending;
      lastDelivered = Math.max(0, (Date.now() - msg.info.timestampNanos / 1e6) / 1000);
      const i = writerOf(msg.subject);
      queues[i]!.push({ msg, positions, at: performance.now() });
      queuedRows[i]! += positions.length;
      // A writer lingering for more rows is woken only once it has a full transaction's worth.
      if (lingering[i] === undefined || queuedRows[i]! >= maxRows) wake(i);
    }
  })().then(
    // nats.js ends the iterator without an error when the connection closes: say so, or history goes quiet.
    () => {
      if (!stopping) log.error("history consumer stopped reading: the positions iterator ended");
    },
    (err) => log.error("history consumer stopped reading", { err }),
  );

  /**
   * Writes the rows. A row PostgreSQL can never take (a data exception: a value out of its column's
   * range, text it cannot hold) would fail its batch at every retry and hold up every point behind
   * it: such a batch is halved until the row is alone, and that row is parked (positions_parked,
   * with the error) instead of written. Other errors go to the caller, which retries.
   */
  const writeOrPark = async (rows: Row[]): Promise<{ rows: number; inserted: number; parked: number }> => {
    try {
      return { ...(await writer.write(rows)), parked: 0 };
    } catch (err) {
      if (!isDataException(err)) throw err;
      if (rows.length === 1) {
        await writer.park(rows[0]!, err as Error);
        rowsParked.inc();
        log.error("point parked: PostgreSQL refuses it (see positions_parked)", { vehicleId: rows[0]!.vehicleId, seq: rows[0]!.seq, err });
        return { rows: 1, inserted: 0, parked: 1 };
      }
      const half = rows.length >> 1;
      const a = await writeOrPark(rows.slice(0, half));
      const b = await writeOrPark(rows.slice(half));
      return { rows: a.rows + b.rows, inserted: a.inserted + b.inserted, parked: a.parked + b.parked };
    }
  };

  /** The messages each writer is writing now (no longer in its queue). */
  const writing: ({ msg: JsMsg }[] | undefined)[] = new Array(n).fill(undefined);
  // Messages wait in a queue, and in a write, for as long as PostgreSQL takes. Past ack_wait
  // JetStream delivered them again, here too: while history was behind (bench platform) every
  // queued message came again each ack_wait and was queued again, copies on copies (its resident
  // memory grew ~10 MB/s to 5.5 GB) each written again for nothing. So every third of ack_wait,
  // each message held is marked in progress (at most max_ack_pending of them).
  const inProgress = setInterval(
    () => {
      for (const queue of queues) for (const e of queue) e.msg.working();
      for (const group of writing) if (group) for (const e of group) e.msg.working();
    },
    Math.max(100, Math.floor(ackWaitMs / 3)),
  );

  const writerLoop = async (index: number) => {
    const queue = queues[index]!;
    while (!stopping || queue.length > 0) {
      if (queue.length === 0) {
        if (stopping) break;
        await new Promise<void>((r) => (waiting[index] = r));
        continue;
      }
      const lingerMs = queue[0]!.at + batchDelayMs - performance.now();
      if (lingerMs >= 1 && queuedRows[index]! < maxRows && !stopping) {
        await new Promise<void>((r) => {
          waiting[index] = r;
          lingering[index] = setTimeout(() => wake(index), lingerMs);
        });
        clearTimeout(lingering[index]);
        lingering[index] = undefined;
        continue;
      }
      // Take whole messages up to maxRows (at least one).
      let rows = 0;
      let taken = 0;
      while (taken < queue.length && (taken === 0 || rows + queue[taken]!.positions.length <= maxRows))
        rows += queue[taken++]!.positions.length;
      const group = queue.splice(0, taken);
      queuedRows[index]! -= rows;
      writing[index] = group;
      const positions = taken === 1 ? group[0]!.positions : group.flatMap((g) => g.positions);
      for (let attempt = 1; ; attempt++) {
        const t0 = performance.now();
        try {
          const r = await writeOrPark(positions);
          commitSeconds.observe((performance.now() - t0) / 1000);
          batchRows.observe(r.rows);
          rowsWritten.inc(r.inserted);
          rowsDuplicate.inc(r.rows - r.inserted - r.parked);
          for (const g of group) g.msg.ack();
          writing[index] = undefined;
          if (!healthy) log.info("history writes again", { attempts: attempt });
          healthy = true;
          break;
        } catch (err) {
          const transient = isTransientPgError(err);
          const timedOut = err instanceof PgDeadlineError;
          writeErrors.inc({ kind: timedOut ? "timeout" : transient ? "transient" : "other" });
          healthy = false;
          // Keep the messages ours while we retry; redelivery elsewhere would only add load.
          for (const g of group) g.msg.working();
          const wait = Math.min(5000, 100 * 2 ** Math.min(attempt, 6));
          if (timedOut) {
            // Every time: a write that hangs is a fault to find (a lock held for ever, a driver bug), not an outage.
            writeTimeouts.inc();
            log.error("history write hung: given up after HISTORY_WRITE_TIMEOUT, its connections closed, retrying on new ones", {
              attempt,
              rows: positions.length,
              timeoutMs: writeDeadlineMs,
              waitMs: wait,
              err,
            });
          } else if (attempt === 1 || attempt % 10 === 0) {
            (transient ? log.warn : log.error)("history write failed: retrying", { attempt, rows: positions.length, waitMs: wait, err });
          }
          if (stopping && !transient) return;
          await sleep(wait);
        }
      }
    }
  };
  const loops = Promise.all(queues.map((_, i) => writerLoop(i)));

  return {
    async stop() {
      stopping = true;
      await messages.close().catch(() => {});
      for (let i = 0; i < n; i++) wake(i);
      await reader;
      await Promise.race([loops, sleep(10_000)]);
      clearInterval(inProgress);
    },
    healthy: () => healthy,
  };
}

async function ensureConsumer(nats: Nats, stream: string, durable: string, maxAckPending: number, ackWaitMs: number): Promise<void> {
  try {
    await nats.jsm.consumers.info(stream, durable);
    return;
  } catch (err) {
    if (!/consumer not found/i.test(String((err as Error)?.message))) throw err;
  }
  try {
    await nats.jsm.consumers.add(stream, {
      durable_name: durable,
      ack_policy: AckPolicy.Explicit,
      // No num_replicas: the server keeps a durable at its stream's replicas (FLEET_STREAM_REPLICAS) and scales it with the stream.
      deliver_policy: DeliverPolicy.All,
      ack_wait: nanos(ackWaitMs),
      max_ack_pending: maxAckPending,
    });
  } catch (err) {
    // Another history process created it first.
    if (!/already (exists|in use)/i.test(String((err as Error)?.message))) throw err;
  }
}
