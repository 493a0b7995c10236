/**
 * The native gRPC path of Upload, Sync and the unary methods (lib/grpc/router.ts) at the byte level, with a raw
 * node:http2 client: framing across DATA frames, protocol errors, deadlines, cancellation, and
 * flow control holding a fast sender back.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import http2 from "node:http2";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import {
  PublishRequestSchema,
  PublishResponseSchema,
  ResumeResponseSchema,
  UploadRequestSchema,
  UploadResponseSchema,
} from "../../gen/fleet/v1/ingest_pb";
import { point, startTestGateway, type TestGateway } from "./helpers";

/** One gRPC frame of an UploadRequest carrying a point. */
function frame(vehicleId: string, seq: number, flags = 0): Buffer {
  const body = toBinary(UploadRequestSchema, create(UploadRequestSchema, { position: point(vehicleId, seq) }));
  const out = Buffer.alloc(5 + body.length);
  out[0] = flags;
  out.writeUInt32BE(body.length, 1);
  out.set(body, 5);
  return out;
}

interface RawCall {
  stream: http2.ClientHttp2Stream;
  /** Resolves with grpc-status, grpc-message and the response message bytes. */
  done: Promise<{ status: string; message: string; body: Buffer; headers: http2.IncomingHttpHeaders }>;
}

function rawUpload(session: http2.ClientHttp2Session, token: string, extra: http2.OutgoingHttpHeaders = {}, method = "Upload"): RawCall {
  const stream = session.request({
    ":method": "POST",
    ":path": `/fleet.v1.IngestService/${method}`,
    "content-type": "application/grpc",
    te: "trailers",
    authorization: `Bearer ${token}`,
    ...extra,
  });
  const done = new Promise<{ status: string; message: string; body: Buffer; headers: http2.IncomingHttpHeaders }>((resolve) => {
    const chunks: Buffer[] = [];
    let headers: http2.IncomingHttpHeaders = {};
    let status = "";
    let message = "";
    stream.on("response", (h) => {
      headers = h;
      if (h["grpc-status"] !== undefined) {
        status = String(h["grpc-status"]);
        message = String(h["grpc-message"] ?? "");
      }
    });
    stream.on("data", (c: Buffer) => chunks.push(c));
    stream.on("trailers", (t) => {
      status = String(t["grpc-status"]);
      message = String(t["grpc-message"] ?? "");
      headers = { ...headers, ...t };
    });
    stream.on("error", () => {});
    // The server's end of the stream is the end of the call, whether or not the client half-closed.
    const finish = () => resolve({ status, message, body: Buffer.concat(chunks), headers });
    stream.on("end", finish);
    stream.on("close", finish);
  });
  return { stream, done };
}

const ackOf = (body: Buffer) => fromBinary(UploadResponseSchema, body.subarray(5)).ack!;

