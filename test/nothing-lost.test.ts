/**
 * End to end: nothing a vehicle was told is durable goes missing, across a gateway crash
 * (SIGKILL, restart on the same port) and a nats-server restart, with 200 vehicles streaming
 * through the client library (driven by the simulator) the whole time.
 */
import { afterAll, expect, test } from "bun:test";
import { fromBinary } from "@bufbuild/protobuf";
import { connect } from "@nats-io/transport-node";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { PositionBatchSchema } from "../gen/fleet/v1/position_pb";
import { RejectReason } from "../gen/fleet/v1/ingest_pb";
import { createSimulator } from "../sim/simulator";
import { freePort, startServiceProcess, testStack, type ServiceProcess } from "../dev";
import { POSITIONS_STREAM } from "../lib/nats";

const VEHICLES = 200;
const keys = { secret: "nothing-lost-test-secret", issuer: "fleet", audience: "fleet" };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let gateway: ServiceProcess | undefined;
afterAll(async () => {
  await gateway?.stop("SIGKILL");
});

test("nothing lost - every acked point is in JetStream after a gateway SIGKILL and a NATS restart", async () => {
  const stack = await testStack(["nats"]);
  const port = await freePort();
  const env = {
    ...stack.env(),
    GATEWAY_PORT: String(port),
    FLEET_JWT_SECRET: keys.secret,
    FLEET_JWT_ISSUER: keys.issuer,
    FLEET_JWT_AUDIENCE: keys.audience,
    // info: the "listening" line is what startServiceProcess waits for.
    LOG_LEVEL: "info",
  };
  const logFile = `${stack.dir}/nothing-lost-gateway.log`;
  const startGateway = () => startServiceProcess({ service: "gateway", env, logFile });
  gateway = await startGateway();

  // Unique ids, so that other tests writing to the same stream do not matter.
  const prefix = `nl-${Date.now().toString(36)}-`;
  const acked = new Map<string, number>();
  const refused = new Map<string, Set<number>>();
  const sim = createSimulator({
    url: `http://127.0.0.1:${port}`,
    keys,
    vehicles: VEHICLES,
    intervalMs: 100,
    badFixRate: 0,
    disconnectRate: 0.002,
    vehiclesPerConnection: 100,
    idPrefix: prefix,
    client: { rollEvery: { points: 20, ms: 1000 }, backoff: { initialMs: 100, maxMs: 1000 }, ackTimeoutMs: 10_000 },
    onAck: (id, seq) => acked.set(id, Math.max(acked.get(id) ?? 0, seq)),
    onReject: (id, r) => {
      if (r.reason === RejectReason.DUPLICATE) return;
      let s = refused.get(id);
      if (!s) refused.set(id, (s = new Set()));
      s.add(r.seq);
    },
  });
  await sim.start();

  await sleep(2_000);
  const beforeKill = sim.stats().acked;
  expect(beforeKill).toBeGreaterThan(0);
  await gateway.stop("SIGKILL");
  await sleep(500);
  gateway = await startGateway();

  await sleep(2_000);
  await stack.stopService("nats");
  await sleep(1_500);
  await stack.startService("nats");

  await sleep(3_000);
  await sim.stop(25_000);
  const stats = sim.stats();
  console.log("nothing-lost simulator", JSON.stringify(stats));
  // Everything was flushed: the clients hold nothing unacked.
  expect(stats.buffered).toBe(0);
  expect(stats.failed).toBe(0);
  expect(stats.reconnects).toBeGreaterThan(0);
  // No bad fixes were sent: every point ends up acked, none is given up on.
  expect(stats.acked).toBe(stats.sent);
  expect(acked.size).toBe(VEHICLES);

  // Read the whole stream back and collect every (vehicle, seq) of this run.
  const nc = await connect({ servers: stack.natsUrl });
  const found = new Map<string, Set<number>>();
  let copies = 0;
  try {
    const js = jetstream(nc);
    const info = await (await jetstreamManager(nc)).streams.info(POSITIONS_STREAM);
    const last = info.state.last_seq;
    if (last > 0) {
      const consumer = await js.consumers.get(POSITIONS_STREAM);
      const messages = await consumer.consume();
      for await (const m of messages) {
        for (const p of fromBinary(PositionBatchSchema, m.data).positions) {
          if (!p.vehicleId.startsWith(prefix)) continue;
          let s = found.get(p.vehicleId);
          if (!s) found.set(p.vehicleId, (s = new Set()));
          if (s.has(p.seq)) copies++;
          s.add(p.seq);
        }
        if (m.seq >= last) break;
      }
    }
  } finally {
    await nc.close();
  }

  const missing: string[] = [];
  let promised = 0;
  for (const [id, upTo] of acked) {
    const have = found.get(id) ?? new Set<number>();
    const no = refused.get(id);
    for (let seq = 1; seq <= upTo; seq++) {
      if (no?.has(seq)) continue;
      promised++;
      if (!have.has(seq)) missing.push(`${id}#${seq}`);
    }
  }
  // Refused points are not promised; those in the stream anyway were refused while still in flight.
  let refusedInStream = 0;
  let refusedTotal = 0;
  for (const [id, seqs] of refused) {
    for (const seq of seqs) {
      refusedTotal++;
      if (found.get(id)?.has(seq)) refusedInStream++;
    }
  }
  console.log(
    "nothing-lost stream",
    JSON.stringify({ promised, missing: missing.length, duplicateCopies: copies, refusedTotal, refusedInStream }),
  );
  expect(promised).toBeGreaterThan(VEHICLES * 50);
  expect(missing.slice(0, 20)).toEqual([]);
}, 90_000);
