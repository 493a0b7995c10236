/**
 * The gateway against a real NATS (test stack), driven by @grpc/grpc-js (an independent gRPC
 * implementation), connect-node transports, and plain fetch for Connect JSON over HTTP/1.1.
 */
import { afterAll, afterEach, beforeAll, describe, expect, test } from "bun:test";
import { create, toBinary } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { IngestService, PublishRequestSchema, RejectReason, SyncRequestSchema, type SyncResponse } from "../../gen/fleet/v1/ingest_pb";
import { mintVehicleToken, mintWatchToken, tokenKeys } from "../../lib/auth";
import {
  bearer,
  grpc,
  grpcClient,
  grpcUnary,
  grpcUpload,
  point,
  rawGrpcClient,
  SECRET,
  startTestGateway,
  uploadPoints,
  type TestGateway,
} from "./helpers";

let t: TestGateway;
let client: grpc.Client;

/** A Sync stream held open through the whole file: after every bad case it must still work. */
let keeper: { call: grpc.ClientDuplexStream<unknown, SyncResponse>; acks: SyncResponse[]; seq: number };

beforeAll(async () => {
  t = await startTestGateway();
  client = grpcClient(t.target);
  const call = (client as unknown as { sync(md: grpc.Metadata): grpc.ClientDuplexStream<unknown, SyncResponse> }).sync(
    bearer(await t.token("keeper")),
  );
  keeper = { call, acks: [], seq: 0 };
  call.on("data", (r: SyncResponse) => keeper.acks.push(r));
  call.on("error", () => {});
});

afterAll(async () => {
  keeper.call.end();
  client.close();
  await t.gateway.close();
});

async function until(check: () => boolean, timeoutMs = 3000) {
  const end = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > end) throw new Error("timed out waiting");
    await Bun.sleep(5);
  }
}

afterEach(async () => {
  // Another, concurrent, valid stream still works and the gateway lives.
  const seq = ++keeper.seq;
  keeper.call.write(create(SyncRequestSchema, { position: point("keeper", seq) }));
  await until(() => keeper.acks.some((a) => a.ack!.durableSeq >= seq));
});