describe("native grpc", () => {
  let t: TestGateway;
  let session: http2.ClientHttp2Session;
  beforeAll(async () => {
    t = await startTestGateway();
    session = http2.connect(t.gateway.url);
  });
  afterAll(async () => {
    session.close();
    await t.gateway.close();
  });

  test("native grpc - a message split across DATA frames and several messages in one frame are all taken", async () => {
    const v = "native-split";
    const call = rawUpload(session, await t.token(v));
    const first = frame(v, 1);
    // The prefix alone, then the rest of the message in pieces.
    call.stream.write(first.subarray(0, 3));
    await Bun.sleep(20);
    call.stream.write(first.subarray(3, 10));
    await Bun.sleep(20);
    call.stream.write(first.subarray(10));
    // Three messages in one write, the third cut short and finished by the next write.
    const many = Buffer.concat([frame(v, 2), frame(v, 3), frame(v, 4)]);
    call.stream.write(many.subarray(0, many.length - 4));
    await Bun.sleep(20);
    call.stream.end(Buffer.concat([many.subarray(many.length - 4), frame(v, 5)]));
    const r = await call.done;
    expect(r.status).toBe("0");
    expect(r.headers["content-type"]).toBe("application/grpc+proto");
    const ack = ackOf(r.body);
    expect(ack.accepted).toBe(5);
    expect(ack.durableSeq).toBe(5);
    expect((await t.stored()).filter((p) => p.vehicleId === v).map((p) => p.seq)).toEqual([1, 2, 3, 4, 5]);
  });

  test("native grpc - unary: one message answered with trailers; none, two, or one over the limit are refused with a reason", async () => {
    const v = "native-unary";
    const token = await t.token(v);
    const grpcFrame = (bytes: Uint8Array) => {
      const out = Buffer.alloc(5 + bytes.length);
      out.writeUInt32BE(bytes.length, 1);
      out.set(bytes, 5);
      return out;
    };
    const publish = grpcFrame(toBinary(PublishRequestSchema, create(PublishRequestSchema, { positions: [point(v, 1), point(v, 2)] })));
    const ok = rawUpload(session, token, {}, "Publish");
    ok.stream.end(publish);
    const r = await ok.done;
    expect(r.status).toBe("0");
    expect(r.headers["content-type"]).toBe("application/grpc+proto");
    const ack = fromBinary(PublishResponseSchema, r.body.subarray(5)).ack!;
    expect([ack.accepted, ack.durableSeq]).toEqual([2, 2]);
    const resume = rawUpload(session, token, {}, "Resume");
    resume.stream.end(grpcFrame(new Uint8Array(0)));
    const rr = await resume.done;
    expect(rr.status).toBe("0");
    expect(fromBinary(ResumeResponseSchema, rr.body.subarray(5)).durableSeq).toBe(2);

    const none = rawUpload(session, token, {}, "Resume");
    none.stream.end();
    expect(await none.done).toMatchObject({ status: "3", message: expect.stringContaining("expected one request message, got 0") });
    const two = rawUpload(session, token, {}, "Resume");
    two.stream.end(Buffer.concat([grpcFrame(new Uint8Array(0)), grpcFrame(new Uint8Array(0))]));
    expect(await two.done).toMatchObject({ status: "3", message: expect.stringContaining("got 2") });
    const big = rawUpload(session, token, {}, "Publish");
    const prefix = Buffer.alloc(5);
    prefix.writeUInt32BE(t.config.maxMessageBytes + 1, 1);
    big.stream.end(prefix);
    expect(await big.done).toMatchObject({ status: "8", message: expect.stringContaining(String(t.config.maxMessageBytes)) });
    const anonymous = rawUpload(session, "", {}, "Resume");
    anonymous.stream.end(grpcFrame(new Uint8Array(0)));
    expect((await anonymous.done).status).toBe("16");
    // Unary calls are counted as calls, not as open streams.
    const metrics = await (await fetch(`${t.gateway.adminUrl}/metrics`)).text();
    expect(metrics).toMatch(/rpc_calls_total\{[^}]*procedure="Publish"[^}]*code="ok"[^}]*\} [1-9]/);
    expect(metrics).not.toMatch(/rpc_open_streams\{[^}]*procedure="(Publish|Resume)"/);
  });

  test("native grpc - a compressed message is INTERNAL, an unknown grpc-encoding UNIMPLEMENTED", async () => {
    const v = "native-compressed";
    const a = rawUpload(session, await t.token(v));
    a.stream.end(frame(v, 1, 1));
    const ra = await a.done;
    expect(ra.status).toBe("13");
    expect(ra.message).toContain("compressed");
    const b = rawUpload(session, await t.token(v), { "grpc-encoding": "zstd" });
    b.stream.end(frame(v, 1));
    const rb = await b.done;
    expect(rb.status).toBe("12");
    expect(rb.message).toContain("zstd");
  });

  test("native grpc - a length prefix over the limit is RESOURCE_EXHAUSTED before the body is sent", async () => {
    const v = "native-big";
    const call = rawUpload(session, await t.token(v));
    const prefix = Buffer.alloc(5);
    prefix.writeUInt32BE(t.config.maxMessageBytes + 1, 1);
    call.stream.write(prefix);
    const r = await call.done;
    expect(r.status).toBe("8");
    expect(r.message).toContain(String(t.config.maxMessageBytes));
  });

  test("native grpc - grpc-timeout ends a stream that stays open with DEADLINE_EXCEEDED", async () => {
    const v = "native-deadline";
    const call = rawUpload(session, await t.token(v), { "grpc-timeout": "300m" });
    call.stream.write(frame(v, 1));
    const started = Date.now();
    const r = await call.done;
    expect(r.status).toBe("4");
    expect(Date.now() - started).toBeGreaterThanOrEqual(250);
  });

  test("native grpc - a stream the client resets is counted as canceled, and its points stay durable", async () => {
    const v = "native-reset";
    const call = rawUpload(session, await t.token(v));
    call.stream.write(frame(v, 1));
    await Bun.sleep(100);
    call.stream.close(http2.constants.NGHTTP2_CANCEL);
    await call.done;
    const metricsText = async () => (await fetch(`${t.gateway.adminUrl}/metrics`)).text();
    const until = Date.now() + 3000;
    while (!(await metricsText()).includes('rpc_calls_total{procedure="Upload",code="canceled"')) {
      if (Date.now() > until)
        throw new Error(
          `no canceled Upload counted: ${(await metricsText())
            .split("\n")
            .filter((l) => l.startsWith("rpc_calls_total"))
            .join("; ")}`,
        );
      await Bun.sleep(20);
    }
    expect((await t.stored()).filter((p) => p.vehicleId === v).map((p) => p.seq)).toEqual([1]);
  });
});

describe("native grpc flow control", () => {
  let t: TestGateway;
  beforeAll(async () => {
    // Five points in flight at most, and a batch waits 3 s: the gateway has no room for that long.
    t = await startTestGateway({ GATEWAY_MAX_IN_FLIGHT: "5", GATEWAY_BATCH_DELAY: "3s", GATEWAY_MAX_FIX_RATE: "0" });
  });
  afterAll(async () => {
    await t.gateway.close();
  });

  test("native grpc - a client writing fast is not read past the in-flight window while the gateway has no room", async () => {
    const v = "native-flood";
    const session = http2.connect(t.gateway.url);
    const call = rawUpload(session, await t.token(v));
    const total = 20_000;
    // Write as fast as the stream takes it ('drain' after a full buffer) for 1.5 s.
    let written = 0;
    const until = Date.now() + 1500;
    while (written < total && Date.now() < until) {
      if (call.stream.write(frame(v, ++written))) continue;
      await Promise.race([new Promise((resolve) => call.stream.once("drain", resolve)), Bun.sleep(until - Date.now())]);
    }
    const m = await (await fetch(`${t.gateway.adminUrl}/metrics`)).text();
    const accepted = Number(/gateway_points_accepted_total\{[^}]*\} (\d+)/.exec(m)?.[1] ?? -1);
    // The gateway took the five it has room for and reads no further.
    expect(accepted).toBe(5);
    // It was offered far more than that. (How many bytes HTTP/2 let through cannot be told from
    // here: Bun's client stops flushing after its first ~20 KB whether or not the server reads.)
    expect(written).toBeGreaterThan(100);
    call.stream.close(http2.constants.NGHTTP2_CANCEL);
    await call.done;
    session.close();
  }, 20_000);
});
