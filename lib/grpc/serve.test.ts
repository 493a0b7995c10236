import { afterEach, expect, test } from "bun:test";
import http2 from "node:http2";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { createContextKey, createContextValues, type ContextValues } from "@connectrpc/connect";
import { IngestService, ResumeRequestSchema, ResumeResponseSchema } from "../../gen/fleet/v1/ingest_pb";
import { TrackerService, WatchVehiclesRequestSchema, WatchVehiclesResponseSchema } from "../../gen/fleet/v1/tracker_pb";
import { nativeServerStream, nativeUnaryMethods } from "./methods";
import { createLogger } from "../log";
import { createRegistry } from "../metrics";
import { serve, type Server, type ServeOptions } from "./serve";

const origin = createContextKey("none", { description: "which contextValues made this" });
let server: Server | undefined;

afterEach(async () => {
  await server?.close();
  server = undefined;
});

/** A server whose Resume answers through connect with vehicle "connect", natively with "native" plus the context value. */
async function start(contextValues?: ServeOptions["contextValues"], nativeMethods?: ServeOptions["nativeMethods"]): Promise<Server> {
  server = await serve({
    routes: (router) => router.service(IngestService, { resume: () => ({ vehicleId: "connect" }) }),
    nativeMethods:
      nativeMethods ??
      nativeUnaryMethods(IngestService, { resume: (_req, ctx) => Promise.resolve({ vehicleId: `native ${ctx.values.get(origin)}` }) }),
    host: "127.0.0.1",
    port: 0,
    registry: createRegistry("serve-test", { processMetrics: false }),
    log: createLogger({ level: "error" }),
    maxMessageBytes: 1 << 20,
    maxStreamsPerConnection: 100,
    idleTimeoutMs: 10_000,
    contextValues,
  });
  return server;
}

/** A gRPC request of one message on a new stream of `session`. */
function grpcRequest(session: http2.ClientHttp2Session, path: string, body: Uint8Array): http2.ClientHttp2Stream {
  const frame = Buffer.alloc(5 + body.length);
  frame.writeUInt32BE(body.length, 1);
  frame.set(body, 5);
  const req = session.request({ ":method": "POST", ":path": path, "content-type": "application/grpc", te: "trailers" });
  req.end(frame);
  return req;
}

/** One gRPC Resume over node:http2; the answer's vehicle id. */
async function resume(url: string): Promise<string> {
  const session = http2.connect(url);
  try {
    const req = grpcRequest(
      session,
      "/fleet.v1.IngestService/Resume",
      toBinary(ResumeRequestSchema, create(ResumeRequestSchema, { vehicleId: "v" })),
    );
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    await new Promise((resolve, reject) => {
      req.on("end", resolve);
      req.on("error", reject);
    });
    const data = Buffer.concat(chunks);
    return fromBinary(ResumeResponseSchema, data.subarray(5, 5 + data.readUInt32BE(1))).vehicleId;
  } finally {
    session.close();
  }
}

test("serve - a native method over gRPC is answered by the native path", async () => {
  const s = await start();
  expect(await resume(s.url)).toBe("native none");
});

test("serve - with contextValues, a native call still gets the values made from its request", async () => {
  const s = await start((req): ContextValues => createContextValues().set(origin, `from ${req.headers["content-type"]}`));
  expect(await resume(s.url)).toBe("native from application/grpc");
});

/** Reads a WatchVehicles call of `method` through a client that stops reading for 300 ms after its first bytes: each message's first event's `coalesced`, and the status. */
async function readStalled(method: ReturnType<typeof nativeServerStream>): Promise<{ seen: number[]; status: unknown }> {
  const s = await start(undefined, [method]);
  const session = http2.connect(s.url);
  try {
    const req = grpcRequest(
      session,
      "/fleet.v1.TrackerService/WatchVehicles",
      toBinary(WatchVehiclesRequestSchema, create(WatchVehiclesRequestSchema, { vehicleIds: ["v"] })),
    );
    const chunks: Buffer[] = [];
    let stalled = false;
    req.on("data", (c: Buffer) => {
      chunks.push(c);
      if (!stalled) {
        stalled = true;
        req.pause();
        setTimeout(() => req.resume(), 300);
      }
    });
    const trailers = new Promise<http2.IncomingHttpHeaders>((resolve) => req.on("trailers", resolve));
    await new Promise((resolve, reject) => {
      req.on("end", resolve);
      req.on("error", reject);
    });
    const data = Buffer.concat(chunks);
    const seen: number[] = [];
    let at = 0;
    while (data.length - at >= 5 && data.length - at - 5 >= data.readUInt32BE(at + 1)) {
      const len = data.readUInt32BE(at + 1);
      seen.push(fromBinary(WatchVehiclesResponseSchema, data.subarray(at + 5, at + 5 + len)).events[0]!.coalesced);
      at += 5 + len;
    }
    expect(at).toBe(data.length);
    return { seen, status: (await trailers)["grpc-status"] };
  } finally {
    session.close();
  }
}

test("serve - a large last message is all sent before the trailers, also to a client that stalls", async () => {
  // ~400 KB: more than the stream's flow-control window, so part of it waits for the client.
  const big = Array.from({ length: 40_000 }, (_, i) => ({ coalesced: i }));
  const r = await readStalled(
    nativeServerStream(TrackerService.method.watchVehicles, async function* () {
      yield { events: big };
    }),
  );
  expect(r.status).toBe("0");
  expect(r.seen).toEqual([0]);
});

test("serve - a server stream's messages arrive whole and in order through a client that stalls", async () => {
  const count = 5000;
  const method = nativeServerStream(
    TrackerService.method.watchVehicles,
    async function* () {
      for (let i = 0; i < count; i++) yield { events: [{ coalesced: i }] };
    },
    // A small high-water mark: a write callback every 256 bytes, so frames are held often.
    { writeHighWaterBytes: 1024 },
  );
  const r = await readStalled(method);
  expect(r.status).toBe("0");
  expect(r.seen).toEqual(Array.from({ length: count }, (_, i) => i));
});
