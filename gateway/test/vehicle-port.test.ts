/**
 * The vehicle port (GATEWAY_VEHICLE_PORT: lib/h2 through lib/grpc/serve-lite.ts) against hostile
 * HTTP/2, from the project's raw client (test/raw-h2.ts: frames by hand, headers decoded by
 * libnghttp2), and against clients that are not grpc-js: the project's vehicle client
 * (connect-node's gRPC transport) and curl over h2c. After every hostile case a Sync on another
 * connection of the same port still gets its acks: nothing stalls a neighbour.
 */
import { readFileSync } from "node:fs";
import net from "node:net";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, test } from "bun:test";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { SyncRequestSchema, SyncResponseSchema } from "../../gen/fleet/v1/ingest_pb";
import { createVehicleClient } from "../../client/vehicle-client";
import { encodeHeaders, FLAG, FRAME, frame, grpcFrame, grpcMessages, RawH2 } from "../../test/raw-h2";
import { grpc, IngestClient, point, startTestGateway, uploadPoints, type TestGateway } from "./helpers";

const MAX_STREAMS = 4;
let t: TestGateway;
let port: number;
/** A Sync on its own raw connection, held through the file. */
let keeper: { c: RawH2; id: number; seq: number };

const request = (token: string, method = "Sync"): [string, string][] => [
  [":method", "POST"],
  [":scheme", "http"],
  [":path", `/fleet.v1.IngestService/${method}`],
  [":authority", "gateway"],
  ["content-type", "application/grpc"],
  ["te", "trailers"],
  ["authorization", `Bearer ${token}`],
];
const syncPoint = (vehicleId: string, seq: number) =>
  grpcFrame(toBinary(SyncRequestSchema, create(SyncRequestSchema, { position: point(vehicleId, seq) })));
const lastDurable = (c: RawH2, id: number) => {
  const acks = grpcMessages(c.streams.get(id)!).map((m) => fromBinary(SyncResponseSchema, m).ack!);
  return acks.at(-1)?.durableSeq ?? -1;
};

beforeAll(async () => {
  t = await startTestGateway({ GATEWAY_VEHICLE_PORT: "0", GATEWAY_MAX_STREAMS_PER_CONNECTION: String(MAX_STREAMS) });
  port = t.gateway.vehiclePort!;
  const c = await RawH2.connect(port);
  keeper = { c, id: c.request(request(await t.token("vp-keeper"))), seq: 0 };
});

afterAll(async () => {
  keeper.c.close();
  await t.gateway.close();
});

afterEach(async () => {
  const seq = ++keeper.seq;
  await keeper.c.data(keeper.id, syncPoint("vp-keeper", seq), 16384, false);
  await keeper.c.until(() => lastDurable(keeper.c, keeper.id) === seq);
  expect(keeper.c.closed).toBe(false);
});

