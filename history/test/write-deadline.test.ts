/**
 * The consumer's guard against a write that never settles (HISTORY_WRITE_TIMEOUT): whatever hangs (a
 * driver bug, a lock held for ever), the write is given up at its deadline with an error line and
 * history_write_timeouts_total, the writer's connections are closed, and the batch is retried on new
 * ones until it is written: history never stalls silently. The hang here is a row the test inserts
 * and holds uncommitted, which the batch's COPY waits on.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { createLogger } from "../../lib/log";
import { createRegistry } from "../../lib/metrics";
import { startHistoryConsumer } from "../consumer";
import { countRows, eventually, fixtureWriter, historyFixture, pointAt, uniqueName, type HistoryFixture } from "./helpers";

let fx: HistoryFixture;
beforeAll(async () => {
  fx = await historyFixture();
}, 60_000); // the test stack's servers start here (seconds on a busy machine; bun's hook default is 5 s)
afterAll(async () => {
  await fx?.close();
}, 30_000);

const T0 = Date.UTC(2026, 10, 22, 9, 0, 0);

test("write deadline - a write that hangs is given up at HISTORY_WRITE_TIMEOUT, logged and counted, and retried on new connections until written", async () => {
  const lines: string[] = [];
  const registry = createRegistry("write-deadline-test", { processMetrics: false });
  const writer = await fixtureWriter(fx, "write-deadline writer", 1000);
  const consumer = await startHistoryConsumer({
    nats: fx.nats,
    writer,
    registry,
    log: createLogger({ level: "warn", write: (line) => lines.push(line) }),
    stream: fx.stream,
    durable: uniqueName("deadline"),
    writers: 1,
    writeDeadlineMs: 1000,
  });
  const timeouts = async () =>
    Number(
      /^history_write_timeouts_total(?:\{[^}]*\})? (\S+)$/m.exec(
        await registry.getSingleMetricAsString("history_write_timeouts_total"),
      )?.[1],
    );
  try {
    const points = Array.from({ length: 20 }, (_, i) => pointAt("wd", T0 + i * 1000, i + 1));
    await fx.publish(points.slice(0, 10));
    await eventually(async () => (await countRows(fx.sql, "wd")) === 10, "the first 10 rows of wd");
    expect(await timeouts()).toBe(0);

    const hold = await fx.sql.reserve();
    await hold`BEGIN`;
    await hold`INSERT INTO positions (vehicle_id, recorded_at, seq, fleet_id, lat, lon, speed, heading, accuracy, order_id, status)
      VALUES ('wd', ${new Date(T0 + 15_000)}, 16, 'f', 0, 0, 0, 0, 0, '', 0)`;
    await fx.publish(points.slice(10));
    await eventually(async () => (await timeouts()) >= 2, "two writes given up at their deadline", 10_000);
    expect(await countRows(fx.sql, "wd")).toBe(10);
    await hold`ROLLBACK`;
    hold.release();

    await eventually(async () => (await countRows(fx.sql, "wd")) === 20, "all 20 rows of wd once the hold is gone");
    const [r] = await fx.sql`SELECT sum(points)::int AS points FROM positions_rollup WHERE vehicle_id = 'wd'`;
    expect(r!.points).toBe(20);
    const hung = lines.map((l) => JSON.parse(l)).filter((l) => l.msg.startsWith("history write hung"));
    expect(hung.length).toBeGreaterThanOrEqual(2);
    expect(hung[0]).toMatchObject({ level: "error", rows: 10, timeoutMs: 1000, err: { name: "PgDeadlineError" } });
    expect(hung[0].err.message).toContain("did not settle within 1000 ms");
  } finally {
    await consumer.stop();
    await writer.close({ timeout: 1 });
  }
}, 60_000);
