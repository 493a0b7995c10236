// The server's edges, from the project's raw HTTP/2 client (test/raw-h2.ts: frames by hand, headers
// decoded by libnghttp2): CONTINUATION, padding, 1-byte DATA frames, PING, RST_STREAM, floods.
import { readFileSync } from "node:fs";
import net from "node:net";
import { join } from "node:path";
import { afterAll, expect, test } from "bun:test";
import { encodeHeaders, FLAG, FRAME, frame, grpcFrame, grpcMessages, RawH2 } from "../../test/raw-h2.ts";
import { type Call, type GrpcHandler, H2Server } from "./server";

const Echo: GrpcHandler = {
  onMessage: (call, buf, start, end) => void call.write(buf.subarray(start, end)),
  onHalfClose: (call) => call.end(0),
};
const server = new H2Server((p) => (p === "/t.T/Echo" ? Echo : undefined), { maxConcurrentStreams: 2, maxMessageBytes: 1000 });
const listener = server.listen("127.0.0.1", 0);
afterAll(() => listener.stop(true));
const port = listener.port;
const req = (path = "/t.T/Echo"): [string, string][] => [
  [":method", "POST"],
  [":scheme", "http"],
  [":path", path],
  [":authority", "x"],
  ["content-type", "application/grpc"],
  ["te", "trailers"],
];

test("headers in CONTINUATION frames, padded DATA, 1-byte DATA frames", async () => {
  const c = await RawH2.connect(port);
  const block = encodeHeaders(req());
  const id = 1;
  c.streams.set(id, { headers: [], data: [], ended: false });
  c.send(
    Buffer.concat([
      frame(FRAME.HEADERS, 0, id, block.subarray(0, 10)),
      frame(FRAME.CONTINUATION, 0, id, block.subarray(10, 20)),
      frame(FRAME.CONTINUATION, FLAG.END_HEADERS, id, block.subarray(20)),
    ]),
  );
  const m1 = grpcFrame(Buffer.from("padded"));
  const padded = Buffer.concat([Buffer.from([4]), m1, Buffer.alloc(4)]);
  c.send(frame(FRAME.DATA, 0x8, id, padded));
  const m2 = grpcFrame(Buffer.from("byte by byte"));
  for (const b of m2) c.send(frame(FRAME.DATA, 0, id, Buffer.from([b])));
  c.send(frame(FRAME.DATA, FLAG.END_STREAM, id));
  await c.until(() => c.done(id));
  expect(grpcMessages(c.streams.get(id)!).map(String)).toEqual(["padded", "byte by byte"]);
  expect(c.header(id, "grpc-status")).toBe("0");
  c.close();
});

test("PING is acked; unknown method, too large, too many streams, RST_STREAM", async () => {
  const c = await RawH2.connect(port);
  c.send(frame(FRAME.PING, 0, 0, Buffer.alloc(8, 1)));
  const unknown = c.request(req("/t.T/Nope"), true);
  await c.until(() => c.pingAcks === 1 && c.done(unknown));
  expect(c.header(unknown, "grpc-status")).toBe("12");
  const big = c.request(req());
  await c.data(big, grpcFrame(Buffer.alloc(2000)), 16384, false);
  await c.until(() => c.done(big));
  expect(c.header(big, "grpc-status")).toBe("8");
  const a = c.request(req());
  const b = c.request(req());
  const refused = c.request(req());
  await c.until(() => c.done(refused));
  expect(c.streams.get(refused)!.reset).toBe(7); // REFUSED_STREAM above MAX_CONCURRENT_STREAMS
  c.send(frame(FRAME.RST_STREAM, 0, a, Buffer.from([0, 0, 0, 8])));
  await c.data(b, grpcFrame(Buffer.from("still here")), 100, true);
  await c.until(() => c.done(b));
  expect(grpcMessages(c.streams.get(b)!).map(String)).toEqual(["still here"]);
  expect(c.closed).toBe(false);
  c.close();
});

test("endless CONTINUATION is a flood: GOAWAY ENHANCE_YOUR_CALM", async () => {
  const c = await RawH2.connect(port);
  c.send(frame(FRAME.HEADERS, 0, 1, encodeHeaders(req())));
  for (let i = 0; i < 10; i++) c.send(frame(FRAME.CONTINUATION, 0, 1, Buffer.alloc(8000)));
  await c.until(() => c.goaway !== undefined);
  expect(c.goaway!.code).toBe(11);
});