describe("upload", () => {
  test("upload - acks valid points once they are in the stream, with fleet and received time set", async () => {
    const token = await t.token("up-1", "north");
    const r = await uploadPoints(client, token, [point("up-1", 1), point("up-1", 2), point("up-1", 3)]);
    expect(r.error).toBeUndefined();
    expect(r.response!.ack!.durableSeq).toBe(3);
    expect(r.response!.ack!.accepted).toBe(3);
    const stored = (await t.stored()).filter((p) => p.vehicleId === "up-1");
    expect(stored.map((p) => p.seq)).toEqual([1, 2, 3]);
    expect(stored[0]!.fleetId).toBe("north");
    expect(Math.abs(Number(stored[0]!.receivedAt!.seconds) * 1000 - Date.now())).toBeLessThan(10_000);
  });

  test("upload - refuses NaN, Infinity and out-of-range coordinates with a reason; neighbours are stored", async () => {
    const v = "up-bad-coords";
    const r = await uploadPoints(client, await t.token(v), [
      point(v, 1),
      point(v, 2, { lat: NaN }),
      point(v, 3),
      point(v, 4, { lon: Infinity }),
      point(v, 5, { lat: 91 }),
      point(v, 6),
    ]);
    expect(r.error).toBeUndefined();
    const ack = r.response!.ack!;
    expect(ack.accepted).toBe(3);
    expect(ack.durableSeq).toBe(6);
    expect(ack.rejected.map((x) => [x.seq, x.reason])).toEqual([
      [2, RejectReason.INVALID_COORDINATES],
      [4, RejectReason.INVALID_COORDINATES],
      [5, RejectReason.INVALID_COORDINATES],
    ]);
    expect(ack.rejected[0]!.message).toContain("NaN");
    const stored = (await t.stored()).filter((p) => p.vehicleId === v);
    expect(stored.map((p) => p.seq)).toEqual([1, 3, 6]);
  });

  test("upload - refuses a time far in the future and one too old", async () => {
    const v = "up-time";
    const r = await uploadPoints(client, await t.token(v), [
      point(v, 1, { recordedAt: timestampFromMs(Date.now() + 3_600_000) }),
      point(v, 2, { recordedAt: timestampFromMs(Date.now() - 30 * 86_400_000) }),
      point(v, 3),
    ]);
    const ack = r.response!.ack!;
    expect(ack.rejected.map((x) => x.reason)).toEqual([RejectReason.TIME_IN_FUTURE, RejectReason.TIME_TOO_OLD]);
    expect(ack.rejected[0]!.message).toContain("future");
    expect(ack.durableSeq).toBe(3);
  });

  test("upload - refuses points already durable as DUPLICATE", async () => {
    const v = "up-dup";
    const token = await t.token(v);
    await uploadPoints(client, token, [point(v, 1), point(v, 2)]);
    const r = await uploadPoints(client, token, [point(v, 2), point(v, 3)]);
    const ack = r.response!.ack!;
    expect(ack.rejected.map((x) => [x.seq, x.reason])).toEqual([[2, RejectReason.DUPLICATE]]);
    expect(ack.accepted).toBe(1);
    expect((await t.stored()).filter((p) => p.vehicleId === v).map((p) => p.seq)).toEqual([1, 2, 3]);
  });

  test("upload - a point for another vehicle ends the stream with PERMISSION_DENIED, nothing of it stored", async () => {
    const v = "up-foreign";
    const r = await uploadPoints(client, await t.token(v), [point(v, 1), point("someone-else", 2), point(v, 3)]);
    expect(r.error?.code).toBe(grpc.status.PERMISSION_DENIED);
    expect(r.error?.details).toContain("someone-else");
    const stored = await t.stored();
    expect(stored.some((p) => p.vehicleId === "someone-else")).toBe(false);
    // What came before is durable, and Resume says so.
    const resume = await grpcUnary<{ durableSeq: number }>(client, "resume", bearer(await t.token(v)), {
      $typeName: "fleet.v1.ResumeRequest",
      vehicleId: "",
    });
    expect(resume.response!.durableSeq).toBe(1);
  });

  test("upload - malformed protobuf is INVALID_ARGUMENT", async () => {
    const raw = rawGrpcClient(t.target);
    // Field 1 (position), length-delimited, claims 100 bytes and carries 2.
    const r = await grpcUpload(raw, bearer(await t.token("up-raw")), [Buffer.from([0x0a, 100, 1, 2])]);
    expect(r.error?.code).toBe(grpc.status.INVALID_ARGUMENT);
    const u = await grpcUnary(raw, "publish", bearer(await t.token("up-raw")), Buffer.from([0xff, 0xff, 0xff]));
    expect(u.error?.code).toBe(grpc.status.INVALID_ARGUMENT);
    raw.close();
  });

  test("upload - a message over the size limit is RESOURCE_EXHAUSTED naming the limit", async () => {
    const v = "up-big";
    const own = grpcClient(t.target, { own: true });
    const r = await uploadPoints(own, await t.token(v), [point(v, 1, { orderId: "x".repeat(t.config.maxMessageBytes + 10) })]);
    own.close();
    expect(r.error?.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
    expect(r.error?.details).toContain(String(t.config.maxMessageBytes));
  });
});

describe("auth", () => {
  const b64 = (o: object) => Buffer.from(JSON.stringify(o)).toString("base64url");
  const cases: [string, () => Promise<string | undefined>, string][] = [
    ["missing", async () => undefined, "missing token"],
    [
      "expired",
      () => mintVehicleToken(tokenKeys({ secret: SECRET, issuer: "fleet", audience: "fleet" }), "a1", { ttlSeconds: -60 }),
      "expired",
    ],
    ["forged", () => mintVehicleToken(tokenKeys({ secret: "another-secret", issuer: "fleet", audience: "fleet" }), "a1"), "signature"],
    [
      "alg none",
      async () =>
        `${b64({ alg: "none", typ: "JWT" })}.${b64({ sub: "a1", role: "vehicle", iss: "fleet", aud: "fleet", exp: Math.floor(Date.now() / 1000) + 600 })}.`,
      "",
    ],
  ];
  for (const [name, token, says] of cases) {
    test(`auth - ${name} token is UNAUTHENTICATED with a reason`, async () => {
      const r = await uploadPoints(client, await token(), [point("a1", 1)]);
      expect(r.error?.code).toBe(grpc.status.UNAUTHENTICATED);
      expect(r.error?.details.length).toBeGreaterThan(5);
      if (says) expect(r.error?.details).toContain(says);
      expect((await t.stored()).some((p) => p.vehicleId === "a1")).toBe(false);
    });
  }

  test("auth - a watch token may not send positions (PERMISSION_DENIED)", async () => {
    const token = await mintWatchToken(tokenKeys(t.config), { all: true });
    const r = await uploadPoints(client, token, [point("a2", 1)]);
    expect(r.error?.code).toBe(grpc.status.PERMISSION_DENIED);
  });
});

describe("sync", () => {
  test("sync - first response is the resume point, then coalesced acks up to the last seq", async () => {
    const v = "sync-1";
    const token = await t.token(v);
    await uploadPoints(client, token, [point(v, 1), point(v, 2)]);
    const acks: SyncResponse[] = [];
    const call = (client as unknown as { sync(md: grpc.Metadata): grpc.ClientDuplexStream<unknown, SyncResponse> }).sync(bearer(token));
    const ended = new Promise<grpc.ServiceError | null>((resolve) => {
      call.on("data", (r: SyncResponse) => acks.push(r));
      call.on("error", (e: grpc.ServiceError) => resolve(e));
      call.on("end", () => resolve(null));
    });
    await until(() => acks.length >= 1);
    expect(acks[0]!.ack!.durableSeq).toBe(2);
    expect(acks[0]!.ack!.accepted).toBe(0);
    for (let seq = 3; seq <= 102; seq++)
      call.write(create(SyncRequestSchema, { position: point(v, seq, { speed: seq === 50 ? -5 : 10 }) }));
    call.end();
    expect(await ended).toBeNull();
    const last = acks.at(-1)!.ack!;
    expect(last.durableSeq).toBe(102);
    expect(acks.reduce((n, a) => n + a.ack!.accepted, 0)).toBe(99);
    expect(acks.flatMap((a) => a.ack!.rejected).map((x) => [x.seq, x.reason])).toEqual([[50, RejectReason.IMPLAUSIBLE_SPEED]]);
    // Coalesced: far fewer acks than points.
    expect(acks.length).toBeLessThan(60);
  });

  test("sync - works through connect-node's gRPC transport (h2c)", async () => {
    const v = "sync-connect";
    const token = await t.token(v);
    const ingest = createClient(IngestService, createGrpcTransport({ baseUrl: t.gateway.url }));
    async function* points() {
      for (let seq = 1; seq <= 20; seq++) yield { position: point(v, seq) };
    }
    let last = 0;
    let first: number | undefined;
    for await (const r of ingest.sync(points(), { headers: { authorization: `Bearer ${token}` } })) {
      first ??= r.ack!.durableSeq;
      last = r.ack!.durableSeq;
    }
    expect(first).toBe(0);
    expect(last).toBe(20);
  });
});

describe("resume", () => {
  test("resume - after a reconnect returns the durable seq; another vehicle's is PERMISSION_DENIED", async () => {
    const v = "resume-1";
    const token = await t.token(v);
    await uploadPoints(client, token, [point(v, 5), point(v, 9)]);
    const other = grpcClient(t.target);
    const r = await grpcUnary<{ vehicleId: string; durableSeq: number }>(other, "resume", bearer(token), {
      $typeName: "fleet.v1.ResumeRequest",
      vehicleId: v,
    });
    expect(r.response).toMatchObject({ vehicleId: v, durableSeq: 9 });
    const denied = await grpcUnary(other, "resume", bearer(token), { $typeName: "fleet.v1.ResumeRequest", vehicleId: "not-me" });
    expect(denied.error?.code).toBe(grpc.status.PERMISSION_DENIED);
    other.close();
  });
});

describe("publish", () => {
  test("publish - Connect JSON over HTTP/1.1 with fetch, after a CORS preflight; a foreign point is WRONG_VEHICLE", async () => {
    const v = "browser-1";
    const token = await t.token(v);
    const url = `${t.gateway.url}/fleet.v1.IngestService/Publish`;
    const pre = await fetch(url, {
      method: "OPTIONS",
      headers: {
        origin: "http://app.example",
        "access-control-request-method": "POST",
        "access-control-request-headers": "authorization,content-type,connect-protocol-version",
      },
    });
    expect(pre.status).toBe(204);
    expect(pre.headers.get("access-control-allow-origin")).toBe("http://app.example");
    expect(pre.headers.get("access-control-allow-headers")!.toLowerCase()).toContain("authorization");
    expect(pre.headers.get("access-control-allow-methods")).toContain("POST");
    const now = new Date(Date.now() - 1000).toISOString();
    const res = await fetch(url, {
      method: "POST",
      headers: {
        origin: "http://app.example",
        "content-type": "application/json",
        "connect-protocol-version": "1",
        authorization: `Bearer ${token}`,
      },
      body: JSON.stringify({
        positions: [
          { vehicleId: v, seq: 1, recordedAt: now, lat: 48.1, lon: 11.5, speed: 3 },
          { vehicleId: "intruder", seq: 2, recordedAt: now, lat: 48.1, lon: 11.5 },
          { vehicleId: v, seq: 3, recordedAt: new Date(Date.now() - 500).toISOString(), lat: 48.2, lon: 11.6 },
        ],
      }),
    });
    expect(res.status).toBe(200);
    expect(res.headers.get("access-control-allow-origin")).toBe("http://app.example");
    const body = (await res.json()) as { ack: { durableSeq: number; accepted: number; rejected: { seq: number; reason: string }[] } };
    expect(body.ack.durableSeq).toBe(3);
    expect(body.ack.accepted).toBe(2);
    expect(body.ack.rejected).toEqual([expect.objectContaining({ seq: 2, reason: "REJECT_REASON_WRONG_VEHICLE" })]);
    expect((await t.stored()).filter((p) => p.vehicleId === v).map((p) => p.seq)).toEqual([1, 3]);
  });

  test("publish - works through connect-node's Connect transport over HTTP/1.1; bad token is UNAUTHENTICATED", async () => {
    const v = "browser-2";
    const ingest = createClient(IngestService, createConnectTransport({ baseUrl: t.gateway.url, httpVersion: "1.1" }));
    const r = await ingest.publish({ positions: [point(v, 1), point(v, 2)] }, { headers: { authorization: `Bearer ${await t.token(v)}` } });
    expect(r.ack!.durableSeq).toBe(2);
    const err = await ingest.publish({ positions: [point(v, 3)] }, { headers: { authorization: "Bearer nope" } }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConnectError);
    expect((err as ConnectError).code).toBe(Code.Unauthenticated);
  });

  test("publish - a Connect message over the size limit is RESOURCE_EXHAUSTED naming the limit, JSON or binary, and the next call works", async () => {
    const v = "browser-3";
    const headers = { authorization: `Bearer ${await t.token(v)}` };
    const url = `${t.gateway.url}/fleet.v1.IngestService/Publish`;
    const limit = t.config.maxMessageBytes;
    // As a browser sends them (fetch gives the body's length): JSON, then binary protobuf.
    const json = JSON.stringify({
      positions: [{ vehicleId: v, seq: 1, recordedAt: new Date().toISOString(), lat: 1, lon: 1, orderId: "y".repeat(limit) }],
    });
    const binary = toBinary(
      PublishRequestSchema,
      create(PublishRequestSchema, { positions: [point(v, 1, { orderId: "x".repeat(limit) })] }),
    );
    for (const [type, body] of [
      ["application/json", json],
      ["application/proto", binary],
    ] as const) {
      const res = await fetch(url, { method: "POST", headers: { "content-type": type, ...headers }, body });
      expect(res.status).toBe(429);
      expect(await res.json()).toEqual({
        code: "resource_exhausted",
        message: `message of ${body.length} bytes is over this server's limit of ${limit} bytes: send smaller messages (fewer points in each)`,
      });
    }
    const ingest = createClient(IngestService, createConnectTransport({ baseUrl: t.gateway.url, httpVersion: "1.1" }));
    const r = await ingest.publish({ positions: [point(v, 1)] }, { headers });
    expect(r.ack!.durableSeq).toBe(1);
  });
});

describe("http", () => {
  test("http - /healthz answers ok and /metrics counts points by outcome", async () => {
    const h = await fetch(`${t.gateway.url}/healthz`);
    expect(h.status).toBe(200);
    expect(await h.text()).toBe("ok");
    const m = await (await fetch(`${t.gateway.adminUrl}/metrics`)).text();
    expect(m).toMatch(/gateway_points_accepted_total\{service="gateway"\} [1-9]/);
    expect(m).toContain('gateway_points_refused_total{reason="INVALID_COORDINATES",service="gateway"}');
    expect(m).toContain("gateway_batch_points_bucket");
    expect(m).toContain("gateway_publish_seconds_bucket");
    expect(m).toMatch(/gateway_ack_wait_seconds_count\{service="gateway"\} [1-9]/);
    expect(m).toContain("gateway_in_flight_points");
    expect(m).toContain('rpc_open_streams{procedure="Sync",service="gateway"} 1');
  });
});
