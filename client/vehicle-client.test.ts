import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { Code, ConnectError } from "@connectrpc/connect";
import { RejectReason, type Rejection } from "../gen/fleet/v1/ingest_pb";
import { createGateway, type Gateway } from "../gateway/gateway";
import { mintVehicleToken, type TokenKeys } from "../lib/auth";
import { loadConfig } from "../lib/config";
import { freePort, testStack } from "../dev";
import { silentLogger } from "../lib/log";
import { createIngestTransport, createVehicleClient, type VehicleClientOptions } from "./vehicle-client";

const keys: TokenKeys = { secret: "client-test-secret", issuer: "fleet", audience: "fleet" };
const run = Date.now().toString(36);
let n = 0;
const newVehicle = () => `client-${run}-${++n}`;

let gateway: Gateway;
let natsUrl: string;
const streamName = `CLIENT_TEST_${run.toUpperCase()}`;
const gatewayConfig = (port: number) =>
  loadConfig(
    {},
    {
      secret: keys.secret,
      gatewayPort: port,
      logLevel: "error",
      // Points pushed in a loop are microseconds apart of recorded time: a flood by the vehicle's clock.
      fixRate: 0,
      // The test NATS reserves each stream's max_bytes.
      streamMaxBytes: 64 * 1024 * 1024,
    },
  );
const startGateway = (port = 0) =>
  createGateway({
    config: gatewayConfig(port),
    natsUrl,
    log: silentLogger,
    stream: streamName,
    subjectPrefix: `clienttest.${run}.`,
  });

beforeAll(async () => {
  const stack = await testStack(["nats"]);
  natsUrl = stack.natsUrl;
  gateway = await startGateway();
}, 60_000);

afterAll(async () => {
  await gateway?.close();
});

const point = (i: number, extra: Record<string, unknown> = {}) => ({
  lat: 52.5 + i * 1e-5,
  lon: 13.4,
  speed: 10,
  heading: 90,
  accuracy: 5,
  ...extra,
});

async function clientFor(vehicleId: string, options: Partial<VehicleClientOptions> = {}) {
  const token = await mintVehicleToken(keys, vehicleId, { fleetId: "fleet-1" });
  return createVehicleClient({
    url: gateway.url,
    vehicleId,
    token,
    rollEvery: { points: 100, ms: 500 },
    backoff: { initialMs: 50, maxMs: 500 },
    ...options,
  });
}