test("empty or tiny CONTINUATION frames are a flood: GOAWAY ENHANCE_YOUR_CALM, a neighbour is served", async () => {
  for (const size of [0, 1]) {
    const c = await RawH2.connect(port);
    // Our SETTINGS ACK (sent on the server's SETTINGS) must not fall inside the header block.
    await c.until(() => c.serverSettings.size > 0);
    // Bytes well within the header-list bound: only the number of frames tells the flood.
    c.send(frame(FRAME.HEADERS, 0, 1, Buffer.alloc(1000, 0x40)));
    c.send(Buffer.concat(Array.from({ length: 5000 }, () => frame(FRAME.CONTINUATION, 0, 1, Buffer.alloc(size, 0x40)))));
    await c.until(() => c.goaway !== undefined && c.closed);
    expect(c.goaway!.code).toBe(11);
  }
  const d = await RawH2.connect(port);
  const id = d.request(req());
  await d.data(id, grpcFrame(Buffer.from("next door")), 100, true);
  await d.until(() => d.done(id));
  expect(grpcMessages(d.streams.get(id)!).map(String)).toEqual(["next door"]);
  d.close();
});

test("what handlers write in one turn leaves in one write per connection", async () => {
  // Each stream answers once all of them are open: 50 messages on 50 streams in one turn.
  const calls: Call[] = [];
  const Gather: GrpcHandler = {
    onMessage: (call) => {
      calls.push(call);
      if (calls.length < 50) return;
      const before = gather.writes;
      for (const c of calls) c.write(Buffer.from("ack"));
      void Promise.resolve().then(() => void (writesOfTurn = gather.writes - before));
    },
    onHalfClose: (call) => call.end(0),
  };
  let writesOfTurn = -1;
  const gather = new H2Server(() => Gather, { maxConcurrentStreams: 100 });
  const l = gather.listen("127.0.0.1", 0);
  try {
    const c = await RawH2.connect(l.port);
    const ids = Array.from({ length: 50 }, () => c.request(req()));
    for (const id of ids) await c.data(id, grpcFrame(Buffer.from("point")), 100, false);
    await c.until(() => ids.every((id) => c.streams.get(id)!.data.length > 0));
    expect(writesOfTurn).toBe(1);
    c.close();
  } finally {
    l.stop(true);
  }
});

test("a peer that stops reading is cut once maxBufferedBytes wait for it; another connection goes on", async () => {
  const events: string[] = [];
  const echo = new H2Server(() => Echo, { maxConcurrentStreams: 1000, maxBufferedBytes: 256 * 1024, onEvent: (e) => events.push(e) });
  const l = echo.listen("127.0.0.1", 0);
  try {
    // Windows as large as allowed, so that only the socket holds the server's answers back.
    const c = await RawH2.connect(l.port, [[4, 2 ** 31 - 1]]);
    const inc = Buffer.alloc(4);
    inc.writeUInt32BE(2 ** 31 - 1 - 65535);
    c.send(frame(FRAME.WINDOW_UPDATE, 0, 0, inc));
    c.socket.pause();
    // 300 streams of 60 KB each (within each stream's window): 18 MB of echo that nobody reads.
    const body = grpcFrame(Buffer.alloc(60_000 - 5, 7));
    const block = encodeHeaders(req());
    for (let i = 0; i < 300; i++) {
      const id = 1 + 2 * i;
      const frames = [frame(FRAME.HEADERS, FLAG.END_HEADERS, id, block)];
      for (let off = 0; off < body.length; off += 16_384) {
        const end = Math.min(body.length, off + 16_384);
        frames.push(frame(FRAME.DATA, end === body.length ? FLAG.END_STREAM : 0, id, body.subarray(off, end)));
      }
      // Once the server cut it, the paused socket hears of it no more: no 'drain' then.
      if (!c.socket.write(Buffer.concat(frames)))
        await Promise.race([new Promise((resolve) => c.socket.once("drain", resolve)), Bun.sleep(1000)]);
      if (events.includes("unread")) break;
    }
    const until = Date.now() + 5000;
    while (!events.includes("unread") && Date.now() < until) await Bun.sleep(20);
    expect(events).toContain("unread");
    expect(echo.connections.size).toBe(0);
    // Another client is served.
    const d = await RawH2.connect(l.port);
    const id = d.request(req());
    await d.data(id, grpcFrame(Buffer.from("hello")), 100, true);
    await d.until(() => d.done(id));
    expect(grpcMessages(d.streams.get(id)!).map(String)).toEqual(["hello"]);
    d.close();
    c.close();
  } finally {
    l.stop(true);
  }
});

