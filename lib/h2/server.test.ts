// The server's edges, from the project's raw HTTP/2 client (test/raw-h2.ts: frames by hand, headers
// decoded by libnghttp2): CONTINUATION, padding, 1-byte DATA frames, PING, RST_STREAM, floods.
import { afterAll, expect, test } from "bun:test";
import { encodeHeaders, FLAG, FRAME, frame, grpcFrame, grpcMessages, RawH2 } from "../../test/raw-h2.ts";
import { type GrpcHandler, H2Server } from "./server";

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