describe("vehicle port - HTTP/2 limits", () => {
  test("vehicle port - SETTINGS_MAX_CONCURRENT_STREAMS is GATEWAY_MAX_STREAMS_PER_CONNECTION; a stream past it is refused", async () => {
    const c = await RawH2.connect(port);
    const token = await t.token("vp-streams");
    const ids = Array.from({ length: MAX_STREAMS + 1 }, () => c.request(request(token)));
    await c.until(() => c.done(ids.at(-1)!));
    expect(c.serverSettings.get(3)).toBe(MAX_STREAMS);
    expect(c.streams.get(ids.at(-1)!)!.reset).toBe(7); // REFUSED_STREAM
    // The others are open and work.
    await c.data(ids[0]!, syncPoint("vp-streams", 1), 16384, true);
    await c.until(() => c.done(ids[0]!));
    expect(c.header(ids[0]!, "grpc-status")).toBe("0");
    c.close();
  });

  test("vehicle port - a header list over 16 KiB is RESOURCE_EXHAUSTED; the connection goes on", async () => {
    const c = await RawH2.connect(port);
    const token = await t.token("vp-headers");
    const block = encodeHeaders([...request(token), ["x-big", "x".repeat(20_000)]]);
    const id = 1;
    c.streams.set(id, { headers: [], data: [], ended: false });
    c.send(
      Buffer.concat([
        frame(FRAME.HEADERS, FLAG.END_STREAM, id, block.subarray(0, 16_000)),
        frame(FRAME.CONTINUATION, FLAG.END_HEADERS, id, block.subarray(16_000)),
      ]),
    );
    await c.until(() => c.done(id));
    expect(c.header(id, "grpc-status")).toBe("8");
    expect(c.header(id, "grpc-message")).toContain("request headers larger than 16384 bytes");
    // The next stream (by hand: the client numbered the first one itself) is served.
    const next = 3;
    c.streams.set(next, { headers: [], data: [], ended: false });
    c.send(
      Buffer.concat([
        frame(FRAME.HEADERS, FLAG.END_HEADERS, next, encodeHeaders(request(token, "Resume"))),
        frame(FRAME.DATA, FLAG.END_STREAM, next, grpcFrame(Buffer.alloc(0))),
      ]),
    );
    await c.until(() => c.done(next));
    expect(c.header(next, "grpc-status")).toBe("0");
    c.close();
  });

  test("vehicle port - endless CONTINUATION is GOAWAY ENHANCE_YOUR_CALM", async () => {
    const c = await RawH2.connect(port);
    c.send(frame(FRAME.HEADERS, 0, 1, encodeHeaders(request(await t.token("vp-cont")))));
    for (let i = 0; i < 10; i++) c.send(frame(FRAME.CONTINUATION, 0, 1, Buffer.alloc(8000)));
    await c.until(() => c.goaway !== undefined && c.closed);
    expect(c.goaway!.code).toBe(11);
  });

  test("vehicle port - a PING flood is GOAWAY ENHANCE_YOUR_CALM", async () => {
    const c = await RawH2.connect(port);
    c.send(Buffer.concat(Array.from({ length: 3000 }, () => frame(FRAME.PING, 0, 0, Buffer.alloc(8)))));
    await c.until(() => c.goaway !== undefined && c.closed);
    expect(c.goaway!.code).toBe(11);
    expect(c.pingAcks).toBeLessThanOrEqual(1000);
  });

  test("vehicle port - a SETTINGS flood is GOAWAY ENHANCE_YOUR_CALM", async () => {
    const c = await RawH2.connect(port);
    c.send(Buffer.concat(Array.from({ length: 3000 }, () => frame(FRAME.SETTINGS, 0, 0))));
    await c.until(() => c.goaway !== undefined && c.closed);
    expect(c.goaway!.code).toBe(11);
  });

  test("vehicle port - rapid reset (streams opened and reset at once) is GOAWAY ENHANCE_YOUR_CALM", async () => {
    const c = await RawH2.connect(port);
    const block = encodeHeaders(request(await t.token("vp-reset")));
    const frames: Buffer[] = [];
    for (let i = 0; i < 400; i++) {
      const id = 1 + 2 * i;
      frames.push(frame(FRAME.HEADERS, FLAG.END_HEADERS, id, block), frame(FRAME.RST_STREAM, 0, id, Buffer.from([0, 0, 0, 8])));
    }
    c.send(Buffer.concat(frames));
    await c.until(() => c.goaway !== undefined && c.closed);
    expect(c.goaway!.code).toBe(11);
  });

  test("vehicle port - WINDOW_UPDATE of 0 or past 2^31-1: stream reset or GOAWAY, as RFC 9113 says", async () => {
    const token = await t.token("vp-window");
    const inc = (n: number) => {
      const b = Buffer.alloc(4);
      b.writeUInt32BE(n);
      return b;
    };
    // On a stream: RST_STREAM PROTOCOL_ERROR (0) and FLOW_CONTROL_ERROR (too large); the connection goes on.
    const c = await RawH2.connect(port);
    const zero = c.request(request(token));
    c.send(frame(FRAME.WINDOW_UPDATE, 0, zero, inc(0)));
    const huge = c.request(request(token));
    c.send(frame(FRAME.WINDOW_UPDATE, 0, huge, inc(0x7fffffff)));
    await c.until(() => c.done(zero) && c.done(huge));
    expect(c.streams.get(zero)!.reset).toBe(1);
    expect(c.streams.get(huge)!.reset).toBe(3);
    expect(c.closed).toBe(false);
    c.close();
    // On the connection: GOAWAY PROTOCOL_ERROR and FLOW_CONTROL_ERROR.
    const d = await RawH2.connect(port);
    d.send(frame(FRAME.WINDOW_UPDATE, 0, 0, inc(0)));
    await d.until(() => d.goaway !== undefined && d.closed);
    expect(d.goaway!.code).toBe(1);
    const e = await RawH2.connect(port);
    e.send(frame(FRAME.WINDOW_UPDATE, 0, 0, inc(0x7fffffff)));
    await e.until(() => e.goaway !== undefined && e.closed);
    expect(e.goaway!.code).toBe(3);
  });

  test("vehicle port - other paths and content types are UNIMPLEMENTED naming the main port", async () => {
    const c = await RawH2.connect(port);
    const token = await t.token("vp-other");
    const other = c.request(
      request(token).map(([k, v]): [string, string] => [k, k === ":path" ? "/fleet.v1.TrackerService/Nearby" : v]),
      true,
    );
    const json = c.request([...request(token).filter(([k]) => k !== "content-type"), ["content-type", "application/grpc+json"]], true);
    await c.until(() => c.done(other) && c.done(json));
    expect(c.header(other, "grpc-status")).toBe("12");
    expect(c.header(other, "grpc-message")).toContain(`main port ${t.gateway.url}`);
    expect(c.header(json, "grpc-status")).toBe("12");
    c.close();
  });
});

