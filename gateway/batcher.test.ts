import { afterAll, beforeAll, expect, test } from "bun:test";
import { connectNats, ensurePositionsStream, partitionOf, type Nats } from "../lib/nats";
import { createLogger } from "../lib/log";
import { createRegistry } from "../lib/metrics";
import { testStack, type Stack } from "../dev";
import { createBatcher, type AckSink } from "./batcher";
import { VehicleState } from "./durable-seqs";
import { point, uniqueName } from "./test/helpers";

let nats: Nats;
let stream: string;
let stack: Stack;

beforeAll(async () => {
  stack = await testStack(["nats"]);
  nats = await connectNats({ url: stack.natsUrl, name: "batcher test", log: createLogger({ level: "error" }) });
  stream = uniqueName("BATCH");
  await ensurePositionsStream(nats.jsm, { stream, subjects: `${stream}.>`, duplicateWindow: 60_000, streamMaxAge: 3_600_000 });
});

afterAll(async () => {
  await nats?.close();
});

/** A sink that notes when its point became durable. */
function sink(): AckSink & { durableAt: number | undefined } {
  return {
    batchMark: 0,
    durableAt: undefined,
    durable() {
      this.durableAt = performance.now();
    },
    failed(err) {
      throw err;
    },
    settled() {},
  };
}

test("batcher - a batch opened while another partition's batch lingers is published with it, not a whole delay later", async () => {
  const partitions = 4;
  const batchDelay = 400;
  const batcher = createBatcher({
    js: nats.js,
    partitions,
    subjectOf: (i) => `${stream}.${i}`,
    batchDelay,
    batchMaxPoints: 1000,
    maxInFlight: 1000,
    instanceId: uniqueName("gw"),
    registry: createRegistry("batcher-test", { processMetrics: false }),
    log: createLogger({ level: "error" }),
  });
  const first = "vehicle-a";
  let second = "vehicle-b";
  for (let i = 0; partitionOf(second, partitions) === partitionOf(first, partitions); i++) second = `vehicle-b${i}`;

  const a = sink();
  const b = sink();
  const started = performance.now();
  batcher.add(point(first, 1), new VehicleState(first, Date.now()), a);
  await Bun.sleep(batchDelay / 2);
  batcher.add(point(second, 1), new VehicleState(second, Date.now()), b);
  // Not drain(): that would publish the second batch at once.
  while ((a.durableAt === undefined || b.durableAt === undefined) && performance.now() - started < 5000) await Bun.sleep(5);

  // The first point lingered its whole delay; the second, opened halfway, went with it.
  expect(a.durableAt! - started).toBeGreaterThanOrEqual(batchDelay - 5);
  expect(b.durableAt! - started).toBeLessThan(batchDelay * 1.4);
  const info = await nats.jsm.streams.info(stream);
  expect(info.state.messages).toBe(2);
});

test("batcher - while a partition's pipeline is full its open batch keeps taking points, and goes out as one message when a slot frees", async () => {
  const batcher = createBatcher({
    js: nats.js,
    partitions: 1,
    subjectOf: () => `${stream}.pipeline`,
    batchDelay: 5,
    batchMaxPoints: 1000,
    maxInFlight: 1000,
    maxPipeline: 1,
    instanceId: uniqueName("gw"),
    registry: createRegistry("batcher-test", { processMetrics: false }),
    log: createLogger({ level: "error" }),
  });
  const before = (await nats.jsm.streams.info(stream)).state.messages;
  const state = new VehicleState("vehicle-p", Date.now());
  const sinks = [sink()];
  // A stopped nats-server holds the first batch's PubAck: the pipeline (one slot) stays full.
  const pid = stack.natsNode(0).pid()!;
  process.kill(pid, "SIGSTOP");
  try {
    batcher.add(point("vehicle-p", 1), state, sinks[0]!);
    for (let seq = 2; seq <= 11; seq++) {
      await Bun.sleep(10); // past the linger each time: before, each point became a batch of its own
      const s = sink();
      sinks.push(s);
      batcher.add(point("vehicle-p", seq), state, s);
    }
  } finally {
    process.kill(pid, "SIGCONT");
  }
  expect(await batcher.drain(5000)).toBe(true);
  expect(sinks.every((s) => s.durableAt !== undefined)).toBe(true);
  expect(state.durable).toBe(11);
  const info = await nats.jsm.streams.info(stream);
  expect(info.state.messages - before).toBe(2);
});