describe("vehicle client", () => {
  test("client - flush resolves once every pushed point is acked, seqs start at 1", async () => {
    const acks: number[] = [];
    const client = await clientFor(newVehicle(), { onAck: (s) => acks.push(s) });
    for (let i = 0; i < 1000; i++) expect(client.push(point(i))).toBe(true);
    await client.flush();
    const s = client.stats;
    expect(s).toMatchObject({ pushed: 1000, acked: 1000, rejected: 0, dropped: 0, buffered: 0, durableSeq: 1000 });
    // Rolled every 100 points: several acks, increasing.
    expect(acks.length).toBeGreaterThanOrEqual(10);
    expect(acks).toEqual([...acks].sort((a, b) => a - b));
    expect(acks.at(-1)).toBe(1000);
    await client.close();
  });

  test("client - refused points come back with their reason, the others are acked", async () => {
    const refused: Rejection[] = [];
    const client = await clientFor(newVehicle(), { onReject: (r) => refused.push(r) });
    client.push(point(0));
    client.push(point(1, { lat: Number.NaN }));
    client.push(point(2, { recordedAt: { seconds: BigInt(Math.floor(Date.now() / 1000) + 3600), nanos: 0 } }));
    client.push(point(3));
    await client.flush();
    expect(refused.map((r) => [r.seq, r.reason])).toEqual([
      [2, RejectReason.INVALID_COORDINATES],
      [3, RejectReason.TIME_IN_FUTURE],
    ]);
    expect(client.stats).toMatchObject({ acked: 2, rejected: 2, buffered: 0, durableSeq: 4 });
    await client.close();
  });

  test("client - a dropped stream is resumed without losing points", async () => {
    const client = await clientFor(newVehicle(), { rollEvery: { points: 1000, ms: 60_000 } });
    for (let i = 0; i < 300; i++) client.push(point(i));
    await Bun.sleep(50);
    client.disconnect();
    for (let i = 300; i < 600; i++) client.push(point(i));
    await client.flush();
    expect(client.stats).toMatchObject({ pushed: 600, acked: 600, rejected: 0, buffered: 0, durableSeq: 600 });
    expect(client.stats.reconnects).toBeGreaterThanOrEqual(1);
    await client.close();
  });

  test("client - a new client for the same vehicle continues after the resume point", async () => {
    const id = newVehicle();
    const first = await clientFor(id);
    for (let i = 0; i < 50; i++) first.push(point(i));
    await first.flush();
    await first.close();
    const second = await clientFor(id);
    for (let i = 0; i < 10; i++) second.push(point(i));
    await second.flush();
    expect(second.stats).toMatchObject({ acked: 10, rejected: 0, durableSeq: 60 });
    await second.close();
  });

  test("client - many clients share one HTTP/2 transport", async () => {
    const transport = createIngestTransport({ url: gateway.url });
    const clients = await Promise.all(Array.from({ length: 50 }, () => clientFor(newVehicle(), { transport })));
    for (let i = 0; i < 20; i++) for (const c of clients) c.push(point(i));
    await Promise.all(clients.map((c) => c.flush()));
    for (const c of clients) expect(c.stats).toMatchObject({ acked: 20, durableSeq: 20 });
    await Promise.all(clients.map((c) => c.close()));
  });

  test("client - a bad token stops the client with UNAUTHENTICATED, without a retry loop", async () => {
    const id = newVehicle();
    const token = await mintVehicleToken({ ...keys, secret: "not-the-secret" }, id);
    let stoppedWith: ConnectError | undefined;
    const client = createVehicleClient({ url: gateway.url, vehicleId: id, token, onError: (e) => (stoppedWith = e) });
    client.push(point(0));
    const err = await client.flush().then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(ConnectError);
    expect((err as ConnectError).code).toBe(Code.Unauthenticated);
    expect(stoppedWith?.code).toBe(Code.Unauthenticated);
    expect(client.stats.reconnects).toBe(0);
    expect(client.push(point(1))).toBe(false);
    await client.close();
  });

  test("client - a token of another vehicle is refused with PERMISSION_DENIED", async () => {
    const token = await mintVehicleToken(keys, newVehicle());
    const client = createVehicleClient({ url: gateway.url, vehicleId: newVehicle(), token });
    client.push(point(0));
    const err = (await client.flush().catch((e: unknown) => e)) as ConnectError;
    expect(err.code).toBe(Code.PermissionDenied);
    await client.close();
  });

  /** A client of a new vehicle pointed at a free port where no gateway listens (yet). */
  async function clientOfAbsentGateway(over: Partial<VehicleClientOptions>) {
    const port = await freePort();
    const vehicleId = newVehicle();
    const token = await mintVehicleToken(keys, vehicleId);
    return { port, client: createVehicleClient({ url: `http://127.0.0.1:${port}`, vehicleId, token, ...over }) };
  }

  test("client - keeps the newest points when the buffer is full and the gateway is away", async () => {
    const { client } = await clientOfAbsentGateway({ bufferLimit: 10, backoff: { initialMs: 20, maxMs: 100 } });
    for (let i = 0; i < 25; i++) client.push(point(i));
    expect(client.stats).toMatchObject({ pushed: 25, dropped: 15, buffered: 10, acked: 0 });
    await client.close();
  });

  test("client - with two gateway URLs, moves to the second when the first is gone and resumes from its answer", async () => {
    const first = await startGateway();
    const id = newVehicle();
    const client = await clientFor(id, { url: [first.url, gateway.url] });
    try {
      for (let i = 0; i < 300; i++) client.push(point(i));
      await client.flush();
      expect(client.stats).toMatchObject({ gateway: 0, failovers: 0, durableSeq: 300 });
      await first.close();
      for (let i = 300; i < 600; i++) client.push(point(i));
      await client.flush();
      // The second gateway knew seq 300 from the stream: nothing was sent twice, nothing refused.
      expect(client.stats).toMatchObject({ gateway: 1, failovers: 1, acked: 600, rejected: 0, buffered: 0, durableSeq: 600 });
    } finally {
      await client.close();
      await first.close();
    }
  });

  test("client - buffers while the gateway is down and delivers once it is up", async () => {
    const { client, port } = await clientOfAbsentGateway({ backoff: { initialMs: 50, maxMs: 200 }, rollEvery: { points: 50, ms: 200 } });
    for (let i = 0; i < 100; i++) client.push(point(i));
    await Bun.sleep(500);
    expect(client.stats.acked).toBe(0);
    expect(client.stats.reconnects).toBeGreaterThan(0);
    const late = await startGateway(port);
    try {
      await client.flush();
      expect(client.stats).toMatchObject({ acked: 100, buffered: 0, durableSeq: 100 });
    } finally {
      await client.close();
      await late.close();
    }
  });
});