test("over TLS, a connection without a handshake is counted and cut after handshakeTimeoutMs; a failed one at once", async () => {
  const fixtures = join(import.meta.dir, "..", "..", "test", "fixtures");
  const tls = { cert: readFileSync(join(fixtures, "localhost-cert.pem")), key: readFileSync(join(fixtures, "localhost-key.pem")) };
  const secure = new H2Server(() => Echo, { handshakeTimeoutMs: 300 });
  const l = secure.listen("127.0.0.1", 0, tls);
  try {
    const connect = (hello?: string) => {
      const s = net.connect(l.port, "127.0.0.1");
      s.on("error", () => {});
      if (hello) s.write(hello);
      return new Promise<number>((resolve) => s.on("close", () => resolve(Date.now())));
    };
    const t0 = Date.now();
    const silent = connect();
    const garbage = connect("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
    await Bun.sleep(100);
    expect(secure.connections.size).toBe(1); // the silent one; the failed handshake is gone
    expect((await garbage) - t0).toBeLessThan(300);
    expect((await silent) - t0).toBeGreaterThanOrEqual(300);
    expect(secure.connections.size).toBe(0);
  } finally {
    secure.close();
  }
});

test("a message's buffer grows with the bytes received, not with the length its prefix announces", async () => {
  const big = new H2Server(() => Echo, { maxConcurrentStreams: 100, maxMessageBytes: 64 * 1024 * 1024 });
  const l = big.listen("127.0.0.1", 0);
  try {
    const c = await RawH2.connect(l.port);
    // 40 streams, each a prefix announcing 16 MiB and 10 bytes of it.
    const prefix = Buffer.from([0, 0x01, 0, 0, 0]);
    const block = encodeHeaders(req());
    const before = process.memoryUsage().external;
    const frames: Buffer[] = [];
    for (let i = 0; i < 40; i++) {
      const id = 1 + 2 * i;
      frames.push(frame(FRAME.HEADERS, FLAG.END_HEADERS, id, block), frame(FRAME.DATA, 0, id, Buffer.concat([prefix, Buffer.alloc(10)])));
    }
    c.send(Buffer.concat([...frames, frame(FRAME.PING, 0, 0, Buffer.alloc(8))]));
    await c.until(() => c.pingAcks === 1);
    expect(process.memoryUsage().external - before).toBeLessThan(16 * 1024 * 1024);
    c.close();
    // Messages split across frames still arrive whole: 200 KB in 1,000-byte frames, and one whose prefix is split.
    const d = await RawH2.connect(l.port);
    const body = Buffer.alloc(200_000);
    for (let i = 0; i < body.length; i++) body[i] = i % 251;
    const a = d.request(req());
    await d.data(a, grpcFrame(body), 1000, true);
    const b = d.request(req());
    await d.data(b, Buffer.concat([grpcFrame(Buffer.from("one")), grpcFrame(Buffer.from("two"))]), 3, true);
    await d.until(() => d.done(a) && d.done(b), 10_000);
    expect(grpcMessages(d.streams.get(a)!)[0]!.equals(body)).toBe(true);
    expect(grpcMessages(d.streams.get(b)!).map(String)).toEqual(["one", "two"]);
    d.close();
  } finally {
    big.close();
  }
});

test("RFC 9113: WINDOW_UPDATE on an idle stream, HEADERS with a lower stream id, PRIORITY on stream 0 are connection PROTOCOL_ERROR", async () => {
  const cases: [string, (c: RawH2) => void][] = [
    ["window-update-idle", (c) => c.send(frame(FRAME.WINDOW_UPDATE, 0, 99, Buffer.from([0, 0, 1, 0])))],
    [
      "lower-stream-id",
      (c) => {
        c.send(frame(FRAME.HEADERS, FLAG.END_HEADERS, 5, encodeHeaders(req())));
        c.send(frame(FRAME.HEADERS, FLAG.END_HEADERS, 3, encodeHeaders(req())));
      },
    ],
    ["priority-stream-0", (c) => c.send(frame(2, 0, 0, Buffer.from([0, 0, 0, 1, 16])))],
  ];
  for (const [name, send] of cases) {
    const c = await RawH2.connect(port);
    await c.until(() => c.serverSettings.size > 0);
    send(c);
    await c.until(() => c.goaway !== undefined && c.closed);
    expect([name, c.goaway!.code]).toEqual([name, 1]);
  }
});

test("RFC 9113 8.2: a malformed request header list is a stream PROTOCOL_ERROR; the connection goes on", async () => {
  const c = await RawH2.connect(port);
  const bad: [string, [string, string][]][] = [
    ["uppercase name", [...req(), ["X-Upper", "1"]]],
    ["connection header", [...req(), ["connection", "keep-alive"]]],
    ["transfer-encoding", [...req(), ["transfer-encoding", "chunked"]]],
    ["te other than trailers", [...req().filter(([k]) => k !== "te"), ["te", "gzip"]]],
    ["pseudo-header after a regular one", [...req().filter(([k]) => k !== ":authority"), [":authority", "x"]]],
    ["unknown pseudo-header", [[":protocol", "x"], ...req()]],
    ["duplicate pseudo-header", [[":path", "/t.T/Echo"], ...req()]],
    ["no :path", req().filter(([k]) => k !== ":path")],
  ];
  const ids = bad.map(([, headers]) => c.request(headers));
  await c.until(() => ids.every((id) => c.done(id)));
  expect(bad.map(([name], i) => [name, c.streams.get(ids[i]!)!.reset])).toEqual(bad.map(([name]) => [name, 1]));
  const ok = c.request(req());
  await c.data(ok, grpcFrame(Buffer.from("fine")), 100, true);
  await c.until(() => c.done(ok));
  expect(grpcMessages(c.streams.get(ok)!).map(String)).toEqual(["fine"]);
  c.close();
});

test("a call that fails while its DATA waits for window keeps its status: the trailers follow the DATA once the client reads", async () => {
  const Fails: GrpcHandler = {
    onMessage: (call) => {
      call.write(Buffer.from("ack"));
      call.end(3, "bad point: latitude out of range");
    },
    onHalfClose: () => {},
  };
  const failing = new H2Server(() => Fails, {});
  const l = failing.listen("127.0.0.1", 0);
  try {
    // No stream window: the ack waits, and the status with it.
    const c = await RawH2.connect(l.port, [[4, 0]]);
    const id = c.request(req());
    await c.data(id, grpcFrame(Buffer.from("point")), 100, false);
    await Bun.sleep(200);
    expect(c.streams.get(id)!.reset).toBeUndefined();
    expect(c.done(id)).toBe(false);
    c.send(frame(FRAME.WINDOW_UPDATE, 0, id, Buffer.from([0, 0, 1, 0])));
    await c.until(() => c.done(id));
    expect(grpcMessages(c.streams.get(id)!).map(String)).toEqual(["ack"]);
    expect(c.header(id, "grpc-status")).toBe("3");
    expect(c.header(id, "grpc-message")).toContain("latitude");
    c.close();
  } finally {
    l.stop(true);
  }
});

test("DATA beyond a paused stream's window is GOAWAY FLOW_CONTROL_ERROR", async () => {
  // The gateway's calls start paused (nothing credited before auth); a paused call's stream window
  // is not given back, so 80 KB sent at once without waiting for any WINDOW_UPDATE exceeds it. (The
  // same test through the gateway raced its auth: once the handler reads, the window is credited as
  // DATA arrives, and a split read let the 80 KB fit: failed 1 in ~10 CI runs.)
  const Paused: GrpcHandler = { onOpen: (call) => call.pause(), onMessage: () => {}, onHalfClose: () => {} };
  const paused = new H2Server(() => Paused, {});
  const l = paused.listen("127.0.0.1", 0);
  try {
    const c = await RawH2.connect(l.port);
    const body = Buffer.alloc(81_920);
    const frames = [frame(FRAME.HEADERS, FLAG.END_HEADERS, 1, encodeHeaders(req()))];
    for (let off = 0; off < body.length; off += 16_384) frames.push(frame(FRAME.DATA, 0, 1, body.subarray(off, off + 16_384)));
    c.send(Buffer.concat(frames));
    await c.until(() => c.goaway !== undefined && c.closed);
    expect(c.goaway!.code).toBe(3);
  } finally {
    l.stop(true);
  }
});
