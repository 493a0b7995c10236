import { afterAll, beforeAll, expect, test } from "bun:test";
import { createLogger } from "../log";
import { connectNats, ensurePositionsStream, watchStreamLimits, type Nats } from "./jetstream";
import { createRegistry } from "../metrics";
import { testStack } from "../../dev";

let nats: Nats;
beforeAll(async () => {
  const stack = await testStack(["nats"]);
  nats = await connectNats({ url: stack.natsUrl, name: "jetstream test", log: createLogger({ level: "error" }) });
});
afterAll(async () => {
  await nats?.close();
});

test("jetstream - a full positions stream refuses new points and keeps every stored one; the limit gauges say how full it is", async () => {
  const stream = `LIMITS_${process.pid}_${Date.now().toString(36)}`;
  await ensurePositionsStream(nats.jsm, {
    stream,
    subjects: `${stream}.>`,
    duplicateWindow: 60_000,
    streamMaxAge: 3_600_000,
    streamMaxBytes: 1024 * 1024,
  });
  const payload = new Uint8Array(100 * 1024);
  let stored = 0;
  let refusal: unknown;
  for (let i = 0; i < 20 && refusal === undefined; i++) {
    try {
      await nats.js.publish(`${stream}.pos.0`, payload, { msgID: `m-${i}` });
      stored++;
    } catch (err) {
      refusal = err;
    }
  }
  expect(stored).toBeGreaterThan(5);
  expect(String((refusal as Error)?.message)).toMatch(/maximum bytes/i);
  const info = await nats.jsm.streams.info(stream);
  // Nothing old was dropped to make room.
  expect(info.state.first_seq).toBe(1);
  expect(info.state.messages).toBe(stored);

  const registry = createRegistry("test", { processMetrics: false });
  clearInterval(watchStreamLimits(nats.jsm, { stream, registry, log: createLogger({ level: "error" }) }));
  const text = await registry.metrics();
  expect(text).toMatch(/^fleet_stream_max_bytes\{service="test"\} 1048576$/m);
  const ratio = Number(/^fleet_stream_limit_ratio\{service="test"\} ([\d.e+-]+)$/m.exec(text)?.[1]);
  expect(ratio).toBeGreaterThan(0.5);
  expect(ratio).toBeLessThanOrEqual(1.01);
  await nats.jsm.streams.delete(stream);
});

test("jetstream - an existing stream is brought to the configured limits and discard policy", async () => {
  const stream = `LIMITS2_${process.pid}_${Date.now().toString(36)}`;
  await ensurePositionsStream(nats.jsm, { stream, subjects: `${stream}.>`, duplicateWindow: 60_000, streamMaxAge: 3_600_000 });
  const info = await ensurePositionsStream(nats.jsm, {
    stream,
    subjects: `${stream}.>`,
    duplicateWindow: 60_000,
    streamMaxAge: 3_600_000,
    streamMaxBytes: 5 * 1024 * 1024,
  });
  expect(info.config.max_bytes).toBe(5 * 1024 * 1024);
  expect(info.config.discard).toBe("new");
  await nats.jsm.streams.delete(stream);
});