describe("vehicle port - calls end", () => {
  const openSyncs = async () =>
    Number(/rpc_open_streams\{procedure="Sync"[^}]*\} (\d+)/.exec(await t.gateway.registry.metrics())?.[1] ?? 0);
  const untilOpenSyncs = async (n: number) => {
    const until = Date.now() + 3000;
    while ((await openSyncs()) !== n && Date.now() < until) await Bun.sleep(20);
    return openSyncs();
  };

  test("vehicle port - a stream reset for the client's protocol error ends its call (WINDOW_UPDATE 0, trailers without END_STREAM, DATA after END_STREAM)", async () => {
    // The keeper's Sync is open (its first answer came) before counting.
    await keeper.c.until(() => keeper.c.streams.get(keeper.id)!.data.length > 0);
    const before = await openSyncs();
    const poisons: [string, (c: RawH2, id: number) => void][] = [
      ["window-update-0", (c, id) => c.send(frame(FRAME.WINDOW_UPDATE, 0, id, Buffer.alloc(4)))],
      ["trailers-open", (c, id) => c.send(frame(FRAME.HEADERS, FLAG.END_HEADERS, id, encodeHeaders([["x-t", "1"]])))],
      [
        "data-after-end",
        (c, id) => c.send(Buffer.concat([frame(FRAME.DATA, FLAG.END_STREAM, id), frame(FRAME.DATA, 0, id, Buffer.alloc(5))])),
      ],
    ];
    for (const [name, poison] of poisons) {
      // No stream window: the Sync's first answer waits for it, so its handler waits too.
      const c = await RawH2.connect(port, [[4, 0]]);
      const v = `vp-poison-${name}`;
      const id = c.request(request(await t.token(v)));
      await c.data(id, syncPoint(v, 1), 16384, false);
      expect(await untilOpenSyncs(before + 1)).toBe(before + 1);
      poison(c, id);
      await c.until(() => c.streams.get(id)!.reset !== undefined);
      expect([name, await untilOpenSyncs(before)]).toEqual([name, before]);
      expect(c.closed).toBe(false);
      c.close();
    }
  });

  test("vehicle port - a call waiting for stream window ends at its grpc-timeout: RST_STREAM CANCEL, as its answers cannot leave", async () => {
    await keeper.c.until(() => keeper.c.streams.get(keeper.id)!.data.length > 0);
    const before = await openSyncs();
    const c = await RawH2.connect(port, [[4, 0]]);
    const v = "vp-deadline";
    const id = c.request([...request(await t.token(v)), ["grpc-timeout", "1S"]]);
    await c.data(id, syncPoint(v, 1), 16384, false);
    // The client is alive (PINGs) but gives no window.
    const ping = setInterval(() => c.send(frame(FRAME.PING, 0, 0, Buffer.alloc(8))), 300);
    try {
      const t0 = Date.now();
      await c.until(() => c.done(id), 4000);
      expect(Date.now() - t0).toBeLessThan(2500);
      expect(c.streams.get(id)!.reset).toBe(8); // CANCEL
      expect(await untilOpenSyncs(before)).toBe(before);
      expect(c.closed).toBe(false);
    } finally {
      clearInterval(ping);
      c.close();
    }
  });
});

