import { afterAll, beforeAll, expect, test } from "bun:test";
import { AckPolicy } from "@nats-io/jetstream";
import { testStack } from "../../dev";
import { createLogger } from "../log";
import { logConsumeStatus } from "./consume-status";
import { connectNats, type Nats } from "./jetstream";

let nats: Nats;
beforeAll(async () => {
  const stack = await testStack(["nats"]);
  nats = await connectNats({ url: stack.natsUrl, name: "consume-status test", log: createLogger({ level: "error" }) });
});
afterAll(async () => {
  await nats?.close();
});

test("consume status - a deleted consumer is logged as a stall, and its recovery once it is back with how long it took", async () => {
  const stream = `STALL_${process.pid}_${Date.now().toString(36)}`;
  await nats.jsm.streams.add({ name: stream, subjects: [`${stream}.>`] });
  const config = { durable_name: "sink", ack_policy: AckPolicy.Explicit };
  await nats.jsm.consumers.add(stream, config);
  const lines: Record<string, unknown>[] = [];
  const log = createLogger({ level: "info", write: (l) => lines.push(JSON.parse(l)) });
  const messages = await (await nats.js.consumers.get(stream, "sink")).consume({ max_messages: 10, expires: 2_000 });
  const status = logConsumeStatus(messages, log, { durable: "sink" });
  const received: number[] = [];
  void (async () => {
    for await (const m of messages) {
      status.delivered();
      received.push(m.seq);
      m.ack();
    }
  })();
  try {
    await nats.js.publish(`${stream}.a`, "1");
    for (let i = 0; i < 50 && received.length < 1; i++) await Bun.sleep(100);
    expect(received).toEqual([1]);

    // The waiting pull is answered "409 consumer deleted"; nats.js keeps the iterator and asks for the consumer until it is back.
    await nats.jsm.consumers.delete(stream, "sink");
    for (let i = 0; i < 50 && lines.length === 0; i++) await Bun.sleep(100);
    expect(lines[0]).toMatchObject({
      level: "warn",
      msg: "jetstream consumer stalled: nats.js pulls again once the consumer answers",
      durable: "sink",
    });
    expect(["consumer_deleted", "heartbeats_missed"]).toContain(lines[0]!.type as string);

    await nats.jsm.consumers.add(stream, config);
    await nats.js.publish(`${stream}.a`, "2");
    for (let i = 0; i < 200 && !lines.some((l) => l.msg === "jetstream consumer recovered"); i++) await Bun.sleep(100);
    const recovered = lines.find((l) => l.msg === "jetstream consumer recovered");
    // Ended by the message published after the consumer came back (the stream is not idle).
    expect(recovered).toMatchObject({ level: "info", durable: "sink", by: "message" });
    expect(recovered!.stalledMs as number).toBeGreaterThan(0);
    // One warning for the whole stall, whatever nats.js went through meanwhile.
    expect(lines.filter((l) => l.level === "warn")).toHaveLength(1);
    // The new consumer starts again at the stream's first message.
    for (let i = 0; i < 50 && !received.includes(2); i++) await Bun.sleep(100);
    expect(received).toContain(2);
  } finally {
    await messages.close();
    await nats.jsm.streams.delete(stream).catch(() => {});
  }
}, 30_000);
