/**
 * HISTORY_BATCH_DELAY: a write waits for more rows (from its oldest message's arrival) while fewer
 * than HISTORY_BATCH_MAX_ROWS are queued, so a quiet stream's messages share one transaction; a full
 * transaction's worth is written at once.
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

const T0 = Date.UTC(2026, 10, 24, 9, 0, 0);

/** A consumer of its own durable on the fixture's stream; returns its transaction count and stop. */
async function consumer(batchDelayMs: number, maxRows: number) {
  const writer = await fixtureWriter(fx, "batch-delay writer");
  const registry = createRegistry("batch-delay-test", { processMetrics: false });
  const c = await startHistoryConsumer({
    nats: fx.nats,
    writer,
    registry,
    log: createLogger({ level: "error" }),
    stream: fx.stream,
    durable: uniqueName("delay"),
    writers: 1,
    batchDelayMs,
    maxRows,
  });
  return {
    transactions: async () =>
      Number(
        /^history_batch_rows_count(?:\{[^}]*\})? (\S+)$/m.exec(await registry.getSingleMetricAsString("history_batch_rows"))?.[1] ?? 0,
      ),
    stop: () => c.stop(),
  };
}

test("batch delay - messages that come within HISTORY_BATCH_DELAY share one transaction, written after the delay", async () => {
  // The day's partition first, so that the case below times only its own writes.
  await fx.publish([pointAt("bd-first", T0, 1)]);
  const c = await consumer(1500, 20_000);
  try {
    await eventually(async () => (await countRows(fx.sql, "bd-first")) === 1, "the day's first row");
    const before = await c.transactions();
    const t0 = performance.now();
    for (let i = 1; i <= 20; i++) await fx.publish([pointAt("bd-quiet", T0 + i * 1000, i)]);
    const published = performance.now() - t0;
    await eventually(async () => (await countRows(fx.sql, "bd-quiet")) === 20, "the 20 rows");
    const written = performance.now() - t0;
    // All 20 came within the delay (the fixture's publishes take a few ms each): one transaction.
    if (published < 1000) expect((await c.transactions()) - before).toBe(1);
    // Not written at once: the first message waited for the others.
    expect(written).toBeGreaterThan(1000);
  } finally {
    await c.stop();
  }
}, 60_000);

test("batch delay - a full transaction's worth of rows (HISTORY_BATCH_MAX_ROWS) is written without waiting", async () => {
  await fx.publish([pointAt("bd-first2", T0, 1)]);
  const c = await consumer(10_000, 5);
  try {
    await eventually(async () => (await countRows(fx.sql, "bd-first2")) === 1, "the day's first row");
    const t0 = performance.now();
    for (let i = 1; i <= 20; i++) await fx.publish([pointAt("bd-full", T0 + i * 1000, i)]);
    await eventually(async () => (await countRows(fx.sql, "bd-full")) === 20, "the 20 rows");
    // Four transactions of 5, well before the 10 s delay.
    expect(performance.now() - t0).toBeLessThan(8_000);
  } finally {
    await c.stop();
  }
}, 60_000);
