/**
 * A vehicle back from an outage uploads its backlog (issue 14, section 2), with grpc-js (a client
 * that shares no code with the gateway) and with the project's own client library: a backlog goes
 * in one Upload as fast as it is made durable, a real flood (by the vehicle's own clock) is refused
 * with a retry hint and the durable seq in the trailers, and re-sent durable points cost nothing.
 * The same cases with Python's grpcio are in test/grpc-python.test.ts.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { RejectReason, UploadRequestSchema, type UploadResponse } from "../gen/fleet/v1/ingest_pb";
import type { Position } from "../gen/fleet/v1/position_pb";
import { createVehicleClient } from "../client/vehicle-client";
import { DURABLE_SEQ_TRAILER } from "../gateway/ingest-service";
import { bearer, grpc, grpcClient, point, startTestGateway, type TestGateway } from "../gateway/test/helpers";

let t: TestGateway;
let client: grpc.Client;
beforeAll(async () => {
  // The defaults, as `fleet up` runs them (an empty value is the default; the helper turns the flood check off).
  t = await startTestGateway({ GATEWAY_MAX_FIX_RATE: "" });
  client = grpcClient(t.target, { own: true });
});
afterAll(async () => {
  client.close();
  await t.gateway.close();
});

/** `n` points from seq `from`, recorded `stepMs` apart, the last one a minute ago. */
function backlog(v: string, n: number, stepMs: number, from = 1): Position[] {
  const first = Date.now() - 60_000 - (n - 1) * stepMs;
  return Array.from({ length: n }, (_, i) => point(v, from + i, { recordedAt: timestampFromMs(first + i * stepMs) }));
}

interface Outcome {
  response?: UploadResponse;
  error?: grpc.ServiceError;
  /** Trailers (grpc-js gives them with the status, whether the call failed or not). */
  trailers: grpc.Metadata;
}

/** One grpc-js Upload of `points`, written as the stream takes them; resolves with the response or error and the trailers. */
function upload(token: string, points: Position[]): Promise<Outcome> {
  return new Promise((resolve) => {
    let result: { response?: UploadResponse; error?: grpc.ServiceError } | undefined;
    let trailers: grpc.Metadata | undefined;
    const done = () => result && trailers && resolve({ ...result, trailers });
    const call = (client as unknown as Record<string, (...args: unknown[]) => grpc.ClientWritableStream<unknown>>).upload!.call(
      client,
      bearer(token),
      (err: grpc.ServiceError | null, res: UploadResponse) => {
        result = err ? { error: err } : { response: res };
        done();
      },
    ) as grpc.ClientWritableStream<unknown>;
    call.on("status", (s: grpc.StatusObject) => {
      trailers = s.metadata;
      done();
    });
    let i = 0;
    const write = () => {
      while (i < points.length) {
        if (!call.write(create(UploadRequestSchema, { position: points[i++] }))) return void call.once("drain", write);
      }
      call.end();
    };
    write();
  });
}

const durableTrailer = (o: Outcome) => Number(o.trailers.get(DURABLE_SEQ_TRAILER)[0]);

/** Calls the gateway answered with `code`, so far. */
async function callsAnswered(code: string): Promise<number> {
  const m = await (await fetch(`${t.gateway.adminUrl}/metrics`)).text();
  let n = 0;
  for (const [, v] of m.matchAll(new RegExp(`rpc_calls_total\\{[^}]*code="${code}"[^}]*\\} (\\d+)`, "g"))) n += Number(v);
  return n;
}

test("backlog - 1,000 points recorded 100 ms apart go through in one Upload, all durable", async () => {
  const v = "backlog-100ms";
  const r = await upload(await t.token(v), backlog(v, 1000, 100));
  expect(r.error).toBeUndefined();
  expect(r.response!.ack).toMatchObject({ durableSeq: 1000, accepted: 1000, rejected: [] });
  expect(durableTrailer(r)).toBe(1000);
  expect((await t.stored()).filter((p) => p.vehicleId === v)).toHaveLength(1000);
}, 20_000);

test("backlog - 5,000 points recorded 1 s apart go through in one Upload, all durable", async () => {
  const v = "backlog-1s";
  const r = await upload(await t.token(v), backlog(v, 5000, 1000));
  expect(r.error).toBeUndefined();
  expect(r.response!.ack).toMatchObject({ durableSeq: 5000, accepted: 5000, rejected: [] });
  expect((await t.stored()).filter((p) => p.vehicleId === v)).toHaveLength(5000);
}, 20_000);

test("backlog - a flood (2,000 fixes 1 ms apart of recorded time) is refused RESOURCE_EXHAUSTED with a retry hint and the durable seq in the trailers", async () => {
  const v = "backlog-flood";
  const token = await t.token(v);
  const r = await upload(token, backlog(v, 2000, 1));
  expect(r.error?.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
  expect(r.error?.details).toContain("fixes per second of its recorded time");
  expect(r.error?.details).toMatch(/retry in [1-9]\d* s/);
  expect(Number(r.trailers.get("retry-after-ms")[0])).toBeGreaterThanOrEqual(1000);
  expect(Number(r.trailers.get("retry-after")[0])).toBeGreaterThanOrEqual(1);
  // What came before the flood is durable, and the trailer says how far: no Resume needed.
  const durable = durableTrailer(r);
  expect(durable).toBeGreaterThanOrEqual(100);
  expect(durable).toBeLessThan(200);
  expect((await t.stored()).filter((p) => p.vehicleId === v)).toHaveLength(durable);
}, 20_000);

test("backlog - re-sending from seq 1 after a partial success goes through: durable points cost nothing", async () => {
  const v = "backlog-resend";
  const token = await t.token(v);
  const all = backlog(v, 3000, 1000);
  const first = await upload(token, all.slice(0, 1800));
  expect(first.response!.ack!.durableSeq).toBe(1800);
  // The vehicle does not know how far it got and sends everything again, at once.
  const again = await upload(token, all);
  expect(again.error).toBeUndefined();
  expect(again.response!.ack!.durableSeq).toBe(3000);
  expect(again.response!.ack!.accepted).toBe(1200);
  // Listed up to GATEWAY_MAX_UNSENT_REJECTIONS, the rest covered by durable_seq.
  expect(again.response!.ack!.rejected.every((x) => x.reason === RejectReason.DUPLICATE)).toBe(true);
  expect((await t.stored()).filter((p) => p.vehicleId === v)).toHaveLength(3000);
}, 20_000);

test("backlog - the client library catches up 50,000 points recorded 1 s apart without a refused call", async () => {
  const v = "backlog-client";
  const vc = createVehicleClient({ url: t.gateway.url, vehicleId: v, token: await t.token(v), bufferLimit: 100_000 });
  const first = Date.now() - 60_000 - 50_000 * 1000;
  const refusedBefore = await callsAnswered("resource_exhausted");
  const started = performance.now();
  for (let i = 0; i < 50_000; i++)
    vc.push({ recordedAt: timestampFromMs(first + i * 1000), lat: 52.5 + i * 1e-6, lon: 13.4, speed: 10, heading: 90, accuracy: 5 });
  await vc.flush();
  const seconds = (performance.now() - started) / 1000;
  await vc.close();
  expect(vc.stats).toMatchObject({ pushed: 50_000, acked: 50_000, rejected: 0, dropped: 0, reconnects: 0, durableSeq: 50_000 });
  expect(await callsAnswered("resource_exhausted")).toBe(refusedBefore);
  console.log(`backlog: the client library caught up 50,000 points in ${seconds.toFixed(1)} s`);
}, 30_000);
