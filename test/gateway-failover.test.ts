/**
 * Gateways in numbers: several gateway processes on one port (SO_REUSEPORT), vehicles that fail
 * over between gateway addresses when one is SIGKILLed, and a gateway that answers Resume only
 * once it has read what the others published. Every point a vehicle was told is acked is read back
 * from the stream, once.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { createClient } from "@connectrpc/connect";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { connect, headers } from "@nats-io/transport-node";
import { createIngestTransport, createVehicleClient, type VehicleClient } from "../client/vehicle-client";
import { freePort, startServiceProcess, testStack, type ServiceProcess } from "../dev";
import { createDurableSeqs, followPositions } from "../gateway/durable-seqs";
import { IngestService } from "../gen/fleet/v1/ingest_pb";
import { PositionBatchSchema, PositionSchema } from "../gen/fleet/v1/position_pb";
import { mintVehicleToken } from "../lib/auth";
import { silentLogger } from "../lib/log";
import { HEADERS, POSITIONS_STREAM } from "../lib/nats";

const keys = { secret: "gateway-failover-test-secret", issuer: "fleet", audience: "fleet" };
const run = Date.now().toString(36);
const RESUME = `procedure="Resume"`;

let stack: Awaited<ReturnType<typeof testStack>>;
const processes: ServiceProcess[] = [];

beforeAll(async () => {
  stack = await testStack(["nats"]);
}, 60_000);

afterAll(async () => {
  await Promise.all(processes.map((p) => p.stop("SIGKILL")));
});

const startGateway = async (port: number, env: Record<string, string> = {}) => {
  const p = await startServiceProcess({
    service: "gateway",
    env: {
      ...stack.env(),
      GATEWAY_PORT: String(port),
      FLEET_JWT_SECRET: keys.secret,
      FLEET_JWT_ISSUER: keys.issuer,
      FLEET_JWT_AUDIENCE: keys.audience,
      // Points pushed in a loop are milliseconds apart of recorded time: a flood by the vehicle's clock.
      GATEWAY_MAX_FIX_RATE: "0",
      LOG_LEVEL: "info",
      ...env,
    },
    logFile: `${stack.dir}/gateway-failover-${port}.log`,
  });
  processes.push(p);
  return p;
};

/** Resume calls a gateway process answered, from its /metrics. */
async function resumeCalls(adminUrl: string): Promise<number> {
  const text = await (await fetch(`${adminUrl}/metrics`)).text();
  let sum = 0;
  for (const line of text.split("\n")) {
    if (line.startsWith("rpc_calls_total{") && line.includes(RESUME)) sum += Number(line.split(" ").at(-1));
  }
  return sum;
}

/** Every (vehicle, seq) with the given prefix in the positions stream, and how many were there twice. */
async function readStream(prefix: string): Promise<{ found: Map<string, Set<number>>; copies: number }> {
  const nc = await connect({ servers: stack.natsUrl });
  const found = new Map<string, Set<number>>();
  let copies = 0;
  try {
    const info = await (await jetstreamManager(nc)).streams.info(POSITIONS_STREAM);
    const last = info.state.last_seq;
    if (last === 0) return { found, copies };
    const messages = await (await jetstream(nc).consumers.get(POSITIONS_STREAM)).consume();
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
  } finally {
    await nc.close();
  }
  return { found, copies };
}

/** Starts `count` vehicles pushing a point every `intervalMs`; stop() flushes and closes them. */
async function drive(prefix: string, count: number, url: string | string[], intervalMs = 10) {
  const clients: VehicleClient[] = [];
  for (let i = 0; i < count; i++) {
    const vehicleId = `${prefix}${i}`;
    clients.push(
      createVehicleClient({
        url,
        vehicleId,
        token: await mintVehicleToken(keys, vehicleId, { fleetId: "fleet-1" }),
        rollEvery: { points: 20, ms: 200 },
        backoff: { initialMs: 50, maxMs: 500 },
        ackTimeoutMs: 5_000,
      }),
    );
  }
  let i = 0;
  const timer = setInterval(() => {
    i++;
    for (const c of clients) c.push({ lat: 52.5 + i * 1e-5, lon: 13.4, speed: 5, heading: 90, accuracy: 5 });
  }, intervalMs);
  return {
    clients,
    async stop() {
      clearInterval(timer);
      await Promise.all(clients.map((c) => c.flush()));
      await Promise.all(clients.map((c) => c.close()));
    },
  };
}

/** Every seq up to each vehicle's durable seq is in the stream exactly once. */
async function expectAckedOnce(prefix: string, clients: VehicleClient[]) {
  const { found, copies } = await readStream(prefix);
  const missing: string[] = [];
  let promised = 0;
  for (const c of clients) {
    const have = found.get(c.vehicleId) ?? new Set<number>();
    for (let seq = 1; seq <= c.stats.durableSeq; seq++) {
      promised++;
      if (!have.has(seq)) missing.push(`${c.vehicleId}#${seq}`);
    }
    expect(c.stats).toMatchObject({ buffered: 0, rejected: 0, dropped: 0 });
    expect(c.stats.acked).toBe(c.stats.pushed);
  }
  expect(missing.slice(0, 10)).toEqual([]);
  expect(copies).toBe(0);
  return promised;
}