describe("vehicle port - connections", () => {
  test("vehicle port - a connection that sends nothing gets GOAWAY NO_ERROR after twice GATEWAY_IDLE_TIMEOUT", async () => {
    const idle = await startTestGateway({ GATEWAY_VEHICLE_PORT: "0", GATEWAY_IDLE_TIMEOUT: "1s" });
    try {
      const c = await RawH2.connect(idle.gateway.vehiclePort!);
      const opened = Date.now();
      await c.until(() => c.goaway !== undefined && c.closed, 10_000);
      expect(c.goaway!.code).toBe(0);
      expect(Date.now() - opened).toBeGreaterThanOrEqual(1900);
    } finally {
      await idle.gateway.close();
    }
  }, 15_000);

  test("vehicle port - past FLEET_MAX_CONNECTIONS a new connection is closed at once; the others go on", async () => {
    const small = await startTestGateway({ GATEWAY_VEHICLE_PORT: "0", FLEET_MAX_CONNECTIONS: "3" });
    try {
      const p = small.gateway.vehiclePort!;
      const open = [await RawH2.connect(p), await RawH2.connect(p), await RawH2.connect(p)];
      for (const c of open) await c.until(() => c.serverSettings.size > 0);
      const refused = await RawH2.connect(p);
      await refused.until(() => refused.closed);
      expect(refused.serverSettings.size).toBe(0);
      const c = open[0]!;
      const id = c.request(request(await small.token("vp-max"), "Sync"));
      await c.data(id, syncPoint("vp-max", 1), 16384, true);
      await c.until(() => c.done(id));
      expect(c.header(id, "grpc-status")).toBe("0");
      for (const o of open) o.close();
      // Below the bound again, a connection is taken.
      await Bun.sleep(100);
      const again = await RawH2.connect(p);
      await again.until(() => again.serverSettings.size > 0);
      again.close();
    } finally {
      await small.gateway.close();
    }
  });
});

describe("vehicle port - acks", () => {
  test("vehicle port - the acks of one PubAck to 50 Sync streams of one connection leave in one socket write", async () => {
    // One partition: the 50 points are one JetStream message, acked in one callback.
    const one = await startTestGateway({ GATEWAY_VEHICLE_PORT: "0", FLEET_PARTITIONS: "1", GATEWAY_BATCH_DELAY: "20ms" });
    try {
      const writes = async () =>
        Number(/vehicle_port_socket_writes_total(?:\{[^}]*\})? (\d+)/.exec(await one.gateway.registry.metrics())?.[1] ?? Number.NaN);
      const c = await RawH2.connect(one.gateway.vehiclePort!);
      const ids: number[] = [];
      for (let i = 0; i < 50; i++) ids.push(c.request(request(await one.token(`vp-ack-${i}`))));
      // Each Sync's first message (its resume point) has come.
      await c.until(() => ids.every((id) => c.streams.get(id)!.data.length > 0));
      await Bun.sleep(50);
      const before = await writes();
      c.send(Buffer.concat(ids.map((id, i) => frame(FRAME.DATA, 0, id, syncPoint(`vp-ack-${i}`, 1)))));
      await c.until(() => ids.every((id) => lastDurable(c, id) === 1));
      expect((await writes()) - before).toBe(1);
      c.close();
    } finally {
      await one.gateway.close();
    }
  });
});

