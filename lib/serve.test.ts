import { afterEach, expect, test } from "bun:test";
import http2 from "node:http2";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { createContextKey, createContextValues, type ContextValues } from "@connectrpc/connect";
import { IngestService, ResumeRequestSchema, ResumeResponseSchema } from "../gen/fleet/v1/ingest_pb";
import { nativeUnaryMethods } from "./grpc-stream";
import { createLogger } from "./log";
import { createRegistry } from "./metrics";
import { serve, type Server, type ServeOptions } from "./serve";

const origin = createContextKey("none", { description: "which contextValues made this" });
let server: Server | undefined;

afterEach(async () => {
  await server?.close();
  server = undefined;
});

/** A server whose Resume answers through connect with vehicle "connect", natively with "native" plus the context value. */
async function start(contextValues?: ServeOptions["contextValues"]): Promise<Server> {
  server = await serve({
    routes: (router) => router.service(IngestService, { resume: () => ({ vehicleId: "connect" }) }),
    nativeMethods: nativeUnaryMethods(IngestService, { resume: (_req, ctx) => Promise.resolve({ vehicleId: `native ${ctx.values.get(origin)}` }) }),
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

/** One gRPC Resume over node:http2; the answer's vehicle id. */
async function resume(url: string): Promise<string> {
  const session = http2.connect(url);
  try {
    const body = toBinary(ResumeRequestSchema, create(ResumeRequestSchema, { vehicleId: "v" }));
    const frame = Buffer.alloc(5 + body.length);
    frame.writeUInt32BE(body.length, 1);
    frame.set(body, 5);
    const req = session.request({ ":method": "POST", ":path": "/fleet.v1.IngestService/Resume", "content-type": "application/grpc", te: "trailers" });
    req.end(frame);
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