test("gateway - two processes serve one port with GATEWAY_REUSE_PORT; SIGKILL one and its vehicles resume on the other", async () => {
  const port = await freePort();
  const a = await startGateway(port, { GATEWAY_REUSE_PORT: "true" });
  const b = await startGateway(port, { GATEWAY_REUSE_PORT: "true" });
  expect(b.url).toBe(a.url);

  // Each Resume on a connection of its own: the kernel spreads connections over both processes.
  const token = await mintVehicleToken(keys, `${run}-probe`, { fleetId: "fleet-1" });
  for (let i = 0; i < 16; i++) {
    const client = createClient(IngestService, createIngestTransport({ url: a.url }));
    const res = await client.resume({}, { headers: { authorization: `Bearer ${token}` } });
    expect(res.durableSeq).toBe(0);
  }
  const perProcess = [await resumeCalls(a.adminUrl), await resumeCalls(b.adminUrl)];
  expect(perProcess[0]! + perProcess[1]!).toBe(16);
  expect(perProcess[0]).toBeGreaterThan(0);
  expect(perProcess[1]).toBeGreaterThan(0);

  // One address, two processes: the vehicles on the killed one reconnect to the same port.
  const prefix = `reuse-${run}-`;
  const fleet = await drive(prefix, 20, a.url);
  await Bun.sleep(1_000);
  await a.stop("SIGKILL");
  await Bun.sleep(1_000);
  await fleet.stop();
  expect(fleet.clients.some((c) => c.stats.reconnects > 0)).toBe(true);
  const promised = await expectAckedOnce(prefix, fleet.clients);
  expect(promised).toBeGreaterThan(20 * 50);
}, 30_000);

test("gateway - without GATEWAY_REUSE_PORT a second process on a taken port fails naming the port", async () => {
  const port = await freePort();
  await startGateway(port);
  await expect(startGateway(port)).rejects.toThrow(/its port is taken by another process/);
}, 30_000);

test("client - vehicles given two gateway addresses fail over when one is SIGKILLed, resume there, and lose nothing", async () => {
  const [p1, p2] = [await freePort(), await freePort()];
  const a = await startGateway(p1);
  const b = await startGateway(p2);
  const prefix = `failover-${run}-`;
  const fleet = await drive(prefix, 20, [a.url, b.url]);
  await Bun.sleep(1_000);
  // Every vehicle starts on the first address.
  expect(fleet.clients.every((c) => c.stats.gateway === 0 && c.stats.acked > 0)).toBe(true);
  await a.stop("SIGKILL");
  await Bun.sleep(1_000);
  await fleet.stop();
  for (const c of fleet.clients) expect(c.stats).toMatchObject({ gateway: 1, failovers: 1 });
  // Each vehicle asked the second gateway's Resume, which knew what the first had made durable.
  expect(await resumeCalls(b.adminUrl)).toBeGreaterThanOrEqual(20);
  const promised = await expectAckedOnce(prefix, fleet.clients);
  expect(promised).toBeGreaterThan(20 * 50);
}, 30_000);

test("gateway - Resume waits until the follower read what another gateway published just before", async () => {
  const nc = await connect({ servers: stack.natsUrl });
  const js = jetstream(nc);
  const jsm = await jetstreamManager(nc);
  const seqs = createDurableSeqs({ forgetAfterMs: 60_000 });
  const follower = await followPositions({
    js,
    jsm,
    stream: POSITIONS_STREAM,
    instanceId: "me",
    windowMs: 60_000,
    seqs,
    log: silentLogger,
  });
  try {
    await follower.ready;
    const info = await jsm.streams.info(POSITIONS_STREAM);
    const subject = info.config.subjects![0]!.replace(">", "0");
    let lagging = 0;
    for (let i = 1; i <= 20; i++) {
      // Ten vehicles at once, as a gateway's batches carry many: the last PubAck comes back
      // before the follower has read them all, most times.
      const ids = Array.from({ length: 10 }, (_, k) => `follow-${run}-${i}-${k}`);
      await Promise.all(
        ids.map((vehicleId) => {
          const position = create(PositionSchema, { vehicleId, seq: i, lat: 52.5, lon: 13.4, recordedAt: timestampFromMs(Date.now()) });
          const h = headers();
          h.set(HEADERS.gateway, "another-gateway");
          return js.publish(subject, toBinary(PositionBatchSchema, create(PositionBatchSchema, { positions: [position] })), { headers: h });
        }),
      );
      if (ids.some((id) => seqs.durableSeq(id) !== i)) lagging++;
      expect(await follower.caughtUp(2_000)).toBe(true);
      expect(ids.map((id) => seqs.durableSeq(id))).toEqual(ids.map(() => i));
    }
    console.log("follower behind the PubAck in", lagging, "of 20");
  } finally {
    await follower.stop();
    await nc.close();
  }
}, 30_000);