describe("vehicle port - other clients", () => {
  test("vehicle port - the project's vehicle client (connect-node gRPC transport) uploads and is acked", async () => {
    const vehicleId = "vp-client";
    const client = createVehicleClient({
      url: t.gateway.vehicleUrl!,
      vehicleId,
      token: await t.token(vehicleId),
      rollEvery: { points: 100, ms: 500 },
      backoff: { initialMs: 50, maxMs: 500 },
    });
    try {
      for (let i = 0; i < 500; i++) client.push({ lat: 52.5 + i * 1e-5, lon: 13.4, speed: 10, heading: 90, accuracy: 5 });
      await client.flush();
      expect(client.stats).toMatchObject({ pushed: 500, acked: 500, rejected: 0, durableSeq: 500 });
    } finally {
      await client.close();
    }
  });

  test("vehicle port - grpc-js over TLS (ALPN h2, GATEWAY_TLS_CERT) uploads and is acked", async () => {
    const fixtures = join(import.meta.dir, "..", "..", "test", "fixtures");
    const tls = await startTestGateway({
      GATEWAY_VEHICLE_PORT: "0",
      GATEWAY_TLS_CERT: join(fixtures, "localhost-cert.pem"),
      GATEWAY_TLS_KEY: join(fixtures, "localhost-key.pem"),
    });
    try {
      expect(tls.gateway.vehicleUrl).toStartWith("https://");
      const client = new IngestClient(
        `localhost:${tls.gateway.vehiclePort}`,
        grpc.credentials.createSsl(readFileSync(join(fixtures, "localhost-cert.pem"))),
        { "grpc.use_local_subchannel_pool": 1 },
      );
      const r = await uploadPoints(client, await tls.token("vp-tls"), [point("vp-tls", 1), point("vp-tls", 2)]);
      client.close();
      expect(r.error).toBeUndefined();
      expect(r.response!.ack!.durableSeq).toBe(2);
    } finally {
      await tls.gateway.close();
    }
  });

  test("vehicle port - over TLS, connections that never finish the handshake are counted, bounded by FLEET_MAX_CONNECTIONS and closed", async () => {
    const fixtures = join(import.meta.dir, "..", "..", "test", "fixtures");
    const tls = await startTestGateway({
      GATEWAY_VEHICLE_PORT: "0",
      GATEWAY_TLS_CERT: join(fixtures, "localhost-cert.pem"),
      GATEWAY_TLS_KEY: join(fixtures, "localhost-key.pem"),
      GATEWAY_IDLE_TIMEOUT: "1s",
      FLEET_MAX_CONNECTIONS: "5",
    });
    const silent: net.Socket[] = [];
    try {
      const counted = async () =>
        Number(/vehicle_port_connections(?:\{[^}]*\})? (\d+)/.exec(await tls.gateway.registry.metrics())?.[1] ?? Number.NaN);
      const connect = () => {
        const s = net.connect(tls.gateway.vehiclePort!, "127.0.0.1");
        const closed = new Promise<void>((resolve) => s.on("close", () => resolve()));
        s.on("error", () => {});
        silent.push(s);
        return closed;
      };
      // TCP connections that never send a ClientHello.
      const closed = Array.from({ length: 5 }, connect);
      const until = Date.now() + 3000;
      while ((await counted()) !== 5 && Date.now() < until) await Bun.sleep(20);
      expect(await counted()).toBe(5);
      // A sixth is past the bound: closed at once.
      const sixth = connect();
      expect(await Promise.race([sixth.then(() => "closed"), Bun.sleep(1000).then(() => "open")])).toBe("closed");
      // The silent ones are cut (twice GATEWAY_IDLE_TIMEOUT without a handshake).
      const t0 = Date.now();
      await Promise.race([Promise.all(closed), Bun.sleep(8000)]);
      expect(Date.now() - t0).toBeLessThan(8000);
      expect(await counted()).toBe(0);
      // A client that finishes its handshake is served.
      const client = new IngestClient(
        `localhost:${tls.gateway.vehiclePort}`,
        grpc.credentials.createSsl(readFileSync(join(fixtures, "localhost-cert.pem"))),
        { "grpc.use_local_subchannel_pool": 1 },
      );
      const r = await uploadPoints(client, await tls.token("vp-tls-silent"), [point("vp-tls-silent", 1)]);
      client.close();
      expect(r.error).toBeUndefined();
      expect(r.response!.ack!.durableSeq).toBe(1);
    } finally {
      for (const s of silent) s.destroy();
      await tls.gateway.close();
    }
  }, 20_000);

  test("vehicle port - curl over h2c: Resume answers, a bad token is UNAUTHENTICATED", async () => {
    const file = `/tmp/vp-curl-${process.pid}.bin`;
    await Bun.write(file, grpcFrame(Buffer.alloc(0)));
    const curl = (token: string) =>
      Bun.$`curl -sS --max-time 10 --http2-prior-knowledge -D - -o /dev/null -H ${"content-type: application/grpc"} -H ${"te: trailers"} -H ${`authorization: Bearer ${token}`} --data-binary @${file} ${`${t.gateway.vehicleUrl}/fleet.v1.IngestService/Resume`}`
        .nothrow()
        .then((r) => `${r.stdout}${r.stderr}`);
    const ok = await curl(await t.token("vp-curl"));
    expect(ok).toContain("HTTP/2 200");
    expect(ok).toMatch(/grpc-status: 0/);
    const bad = await curl("not-a-token");
    expect(bad).toMatch(/grpc-status: 16/);
  });
});
