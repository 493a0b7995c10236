/**
 * While PostgreSQL is slow, the messages history holds (queued, or in a write) stay its own: they
 * are marked in progress every third of ack_wait, so JetStream does not deliver them again. Before,
 * each queued message came again every ack_wait and was queued again (bench platform: history's
 * memory grew ~10 MB/s while it was behind) and its rows were written a second time.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { createLogger } from "../../lib/log";
import { createRegistry } from "../../lib/metrics";
import { startHistoryConsumer } from "../consumer";
import { countRows, eventually, fixtureWriter, historyFixture, pointAt, uniqueName, type HistoryFixture } from "./helpers";

let fx: HistoryFixture;
beforeAll(async () => {
  fx = await historyFixture();
}, 60_000);
afterAll(async () => {
  await fx?.close();
}, 30_000);

const T0 = Date.UTC(2026, 10, 23, 9, 0, 0);

test("slow writes - messages held past ack_wait while PostgreSQL is slow are not delivered again", async () => {
  const writer = await fixtureWriter(fx, "slow-writes writer");
  const durable = uniqueName("slow");
  const ackWaitMs = 600;
  const registry = createRegistry("slow-writes-test", { processMetrics: false });
  const duplicates = async () =>
    Number(
      /^history_rows_duplicate_total(?:\{[^}]*\})? (\S+)$/m.exec(
        await registry.getSingleMetricAsString("history_rows_duplicate_total"),
      )?.[1],
    );
  const consumer = await startHistoryConsumer({
    nats: fx.nats,
    writer,
    registry,
    log: createLogger({ level: "error" }),
    stream: fx.stream,
    durable,
    writers: 1,
    ackWaitMs,
    writeDeadlineMs: 30_000,
  });
  try {
    // The day's partition is made by the writer's first batch.
    await fx.publish([pointAt("sw-first", T0, 1)]);
    await eventually(async () => (await countRows(fx.sql, "sw-first")) === 1, "the day's first row");
    // A row held uncommitted: the first batch's COPY waits on it, the next messages wait in the queue.
    const hold = await fx.sql.reserve();
    await hold`BEGIN`;
    await hold`INSERT INTO positions (vehicle_id, recorded_at, seq, fleet_id, lat, lon, speed, heading, accuracy, order_id, status)
      VALUES ('sw', ${new Date(T0 + 1_000)}, 2, 'f', 0, 0, 0, 0, 0, '', 0)`;
    for (let m = 0; m < 8; m++) await fx.publish([pointAt("sw", T0 + m * 1000, m + 1)]);
    // Five times ack_wait with everything held.
    await Bun.sleep(5 * ackWaitMs);
    await hold`ROLLBACK`;
    hold.release();
    await eventually(async () => (await countRows(fx.sql, "sw")) === 8, "all 8 rows of sw");
    // Redelivered copies would be written again, and counted as duplicates, a little after.
    await Bun.sleep(2 * ackWaitMs);
    expect(await duplicates()).toBe(0);
    const info = await fx.nats.jsm.consumers.info(fx.stream, durable);
    expect(info.num_ack_pending).toBe(0);
  } finally {
    await consumer.stop();
    await writer.close({ timeout: 1 });
  }
}, 60_000);
